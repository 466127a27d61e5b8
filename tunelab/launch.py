"""The ``tunelab`` command's start: run under jemalloc where it is installed.

PyTorch on a CPU allocates and frees large blocks all the time (activations, logits, KV caches). glibc's
malloc keeps much of what is freed in its heap and serves it back slowly; jemalloc returns pages to the OS
on a timer and reuses blocks by size class. Measured (README, "Install" and "Online objectives"): the
quickstart-length SFT job's peak RSS 5188 MB under jemalloc against 7819 MB under glibc, the same loss
(Intel Xeon with AMX); GRPO on SmolLM2 0.069 steps/s at 2467 MB under jemalloc (passes of 512 tokens, its
default there) against 0.061 at 3170 MB under glibc (passes of 1024; AMD EPYC). An allocator must be in
place before the process's first ``malloc``, so it cannot be switched from Python: the console command
re-executes itself once with ``LD_PRELOAD`` naming the library.
What a run used is in its ``env.json`` (``allocator``).

``TUNELAB_ALLOCATOR`` chooses:

* ``auto`` (the default): jemalloc where its shared library is found (Debian and Ubuntu:
  ``apt install libjemalloc2``), else the C library's malloc;
* ``jemalloc``: the same, but an error where it is not found;
* ``system``: never re-execute (the C library's malloc, or whatever ``LD_PRELOAD`` already names);
* a path to a shared library (jemalloc or tcmalloc): that one, an error if it does not exist.

Nothing is re-executed where ``LD_PRELOAD`` already names an allocator (that one is kept, said on stderr
when ``TUNELAB_ALLOCATOR`` asked for another), off Linux, or in a process started by this launch (a marker
in the environment stops loops). A local sweep's run processes inherit the environment, so they run under
the allocator of the ``tunelab sweep`` that started them; Ray workers on another machine, and library code
(``tunelab.run`` from Python, the tests), run under whatever their process started with: only the command
re-executes. The allocator is not neutral: ``tokens_per_pass: auto`` picks smaller passes for online
objectives under jemalloc (:data:`tunelab.train.speed.ONLINE_JEMALLOC_TOKENS_PER_PASS`), the same loss in
another summation order, so a run's ``env.json`` says which allocator and which passes it had.

This module imports nothing but the standard library, so the re-execution costs an interpreter start,
not torch's import.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence

SETTING = "TUNELAB_ALLOCATOR"
"""Environment variable: ``auto`` (default), ``jemalloc``, ``system``, or a shared library's path."""
MARK = "TUNELAB_ALLOCATOR_LAUNCHED"
"""Set in the re-executed process's environment (to the library's path): never re-execute twice."""

JEMALLOC_NAMES = ("libjemalloc.so.2", "libjemalloc.so")
_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
"""Names that, in ``LD_PRELOAD``, mean an allocator is already preloaded (``speed.allocator`` knows the same
three; it cannot import them from here, which sits above every layer)."""


def library_dirs() -> list[str]:
    """Where :func:`find_jemalloc` looks: the Python installation's own ``lib`` (conda ships jemalloc there),
    then the system's directories for this machine's architecture (Debian's multiarch one first)."""
    prefixes = dict.fromkeys([os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib")])
    return [*prefixes, f"/usr/lib/{platform.machine()}-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"]


class LaunchError(ValueError):
    """``TUNELAB_ALLOCATOR`` names something that cannot be used."""


def find_jemalloc(dirs: Sequence[str] | None = None) -> str | None:
    """The path of an installed jemalloc shared library, or None."""
    for d in library_dirs() if dirs is None else dirs:
        for name in JEMALLOC_NAMES:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
    return None


def preload(environ: Mapping[str, str], *, system: str = sys.platform,
            find: Callable[[], str | None] = find_jemalloc) -> dict[str, str] | None:
    """The environment to re-execute the command in, with the allocator preloaded; None to go on as is
    (see the module docstring for when). Raises :class:`LaunchError` where ``TUNELAB_ALLOCATOR`` names
    jemalloc and none is found, or a path that is not a file."""
    setting = (environ.get(SETTING) or "auto").strip()
    if setting.lower() in ("system", "off", "none", "glibc", "0", "false"):
        return None
    if not system.startswith("linux") or environ.get(MARK):
        return None
    already = environ.get("LD_PRELOAD", "")
    if any(name in already for name in _ALLOCATORS):
        if setting.lower() != "auto":
            print(f"[tunelab] {SETTING}={setting}: LD_PRELOAD already names an allocator ({already}); keeping it",
                  file=sys.stderr)
        return None
    if setting.lower() in ("auto", "jemalloc", ""):
        library = find()
        if library is None:
            if setting.lower() == "jemalloc":
                raise LaunchError(f"{SETTING}=jemalloc: no libjemalloc found in {', '.join(library_dirs())} "
                                  "(Debian/Ubuntu: apt install libjemalloc2; or give the library's path)")
            return None
    else:
        library = os.path.expanduser(setting)
        if not os.path.isfile(library):
            raise LaunchError(f"{SETTING}={setting!r}: no such shared library (use 'auto', 'system' or the "
                              "path of libjemalloc.so.2 / libtcmalloc.so)")
    env = dict(environ)
    env["LD_PRELOAD"] = f"{library}:{already}" if already else library
    env[MARK] = library
    return env


def main() -> None:
    """The ``tunelab`` console command: re-execute under the allocator :func:`preload` chooses, then run
    :func:`tunelab.cli.main`."""
    try:
        env = preload(os.environ)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if env is not None:
        argv = [sys.executable, *sys.orig_argv[1:]]
        try:
            os.execve(sys.executable, argv, env)
        except OSError as e:  # pragma: no cover - an interpreter that cannot be executed again
            print(f"[tunelab] could not restart under {env[MARK]} ({e}); going on with the C library's malloc",
                  file=sys.stderr)
    from tunelab.cli import main as cli_main

    sys.exit(cli_main())
