"""The device and its precision, decided once for every layer (train, generate, eval, serve).

``precision: auto``: bf16 only where this host runs it fast, else fp32.

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


def default_device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"

