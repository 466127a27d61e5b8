"""Atomic checkpoints: trainable weights, optimizer, RNG and method state.

A checkpoint is written to a temporary folder and renamed into place, so a kill -9
leaves either the previous checkpoint or the new one, never half of one. ``meta.json``, written
last, records the SHA-256 of every other file; :func:`latest_good` checks them on resume, reports a
truncated or corrupted checkpoint and falls back to the newest one that verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tunelab.io import StorageError


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, step: int, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
         meta: dict[str, Any], keep: int = 0, rng: dict[str, Any] | None = None,
         best: dict[str, torch.Tensor] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``folder/step-N`` atomically and prune old ones (keep the newest ``keep``).

    ``best``: the best evaluation's trainable state (``train.select_best``), as ``best.safetensors``;
    ``extra``: more of the loop's state, kept beside the optimizer's in ``state.pt`` (the online
    objectives' episodes in use).
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, step, weights, optimizer, meta, rng, best, extra)
    except (OSError, SafetensorError) as e:  # disk full, size limit: the previous checkpoints stay
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(getattr(e, "errno", None), f"could not write checkpoint {final}: "
                           f"{getattr(e, 'strerror', None) or e}") from e
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep:
        for old in sorted(list_checkpoints(folder))[:-keep]:
            shutil.rmtree(folder / f"step-{old}", ignore_errors=True)
    return final


def _write(tmp: Path, step: int, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
           meta: dict[str, Any], rng: dict[str, Any] | None, best: dict[str, torch.Tensor] | None,
           extra: dict[str, Any] | None = None) -> None:
    """The files of one checkpoint, in the temporary folder ``tmp`` (``meta.json`` last)."""
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, tmp / "trainable.safetensors")
    if best is not None:
        save_file({k: v.contiguous() for k, v in best.items()}, tmp / "best.safetensors")
    torch.save({**(extra or {}), "optimizer": optimizer.state_dict(), "rng": rng or rng_state()}, tmp / "state.pt")
    files = {f.name: _sha256(f) for f in sorted(tmp.iterdir())}
    (tmp / "meta.json").write_text(json.dumps({"step": step, **meta, "files": files}, indent=1))


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path) -> str | None:
    """What is wrong with checkpoint folder ``path`` (a missing, truncated or altered file), or None.

    Checkpoints written before checksums were recorded verify if their files exist."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        return f"meta.json unreadable ({e})"
    for name, digest in meta.get("files", {"trainable.safetensors": None, "state.pt": None}).items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if digest is not None and _sha256(f) != digest:
            return f"{name} does not match its checksum (truncated or corrupted)"
    return None


def latest_good(folder: Path, say: Any = print) -> Path | None:
    """The newest checkpoint that verifies; each newer one that does not is reported through ``say``."""
    for step in reversed(list_checkpoints(folder)):
        path = folder / f"step-{step}"
        problem = verify(path)
        if problem is None:
            return path
        say(f"[tunelab] checkpoint {path} is unusable: {problem}; trying an older one")
    return None


def list_checkpoints(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in folder.glob("step-*") if (p / "meta.json").is_file())


def latest(folder: Path) -> Path | None:
    steps = list_checkpoints(folder)
    return folder / f"step-{steps[-1]}" if steps else None


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(weights, optimizer+rng state, meta) of a checkpoint folder."""
    weights = load_file(path / "trainable.safetensors")
    state = torch.load(path / "state.pt", weights_only=False)
    meta = json.loads((path / "meta.json").read_text())
    return weights, state, meta


def load_best(path: Path) -> dict[str, torch.Tensor] | None:
    """The best evaluation's trainable state saved with a checkpoint folder, if any."""
    return load_file(path / "best.safetensors") if (path / "best.safetensors").is_file() else None
