"""Work shared between runs (a sweep's arms and seeds): tokenized data and base-model evaluations.

Both caches are folders of files named by a hash of everything that determines their content, so
a run reuses an entry only when it would have computed the same thing:

* data: the recipe's ``data`` section, the model's tokenizer (name, revision, chat template), the
  evaluation sets decontamination reads, and the tunelab version; the entry is the built
  :class:`~tunelab.data.pipeline.DataBundle` (pickled: a local cache written by this package).
  Files under ``TUNELAB_DATA_DIR`` are assumed not to change during a sweep.
* reference log-probabilities (preference objectives): the data key, the objective, the precision
  and the base model's weights; the entry is each row's reference log-probabilities, so the base
  model scores the pairs once per (data, weights), across a sweep's methods and seeds.
* base evaluation: the model and its weights (file sizes and times), the task and its options, the
  evaluation settings and the precision; the entry is the task's scores and per-item rows. Runs use
  ``<cache>/base_eval`` (``TUNELAB_CACHE``, default ``~/.cache/tunelab``) unless told otherwise, so a
  second run of the same recipe (the quickstart's too) skips the base model's evaluation.

Writes are atomic (a temporary file renamed into place), so parallel runs that miss together
both compute and the last rename wins with identical content.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from importlib import metadata
from pathlib import Path

from tunelab.config import RunConfig, to_dict
from tunelab.data.pipeline import DataBundle
from tunelab.eval.harness import EvalResult
from tunelab.io import digest as _digest
from tunelab.io import write_json
from tunelab.train.objectives import build_objective


def _version() -> str:
    """The installed tunelab version (part of every key: a new version recomputes)."""
    try:
        return metadata.version("tunelab")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "dev"


ROWS_LAYOUT = 2
"""Bumped when the pickled preference rows change shape (2: SeqRow keeps its sequences apart)."""


def data_key(cfg: RunConfig) -> str:
    """The key of a recipe's built data (see the module docstring)."""
    model = to_dict(cfg.model)
    tokenizer = {k: model.get(k) for k in ("name", "revision", "chat_template")}
    decontaminating = any(t.get("name") == "decontaminate" for t in cfg.data.transforms)
    evals = ({"tasks": cfg.eval.tasks, "options": cfg.eval.task_options, "seed": cfg.eval.seed}
             if decontaminating else None)
    if evals is not None and (cfg.eval.task_limits or cfg.eval.limit != 200):  # more items indexed (keys
        evals["counts"] = {t: cfg.eval.items_for(t) for t in cfg.eval.tasks}  # made before stay valid)
    kind = build_objective(cfg.objective).kind
    kind = None if kind == "tokens" else kind  # SFT's keys stay what they were
    return _digest({"data": to_dict(cfg.data), "tokenizer": tokenizer, "eval": evals, "objective": kind,
                    "rows": ROWS_LAYOUT if kind else None,
                    "recipe_dir": cfg.recipe_dir, "data_dir": os.environ.get("TUNELAB_DATA_DIR"),
                    "version": _version()})


def load_data(folder: Path, key: str) -> DataBundle | None:
    """The cached data under ``key``, or None."""
    path = folder / f"{key}.pkl"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return pickle.load(f)


def save_data(folder: Path, key: str, data: DataBundle) -> None:
    """Cache ``data`` under ``key`` (without the tokenizer's per-object encoding cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    bundle = DataBundle(data.sources, data.samples, data.rows, data.heldout_rows, data.report)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pkl")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(bundle, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, folder / f"{key}.pkl")


def reference_key(data_key_: str, objective: dict, precision: str, model_fp: str) -> str:
    """The key of the reference log-probabilities of a run's preference rows: the data, the
    objective's name (what rows it reads), the precision and the base model's weights."""
    return _digest({"data": data_key_, "objective": objective.get("name"), "precision": precision,
                    "weights": model_fp, "version": _version()})


def load_reference(folder: Path, key: str) -> list[list[float]] | None:
    """Cached reference log-probabilities under ``key``, or None."""
    path = folder / f"{key}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save_reference(folder: Path, key: str, refs: list[list[float]]) -> None:
    """Cache reference log-probabilities under ``key`` (atomic)."""
    write_json(folder / f"{key}.json", refs)


def model_fingerprint(resolved: str) -> str:
    """What identifies the weights a run loaded: for a local folder, every file's name, size and
    modification time (a rewritten checkpoint gets a new fingerprint); else the hub id itself."""
    folder = Path(resolved)
    if not folder.is_dir():
        return resolved
    return _digest(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file()))


def base_eval_key(cfg: RunConfig, task: str, precision: str, model_fp: str = "") -> str:
    """The key of one task's evaluation of the untrained model (see the module docstring):
    ``model_fp`` is :func:`model_fingerprint` of the weights loaded."""
    settings = to_dict(cfg.eval)
    for k in ("tasks", "task_options", "baseline", "merge_adapters"):  # the untrained model has no adapters
        settings.pop(k, None)
    settings.pop("task_limits", None)  # this task's own count only (keys made before the option stay valid)
    settings["limit"] = cfg.eval.items_for(task)
    if not settings.get("latency_items"):  # unset: the keys cached before the option existed still hold
        settings.pop("latency_items", None)
    return _digest({"model": to_dict(cfg.model), "weights": model_fp, "task": task,
                    "options": cfg.eval.task_options.get(task, {}), "eval": settings, "precision": precision,
                    "data_dir": os.environ.get("TUNELAB_DATA_DIR"), "version": _version()})


def load_base_eval(folder: Path, key: str) -> EvalResult | None:
    """The cached evaluation under ``key``, or None."""
    path = folder / f"{key}.json"
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    return EvalResult(entry["scores"], entry["rows"], entry["seconds"])


def save_base_eval(folder: Path, key: str, result: EvalResult) -> None:
    """Cache one task's evaluation under ``key``."""
    write_json(folder / f"{key}.json", {"scores": result.scores, "rows": result.rows, "seconds": result.seconds})

