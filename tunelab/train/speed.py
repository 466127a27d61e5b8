"""Fast paths chosen per run and host: ``train.compile: auto`` (the default) decides here, and the
runner records the decision and its reasons in ``env.json`` (``speed``).

Compilation (``torch.compile`` of each decoder layer and of the LM-head cross-entropy) costs a
one-off compile at the first steps and then makes every step faster (SmolLM2-135M LoRA on CPU:
about 2x, see the README's speed table). ``auto`` turns it on only where that pays and is known
to work: a compiler toolchain is present (a C++ compiler on CPU, triton on CUDA), the method is
one whose compiled training is tested (LoRA, DoRA, full), the model is large enough for step time
to dominate (>= ``MIN_PARAMS``) and the run long enough to repay the compile time
(>= ``MIN_STEPS`` optimizer steps). Everything else trains eagerly, with the reason recorded.

Memory where activations dominate: objectives whose every example holds several sequences (DPO, ORPO,
SimPO, IPO pairs; KTO's example and its KL row; GRPO/RLOO's G completions per prompt). ``auto`` bounds it
in one of two ways:

* ``train.tokens_per_pass: auto`` (the default) cuts each micro-batch into passes of at most
  :data:`AUTO_TOKENS_PER_PASS` positions whose gradients accumulate (``PASS_KINDS``, objectives whose
  examples are independent): the same loss and gradients, activations of ~1024 positions at a time,
  no recomputation. Measured with ``benchmarks/dpo_throughput.py`` (SmolLM2-135M, LoRA r 16, 8 GSM8K
  pairs a step, bf16, Intel Xeon 2 cores with AMX, one session 2026-12-06, bf16 peak 1430-1643 GFLOP/s):
  passes of 1024, 379.3 tokens/s at 3815 MB; checkpointing, 169.3 at 3037 MB; TRL (checkpointing),
  132.8 at 8796 MB.
* ``train.gradient_checkpointing: auto`` recomputes each decoder layer's activations in backward where
  the step is not cut into passes: KTO (its KL reference point is the micro-batch's mean, so its
  micro-batch cannot be cut) and pairs or online objectives with ``tokens_per_pass: null``. Token
  objectives (SFT, NAT) and classification heads keep their activations (one sequence per row), and so
  does a compiled run (compiled layers under recomputation are not tested together). With checkpointing
  on, large freed blocks also go back to the operating system (:func:`return_freed_blocks`): glibc's
  malloc otherwise raises its mmap threshold as big tensors are freed and keeps them in its heap, so a
  process's peak memory grows well past what its tensors ever hold at once (a SmolLM2 DPO step, 8 pairs,
  checkpointed: 4617 MB peak RSS by default, 2797 MB with the threshold held at 128 KiB).
* ``train.trim_heap: true`` hands the heap's free pages back to the operating system (glibc's
  ``malloc_trim``; under jemalloc a purge of every arena, :func:`trim_heap`) at the turns of an online step, after sampling and after the optimizer step: sampling
  and training each leave the other megabytes of freed blocks in the heap, which the process's peak
  memory otherwise counts twice. Measured with ``benchmarks/grpo_throughput.py --memory-phases``
  (SmolLM2-135M, LoRA, GRPO, 8 completions a step, passes of 1024, bf16, AMD EPYC 2 cores, 2026-12-07):
  peak RSS 3056 MB while sampling with 846 MB of it live, 2912 MB between steps with 784 MB live.
  ``auto`` leaves it off: with the trim (same job, back to back, 2026-12-07 18:41-18:48) the peak fell only
  from 3154 to 3023 MB (it is the training pass, 1964 MB live) and steps/s from 0.052 to 0.037 (the
  trimmed pages are faulted in again as sampling reuses them).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import platform
import shutil
from collections.abc import Callable
from typing import Any

from torch import nn

from tunelab.config import ConfigError

MIN_PARAMS = 50_000_000
"""Smallest model (parameters) for which ``auto`` compiles: below it compile time dominates."""
MIN_STEPS = 80
"""Fewest optimizer steps for which ``auto`` compiles: the compile time must be repaid. Measured on the
quickstart (SmolLM2-135M LoRA, bf16, Intel Xeon 2 cores with AMX): the first compiled step takes 42.6 s,
then 0.95 s per step against 1.72 s eager, so compiling pays from ~55 steps; 120 steps: 155 s vs 206 s."""
COMPILED_METHODS = ("lora", "dora", "full")
"""Methods whose compiled training is tested against eager training."""
MULTI_SEQUENCE_KINDS = ("pairs", "unpaired", "online")
"""Objective kinds (:mod:`tunelab.train.objectives`) with several sequences per example: activations
dominate their memory."""
PASS_KINDS = ("pairs", "online")
"""Of those, the kinds ``tokens_per_pass: auto`` cuts into passes (when the objective's examples are independent)."""
AUTO_TOKENS_PER_PASS = 1024
"""Positions per pass that ``auto`` chooses (see the module docstring for the measurement)."""
ONLINE_JEMALLOC_TOKENS_PER_PASS = 512
"""Positions per pass that ``auto`` chooses for an online objective in a process running on jemalloc
(:mod:`tunelab.launch`). Measured with ``benchmarks/grpo_throughput.py --skip-zero-advantage off
--memory-phases`` (SmolLM2-135M, LoRA, GRPO, bf16, idle AMD EPYC 2 cores, 2026-12-07 21:13-21:24 UTC, back to
back): under jemalloc passes of 512 ran 0.069 steps/s at 2467 MB peak against 0.066 at 2975 MB for 1024;
under glibc's malloc 512 was slower (0.056 against 0.061 steps/s, 2668 against 3170 MB), so glibc keeps 1024."""


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


def decide_passes(requested: int | str | None, kind: str, per_example: bool,
                  name: str = "of this kind") -> tuple[int | None, dict[str, Any]]:
    """(positions per pass or None, the evidence) for ``train.tokens_per_pass`` (a number | ``null`` |
    ``auto``) of a run whose objective (``name``) is of ``kind`` (see the module docstring).

    Raises:
        ConfigError: A number for an objective whose loss couples a micro-batch's examples (``per_example``
            false: KTO's batch KL estimate), which passes would change.
    """
    if requested != "auto":
        if requested and not per_example:
            raise ConfigError(f"train.tokens_per_pass: objective {name} couples a micro-batch's examples (its loss "
                              "would change if the micro-batch were cut into passes); leave it unset, or lower "
                              "train.batch_size")
        return requested, {"requested": requested}
    info: dict[str, Any] = {"requested": "auto", "kind": kind}
    if kind not in PASS_KINDS or not per_example:
        why = (f"a {kind!r} objective trains one sequence per row: one pass per micro-batch" if kind not in
               MULTI_SEQUENCE_KINDS else f"the {kind!r} objective couples a micro-batch's examples: one pass")
        info["why"] = [why]
        return None, info
    passes = AUTO_TOKENS_PER_PASS
    if kind == "online" and allocator().startswith("jemalloc"):
        passes = ONLINE_JEMALLOC_TOKENS_PER_PASS
        info["allocator"] = allocator()
    info["why"] = [f"a {kind!r} objective holds several sequences per example: each micro-batch in passes of at "
                   f"most {passes} positions (activations bounded, nothing recomputed)"]
    if passes != AUTO_TOKENS_PER_PASS:
        info["why"].append(f"{passes}, not {AUTO_TOKENS_PER_PASS}, under jemalloc: measured faster and smaller "
                           "for GRPO (0.069 against 0.066 steps/s, 2467 against 2975 MB)")
    return passes, info


def decide_checkpointing(requested: bool | str, kind: str, compiled: bool,
                         passes: int | None = None) -> tuple[bool, dict[str, Any]]:
    """(checkpoint or not, the evidence) for ``train.gradient_checkpointing`` (``true`` | ``false`` | ``auto``)
    of a run whose objective is of ``kind``, compiled or not, its micro-batches cut into ``passes``
    positions or not (see the module docstring)."""
    if requested is not None and requested != "auto":
        return bool(requested), {"requested": requested}
    info: dict[str, Any] = {"requested": "auto", "kind": kind}
    if kind not in MULTI_SEQUENCE_KINDS:
        info["why"] = [f"a {kind!r} objective trains one sequence per row: its activations are kept (faster steps)"]
        return False, info
    if compiled:
        info["why"] = ["compiled layers: activations kept (compile and recomputation are not tested together)"]
        return False, info
    if passes:
        info["why"] = [f"micro-batches in passes of at most {passes} positions bound the activations: kept"]
        return False, info
    info["why"] = [f"a {kind!r} objective holds several sequences per example: activations dominate memory, each "
                   "layer's are recomputed in backward"]
    return True, info


def decide_heap_trim(requested: bool | str, kind: str) -> tuple[bool, dict[str, Any]]:
    """(trim or not, the evidence) for ``train.trim_heap`` (``true`` | ``false`` | ``auto``) of a run whose
    objective is of ``kind`` (see the module docstring)."""
    if requested is not None and requested != "auto":
        return bool(requested), {"requested": requested}
    info: dict[str, Any] = {"requested": "auto", "kind": kind}
    if kind == "online":  # measured: 0.037 vs 0.052 steps/s for 3023 vs 3154 MB peak (see the module docstring)
        info["why"] = ["measured on GRPO: trimming cost 29% of the steps/s (freed pages are faulted in again) for "
                       "4% less peak memory: off unless requested"]
        return False, info
    info["why"] = [f"a {kind!r} objective does not alternate sampling and training: the heap is left alone"]
    return False, info


@functools.cache
def glibc_malloc() -> ctypes.CDLL | None:
    """The process's glibc when its ``malloc`` is the one in use, else None: another C library, or another
    allocator (jemalloc, tcmalloc) preloaded in front of it, whose heap glibc's ``malloc_trim``, ``mallopt``
    and ``mallinfo2`` neither see nor change."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - a glibc without libc.so.6
        return None
    in_use = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value  # the first malloc the process resolves
    if in_use != ctypes.cast(libc.malloc, ctypes.c_void_p).value:
        return None
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _malloc_library() -> str | None:
    """The path of the shared library whose ``malloc`` this process calls (``dladdr`` on the address the
    process resolves ``malloc`` to), or None where that cannot be asked."""
    try:
        process = ctypes.CDLL(None)
        try:
            dladdr = process.dladdr
        except AttributeError:  # glibc < 2.34 keeps it in libdl
            dladdr = ctypes.CDLL("libdl.so.2").dladdr
    except (OSError, AttributeError):
        return None
    dladdr.argtypes, dladdr.restype = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)], ctypes.c_int
    info = _DlInfo()
    if not dladdr(ctypes.cast(process.malloc, ctypes.c_void_p), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


@functools.cache
def allocator() -> str:
    """Which ``malloc`` this process runs on, for ``env.json``: ``jemalloc``, ``tcmalloc`` or ``mimalloc``
    with the library's path (preloaded: see :mod:`tunelab.launch`), ``glibc`` when glibc's own is in use,
    else the library that provides ``malloc`` (or the C library's name where that cannot be asked). Asked
    of the dynamic linker, not read off the mapped files: a library can be loaded without its ``malloc``
    being the process's."""
    path = _malloc_library()
    if path:
        base = os.path.basename(path)
        for name in ("jemalloc", "tcmalloc", "mimalloc"):
            if base.startswith(f"lib{name}"):
                return f"{name} ({path})"
    if glibc_malloc() is not None:
        return "glibc"
    return path or platform.libc_ver()[0] or platform.system() or "unknown"


@functools.cache
def jemalloc_ctl() -> Callable[..., int] | None:
    """jemalloc's ``mallctl`` when jemalloc is this process's ``malloc`` (:func:`allocator`), else None."""
    if not allocator().startswith("jemalloc"):
        return None
    try:
        ctl = ctypes.CDLL(None).mallctl
    except AttributeError:  # a jemalloc built with a prefix (je_mallctl): not the one preloaded here
        return None
    ctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                    ctypes.c_size_t]
    ctl.restype = ctypes.c_int
    return ctl


_ARENAS_ALL = 4096  # jemalloc's MALLCTL_ARENAS_ALL: "arena.4096.purge" purges every arena


def jemalloc_allocated() -> int | None:
    """Bytes jemalloc has handed out and not had back (``stats.allocated``, refreshed through ``epoch``);
    None where jemalloc is not the process's ``malloc``. Set beside the RSS, the rest is freed memory
    jemalloc keeps (dirty and muzzy pages it returns after ``dirty_decay_ms``)."""
    ctl = jemalloc_ctl()
    if ctl is None:
        return None
    epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
    ctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))
    value = ctypes.c_size_t(0)
    return value.value if ctl(b"stats.allocated", ctypes.byref(value), ctypes.byref(size), None, 0) == 0 else None


