"""Study records: one compact, committed file per finished run of a sweep, enough to rebuild the study.

A run folder (weights, checkpoints, caches) is a cache that may vanish with the machine; a study's
results must not. Every finished run of a sweep writes ``<records>/<run name>.json.gz`` (by default
``studies/<sweep name>/records/`` under the directory tunelab is run from; ``records:`` in the sweep
file or ``--records DIR`` moves it). A record holds:

* ``study``, ``run``, ``arm`` (factor -> level), ``seed``, ``config_digest`` and the resolved
  ``config`` (where the run was written left out);
* ``host``: CPU model, its AVX/AMX flags, cores, CUDA device, precision and library versions;
* ``train``: the training summary (steps, tokens, seconds ...), ``loss_curve`` (``[step, loss]``
  thinned to at most :data:`CURVE_POINTS` points), ``heldout_curve`` and ``peak_mem_mb``;
* ``results``: the run's ``results.json`` (each task's base and tuned scores with CIs);
* ``items``: per task its sign (+1 higher is better, -1 a loss) and every evaluation item: id, the
  value the paired tests compare, the prediction cut to :data:`PREDICTION_CHARS` characters (an answer no
  verifier scored, kept for a judge, to :data:`JUDGED_CHARS`: ``tunelab sweep judge`` reads it), and for
  multiple choice each choice's log-likelihood and the answer's index (an ensemble of runs is scored
  from these);
* ``diagnostics``: every diagnostic's result; ``seconds``: the whole run, diagnostics included;
* ``pools`` (runs on generated sources): each pool's kind, key, rows and its build's summary (a sampled
  pool's success rate and failure kinds), what a study's pool gate and findings read.

No weights: a typical record is a few KB to a few tens of KB. Records are written byte for byte
reproducibly (:func:`tunelab.io.write_json_gz`), so rewriting one from the same run changes nothing.

:func:`load_records` reads a study's records back against its sweep file: a record of another study is
an error naming both; a record whose config no longer matches any planned run is *stale*: said, and
not counted. A planned run whose config is digest for digest a run of another study in ``studies/``
(a shared cell: an interaction study reusing a main study's arms) takes that study's record, marked
``shared_from``, and is not run again. The aggregate, the findings and the report are computed from the
records alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.config import ConfigError, to_dict
from tunelab.io import DataError, read_json_gz, read_jsonl, write_json_gz
from tunelab.runner.compare import item_value
from tunelab.runner.recipe_model import folder as generated_folder

FORMAT = "tunelab.study-record/1"
CURVE_POINTS = 200
PREDICTION_CHARS = 500
JUDGED_CHARS = 8000
"""How much of an answer without a verifier score (an open-ended task such as ``instructions``) a record keeps:
a judge compares these answers from the records, so they are kept whole (256 new tokens are ~1,500 characters)."""
SUFFIX = ".json.gz"
ROW_KEYS = ("correct", "loss", "n", "c", "score", "rating", "value", "tokens", "failure")
"""Scalar fields of an evaluation row kept beside the value (what the tables and diagnostics read)."""


def thin(points: list[Any], limit: int = CURVE_POINTS) -> list[Any]:
    """At most ``limit`` points spread evenly over ``points``, the first and the last kept."""
    if len(points) <= limit:
        return list(points)
    idx = sorted({round(i * (len(points) - 1) / (limit - 1)) for i in range(limit)})
    return [points[i] for i in idx]


def _prediction(row: dict[str, Any]) -> str:
    """The item's generated text (first completion), cut to :data:`PREDICTION_CHARS` (:data:`JUDGED_CHARS` for
    a row no verifier scored: no ``correct``)."""
    cut = PREDICTION_CHARS if "correct" in row else JUDGED_CHARS
    for key in ("completions", "prediction", "completion", "output", "response"):
        value = row.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, dict):
            value = value.get("text") or value.get("content") or json.dumps(value)
        if isinstance(value, str):
            return value[:cut]
    return ""


def task_items(path: Path) -> dict[str, Any]:
    """A task's evaluation rows (``eval/tuned/<task>.jsonl``) as ``{sign, rows}``: each row its id, the
    compared value (higher is better; a loss negated, ``sign`` -1), kept scalars and the prediction."""
    rows, sign = [], 1
    for row in read_jsonl(path):
        value = item_value(row)
        if value is None:
            continue
        if "loss" in row and isinstance(row["loss"], (int, float)) and value == -float(row["loss"]):
            sign = -1
        kept = {k: row[k] for k in ROW_KEYS if isinstance(row.get(k), (int, float, bool, str))}
        if isinstance(row.get("logliks"), list) and all(isinstance(v, (int, float)) for v in row["logliks"]):
            kept["logliks"] = row["logliks"]  # multiple choice: an ensemble can be scored from records
            kept["answer_index"] = next((j for j, c in enumerate(row.get("choices", [])) if c == row.get("answer")), -1)
        rows.append({"id": str(row["id"]), "value": value, **kept, "prediction": _prediction(row)})
    return {"sign": sign, "rows": rows}


def _host(env: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``env.json`` that say which machine made a figure."""
    packages = env.get("packages", {})
    return {"cpu": env.get("cpu"), "cpu_flags": env.get("cpu_flags", []), "cores": env.get("cores"),
            "cuda": env.get("cuda"), "precision": env.get("precision"), "allocator": env.get("allocator"),
            "torch": packages.get("torch"), "transformers": packages.get("transformers"),
            "peft": packages.get("peft"), "tunelab": packages.get("tunelab")}


def host_kind(host: dict[str, Any]) -> str:
    """A key for "this kind of host" (timings travel only between the same kind): the CUDA device
    or the CPU model, with the precision."""
    return f"{host.get('cuda') or host.get('cpu') or 'unknown'} / {host.get('precision') or '?'}"


