"""Seed instructions from any instruction file, or from the built-in ``instruct`` family.

A row gives its instruction as ``instruction`` (plus ``input``, or the first of ``instances``, as
in the Self-Instruct / Alpaca seed tasks), ``prompt``, ``question`` or ``messages`` (the first
user turn); its answer, when it has one, as ``output`` / ``response`` / ``completion`` /
``answer``, the ``instances``' output, or the last assistant turn. Errors name the file, the line
and the field.
"""

from __future__ import annotations

from typing import Any

from tunelab.data.instruction_rows import parse_seed
from tunelab.data.sources import read_rows, resolve_data_path, row_where
from tunelab.evolve.program import instruct_seeds
from tunelab.io import DataError


def load_seeds(spec: str, limit: int | None = None, seed: int = 0, recipe_dir: str | None = None) -> list[dict[str, Any]]:
    """The seeds: ``task:instruct`` (the family's train split) or a JSONL/JSON file (relative paths
    against $TUNELAB_DATA_DIR, then ``recipe_dir`` or the current folder); the first ``limit``.

    Raises:
        DataError: A missing file, a malformed row (file:line and field), duplicate ids, no rows.
    """
    if spec.startswith("task:"):
        if spec != "task:instruct":
            raise DataError(f"seeds {spec!r}: the only built-in seed task is task:instruct")
        return instruct_seeds(limit, seed)
    path = resolve_data_path(spec, recipe_dir)
    seeds: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for n, row in read_rows(path):
        if limit is not None and len(seeds) >= limit:
            break
        where = row_where(path, n)
        if isinstance(row, Exception):
            raise row
        item = parse_seed(where, row, n)
        if item["id"] in seen:
            raise DataError(f"{where}: field 'id': {item['id']!r} repeats the id of {seen[item['id']]}")
        seen[item["id"]] = where
        seeds.append(item)
    if not seeds:
        raise DataError(f"{path}: no seed rows")
    return seeds

