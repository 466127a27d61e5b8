"""Data sources -> Samples: local files (JSON / JSONL / Parquet, gzip too), hub datasets
and built-in task families, each with a held-out split and provenance in ``meta``.

Row formats live in :mod:`tunelab.data.formats`; this module finds files, reads rows,
converts them with the source's ``format`` / ``fields`` and applies the per-source
options (``system``, ``max_examples``, ``on_error``).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from tunelab.config import SourceConfig
from tunelab.data.formats import FORMATS, detect_format, to_sample
from tunelab.data.prompt_parts import PARTS_KEY  # noqa: F401  (registers the prompt_structure format)
from tunelab.data.tasks.base import SPLITS, TASK_FAMILIES, get_family
from tunelab.io import DataError, checked_object, iter_jsonl, open_text
from tunelab.types import Sample

__all__ = [
    "DataError", "LoadedSource", "check_source", "detect_format", "load_mt_bench", "load_source",
    "read_rows", "resolve_data_files", "resolve_data_path", "to_sample",
]

DATA_DIR_ENV = "TUNELAB_DATA_DIR"
ID_FIELDS = ("id", "task_id", "question_id", "idx")
"""Row columns taken as the sample's own id, first match wins (``fields: {id: col}`` overrides)."""
MAX_KEPT_ERRORS = 5
TASK_DEFAULT_COUNT = 2000
FILE_KINDS = ("jsonl", "json", "parquet")


@dataclass
class LoadedSource:
    """One source after loading and conversion, before transforms and mixing."""

    name: str
    """The source's name (also ``meta["source"]`` of every sample)."""
    train: list[Sample]
    """Training samples, in file (or generation) order."""
    heldout: list[Sample]
    """Held-out samples (for held-out loss), disjoint from ``train``."""
    removed: dict[str, int] = field(default_factory=dict)
    """Rows dropped while loading, by reason (``malformed``)."""
    errors: list[str] = field(default_factory=list)
    """The first few messages of skipped malformed rows (``on_error: skip``)."""
    origin: str = ""
    """Where the data came from: resolved file path, ``hub:<id>`` or ``task:<family>``."""


# ----------------------------------------------------------------------------- paths and rows


