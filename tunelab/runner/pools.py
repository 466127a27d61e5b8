"""A study's generated pools travel with its records.

A generated source (a model's sampled trajectories, evolved instructions) is built once into the
cache under its key (:mod:`tunelab.runner.generated`). The cache is not committed, so a study
continued on a fresh machine would sample its pool anew, and bf16 rounding on another CPU can change
the samples: the seeds of one study would then train on different pools. So a sweep copies each
pool its recorded runs trained on into the study folder (``studies/<study>/pools/<kind>-<key>.jsonl.gz``
and the build's ``.json``; gzip, reproducible bytes) and, before running, copies committed pools into
the cache where it lacks them: every run of a study, in any session and on any machine, trains on the
rows its first run sampled, and nothing is sampled twice.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, load_recipe
from tunelab.io import digest, write_bytes, write_json
from tunelab.runner.generated import key_inputs, parse_generated, pin_key
from tunelab.runner.recipe_model import RECIPE_PREFIX, folder, recipe_path

POOLS = "pools"
"""The folder of a study's pools, beside its ``records``."""


def import_pools(study_folder: Path) -> list[str]:
    """Copy the study's committed pools into the cache where it has no file of that name; the names
    copied (``<kind>-<key>``)."""
    src = Path(study_folder) / POOLS
    if not src.is_dir():
        return []
    cache, done = folder(), []
    for packed in sorted(src.glob("*.jsonl.gz")):
        name = packed.name[: -len(".jsonl.gz")]
        target = cache / f"{name}.jsonl"
        if target.is_file():
            continue
        cache.mkdir(parents=True, exist_ok=True)
        info = packed.with_name(f"{name}.json")
        if info.is_file():
            shutil.copyfile(info, cache / info.name)
        write_bytes(target, gzip.decompress(packed.read_bytes()))  # atomic: the pool appears whole
        done.append(name)
    return done


def export_pools(study_folder: Path, records: Iterable[dict[str, Any]]) -> list[str]:
    """Copy into the study folder every pool the ``records`` trained on that it lacks and the cache holds
    (the build's ``.json`` beside it); the names copied. A pool the study kept across a code change
    (``pinned``) is not copied again: the study holds it under its first key."""
    dest, cache, done = Path(study_folder) / POOLS, folder(), []
    for record in records:
        for pool in (record.get("pools") or {}).values():
            name = f"{pool.get('kind')}-{pool.get('key')}"
            packed = dest / f"{name}.jsonl.gz"
            source = cache / f"{name}.jsonl"
            if pool.get("pinned") or packed.is_file() or not source.is_file() or name in done:
                continue
            dest.mkdir(parents=True, exist_ok=True)
            if source.with_suffix(".json").is_file():
                shutil.copyfile(source.with_suffix(".json"), dest / f"{name}.json")
            write_bytes(packed, gzip.compress(source.read_bytes(), compresslevel=9, mtime=0))
            done.append(name)
    return done


def _generated_sources(configs: Iterable[RunConfig]) -> Iterator[tuple[Any, str | None]]:
    """Every generated source of ``configs`` with its recipe folder, and of the recipes whose models they
    start from (``model: recipe:...``, followed once each)."""
    todo, seen = list(configs), set()
    while todo:
        cfg = todo.pop()
        for src in cfg.data.sources:
            if src.generate:
                yield src, cfg.recipe_dir
        if cfg.model.name.startswith(RECIPE_PREFIX):
            path = recipe_path(cfg.model.name, cfg.recipe_dir)
            if path not in seen:
                seen.add(path)
                todo.append(load_recipe(path))


def pin_pools(study_folder: Path, configs: Iterable[RunConfig]) -> list[str]:
    """Keep the study's pools across a change of tunelab's code: for each generated source of ``configs``
    whose pool the cache lacks, the study's pool with the same pin (imported first with
    :func:`import_pools`) is copied into the cache under the source's key, its ``.json`` marked
    ``pinned``; one line said per pool kept. A source whose options, input files, weights or sampler
    recipe changed has another pin and is built anew.
    """
    src = Path(study_folder) / POOLS
    if not src.is_dir():
        return []
    kept: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for info in sorted(src.glob("*.json")):
        meta = json.loads(info.read_text())
        if meta.get("pin"):
            kept[(meta.get("inputs", {}).get("kind"), meta["pin"])] = (info.name[: -len(".json")], meta)
    cache, said, seen = folder(), [], set()
    for source, recipe_dir in _generated_sources(configs):
        once = (json.dumps(source.generate, sort_keys=True, default=str), recipe_dir)
        if once in seen:  # a sweep's runs share their sources: hash the code once per source
            continue
        seen.add(once)
        spec = parse_generated(source.generate)
        inputs = key_inputs(spec, recipe_dir)
        target = cache / f"{spec.kind}-{digest(inputs)}.jsonl"
        hit = kept.get((spec.kind, pin_key(spec, recipe_dir, inputs)))
        if target.is_file() or hit is None or not (cache / f"{hit[0]}.jsonl").is_file():
            continue
        name, meta = hit
        changed = sorted(k for k in ("code", "model_recipe") if meta["inputs"].get(k) != inputs.get(k))
        write_json(target.with_suffix(".json"), {**meta, "key": digest(inputs), "inputs": inputs,
                                                 "pinned": {"pool": name, "changed": changed}})
        write_bytes(target, (cache / f"{name}.jsonl").read_bytes())  # the .json first: the pool appears whole
        said.append(f"source {source.name!r}: the study keeps its pool {name} (tunelab's code changed since it was "
                    f"sampled: {', '.join(changed) or 'nothing'}); delete {src / name}.* to sample anew")
    return said
