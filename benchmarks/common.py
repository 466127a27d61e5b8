"""Shared pieces of the speed benchmarks: host description, matmul peaks, model FLOPs,
per-side subprocesses and the chat data both sides train on.

* :func:`host_info` names the CPU, its cores and the flags that decide precision.
* :func:`matmul_peaks` measures the fp32 and bf16 matmul peak (GFLOP/s) in the same run,
  so MFU is against what this machine actually does, not a datasheet.
* :func:`model_flops_per_token` counts training FLOPs per trained token as in
  ``shared/METHODS.md`` ("Measuring speed honestly").
* :func:`run_in_subprocess` runs one side of a comparison in its own Python process (a
  process's peak RSS only grows, so two systems measured in one process would share a peak);
  the side's result comes back as JSON on the child's last stdout line.
* :func:`chat_samples` gives GSM8K train rows as chat Samples (``$TUNELAB_DATA_DIR/gsm8k``)
  or, without that data, the built-in ``arith`` family.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.train.loop import heldout_loss as loop_heldout_loss

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
HELDOUT = 32
"""Held-out samples (the first rows of the data; training samples come after them)."""


# ----------------------------------------------------------------------------- host


def versions() -> dict[str, str]:
    """Versions of the packages the benchmarks depend on (``-`` when not installed)."""
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "trl", "lm_eval", "tunelab"):
        try:
            out[pkg] = importlib.metadata.version(pkg.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


def host_info() -> dict[str, Any]:
    """CPU name, cores, the precision-relevant flags, torch threads and package versions."""
    from tunelab.device import cpu_flags, cpu_name

    flags = cpu_flags()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": bool({"amx_bf16", "amx_tile"} & flags),
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "versions": versions(),
    }


def host_line(host: dict[str, Any]) -> str:
    """One line naming the host, for the top of a table."""
    flags = [f for f in ("avx2", "avx512_bf16", "amx") if host.get(f)]
    v = host["versions"]
    return (f"host: {host['cpu']} | {host['usable_cpus']} usable CPUs, torch threads {host['torch_threads']} | "
            f"flags {'+'.join(flags) or 'none'} | torch {v['torch']}, transformers {v['transformers']}, "
            f"peft {v['peft']}, trl {v['trl']}")


def native_bf16() -> bool:
    """Whether the CPU has native bf16 matmul instructions (AVX-512 BF16 or AMX)."""
    from tunelab.device import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def matmul_peaks(n: int = 2048, seconds: float = 1.0) -> dict[str, Any]:
    """Measured fp32 and bf16 matmul peaks (GFLOP/s) on this host, with the current threads.

    On hosts without native bf16 the bf16 matmul is emulated (~50x slower than fp32), so its
    size drops to 512 to keep the probe near ``seconds`` instead of tens of seconds.
    """
    from tunelab.device import matmul_gflops

    n_bf16 = n if native_bf16() else min(n, 512)
    return {
        "fp32": round(matmul_gflops(torch.float32, n=n, seconds=seconds), 1),
        "bf16": round(matmul_gflops(torch.bfloat16, n=n_bf16, seconds=seconds), 1),
        "n_fp32": n, "n_bf16": n_bf16, "seconds": seconds, "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- FLOPs


def matmul_params(model: nn.Module) -> tuple[int, int]:
    """(N, N_trainable): weights that take part in matmuls, each tensor counted once.

    Every ``nn.Linear`` weight counts, LoRA's A/B and the LM head included; a head tied to
    the input embedding is one tensor, counted once (as the head). The embedding lookup
    itself is not a matmul and does not count.
    """
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            seen.setdefault(id(module.weight), module.weight)
    n = sum(p.numel() for p in seen.values())
    n_trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return n, n_trainable


def model_flops_per_token(model: nn.Module, trainable: int | None, seq_len: float) -> float:
    """Training FLOPs per trained token (METHODS.md).

    2N (forward) + 2N (activation gradients) + 2N_trainable (weight gradients), plus attention:
    4 * layers * seq * d forward (QK^T and AV) and twice that backward. ``trainable`` is
    N_trainable (None: counted from ``requires_grad``); ``seq_len`` the attended length.
    """
    n, n_trainable = matmul_params(model)
    if trainable is not None:
        n_trainable = trainable
    base = getattr(model, "get_base_model", lambda: model)()
    cfg = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    layers = cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    d_attn = cfg.num_attention_heads * head_dim
    attention = 4 * layers * seq_len * d_attn
    return 2 * n + 2 * n + 2 * n_trainable + attention + 2 * attention


def gemm_shapes(model: nn.Module, tokens: int, target_tokens: int, chunk: int = 2048) -> list[dict[str, Any]]:
    """The GEMMs of one training step of a LoRA/frozen-weight model at ``tokens`` input tokens: each base
    ``nn.Linear`` forward (``x @ W.T``, tokens x in x out) and its input gradient (``dy @ W``, tokens x out
    x in), and the LM head on the ``target_tokens`` only, in row chunks of ``chunk`` (tunelab's fused
    cross-entropy: logits forward and d/dh backward). Adapter matrices and attention scores are left
    out (a few percent of the FLOPs at these lengths). Returns ``[{kind, m, k, n, count}]``, same
    shapes merged."""
    base = getattr(model, "get_base_model", lambda: model)()
    head = base.get_output_embeddings()
    merged: dict[tuple[str, int, int, int], int] = {}

    def add(kind: str, m: int, k: int, n: int, count: int = 1) -> None:
        if m > 0:
            merged[(kind, m, k, n)] = merged.get((kind, m, k, n), 0) + count

    for name, mod in base.named_modules():
        if isinstance(mod, nn.Linear) and mod is not head and "lora_" not in name:
            add("forward", tokens, mod.in_features, mod.out_features)
            add("input grad", tokens, mod.out_features, mod.in_features)
    if head is not None:
        d, vocab = head.weight.shape[1], head.weight.shape[0]
        full, rest = divmod(target_tokens, chunk)
        for rows, count in ((chunk, full), (rest, 1)):
            if count:
                add("head forward", rows, d, vocab, count)
                add("head input grad", rows, vocab, d, count)
    return [{"kind": kind, "m": m, "k": k, "n": n, "count": c} for (kind, m, k, n), c in merged.items()]


def shape_matched_peak(shapes: list[dict[str, Any]], dtype: torch.dtype, seconds: float = 0.15) -> dict[str, Any]:
    """GFLOP/s of the step's own GEMMs alone (:func:`gemm_shapes`), each shape timed in ``dtype`` for
    about ``seconds`` the way the step runs it (``F.linear`` forward, ``matmul`` for input gradients),
    weighted by its FLOPs: the throughput a step made of nothing but these GEMMs would reach (a limit
    that exists, unlike a 2048-cubed matmul's). Also each shape's rate."""
    total_flops = total_time = 0.0
    rates = []
    for s in shapes:
        m, k, n = s["m"], s["k"], s["n"]
        x = torch.randn(m, k).to(dtype)
        if s["kind"].endswith("forward"):
            w = torch.randn(n, k).to(dtype)
            op = lambda x=x, w=w: torch.nn.functional.linear(x, w)  # noqa: E731
        else:
            w = torch.randn(k, n).to(dtype)
            op = lambda x=x, w=w: x @ w  # noqa: E731
        op()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or reps < 2:
            op()
            reps += 1
        per = (time.perf_counter() - t0) / reps
        flops = 2.0 * m * k * n
        rates.append({**s, "gflops": round(flops / per / 1e9, 1)})
        total_flops += flops * s["count"]
        total_time += per * s["count"]
    return {"gflops": round(total_flops / total_time / 1e9, 1) if total_time else None,
            "step_gemm_seconds": round(total_time, 4), "shapes": rates}


# ----------------------------------------------------------------------------- subprocesses


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PhaseMemory:
    """Peak resident memory by phase, sampled by a thread every ``interval`` seconds: the caller names the
    phase (:meth:`enter`); each phase keeps its highest RSS and, at that moment, the bytes glibc's malloc
    had handed out (``mallinfo2``: heap in use + mapped blocks; under jemalloc its ``stats.allocated``; None
    under another allocator). RSS well above the live bytes is memory the allocator holds after frees, not
    tensors."""

    def __init__(self, interval: float = 0.005) -> None:
        import ctypes
        import threading

        from tunelab.train.speed import glibc_malloc, jemalloc_allocated

        self.phase, self.interval = "setup", interval
        self.peaks: dict[str, dict[str, float | None]] = {}
        self._mallinfo, self._jemalloc = None, jemalloc_allocated
        libc = glibc_malloc()  # None under another C library or a preloaded allocator: live bytes unknown
        if libc is not None and hasattr(libc, "mallinfo2"):  # glibc >= 2.33

            class _Info(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                         "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

            libc.mallinfo2.restype = _Info
            self._mallinfo = libc.mallinfo2
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._rss_mb()
            peak = self.peaks.setdefault(self.phase, {"peak_rss_mb": 0.0, "malloc_live_mb": None})
            if rss > peak["peak_rss_mb"]:
                info = self._mallinfo() if self._mallinfo else None
                peak["peak_rss_mb"] = round(rss, 1)
                live = info.uordblks + info.hblkhd if info else self._jemalloc()
                peak["malloc_live_mb"] = round(live / 2**20, 1) if live is not None else None
            self._stop.wait(self.interval)

    def enter(self, phase: str) -> None:
        """Count what follows as ``phase``."""
        self.phase = phase

    def stop(self) -> dict[str, dict[str, float | None]]:
        """End sampling; the peaks by phase."""
        self._stop.set()
        self._thread.join()
        return self.peaks


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None keeps torch's default); returns the count in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def run_in_subprocess(fn_name: str, args: dict[str, Any], threads: int | None = None,
                      timeout: float | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run ``module:function(**args)`` from ``benchmarks/`` in a fresh Python; return its dict.

    The child prints the function's result as one JSON line last on stdout; its stderr
    (progress, warnings) passes through with ``verbose``, else it is shown only on failure. ``_wall_s`` is added: the child's whole wall time,
    interpreter start and imports included; ``_started_at``: ``time.time()`` just before the launch.
    """
    module, func = fn_name.split(":")
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(BENCH_DIR)!r})\n"
        f"from {module} import {func} as f\n"
        "result = f(**json.loads(sys.argv[1]))\n"
        "sys.stdout.flush()\n"
        "print(json.dumps(result, default=str, allow_nan=True), flush=True)\n"
    )
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    started, t0 = time.time(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], stdout=subprocess.PIPE,
                          stderr=None if verbose else subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
                          timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((lines + (proc.stderr or "").splitlines())[-30:])
        raise RuntimeError(f"{fn_name} failed (exit {proc.returncode}); output tail:\n{tail}")
    result = json.loads(lines[-1])
    result["_wall_s"] = round(wall, 2)
    result["_started_at"] = started  # time.time() at launch: a child's time.time() minus it is time since start
    return result


