"""Row formats: one raw record (a dict read from JSON/JSONL/Parquet) -> one Sample.

Each converter reads *canonical* field names (``instruction``, ``messages`` ...); a source's
``fields`` mapping says which column of the row holds each canonical field, e.g.
``{instruction: question, output: answer}``. Errors are :class:`DataError` naming the
row (``where``, e.g. ``data/x.jsonl:17``) and the field as the row spells it.

The converters are :mod:`tunelab.data.chat_formats` (the row reader; chat, instruction, dataset-preset
and preference rows) and :mod:`tunelab.data.agent_formats` (agent trajectories); here are their names
(:data:`FORMATS`), format detection and :func:`to_sample`.
"""

from __future__ import annotations

from tunelab.data.agent_formats import AGENT_FORMATS
from tunelab.data.chat_formats import CHAT_FORMATS, Converter, Reader, Row
from tunelab.io import DataError  # noqa: F401  (the data layer's error; defined low, in tunelab.io)
from tunelab.types import Sample

FORMATS: dict[str, Converter] = {**AGENT_FORMATS, **CHAT_FORMATS}
"""Format names usable as a source's ``format:`` (plus ``auto``)."""

# (format, canonical keys that identify it), most specific first.
_SIGNATURES: list[tuple[str, tuple[str, ...]]] = [
    ("trajectory", ("messages", "outcome")),
    ("nat_react", ("conversations", "info")),
    ("fireact", ("traj", "reward")),
    ("preference", ("chosen", "rejected")),
    ("unpaired", ("completion", "label")),
    ("unpaired", ("messages", "label")),
    ("messages", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("humaneval", ("prompt", "canonical_solution")),
    ("mbpp", ("code", "test_list")),
    ("alpaca", ("instruction", "output")),
    ("dolly", ("instruction", "response")),
    ("gsm8k", ("question", "answer")),
    ("prompt_completion", ("prompt", "completion")),
]


def detect_format(row: Row, fields: dict[str, str], where: str) -> str:
    """The format whose identifying keys the row has (after the ``fields`` mapping)."""
    keys = set(row) | {canon for canon, col in fields.items() if col in row}
    for fmt, needed in _SIGNATURES:
        if all(k in keys for k in needed):
            return fmt
    raise DataError(
        f"{where}: cannot detect the format from keys {sorted(map(str, row))}; "
        f"set format: to one of {', '.join(FORMATS)} (and fields: to map column names)"
    )


def to_sample(row: Row, fmt: str, fields: dict[str, str], where: str) -> Sample:
    """Convert one raw row to a Sample.

    Args:
        row: The record as read from the file.
        fmt: A name in :data:`FORMATS`, or ``auto`` to detect it from the row's keys.
        fields: Canonical field name -> the row's column name.
        where: ``file:line`` or ``file[index]``, used in error messages.

    Returns:
        The Sample; format-specific meta (``answer``, ``tests`` ...) is filled, ``source``
        and ``id`` are left to the caller.

    Raises:
        DataError: The row is malformed (missing field, unknown role, non-string content,
            empty conversation, no assistant turn); the message names the row and field.
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "auto":
        fmt = detect_format(row, fields, where)
    if fmt not in FORMATS:
        raise DataError(f"{where}: unknown format {fmt!r}; valid: auto, {', '.join(FORMATS)}")
    return FORMATS[fmt](Reader(row, fields, where))
