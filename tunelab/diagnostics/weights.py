"""Weight change: per matrix ||dW|| / ||W||, the effective rank of dW, and each layer's share of the update.

dW is the tuned minus the base weight (adapters merged first, so LoRA's dW is exactly s * B @ A).
Effective rank: exp of the entropy of the normalised singular values (Roy & Vetterli 2007).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from tunelab.diagnostics.base import DIAGNOSTICS, Context, Diagnostic, Panel, cost, pyplot

_LAYER = re.compile(r"layers\.(\d+)\.")


def effective_rank(delta: torch.Tensor) -> float:
    """exp(entropy) of the singular value distribution; 0 for a zero matrix."""
    s = torch.linalg.svdvals(delta.double())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def weight_deltas(base: torch.nn.Module, tuned: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (base weight, tuned - base) for every weight that changed and exists in both models."""
    tuned_state = tuned.state_dict()
    out = {}
    for name, w in base.state_dict().items():
        t = tuned_state.get(name)
        if t is None or t.shape != w.shape or not torch.is_floating_point(w):
            continue
        delta = t.float() - w.float()
        if torch.count_nonzero(delta):
            out[name] = (w.float(), delta)
    return out


@DIAGNOSTICS.register("weight_change")
class WeightChange(Diagnostic):
    """Per matrix relative update and effective rank; per layer share of the squared update."""

    def run(self, ctx: Context) -> dict[str, Any]:
        """``{"summary": {...}, "matrices": {name: {...}}, "layers": {layer: share}, "changed": n}``; the
        summary (what a study's findings compare across arms): the median and mean relative change
        ``||dW|| / ||W||`` over the changed matrices, the whole update's Frobenius norm, the largest layer's
        share of the squared update and the median effective rank of dW."""
        deltas = weight_deltas(ctx.base, ctx.tuned[0])
        if not deltas:
            return {"note": "no weight changed (a method that adds virtual tokens or adapters outside "
                            "the base weights)", "matrices": {}, "layers": {}}
        matrices, layer_sq = {}, {}
        total = sum(float(d.norm() ** 2) for _, d in deltas.values())
        for name, (w, d) in deltas.items():
            entry = {"relative": float(d.norm() / w.norm().clamp(min=1e-12))}
            if d.ndim == 2:
                entry["effective_rank"] = effective_rank(d)
            matrices[name] = entry
            m = _LAYER.search(name)
            key = m.group(1) if m else "other"
            layer_sq[key] = layer_sq.get(key, 0.0) + float(d.norm() ** 2)
        layers = {k: v / total for k, v in sorted(layer_sq.items(), key=lambda kv: (kv[0] == "other",
                                                                                    int(kv[0]) if kv[0].isdigit() else 0))}
        rel = sorted(m["relative"] for m in matrices.values())
        ranks = sorted(m["effective_rank"] for m in matrices.values() if "effective_rank" in m)
        summary = {"relative_median": rel[len(rel) // 2], "relative_mean": sum(rel) / len(rel),
                   "update_norm": total ** 0.5, "top_layer_share": max(layers.values()),
                   **({"effective_rank_median": ranks[len(ranks) // 2]} if ranks else {})}
        return {"summary": summary, "matrices": matrices, "layers": layers, "changed": len(deltas)}

    @classmethod
    def panel(cls, result: dict[str, Any]) -> Panel:
        """Each layer's share of the squared update; the median relative change and effective rank."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(list(result["layers"]), list(result["layers"].values()))
        ax.set(xlabel="layer", title="Share of the squared update")
        ranks = [m["effective_rank"] for m in result["matrices"].values() if "effective_rank" in m]
        rel = sorted(m["relative"] for m in result["matrices"].values())
        return Panel(f"Weight change{cost(result)}",
                     f"{result['changed']} tensors changed; median ||dW||/||W|| {rel[len(rel) // 2]:.4f}; median "
                     f"effective rank {sorted(ranks)[len(ranks) // 2] if ranks else float('nan'):.2f}",
                     fig, "weight_change")
