"""Reading and writing the project's files: one JSONL reader with ``file:line`` errors, atomic writers.

Every layer reads JSONL through :func:`read_jsonl` (strict: the first bad line is an error naming
the file and line) or :func:`iter_jsonl` (lenient: a bad line is yielded as its error, for sources
whose recipe says ``on_error: skip``), and writes results with :func:`write_json` /
:func:`write_jsonl` (a temporary file renamed over the target, so a reader never sees half a file).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class DataError(ValueError):
    """A data problem; the message names the file, the row and the field."""


def open_text(path: Path) -> IO[str]:
    """A UTF-8 text handle; ``.gz`` files are decompressed on the fly."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def checked_object(where: str, record: Any) -> dict | DataError:
    """``record`` if it is a JSON object, else the error naming ``where``."""
    if isinstance(record, dict):
        return record
    return DataError(f"{where}: expected a JSON object, got {type(record).__name__}")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict | DataError]]:
    """``(line number, object or its error)`` for every non-blank line (1-based lines).

    Raises:
        DataError: The file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, DataError(f"{path}:{line_no}: invalid JSON: {e.msg} (column {e.colno})")
                continue
            yield line_no, checked_object(f"{path}:{line_no}", record)


def read_jsonl(path: str | Path, *, with_where: bool = False) -> list[Any]:
    """Every object of a JSONL file (``.gz`` allowed); the first bad line raises.

    Args:
        path: The file.
        with_where: Return ``(\"file:line\", row)`` pairs, for errors found later about a row.

    Raises:
        DataError: Naming the file and line of the first line that is not a JSON object.
    """
    rows = []
    for line_no, row in iter_jsonl(path):
        if isinstance(row, DataError):
            raise row
        rows.append((f"{path}:{line_no}", row) if with_where else row)
    return rows


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    os.replace(tmp, path)
