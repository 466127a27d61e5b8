"""A study's generated pools travel with its records.

A generated source (a model's sampled trajectories, evolved instructions) is built once into the
cache under its key (:mod:`tunelab.runner.generated`). The cache is not committed, so a study
continued on a fresh machine would sample its pool anew, and bf16 rounding on another CPU can change
the samples: the seeds of one study would then train on different pools. So a sweep copies each
pool its recorded runs trained on into the study folder (``studies/<study>/pools/<kind>-<key>.jsonl.gz``
and the build's ``.json``; gzip, reproducible bytes) and, before running, copies committed pools into
the cache where it lacks them: every run of a study, in any session and on any machine, trains on the
rows its first run sampled, and nothing is sampled twice.

Studies share pools: a study built on another's pool (the failures study's natural failures, reused by
its rank interaction and by the online-vs-offline comparison) finds it in the sibling study's folder
(``studies/*/pools``), by key or by pin, and does not copy it again.
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
from tunelab.runner.records import sibling_folders

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
        if not (cache / f"{name}.jsonl").is_file():
            _unpack(src, name, cache)
            done.append(name)
    return done


def _unpack(where: Path, name: str, cache: Path) -> None:
    """The committed pool ``where/<name>.jsonl.gz`` (and its ``.json``) into the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    info = where / f"{name}.json"
    if info.is_file():
        shutil.copyfile(info, cache / info.name)
    write_bytes(cache / f"{name}.jsonl", gzip.decompress((where / f"{name}.jsonl.gz").read_bytes()))  # atomic


def export_pools(study_folder: Path, records: Iterable[dict[str, Any]]) -> list[str]:
    """Copy into the study folder every pool the ``records`` trained on that it lacks and the cache holds
    (the build's ``.json`` beside it); the names copied. A pool the study kept across a code change
    (``pinned``) is not copied again: a study holds it under its first key; nor is one a sibling study
    holds."""
    dest, cache, done = Path(study_folder) / POOLS, folder(), []
    siblings = [p for p in _pool_folders(study_folder) if p != dest]
    for record in records:
        for pool in (record.get("pools") or {}).values():
            name = f"{pool.get('kind')}-{pool.get('key')}"
            packed = dest / f"{name}.jsonl.gz"
            source = cache / f"{name}.jsonl"
            if pool.get("pinned") or packed.is_file() or not source.is_file() or name in done:
                continue
            if any((s / packed.name).is_file() for s in siblings):  # a sibling study holds it
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


def _pool_folders(study_folder: Path) -> list[Path]:
    """The study's own pools folder, then its sibling studies' (``studies/*/pools``, sorted)."""
    own = Path(study_folder) / POOLS
    return ([own] if own.is_dir() else []) + sibling_folders(study_folder, POOLS)


def _pool_bytes(cache: Path, name: str, where: Path) -> bytes:
    """A pool's rows: the cache's copy, else the study's packed one."""
    cached = cache / f"{name}.jsonl"
    return cached.read_bytes() if cached.is_file() else gzip.decompress((where / f"{name}.jsonl.gz").read_bytes())


def pin_pools(study_folder: Path, configs: Iterable[RunConfig]) -> list[str]:
    """Find in the studies every pool ``configs`` need that the cache lacks; one line said per pool found.

    For each generated source whose pool is not in the cache: the pool of the same key held by a sibling
    study (``studies/*/pools``: studies share pools), else a pool with the same pin held by this study or
    a sibling (tunelab's code changed since it was sampled), copied into the cache under the source's key
    with its ``.json`` marked ``pinned``. A source whose options, input files, weights or sampler recipe
    changed has another pin and is built anew. Call :func:`import_pools` first for the study's own pools.
    """
    folders = _pool_folders(study_folder)
    if not folders:
        return []
    held: dict[str, Path] = {}
    kept: dict[tuple[str, str], tuple[str, dict[str, Any], Path]] = {}
    for where in folders:  # the study's own first: its pool wins over a sibling's
        for info in sorted(where.glob("*.json")):
            name = info.name[: -len(".json")]
            if not (where / f"{name}.jsonl.gz").is_file():
                continue
            held.setdefault(name, where)
            meta = json.loads(info.read_text())
            if meta.get("pin"):
                kept.setdefault((meta.get("inputs", {}).get("kind"), meta["pin"]), (name, meta, where))
    cache, said, seen = folder(), [], set()
    for source, recipe_dir in _generated_sources(configs):
        once = (json.dumps(source.generate, sort_keys=True, default=str), recipe_dir)
        if once in seen:  # a sweep's runs share their sources: hash the code once per source
            continue
        seen.add(once)
        spec = parse_generated(source.generate)
        inputs = key_inputs(spec, recipe_dir)
        name = f"{spec.kind}-{digest(inputs)}"
        target = cache / f"{name}.jsonl"
        if target.is_file():
            continue
        if name in held:  # the same pool, committed by a study: import it
            _unpack(held[name], name, cache)
            said.append(f"source {source.name!r}: the pool {name} of study {held[name].parent.name!r}")
            continue
        hit = kept.get((spec.kind, pin_key(spec, recipe_dir, inputs)))
        if hit is None:
            continue
        first, meta, where = hit
        cache.mkdir(parents=True, exist_ok=True)
        changed = sorted(k for k in ("code", "model_recipe") if meta["inputs"].get(k) != inputs.get(k))
        write_json(target.with_suffix(".json"), {**meta, "key": digest(inputs), "inputs": inputs,
                                                 "pinned": {"pool": first, "changed": changed}})
        write_bytes(target, _pool_bytes(cache, first, where))  # the .json first: the pool appears whole
        said.append(f"source {source.name!r}: the study keeps its pool {first} of study {where.parent.name!r} "
                    f"(tunelab's code changed since it was sampled: {', '.join(changed) or 'nothing'}); "
                    f"delete {where / first}.* to sample anew")
    return said
