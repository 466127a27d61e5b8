"""The ``tunelab`` command's start: run under jemalloc where it is installed.

PyTorch on a CPU allocates and frees large blocks all the time (activations, logits, KV caches). glibc's
malloc keeps much of what is freed in its heap and serves it back slowly; jemalloc returns pages to the OS
on a timer and reuses blocks by size class. Measured on an idle AMD EPYC host (README, "Online learning"),
GRPO on SmolLM2 with passes of 512 tokens ran 0.069 steps/s at 2467 MB under jemalloc against 0.056 and
2668 MB under glibc. An allocator must be in place before the process's first ``malloc``, so it cannot be
switched from Python: the console command re-executes itself once with ``LD_PRELOAD`` naming the library.
What a run used is in its ``env.json`` (``allocator``).

``TUNELAB_ALLOCATOR`` chooses:

* ``auto`` (the default): jemalloc where its shared library is found (Debian and Ubuntu:
  ``apt install libjemalloc2``; ``make install`` adds it where it can), else the C library's malloc;
* ``system``: never re-execute (the C library's malloc, or whatever ``LD_PRELOAD`` already names);
* a path to a shared library (jemalloc or tcmalloc): that one, an error if it does not exist.

Nothing is re-executed where ``LD_PRELOAD`` already names jemalloc or tcmalloc, off Linux, or in a process
started by this launch (a marker in the environment stops loops). Sweeps' run processes inherit the
environment, so they run under the same allocator as the ``tunelab sweep`` that started them. Library code
(``tunelab.run`` from Python, the tests) never re-executes anything: only the command does.

This module imports nothing but the standard library, so the re-execution costs an interpreter start,
not torch's import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

SETTING = "TUNELAB_ALLOCATOR"
"""Environment variable: ``auto`` (default), ``system``, or a shared library's path."""
MARK = "TUNELAB_ALLOCATOR_LAUNCHED"
"""Set in the re-executed process's environment (to the library's path): never re-execute twice."""

JEMALLOC_NAMES = ("libjemalloc.so.2", "libjemalloc.so")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                "/usr/local/lib", "/opt/conda/lib")
"""Where :func:`find_jemalloc` looks, after the Python installation's own ``lib`` (conda ships jemalloc there)."""

_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


class LaunchError(ValueError):
    """``TUNELAB_ALLOCATOR`` names something that cannot be used."""


def find_jemalloc(dirs: Sequence[str] | None = None) -> str | None:
    """The path of an installed jemalloc shared library, or None."""
    search = [os.path.join(sys.prefix, "lib"), os.path.join(sys.base_prefix, "lib"), *LIBRARY_DIRS] \
        if dirs is None else list(dirs)
    for d in search:
        for name in JEMALLOC_NAMES:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
    return None


def preload(environ: Mapping[str, str], *, platform: str = sys.platform,
            find: object = find_jemalloc) -> dict[str, str] | None:
    """The environment to re-execute the command in, with the allocator preloaded; None to go on as is
    (see the module docstring for when). Raises :class:`LaunchError` for a ``TUNELAB_ALLOCATOR`` path that
    is not a file."""
    setting = (environ.get(SETTING) or "auto").strip()
    if setting.lower() in ("system", "off", "none", "glibc", "0", "false"):
        return None
    if not platform.startswith("linux") or environ.get(MARK):
        return None
    already = environ.get("LD_PRELOAD", "")
    if any(name in already for name in _ALLOCATORS):
        return None
    if setting.lower() in ("auto", "jemalloc", ""):
        library = find()  # type: ignore[operator]
        if library is None:
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