# ----------------------------------------------------------------------------- data


def gsm8k_file(split: str) -> Path | None:
    """``$TUNELAB_DATA_DIR/gsm8k/<split>.jsonl`` when it exists, else None."""
    env = os.environ.get("TUNELAB_DATA_DIR")
    if not env:
        return None
    path = Path(env) / "gsm8k" / f"{split}.jsonl"
    return path if path.is_file() else None


def data_origin() -> str:
    """Which data :func:`chat_samples` uses: the GSM8K train file's path or ``task:arith``."""
    path = gsm8k_file("train")
    return str(path) if path else "task:arith"


def chat_samples(n: int, skip: int = 0) -> list:
    """``n`` chat Samples (after skipping ``skip``): GSM8K train rows, else ``arith`` train items.

    GSM8K rows go through tunelab's ``gsm8k`` format converter (question -> user turn, worked
    solution -> assistant turn). Deterministic: file order, or the family's seeded order.
    """
    from tunelab.data.formats import to_sample

    path = gsm8k_file("train")
    if path is None:
        from tunelab.data.tasks.base import get_family

        samples = get_family("arith").samples("train", n + skip, seed=0)[skip:]
        for s in samples:
            s.meta["source"] = "arith"
        return samples
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip or not line.strip():
                continue
            if len(out) == n:
                break
            sample = to_sample(json.loads(line), "gsm8k", {}, f"{path}:{i + 1}")
            sample.meta.update(source="gsm8k", id=f"gsm8k-train-{i}")
            out.append(sample)
    return out


