"""The ``tunelab`` command line: one table {command: function}; help comes from docstrings.

Every command is a thin layer over a library call (``tunelab.run``, ``tunelab.evaluate`` ...). Each
command group has its module, with its commands' functions and arguments (``COMMANDS``):

* :mod:`tunelab.cli.runs`: ``quickstart``, ``run``, ``validate``, ``diagnose``, ``export``;
* :mod:`tunelab.cli.sweep`: ``sweep`` (``plan``, ``pilot``, ``report``), ``findings``;
* :mod:`tunelab.cli.ls`: ``ls``;
* :mod:`tunelab.cli.data`: ``data``, ``sample``, ``evolve``;
* :mod:`tunelab.cli.eval`: ``eval``;
* :mod:`tunelab.cli.serve`: ``ui``, ``chat``, ``serve``;
* :mod:`tunelab.cli.results`: ``report``, ``regimes``, ``compare``.

What they print is formatted in :mod:`tunelab.cli.output`; :func:`main` turns the library's input
errors into ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from tunelab.cli import data, ls, results, runs, serve, sweep
from tunelab.cli import eval as eval_cli
from tunelab.cli.common import Commands
from tunelab.config import ConfigError
from tunelab.io import DataError, FolderLocked, StorageError
from tunelab.models.load import ModelError
from tunelab.registry import RegistryError

COMMANDS: Commands = {**runs.COMMANDS, **sweep.COMMANDS, **ls.COMMANDS, **data.COMMANDS, **eval_cli.COMMANDS,
                      **serve.COMMANDS, **results.COMMANDS}
"""Every command: name -> (function, what adds its arguments)."""

ORDER = ("quickstart", "run", "sweep", "findings", "validate", "ls", "data", "eval", "judge", "diagnose", "sample",
         "evolve", "ui", "report", "regimes", "compare", "chat", "export", "serve")
"""The order ``tunelab --help`` lists the commands in."""


def build_parser() -> argparse.ArgumentParser:
    """The ``tunelab`` parser: one subcommand per entry of :data:`COMMANDS`, its help from the docstring."""
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    assert set(ORDER) == set(COMMANDS), "every command has its place in ORDER"
    for name in ORDER:
        fn, add_args = COMMANDS[name]
        doc = (fn.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc)
        add_args(p)
        p.set_defaults(fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``tunelab`` command ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come after options (`run r.yaml --out x a.b=c`); argparse stops at the option
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra

    try:
        return args.fn(args)
    except (ConfigError, DataError, ModelError, RegistryError, FolderLocked, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
