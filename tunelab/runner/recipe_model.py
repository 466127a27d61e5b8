"""A model a recipe trains (``model: recipe:<recipe>`` of a generated ``sample`` source), and the cache
folder it shares with the generated sources (:mod:`tunelab.runner.generated`).

The recipe is run once into ``<TUNELAB_CACHE or ~/.cache/tunelab>/generated/runs/<key>/``, where the key
is a digest of the recipe's resolved configuration and the source text of tunelab's training code
(:func:`recipe_model_key`); a later use with the same key reuses the finished run. The run itself is
made by the runner (:func:`set_recipe_runner`: :mod:`tunelab.runner.run` sits above this module). Here
too: the folder (:func:`folder`), the waiting lock builds take (:func:`locked`) and the digest of
packages' source text (:func:`package_files`, :func:`source_digest`) both modules key and lock with.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

from tunelab.config import ConfigError, is_run, load_recipe, read_yaml_mapping, resolve_recipe, to_dict
from tunelab.io import digest
from tunelab.models.load import cache_dir

FOLDER = "generated"
"""The generated pools' folder under the tunelab cache (``TUNELAB_CACHE``, default ``~/.cache/tunelab``)."""


def folder() -> Path:
    """Where generated pools live: ``<TUNELAB_CACHE or ~/.cache/tunelab>/generated``."""
    return cache_dir() / FOLDER


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` that waits for its holder (another run building the same pool)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: builds may race; the renames keep files whole
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def package_files(package: str) -> list[tuple[str, Path]]:
    """``(package:relative/path.py, file)`` of every Python file of ``package`` (a module: its own file)."""
    found = importlib.util.find_spec(package)
    if found and found.submodule_search_locations is None and found.origin:
        return [(f"{package}:{Path(found.origin).name}", Path(found.origin))]
    roots = [Path(r) for r in (found.submodule_search_locations or [])] if found else []
    return [(f"{package}:{f.relative_to(root).as_posix()}", f) for root in roots for f in sorted(root.rglob("*.py"))]


def source_digest(files: list[tuple[str, Path]]) -> str:
    """A digest of named source files' text (sorted by name, duplicates once)."""
    h = hashlib.sha1()
    for name, f in sorted(set(files)):
        h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- a model a recipe trains

RECIPE_PREFIX = "recipe:"
"""``model: recipe:<recipe>``: the model the recipe trains (see :func:`recipe_model`)."""
RecipeRunner = Callable[[Path, Path, Callable[[str], None]], Path]
"""``(recipe file, runs folder, say) -> finished run folder``: how a recipe is run (``tunelab.runner.run``
gives it with :func:`set_recipe_runner`, as it sits above this module)."""
_RECIPE_RUNNER: list[RecipeRunner] = []


def set_recipe_runner(runner: RecipeRunner) -> None:
    """Say how a recipe is run (called once by :mod:`tunelab.runner.run`, which imports this module)."""
    _RECIPE_RUNNER[:] = [runner]


def recipe_path(spec: str, recipe_dir: str | None) -> Path:
    """The recipe file of ``recipe:<recipe>`` (relative to ``recipe_dir``, else a built-in name).

    Raises:
        ConfigError: no such file or built-in recipe.
    """
    name = spec[len(RECIPE_PREFIX):].strip()
    local = Path(recipe_dir or ".") / name
    if local.is_file():
        return local.resolve()
    return resolve_recipe(name)


def recipe_model_key(spec: str, recipe_dir: str | None) -> str:
    """What the recipe's model depends on: its resolved configuration (generated sources' keys included
    through their options) and tunelab's training code; the digest names the cached run."""
    path = recipe_path(spec, recipe_dir)
    cfg = load_recipe(path)
    packages = ("tunelab.train", "tunelab.methods", "tunelab.data", "tunelab.promptintern", "tunelab.models",
                "tunelab.regularizers")
    code = source_digest([named for p in packages for named in package_files(p)])
    return digest({"config": to_dict(cfg) | {"out": None, "recipe_dir": None}, "code": code})


def recipe_text_key(spec: str, recipe_dir: str | None) -> str:
    """What the recipe says, without tunelab's code: a digest of the mapping its file holds (an edit to
    the recipe changes it; a change of tunelab's code or defaults does not). A study keeps a pool whose
    pin matches (:func:`tunelab.runner.generated.pin_key`)."""
    return digest(read_yaml_mapping(recipe_path(spec, recipe_dir), "recipe"))


def recipe_model(spec: str, recipe_dir: str | None, say: Callable[[str], None] = print) -> Path:
    """The finished run folder of ``recipe:<recipe>``: reused from ``<cache>/generated/runs/<key>/`` when
    it exists, else trained there first (locked: a parallel build waits and reuses it).

    Raises:
        ConfigError: an unknown recipe, or no recipe runner (this module used without the runner).
    """
    if not _RECIPE_RUNNER:
        raise ConfigError("model: recipe:... needs tunelab.runner.run (import it to train a recipe's model)")
    path = recipe_path(spec, recipe_dir)
    runs = folder() / "runs" / recipe_model_key(spec, recipe_dir)
    done = [d for d in runs.glob("*") if is_run(d, need="results")] if runs.is_dir() else []
    if done:
        say(f"model {spec}: reusing the run {done[0]}")
        return done[0]
    runs.mkdir(parents=True, exist_ok=True)
    with locked(runs / ".lock"):
        done = [d for d in runs.glob("*") if is_run(d, need="results")]
        if done:
            return done[0]
        say(f"model {spec}: training it first ({path}) into {runs}")
        return _RECIPE_RUNNER[0](path, runs, say)