def encode_rows(samples: list, tok, max_length: int, packing: bool) -> tuple[list, list]:
    """tunelab's encoding (assistant-only targets) and packing: (rows, encoded)."""
    from tunelab.data.tokenize import encode, pack

    encoded = [e for e in (encode(s, tok, max_length) for s in samples) if e is not None]
    sources = sorted({s.source for s in samples})
    return pack(encoded, sources, max_length, packing), encoded


def heldout_loss(model: nn.Module, rows: list, pad_id: int, precision: str, batch_size: int = 8) -> float:
    """Mean loss per target token over ``rows`` with the package's held-out loss (no dropout).

    The same code scores every side's final adapter, so the loss mask and reduction match.
    """
    n_sources = 1 + max((int(i) for r in rows for i in r.source_idx if i >= 0), default=0)
    return loop_heldout_loss(model, rows, [str(i) for i in range(n_sources)], pad_id, precision, packing=False,
                             batch_size=batch_size)["heldout_loss"]


def clean(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Strict one-line JSON (NaN -> null, unknown objects -> str)."""
    return json.dumps(clean(obj), default=str)


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: numbers rounded, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]], digits: int = 1) -> str:
    """A plain fixed-width text table."""
    cells = [[fmt(c, digits) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def step_timer() -> tuple[Any, list[float], list[float]]:
    """(a ``transformers.TrainerCallback``, step begin times, step end times): a Trainer's optimizer
    steps timed from ``on_step_begin`` to ``on_step_end``."""
    from transformers import TrainerCallback

    begin: list[float] = []
    end: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            end.append(time.perf_counter())

    return StepTimer(), begin, end