def build_record(study: str, run_dir: Path, *, arm: dict[str, str], seed: int, config: Any,
                 config_digest: str) -> dict[str, Any]:
    """The record of a finished run folder (see the module docstring)."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
    metrics = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    curve = [[m["step"], round(float(m["loss"]), 5)] for m in metrics if "loss" in m and "step" in m]
    held = [[m["step"], round(float(m["heldout_loss"]), 5)] for m in metrics if "heldout_loss" in m]
    peaks = [float(m["peak_mem_mb"]) for m in metrics if isinstance(m.get("peak_mem_mb"), (int, float))]
    items = {}
    for path in sorted((run_dir / "eval" / "tuned").glob("*.jsonl")):
        items[path.stem] = task_items(path)
    diagnostics = {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "diagnostics").glob("*.json"))}
    diag_seconds = sum(float(d.get("seconds", 0) or 0) for d in diagnostics.values() if isinstance(d, dict))
    cfg = to_dict(config) if not isinstance(config, dict) else dict(config)
    for key in ("out", "name", "recipe_dir"):
        cfg.pop(key, None)
    pools = generated_pools(run_dir)
    return {
        "format": FORMAT, "study": study, "run": run_dir.name, "arm": dict(arm), "seed": int(seed),
        "config_digest": config_digest, "config": cfg, "host": _host(env),
        "train": results.get("run", {}).get("train", {}), "loss_curve": thin(curve), "heldout_curve": thin(held),
        "peak_mem_mb": max(peaks) if peaks else None, "results": results, "items": items,
        "diagnostics": diagnostics, **({"pools": pools} if pools else {}),
        "seconds": round(float(results.get("run", {}).get("seconds", 0) or 0) + diag_seconds, 1),
    }


def generated_pools(run_dir: Path) -> dict[str, Any]:
    """The make-up of each generated source a run trained on (``data/mixture.json`` names them; the build's
    summary sits beside the pool in the cache): ``{source: {kind, key, rows, summary}}``; {} when none or
    when the cache no longer holds the summary."""
    mixture = Path(run_dir) / "data" / "mixture.json"
    if not mixture.is_file():
        return {}
    out = {}
    for source, built in (json.loads(mixture.read_text()).get("generated") or {}).items():
        info = generated_folder() / Path(built["file"]).with_suffix(".json").name
        if info.is_file():
            meta = json.loads(info.read_text())
            out[source] = {"kind": meta.get("inputs", {}).get("kind"), "key": built["key"], "rows": meta.get("rows"),
                           "summary": meta.get("summary"), **({"pinned": meta["pinned"]} if meta.get("pinned") else {})}
    return out


def sibling_folders(study_folder: Path, sub: str) -> list[Path]:
    """``<studies>/*/<sub>`` of the other studies beside ``study_folder`` (sorted): where a study finds the
    pools (``pools``) and runs (``records``) it shares with its siblings."""
    own = (Path(study_folder) / sub).resolve()
    return sorted(p for p in Path(study_folder).parent.glob(f"*/{sub}") if p.is_dir() and p.resolve() != own)


def record_path(folder: Path, run: str) -> Path:
    """Where the record of ``run`` lives in a records ``folder``."""
    return Path(folder) / f"{run}{SUFFIX}"


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` into ``folder`` (atomically, reproducibly); returns its path."""
    path = record_path(folder, record["run"])
    write_json_gz(path, record)
    return path


def read_record(path: Path) -> dict[str, Any]:
    """One record file, checked for its format.

    Raises:
        DataError: Naming the file when it is not a study record.
    """
    record = read_json_gz(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path}: not a tunelab study record (format {FORMAT!r} expected)")
    for key in ("study", "run", "arm", "seed", "config_digest", "results", "items"):
        if key not in record:
            raise DataError(f"{path}: field {key!r} is missing")
    return record


def load_records(folder: Path, study: str, planned: dict[str, str],
                 shared: list[Path] | tuple[Path, ...] = ()) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The records of ``study`` in ``folder`` matched to its planned runs (``{run name: config digest}``).

    ``shared``: other studies' records folders. A planned run with no record of its own takes the record
    of another study whose run had the same resolved config (the same digest, seed included: the same
    run), renamed to this study's run and marked ``shared_from: "<study>/<file>"``; the file is read,
    never copied or changed.

    Returns:
        ``({run name: record}, stale)``: ``stale`` says, per record file whose config no longer
        matches a planned run, why it is not counted.

    Raises:
        ConfigError: A record of another study (naming the file, its study and this one).
        DataError: A file that is not a study record.
    """
    found: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    for path in sorted(Path(folder).glob(f"*{SUFFIX}")):
        record = read_record(path)
        if record["study"] != study:
            raise ConfigError(f"{path}: a record of study {record['study']!r}, not of {study!r}: "
                              "records of different sweeps must live in different folders")
        name = record["run"]
        if name not in planned or planned[name] != record["config_digest"]:
            stale.append(f"{path.name}: stale (its config, digest {record['config_digest']}, matches no run "
                         "of the sweep file as it is now); not counted")
            continue
        found[name] = record
    wanted = {digest: name for name, digest in planned.items() if name not in found}
    for other in shared:
        for path in sorted(Path(other).glob(f"*{SUFFIX}")) if wanted else ():
            digest = path.name[: -len(SUFFIX)].rsplit("-", 1)[-1]  # run names end with their digest
            if digest not in wanted:
                continue
            record = read_record(path)
            if record["config_digest"] == digest:
                name = wanted.pop(digest)
                found[name] = {**record, "study": study, "run": name,
                               "shared_from": f"{record['study']}/{path.name}"}
    return found, stale