def trim_heap() -> bool:
    """Give the heap's free pages back to the operating system: glibc ``malloc_trim(0)``, or under jemalloc
    a purge of every arena's unused pages (``arena.<all>.purge``); whether it was done (False where the
    allocator offers neither)."""
    libc = glibc_malloc()
    if libc is not None:
        return bool(libc.malloc_trim(0))
    ctl = jemalloc_ctl()
    return ctl is not None and ctl(f"arena.{_ARENAS_ALL}.purge".encode(), None, None, None, 0) == 0


MMAP_THRESHOLD = 128 << 10
"""Allocations at least this large are mapped and unmapped with the OS (glibc's own starting value, held
fixed instead of rising as blocks are freed)."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


@functools.cache
def return_freed_blocks() -> str:
    """Hold glibc's mmap threshold at :data:`MMAP_THRESHOLD`, so freed large blocks (activations, logits)
    return to the OS instead of staying in the heap; once per process. Returns what was done, for
    ``env.json``; nothing where the C library is not glibc."""
    libc = glibc_malloc()
    if libc is None:
        return (f"allocator unchanged (malloc is not glibc's: C library {platform.libc_ver()[0] or platform.system()}, "
                "or another allocator preloaded)")
    if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):  # pragma: no cover
        return "allocator unchanged (mallopt refused)"
    return f"glibc mmap threshold held at {MMAP_THRESHOLD >> 10} KiB: freed large blocks return to the OS"
