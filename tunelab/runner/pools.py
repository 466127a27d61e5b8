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
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunelab.io import write_bytes
from tunelab.runner.recipe_model import folder

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
    (the build's ``.json`` beside it); the names copied."""
    dest, cache, done = Path(study_folder) / POOLS, folder(), []
    for record in records:
        for pool in (record.get("pools") or {}).values():
            name = f"{pool.get('kind')}-{pool.get('key')}"
            packed = dest / f"{name}.jsonl.gz"
            source = cache / f"{name}.jsonl"
            if packed.is_file() or not source.is_file() or name in done:
                continue
            dest.mkdir(parents=True, exist_ok=True)
            if source.with_suffix(".json").is_file():
                shutil.copyfile(source.with_suffix(".json"), dest / f"{name}.json")
            write_bytes(packed, gzip.compress(source.read_bytes(), compresslevel=9, mtime=0))
            done.append(name)
    return done
