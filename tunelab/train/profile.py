"""Where a training step's time goes: ``train.profile_steps`` runs :mod:`torch.profiler` over a window of
optimizer steps (after ``train.profile_after`` steps, so that compilation and warm-up stay out of it) and
writes ``<run>/profile/``:

* ``summary.json``: the window's mean step seconds and, per category of operator, seconds per step and
  share of the profiled wall time (:data:`CATEGORIES`, by operator name; each operator's *self* time, so
  nothing is counted twice), the 2-D matmuls' FLOPs and achieved GFLOP/s (the profiler's FLOP estimate for
  ``mm``/``addmm``), and the time outside any operator (Python, the loop, dispatch gaps);
* ``ops.txt``: the profiler's own table of operators by self time (the evidence behind the categories);
* ``trace.json.gz``: the timeline, for Perfetto or ``chrome://tracing``.

The run's ``results.json`` keeps the summary (``run.train.profile``). The shares answer "why is MFU what it
is": matmuls at a high GFLOP/s but a small share of the step mean the rest of the step (attention,
elementwise work, the optimizer, Python) is what to make faster, not the matmuls.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch

from tunelab.io import write_json

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("optimizer", r"_foreach_|adamw?|optimizer|zero_grad|clip_grad"),
    ("attention", r"scaled_dot_product|flash|attention|tunelab_cpu|^aten::(bmm|baddbmm)$"),
    ("matmul", r"^aten::(mm|addmm|addmv|mv|matmul|linear|_mm)$|mkldnn.*(linear|matmul|mm)"),
    ("compiled fused kernels", r"compiledfunction|compiled region|compiledfxgraph|cpp_fused|kernel_cpp"),
    ("copies and casts", r"^aten::(copy_|_to_copy|to|clone|contiguous|cat|stack|_copy_from|"
                         r"_copy_from_and_resize|index_select|gather|scatter|embedding.*)$"),
    ("allocation", r"^aten::(empty|empty_like|empty_strided|zeros|zeros_like|ones|ones_like|fill_|zero_|"
                   r"new_empty|new_zeros|full|resize_)$"),
)
"""(category, pattern on the lower-cased operator name), first match wins; anything else is ``other
operators``. ``matmul`` is the 2-D GEMMs (the projections, LoRA's factors, the LM head); batched GEMMs
count as attention (``tunelab_cpu`` attention's backward is written in them, and nothing else in a decoder
uses them). Compiled layers show their fused C++ kernels as the self time of the compiled region."""

MATMUL_OPS = ("aten::mm", "aten::addmm")
"""The 2-D GEMMs whose FLOPs the profiler estimates (``with_flops``): the GFLOP/s they reach inside the step."""


def category(name: str) -> str:
    """The :data:`CATEGORIES` entry an operator named ``name`` falls in."""
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "other operators"


class StepProfiler:
    """Profiles optimizer steps ``after`` .. ``after + steps - 1`` (0-based) of a training loop.

    The loop calls :meth:`before` at the start of every step and :meth:`after_step` at its end with the
    step's wall seconds, and :meth:`close` once it ends (an early stop writes the steps profiled so far).
    """

    def __init__(self, folder: Path, after: int, steps: int, device: str = "cpu") -> None:
        self.folder, self.first, self.last = Path(folder), after, after + steps - 1
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(activities=activities, record_shapes=True, with_flops=True)
        self._on, self._seconds, self.summary = False, [], None
        self._t0 = 0.0

    @classmethod
    def of(cls, steps: int, after: int, folder: Path, start: int, device: str = "cpu") -> StepProfiler | None:
        """The profiler a run asks for (``train.profile_steps`` > 0), or None. A resumed run that starts past
        the window profiles nothing; one that starts inside it profiles the rest of the window."""
        if steps <= 0 or start > after + steps - 1:
            return None
        return cls(folder, max(after, start), after + steps - max(after, start), device)

    def before(self, step: int) -> None:
        """Step ``step`` (0-based) begins."""
        if step == self.first and not self._on:
            self._prof.__enter__()
            self._on, self._t0 = True, time.perf_counter()

    def after_step(self, step: int, seconds: float) -> None:
        """Step ``step`` ended after ``seconds`` of wall time."""
        if self._on:
            self._seconds.append(seconds)
            if step >= self.last:
                self.close()

    def close(self) -> dict[str, Any] | None:
        """Stop (if profiling) and write the folder; returns the summary (None if no step was profiled:
        nothing is written then)."""
        if not self._on:
            return self.summary
        window = time.perf_counter() - self._t0
        self._prof.__exit__(None, None, None)
        self._on = False
        if self._seconds:
            self.summary = self._write(window)
        return self.summary

    def _write(self, window: float) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        averages = self._prof.key_averages()
        (self.folder / "ops.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=60) + "\n")
        self._prof.export_chrome_trace(str(self.folder / "trace.json.gz"))
        self.summary = summarize(
            [(e.key, e.self_cpu_time_total / 1e6, e.count, e.flops or 0) for e in averages],
            len(self._seconds), sum(self._seconds), window)
        write_json(self.folder / "summary.json", self.summary)
        return self.summary


def summarize(ops: list[tuple[str, float, int, float]], steps: int, step_seconds: float,
              window: float) -> dict[str, Any]:
    """The summary of a profiled window: ``ops`` as (name, self seconds, calls, FLOPs) over ``steps`` steps
    whose wall seconds add up to ``step_seconds``, in a profiled wall time of ``window`` (which also holds
    the work between steps: held-out evaluations, checkpoints, probes). Per category, seconds per step
    and share of the window; the time outside any operator; the time between steps; the matmuls' FLOPs
    per step and GFLOP/s."""
    per = max(steps, 1)
    seconds: dict[str, float] = {}
    calls: dict[str, int] = {}
    for name, self_s, count, _ in ops:
        c = category(name)
        seconds[c] = seconds.get(c, 0.0) + self_s
        calls[c] = calls.get(c, 0) + count
    step = step_seconds / per
    traced = sum(seconds.values())
    mm_flops = sum(f for name, _, _, f in ops if name in MATMUL_OPS)
    mm_seconds = sum(s for name, s, _, _ in ops if name in MATMUL_OPS)
    table = {c: {"seconds_per_step": round(s / per, 4), "share": round(s / window, 4) if window else None,
                 "calls_per_step": round(calls[c] / per, 1)}
             for c, s in sorted(seconds.items(), key=lambda kv: -kv[1])}
    outside = max(window - traced, 0.0)
    return {"steps": steps, "step_seconds": round(step, 4), "window_seconds": round(window, 3),
            "between_steps_seconds": round(max(window - step_seconds, 0.0), 3),
            "categories": table,
            "outside_operators": {"seconds_per_step": round(outside / per, 4),
                                  "share": round(outside / window, 4) if window else None},
            "matmul_gflop_per_step": round(mm_flops / per / 1e9, 2),
            "matmul_gflops": round(mm_flops / mm_seconds / 1e9, 1) if mm_seconds else None}


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the console: the categories by share of the profiled time, and the matmuls' rate."""
    lines = [f"profile: {summary['steps']} steps, {summary['step_seconds']:.3f} s a step"]
    for c, row in summary["categories"].items():
        share = f"{100 * row['share']:5.1f}%" if row["share"] is not None else "    -"
        lines.append(f"  {c:<24} {row['seconds_per_step']:8.4f} s  {share}")
    out = summary["outside_operators"]
    lines.append(f"  {'outside operators':<24} {out['seconds_per_step']:8.4f} s")
    if summary["matmul_gflops"]:
        lines.append(f"  matmuls: {summary['matmul_gflop_per_step']} GFLOP a step at {summary['matmul_gflops']} GFLOP/s")
    return "\n".join(lines)
