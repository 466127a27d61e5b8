"""Gradient interference between sources: the summary of what the training loop measured.

The measurement itself runs during training (:class:`tunelab.train.interference.GradInterference`,
enabled by ``diagnostics: [{name: grad_interference, every: 20}]``); this diagnostic reads its log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunelab.diagnostics.base import DIAGNOSTICS, Context, Diagnostic


@DIAGNOSTICS.register("grad_interference")
class GradInterferenceSummary(Diagnostic):
    """Per-source gradient norms, pairwise cosines and conflict rate over training."""

    during_training = True

    @dataclass
    class Params:
        every: int = 20
        """Steps between two measurements."""
        rows: int = 0
        """Probe rows per source (0: the batch size divided among the sources, at least 2)."""

    def run(self, ctx: Context) -> dict[str, Any]:
        """The logged rows, the mean cosine matrix and the probe's share of the training time."""
        path = ctx.run_dir / "diagnostics" / "grad_interference.jsonl"
        if not path.is_file():
            return {"note": "not measured: add {name: grad_interference} to the recipe's diagnostics"}
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        n = len(rows[-1]["sources"]) if rows else 0
        mean = [[sum(r["cosine"][i][j] for r in rows) / len(rows) for j in range(n)] for i in range(n)] if rows else []
        results = ctx.run_dir / "results.json"
        train_s = json.loads(results.read_text())["run"]["train"].get("train_seconds") if results.is_file() else None
        spent = sum(r["seconds"] for r in rows)
        return {"sources": rows[-1]["sources"] if rows else [], "steps": [r["step"] for r in rows],
                "mean_cosine": mean, "conflict_rate": [r["conflict_rate"] for r in rows],
                "grad_norm": [r["grad_norm"] for r in rows], "probe_seconds": spent,
                "share_of_training": spent / train_s if train_s else None}
