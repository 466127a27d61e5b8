"""Atomic checkpoints: trainable weights, optimizer, RNG and method state.

A checkpoint is written to a temporary folder and renamed into place, so a kill -9
leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


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
         best: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``folder/step-N`` atomically and prune old ones (keep the newest ``keep``).

    ``best``: the best evaluation's trainable state (``train.select_best``), as ``best.safetensors``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, tmp / "trainable.safetensors")
    if best is not None:
        save_file({k: v.contiguous() for k, v in best.items()}, tmp / "best.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng or rng_state()}, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep:
        for old in sorted(list_checkpoints(folder))[:-keep]:
            shutil.rmtree(folder / f"step-{old}", ignore_errors=True)
    return final


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
