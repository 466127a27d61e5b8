"""A tiny name -> object registry with duplicate checks, helpful errors and module discovery.

A registry owns a package (``Registry("method", package="tunelab.methods")``): on first use
(``get``, ``names``, ``items``, iteration, ``in``) it imports every module of that package, and
every module registers what it defines with the registry's decorator. So a new method,
regularizer, task family, transform or eval task is one file in its package: nothing lists
modules by hand, and the decorator is the only place its name is written (it sets the
class's ``name`` attribute).

Third-party packages plug in through an entry-point group (``tunelab.methods`` ...): each
entry point names a module that registers on import, or an object registered under the
entry point's name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import threading
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def _origin(obj: object) -> str:
    """``module.qualname`` of a registered object (for error messages and re-import checks)."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class Registry(Generic[T]):
    """Maps names (as written in recipes) to classes or factories.

    Args:
        kind: What is registered, singular (``method``), for messages.
        package: Dotted package whose modules are imported on first use (modules named ``_*``
            or ``base`` are skipped); None: only what registers itself explicitly.
        entry_points: Entry-point group of third-party plugins (``tunelab.methods``), loaded
            on first use after the package; None: no plugins.

    Example:
        >>> METHODS = Registry("method", package="tunelab.methods")
        >>> @METHODS.register("full")
        ... class Full: ...
        >>> Full.name
        'full'
    """

    def __init__(self, kind: str, package: str | None = None, entry_points: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self.entry_points = entry_points
        self._items: dict[str, T] = {}
        self._lock = threading.RLock()  # held while discovering (re-entered by the imports it runs)
        self._add_lock = threading.Lock()  # never held across an import: registering never waits on one
        self._discovered = package is None and entry_points is None
        self._discovering = False

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, package={self.package!r}, {len(self._items)} registered)"

    # -- registration -------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers its object under ``name`` and sets a class's ``name``.

        Raises:
            RegistryError: ``name`` is taken by another object, or the class declares a
                different ``name`` attribute of its own.
        """

        def deco(obj: T) -> T:
            self._add(name, obj)
            return obj

        return deco

    def _add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name`` (see ``register``); a class gets ``name`` as its attribute."""
        if isinstance(obj, type):
            declared = obj.__dict__.get("name")
            if declared is not None and declared != name:
                raise RegistryError(
                    f"{self.kind} {name!r}: class {_origin(obj)} declares name = {declared!r}; "
                    "the register decorator sets the name, drop the attribute"
                )
        with self._add_lock:
            old = self._items.get(name)
            # the same definition registering again (a module re-imported) replaces itself
            if old is not None and old is not obj and _origin(old) != _origin(obj):
                raise RegistryError(
                    f"{self.kind} {name!r} is registered twice ({_origin(old)} and {_origin(obj)})"
                )
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            self._items[name] = obj

    # -- discovery ----------------------------------------------------------------------
    def discover(self) -> None:
        """Import the package's modules and load the plugins, once (thread-safe).

        A module that fails to import raises here, and the next use tries again.
        """
        if self._discovered:
            return
        with self._lock:
            if self._discovered or self._discovering:  # done meanwhile, or re-entered from an import
                return
            self._discovering = True
            try:
                if self.package is not None:
                    for module in _package_modules(self.package):
                        importlib.import_module(module)
                if self.entry_points is not None:
                    self._load_plugins(self.entry_points)
                self._discovered = True
            finally:
                self._discovering = False

    def _load_plugins(self, group: str) -> None:
        """Load entry points of ``group``: modules register themselves, objects under the entry point's name."""
        for ep in importlib.metadata.entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as e:  # a broken plugin must not take the built-ins down with it
                warnings.warn(f"tunelab: {self.kind} plugin {ep.name!r} ({ep.value}) failed to load: {e}",
                              RuntimeWarning, stacklevel=3)
                continue
            if not isinstance(obj, ModuleType) and not any(v is obj for v in self._items.values()):
                self._add(ep.name, obj)

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            RegistryError: Unknown name; the message lists the valid ones.
        """
        self.discover()
        if name not in self._items:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered (discovers first)."""
        self.discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """The registered names, sorted (discovers first)."""
        self.discover()
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs, sorted by name."""
        self.discover()
        return sorted(self._items.items())

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self.discover()
        return sorted(self._items)


def _package_modules(package: str) -> list[str]:
    """Dotted names of a package's public modules and subpackages (not ``_*``, not ``base``)."""
    pkg = importlib.import_module(package)
    return [info.name for info in pkgutil.iter_modules(pkg.__path__, package + ".")
            if not info.name.rsplit(".", 1)[-1].startswith("_") and not info.name.endswith(".base")]


def first_doc_line(obj: Any) -> str:
    """The first line of an object's docstring (for `tunelab ls`)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
