"""Gradient interference between data sources, measured during training without changing it.

Every ``every`` steps (after the optimizer step), the gradient of each source's loss with respect to
the trainable parameters is computed on a fixed probe batch per source (``rows`` rows that contain
the source, held-out rows when there are, else training rows; chosen once with a seed; one forward
and backward per source, so a probe costs about one training batch), in eval mode (no dropout), through
``torch.autograd.grad`` (no ``.grad`` is touched) and with the RNG state restored afterwards, so the
training trajectory is exactly the one without the probe. Each probe appends to
``diagnostics/grad_interference.jsonl``: per-source gradient norms, the pairwise cosine matrix, the
conflict rate (share of source pairs with cosine < 0) and the seconds it took.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.data.tokenize import Row, collate
from tunelab.device import autocast
from tunelab.train import checkpoint


class GradInterference:
    """The probe (see the module docstring); call it with ``(steps done, model)`` after each step."""

    def __init__(self, job: Any, every: int = 20, rows: int = 0, seed: int = 0) -> None:
        self.job, self.every = job, max(1, int(every))
        pool: list[Row] = job.heldout or job.rows
        per_source = rows or max(2, job.cfg.batch_size // max(1, len(job.sources)))
        rng = random.Random(seed)
        self.batches: dict[int, dict[str, torch.Tensor]] = {}
        for s in range(len(job.sources)):
            having = [r for r in pool if s in r.source_idx]
            if having:
                picked = rng.sample(having, min(per_source, len(having)))
                self.batches[s] = collate(picked, job.pad_id, job.packing)
        self.path = Path(job.run_dir) / "diagnostics" / "grad_interference.jsonl"

    def __call__(self, step: int, model: nn.Module) -> dict[str, Any] | None:
        """Measure at ``step`` when it is due; returns the row written (None when not due)."""
        if step % self.every:
            return None
        t0, rng, training = time.perf_counter(), checkpoint.rng_state(), model.training
        model.eval()
        try:
            row = {"step": step, **self.measure(model)}
        finally:
            model.train(training)
            checkpoint.set_rng_state(rng)
        row["seconds"] = time.perf_counter() - t0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """Per-source gradient norms, cosine matrix and conflict rate on the probe batches."""
        job, device = self.job, next(model.parameters()).device
        params = [p for p in model.parameters() if p.requires_grad]
        grads: dict[int, torch.Tensor] = {}
        units: dict[int, float] = {}
        for s, cpu_batch in self.batches.items():
            batch = {k: v.to(device) for k, v in cpu_batch.items()}
            with autocast(device.type, job.precision):
                losses, src = job.objective(model, batch, job.cfg, job.method.virtual_tokens)
            mask = src == s  # a packed row may hold other sources: only this one's loss
            g = torch.autograd.grad(losses[mask].sum(), params, allow_unused=True)
            grads[s] = torch.cat([(x if x is not None else torch.zeros_like(p)).detach().float().flatten()
                                  for x, p in zip(g, params)])
            units[s] = float(mask.sum())
        names = [job.sources[s] for s in sorted(grads)]
        vecs = [grads[s] / max(units[s], 1.0) for s in sorted(grads)]
        norms = [float(v.norm()) for v in vecs]
        cos = [[float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for b in vecs] for a in vecs]
        pairs = [(i, j) for i in range(len(vecs)) for j in range(i + 1, len(vecs))]
        conflict = sum(cos[i][j] < 0 for i, j in pairs) / len(pairs) if pairs else None
        return {"sources": names, "grad_norm": dict(zip(names, norms)), "cosine": cos, "conflict_rate": conflict}
