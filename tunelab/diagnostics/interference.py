"""Gradient interference between sources: the summary of what the training loop measured.

The measurement itself runs during training (:class:`tunelab.train.interference.GradInterference`,
enabled by ``diagnostics: [{name: grad_interference, every: 20}]``); this diagnostic reads its log.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from tunelab.diagnostics.base import DIAGNOSTICS, Context, Diagnostic, Panel, pyplot


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
        """Per source pair (``a~b``) the mean gradient cosine and the share of probes where it was negative,
        the mean conflict rate (what a study's findings set beside each arm's effects), then the logged
        rows, the mean cosine matrix and the probe's share of the training time."""
        path = ctx.run_dir / "diagnostics" / "grad_interference.jsonl"
        if not path.is_file():
            return {"note": "not measured: add {name: grad_interference} to the recipe's diagnostics"}
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        n = len(rows[-1]["sources"]) if rows else 0
        mean = [[sum(r["cosine"][i][j] for r in rows) / len(rows) for j in range(n)] for i in range(n)] if rows else []
        results = ctx.run_dir / "results.json"
        train_s = json.loads(results.read_text())["run"]["train"].get("train_seconds") if results.is_file() else None
        spent = sum(r["seconds"] for r in rows)
        names = rows[-1]["sources"] if rows else []
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        rates = [r["conflict_rate"] for r in rows if isinstance(r.get("conflict_rate"), (int, float))]
        def pair(i: int, j: int) -> str:  # the same name whatever order a recipe lists the sources in
            return "~".join(sorted((names[i], names[j])))

        return {"cosine": {pair(i, j): mean[i][j] for i, j in pairs},
                "conflict": {pair(i, j): sum(r["cosine"][i][j] < 0 for r in rows) / len(rows) for i, j in pairs},
                "mean_conflict_rate": sum(rates) / len(rates) if rates else None,
                "sources": names, "steps": [r["step"] for r in rows],
                "mean_cosine": mean, "conflict_rate": [r["conflict_rate"] for r in rows],
                "grad_norm": [r["grad_norm"] for r in rows], "probe_seconds": spent,
                "share_of_training": spent / train_s if train_s else None}

    @classmethod
    def panel(cls, result: dict[str, Any]) -> Panel:
        """The mean cosine matrix between sources and the conflict rate over steps (nothing measured:
        the default table)."""
        if not result.get("steps"):
            return super().panel(result)
        plt = pyplot()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3))
        im = ax1.imshow(result["mean_cosine"], vmin=-1, vmax=1, cmap="RdBu")
        ax1.set_xticks(range(len(result["sources"])), result["sources"], rotation=45, fontsize=7)
        ax1.set_yticks(range(len(result["sources"])), result["sources"], fontsize=7)
        ax1.set_title("mean gradient cosine")
        fig.colorbar(im, ax=ax1)
        ax2.plot(result["steps"], [c if c is not None else math.nan for c in result["conflict_rate"]], "o-")
        ax2.set(xlabel="step", title="conflict rate (cosine < 0)", ylim=(-0.05, 1.05))
        share = result.get("share_of_training")
        return Panel("Gradient interference", f"probe time {result['probe_seconds']:.1f}s"
                     + (f", {share:.1%} of training" if share is not None else ""), fig, "grad_interference")
