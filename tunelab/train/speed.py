"""Fast paths chosen per run and host: ``train.compile: auto`` (the default) decides here, and the
runner records the decision and its reasons in ``env.json`` (``speed``).

Compilation (``torch.compile`` of each decoder layer and of the LM-head cross-entropy) costs a
one-off compile at the first steps and then makes every step faster (SmolLM2-135M LoRA on CPU:
about 2x, see the README's speed table). ``auto`` turns it on only where that pays and is known
to work: a compiler toolchain is present (a C++ compiler on CPU, triton on CUDA), the method is
one whose compiled training is tested (LoRA, DoRA, full), the model is large enough for step time
to dominate (>= ``MIN_PARAMS``) and the run long enough to repay the compile time
(>= ``MIN_STEPS`` optimizer steps). Everything else trains eagerly, with the reason recorded.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
from typing import Any

from torch import nn

MIN_PARAMS = 50_000_000
"""Smallest model (parameters) for which ``auto`` compiles: below it compile time dominates."""
MIN_STEPS = 80
"""Fewest optimizer steps for which ``auto`` compiles: the compile time must be repaid. Measured on the
quickstart (SmolLM2-135M LoRA, bf16, Intel Xeon 2 cores with AMX): the first compiled step takes 42.6 s,
then 0.95 s per step against 1.72 s eager, so compiling pays from ~55 steps; 120 steps: 155 s vs 206 s."""
COMPILED_METHODS = ("lora", "dora", "full")
"""Methods whose compiled training is tested against eager training."""


def _toolchain(device_type: str) -> str | None:
    """Why compilation is impossible here, or None."""
    if device_type == "cuda":
        return None if importlib.util.find_spec("triton") else "triton is not installed"
    if device_type != "cpu":
        return f"no compile path for device {device_type!r}"
    if platform.system() == "Windows":
        return "inductor's CPU backend is not used on Windows here"
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++/clang++) on PATH: inductor's CPU backend needs one"
    return None


def decide_compile(requested: bool | str, model: nn.Module, method: str, max_steps: int,
                   device_type: str) -> tuple[bool, dict[str, Any]]:
    """(compile or not, the evidence) for ``train.compile`` (``true`` | ``false`` | ``auto``)."""
    if requested is not None and requested != "auto":
        return bool(requested), {"requested": requested}
    n_params = sum(p.numel() for p in model.parameters())
    info: dict[str, Any] = {"requested": "auto", "method": method, "parameters": n_params, "max_steps": max_steps,
                            "device": device_type}
    reasons = []
    if (why := _toolchain(device_type)) is not None:
        reasons.append(why)
    if method not in COMPILED_METHODS:
        reasons.append(f"method {method!r} is not among the compile-tested ones ({', '.join(COMPILED_METHODS)})")
    if n_params < MIN_PARAMS:
        reasons.append(f"model has {n_params:,} parameters (< {MIN_PARAMS:,}): compile time would dominate")
    if max_steps < MIN_STEPS:
        reasons.append(f"{max_steps} steps (< {MIN_STEPS}): too short to repay the compile time")
    info["why"] = reasons or [f"long run ({max_steps} steps) of a {n_params / 1e6:.0f}M-parameter model "
                              f"with {method}: compiled steps repay the compile time"]
    return not reasons, info
