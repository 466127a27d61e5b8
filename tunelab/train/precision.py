"""``precision: auto``: bf16 only where this host runs it fast, else fp32.

CUDA: bf16 when the GPU supports it. CPU: bf16 needs native bf16 instructions
(AVX-512 BF16 or AMX); on AVX2-only hosts bf16 is emulated and many times slower than
fp32. The CPU flags decide, and a short measured matmul probe confirms; both are recorded.
"""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import torch


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 0.3) -> float:
    """Measured dense matmul throughput (GFLOP/s) for ``dtype`` on the CPU."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


@functools.lru_cache(maxsize=4)
def decide(requested: str, device_type: str = "cpu") -> tuple[str, dict]:
    """Return (``fp32`` | ``bf16``, evidence) for a requested precision on this host."""
    if requested != "auto":
        return requested, {"requested": requested}
    if device_type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16" if ok else "fp32"), {"requested": "auto", "cuda_bf16": ok}
    flags = cpu_flags()
    native = bool({"avx512_bf16", "amx_bf16"} & flags) and torch.backends.mkldnn.is_available()
    info: dict = {"requested": "auto", "cpu": cpu_name(), "native_bf16": native,
                  "flags": sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx2")))}
    if not native:
        return "fp32", info
    info["gflops_fp32"] = round(matmul_gflops(torch.float32), 1)
    info["gflops_bf16"] = round(matmul_gflops(torch.bfloat16), 1)
    choice = "bf16" if info["gflops_bf16"] > 1.3 * info["gflops_fp32"] else "fp32"
    return choice, info


def autocast(device_type: str, precision: str):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


def cast_frozen_linears(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store frozen ``nn.Linear`` weights in ``dtype``; returns how many weights were cast.

    Under bf16 autocast a linear layer casts its fp32 weight to bf16 at every call; autocast
    caches that cast only for weights that require grad, so frozen base weights (LoRA and the
    other adapter methods) were re-cast in every forward and again in every checkpointed
    recompute (13% of a LoRA step on CPU). Casting once gives the same bf16 operands, hence the
    same results. The embeddings and anything sharing their storage are left alone (a tied LM
    head, including peft's ``modules_to_save`` original; the input embedding feeds the fp32
    residual stream), and so is every parameter that trains.
    """
    from tunelab.models.load import base_model

    inner = base_model(model)
    keep = set()  # storage of the embeddings and of everything tied to them (peft may wrap the head)
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(inner, get, lambda: None)()
        if module is not None:
            keep.update(p.data_ptr() for p in module.parameters())
    cast = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if (isinstance(module, torch.nn.Linear) and w is not None and not w.requires_grad
                and w.data_ptr() not in keep and w.dtype != dtype and w.is_floating_point()):
            module.weight.data = w.data.to(dtype)
            cast += 1
    return cast