def resolve_data_path(path: str, recipe_dir: str | None) -> Path:
    """Find a data file.

    Absolute paths are used as they are. Relative paths are looked up under
    ``$TUNELAB_DATA_DIR`` first, then under ``recipe_dir`` (the current folder when there is
    no recipe folder).

    Raises:
        DataError: The file is missing; the message lists every place looked in.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        if p.is_file():
            return p
        raise DataError(f"data file not found: {p}")
    places: list[tuple[str, Path]] = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        places.append((f"${DATA_DIR_ENV}", Path(env) / p))
    places.append(("recipe folder", Path(recipe_dir) / p) if recipe_dir else ("current folder", Path.cwd() / p))
    for _, candidate in places:
        if candidate.is_file():
            return candidate
    looked = "; ".join(f"{c} ({label})" for label, c in places)
    unset = "" if env else f" (${DATA_DIR_ENV} is not set)"
    raise DataError(f"data file {path!r} not found; looked in: {looked}{unset}")


def resolve_data_files(path: str, recipe_dir: str | None) -> list[Path]:
    """The files of a source's ``path``: one file (:func:`resolve_data_path`) or, for a pattern with
    ``*``, ``?`` or ``[`` (``nat_strategyqa/strategyqa_*.json``), every match in sorted order, from the
    first place that has any (``$TUNELAB_DATA_DIR``, then ``recipe_dir``).

    Raises:
        DataError: Nothing matches; the message lists every place looked in.
    """
    if not any(ch in path for ch in "*?["):
        return [resolve_data_path(path, recipe_dir)]
    p = Path(path).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    places = [p] if p.is_absolute() else [Path(env) / p] if env else []
    if not p.is_absolute():
        places.append(Path(recipe_dir or Path.cwd()) / p)
    for pattern in places:
        found = sorted(f for f in Path(pattern.anchor).glob(str(pattern.relative_to(pattern.anchor))) if f.is_file())
        if found:
            return found
    unset = "" if env or p.is_absolute() else f" (${DATA_DIR_ENV} is not set)"
    raise DataError(f"no data file matches {path!r}; looked in: {'; '.join(map(str, places))}{unset}")


def file_kind(path: Path) -> str:
    """``jsonl`` | ``json`` | ``parquet`` from the file name (a ``.gz`` suffix is allowed)."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    kind = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if kind not in FILE_KINDS:
        raise DataError(f"{path}: unsupported file type; use .jsonl, .json or .parquet (optionally .gz)")
    return kind


def row_where(path: Path, n: int) -> str:
    """How errors name a row: ``file:line`` for JSONL (1-based), ``file[index]`` otherwise."""
    return f"{path}:{n}" if file_kind(path) == "jsonl" else f"{path}[{n}]"


def _json_rows(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    with open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    elif isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        data = [{"id": key, **record} for key, record in data.items()]  # records keyed by id (FireAct)
    if not isinstance(data, list):
        raise DataError(f'{path}: expected a list of records, {{"data": [...]}} or records keyed by id, '
                        f"got {type(data).__name__}")
    for i, record in enumerate(data):
        yield i, checked_object(f"{path}[{i}]", record)


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    yield from enumerate(pq.read_table(path).to_pylist())


def read_rows(path: Path) -> Iterator[tuple[int, dict | Exception]]:
    """Yield ``(row number, record or error)`` for every record of a data file.

    The row number is the 1-based line for JSONL and the 0-based index for JSON and
    Parquet. A line that is not valid JSON (or not an object) yields a :class:`DataError`
    naming the file and line; it is never dropped silently.
    """
    kind = file_kind(path)
    readers = {"jsonl": iter_jsonl, "json": _json_rows, "parquet": _parquet_rows}
    yield from readers[kind](path)


# ----------------------------------------------------------------------------- conversion


def _row_id(row: dict, fields: dict[str, str]) -> str | None:
    keys = (fields["id"],) if "id" in fields else ID_FIELDS
    for key in keys:
        value = row.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def _convert(rows: Iterable[tuple[str, int, dict | Exception]], src: SourceConfig, out: LoadedSource) -> list[Sample]:
    """Rows -> Samples with ``source`` and unique ``id``; bad rows raise or are counted.

    With ``format: auto`` the format is detected from the first readable row and used for all.
    """
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    fmt = src.format
    for where, n, row in rows:
        try:
            if isinstance(row, Exception):
                raise row
            if fmt == "auto":  # detected once, on the first row: later rows must match it
                fmt = detect_format(row, src.fields, where)
            sample = to_sample(row, fmt, src.fields, where)
        except DataError as e:
            if src.on_error == "fail":
                raise
            out.removed["malformed"] = out.removed.get("malformed", 0) + 1
            if len(out.errors) < MAX_KEPT_ERRORS:
                out.errors.append(str(e))
            continue
        rid = _row_id(row, src.fields) or f"{src.name}-{n}"
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] > 1:  # e.g. several trajectories for one question id
            rid = f"{rid}#{seen[rid]}"
        sample.meta.update(source=src.name, id=rid)
        if isinstance(sample.meta.get("origin"), dict):  # trajectories: which file they came from
            sample.meta["origin"].setdefault("file", Path(re.sub(r"(:\d+|\[\d+\])$", "", where)).name)
        samples.append(sample)
    return samples


def _file_rows(path: Path) -> Iterator[tuple[str, int, dict | Exception]]:
    for n, row in read_rows(path):
        yield row_where(path, n), n, row


def _hub_rows(src: SourceConfig) -> Iterator[tuple[str, int, dict | Exception]]:  # pragma: no cover
    """Rows of a hub dataset (needs network; ``options`` go to ``load_dataset``)."""
    ds = datasets.load_dataset(src.hub, split=src.split, **src.options)
    for i, row in enumerate(ds):
        yield f"hub:{src.hub}[{i}]", i, dict(row)


def _questions_file(src: SourceConfig, path: Path, recipe_dir: str | None) -> Path | None:
    """The questions file joined into NAT trajectories: the source option ``questions``, else
    ``train.jsonl`` beside the data file (None: neither)."""
    if "questions" in src.options:
        return resolve_data_path(str(src.options["questions"]), recipe_dir)
    beside = path.parent / "train.jsonl"
    return beside if beside.is_file() and beside != path else None


def _with_questions(rows: Iterable[tuple[str, int, dict | Exception]], src: SourceConfig, path: Path,
                    recipe_dir: str | None) -> Iterator[tuple[str, int, dict | Exception]]:
    """The rows, with ``question`` and ``answer`` joined by ``id`` from the questions file into NAT
    trajectories (``conversations`` + ``info`` and no ``question``: the NAT files hold none)."""
    table: dict[str, dict] | None = None
    for where, n, row in rows:
        if src.format in ("nat_react", "auto") and isinstance(row, dict) and "info" in row \
                and "conversations" in row and "question" not in row:
            if table is None:
                qpath = _questions_file(src, path, recipe_dir)
                table = {str(q["id"]): q for _, q in (read_rows(qpath) if qpath else [])
                         if isinstance(q, dict) and "id" in q and isinstance(q.get("question"), str)}
            q = table.get(str(row.get("id")))
            if q is not None:
                row = {**row, "question": q["question"], "answer": q.get("answer")}
        yield where, n, row


def split_heldout(samples: list[Sample], n: int, rng: random.Random) -> tuple[list[Sample], list[Sample]]:
    """A seeded shuffle decides the ``n`` held-out samples (at most half); train keeps file order."""
    k = min(n, len(samples) // 2)
    order = list(range(len(samples)))
    rng.shuffle(order)
    held_idx = order[len(order) - k:]
    chosen = set(held_idx)
    return [s for i, s in enumerate(samples) if i not in chosen], [samples[i] for i in held_idx]


def seeded_subset(samples: list[Sample], k: int, rng: random.Random) -> list[Sample]:
    """``k`` samples drawn without replacement, kept in their original order."""
    if k >= len(samples):
        return list(samples)
    keep = sorted(rng.sample(range(len(samples)), k))
    return [samples[i] for i in keep]


def with_system(sample: Sample, system: str) -> Sample:
    """The sample with ``system`` as its system turn (replacing one it already has)."""
    msgs = list(sample.messages)
    turn = {"role": "system", "content": system}
    if msgs and msgs[0]["role"] == "system":
        msgs[0] = turn
    else:
        msgs.insert(0, turn)
    return Sample(msgs, sample.meta)


# ----------------------------------------------------------------------------- sources


SOURCE_KINDS = ("task", "path", "hub", "generate")
"""Where a source's rows come from: exactly one of these keys is set."""


def _kinds(src: SourceConfig) -> list[str]:
    return [k for k in SOURCE_KINDS if getattr(src, k)]


def _load_task(src: SourceConfig, seed: int, heldout: int) -> LoadedSource:
    task_family_names()
    family = get_family(src.task, **src.options)
    train = family.samples(src.split or "train", src.count or TASK_DEFAULT_COUNT, seed)
    held = family.samples("test", heldout, seed) if heldout > 0 else []
    for s in train + held:
        s.meta["source"] = src.name
    return LoadedSource(src.name, train, held, origin=f"task:{src.task}")


def load_source(src: SourceConfig, recipe_dir: str | None, seed: int, heldout: int) -> LoadedSource:
    """Load one source: read, convert, split off held-out samples, apply per-source options.

    Args:
        src: The source's recipe entry (exactly one of ``task``, ``path``, ``hub``; a ``generate``
            source is turned into a ``path`` one by :mod:`tunelab.runner.generated` first).
        recipe_dir: The recipe's folder (relative paths resolve against it after
            ``$TUNELAB_DATA_DIR``).
        seed: Seed for task generation, the held-out split and the ``max_examples`` cap.
        heldout: Held-out samples wanted (file sources give at most half their rows).

    Returns:
        The LoadedSource; every sample has ``meta["source"]`` and a stable ``meta["id"]``
        (the row's own ``id`` / ``task_id`` / ``question_id`` / ``idx``, else
        ``<source>-<row number>``; repeats get ``#2``, ``#3`` ...).

    Raises:
        DataError: A missing file, or (``on_error: fail``) the first malformed row.
    """
    kinds = _kinds(src)
    if len(kinds) != 1:
        raise DataError(f"source {src.name!r}: set exactly one of {', '.join(SOURCE_KINDS)} "
                        f"(got {', '.join(kinds) or 'none'})")
    if src.generate:  # the runner builds the file first and hands over the source with ``path`` set
        raise DataError(f"source {src.name!r}: a generated source is built by the runner "
                        "(tunelab.runner.generated) before it is loaded")
    if src.task:
        out = _load_task(src, seed, heldout)
    else:
        if src.path:
            paths = resolve_data_files(src.path, recipe_dir)
            out = LoadedSource(src.name, [], [], origin=", ".join(map(str, paths)))
            rows = (row for path in paths for row in _with_questions(_file_rows(path), src, path, recipe_dir))
        else:  # pragma: no cover - needs network
            out = LoadedSource(src.name, [], [], origin=f"hub:{src.hub}")
            rows = _hub_rows(src)
        samples = _convert(rows, src, out)
        out.train, out.heldout = split_heldout(samples, heldout, random.Random(f"heldout/{src.name}/{seed}"))
    if src.system:
        out.train = [with_system(s, src.system) for s in out.train]
        out.heldout = [with_system(s, src.system) for s in out.heldout]
    if src.max_examples is not None:
        out.train = seeded_subset(out.train, src.max_examples, random.Random(f"cap/{src.name}/{seed}"))
    return out


def task_family_names() -> list[str]:
    """Registered task families (the built-in ones are imported first)."""
    pkg = importlib.import_module("tunelab.data.tasks")
    if getattr(pkg, "__file__", None) is None:  # no __init__ yet: import the family modules
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"tunelab.data.tasks.{mod.name}")
    return TASK_FAMILIES.names()


def check_source(src: SourceConfig, recipe_dir: str | None) -> list[str]:
    """Problems with a source found without loading it (for ``tunelab validate``; the options of a
    ``generate`` source are the runner's to check: :func:`tunelab.runner.generated.check_generated`)."""
    problems: list[str] = []
    tag = f"source {src.name!r}"
    kinds = _kinds(src)
    if len(kinds) != 1:
        problems.append(f"{tag}: set exactly one of {', '.join(SOURCE_KINDS)} (got {', '.join(kinds) or 'none'})")
    if src.task:
        names = task_family_names()
        if src.task not in names:
            problems.append(f"{tag}: unknown task family {src.task!r}; valid: {', '.join(names) or 'none'}")
        if src.split not in SPLITS:
            problems.append(f"{tag}: unknown split {src.split!r} for a task; valid: {', '.join(SPLITS)}")
    if src.path:
        try:
            for path in resolve_data_files(src.path, recipe_dir):
                file_kind(path)
        except DataError as e:
            problems.append(f"{tag}: {e}")
    if src.path and "questions" in src.options:
        try:
            resolve_data_path(str(src.options["questions"]), recipe_dir)
        except DataError as e:
            problems.append(f"{tag}: options.questions: {e}")
    if src.format != "auto" and src.format not in FORMATS:
        problems.append(f"{tag}: unknown format {src.format!r}; valid: auto, {', '.join(FORMATS)}")
    return problems


# ----------------------------------------------------------------------------- eval-only prompts


def load_mt_bench(path: str | Path) -> list[dict[str, Any]]:
    """MT-Bench / Vicuna-bench question files: multi-turn prompts without answers.

    Args:
        path: A ``question.jsonl`` (absolute, or relative to ``$TUNELAB_DATA_DIR`` / the
            current folder).

    Returns:
        One dict per question: ``id`` (str), ``category``, ``turns`` (the user turns) and
        ``reference`` (reference answers, or None).
    """
    resolved = resolve_data_path(str(path), None)
    out = []
    for n, row in read_rows(resolved):
        where = row_where(resolved, n)
        if isinstance(row, Exception):
            raise row
        turns = row.get("turns")
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise DataError(f"{where}: field 'turns': expected a non-empty list of strings")
        if "question_id" not in row:
            raise DataError(f"{where}: field 'question_id': missing")
        out.append({
            "id": str(row["question_id"]),
            "category": str(row.get("category", "")),
            "turns": turns,
            "reference": row.get("reference"),
        })
    return out
