"""Fail on any import cycle between modules of a package (``make lint``).

import-linter's layers contract sees imports across layers only; a circle inside one package (two
modules of ``tunelab.data`` importing each other, one of them from inside a function) passes it. This
check reads the import graph grimp builds (the library under import-linter), which holds every import
statement of a module, at module level or inside a function, and reports each circle as its chain.

    python tools/import_cycles.py [package ...]     # default: tunelab; exit status 1 on a cycle
"""

from __future__ import annotations

import sys

import grimp


def cycles(package: str) -> list[list[str]]:
    """Each import circle of ``package`` once, as the chain ``a -> b -> ... -> a`` (shortest found)."""
    graph = grimp.build_graph(package)
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is None:
                continue
            circle = [module, *chain]
            key = frozenset(circle)
            if key not in seen:
                seen.add(key)
                found.append(circle)
    return found


def main(argv: list[str]) -> int:
    """Print each cycle of the packages named (default ``tunelab``); 1 when there is one."""
    status = 0
    for package in argv or ["tunelab"]:
        for circle in cycles(package):
            print(f"import cycle: {' -> '.join(circle)}")
            status = 1
        if status == 0:
            print(f"{package}: no import cycles")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
