"""Representation drift: linear CKA between the base and the tuned model, per layer and source.

CKA (Kornblith et al. 2019) with the unbiased HSIC estimator (Song et al. 2012; as in Nguyen et al.
2021): the biased estimator reads about 0.2 on independent data at n = 32, the unbiased one about 0.
Representations are the hidden states of every layer on a fixed probe set per source, pooled over
non-padding tokens (at most ``max_tokens``, seeded); also the cosine between the layers' mean hidden
states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunelab.diagnostics.base import DIAGNOSTICS, Context, Diagnostic, Panel, cost, pyplot


def _hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741 - the paper's names
    """Unbiased HSIC of two n x n kernel matrices (n >= 4)."""
    n = k.shape[0]
    k, l = k.clone(), l.clone()  # noqa: E741
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones = torch.ones(n, 1, dtype=k.dtype, device=k.device)
    term = (k * l.T).sum() + (ones.T @ k @ ones) * (ones.T @ l @ ones) / ((n - 1) * (n - 2)) \
        - 2 / (n - 2) * (ones.T @ k @ l @ ones)
    return term.squeeze() / (n * (n - 3))


def linear_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = True) -> float:
    """Linear CKA of two representations of the same n examples (n x p and n x q).

    Invariant to rotations and isotropic scaling of either side; 1 for identical representations.
    ``unbiased``: the unbiased HSIC estimator (needs n >= 4), else the biased one (centred Gram matrices).
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same examples on both sides, got {x.shape[0]} and {y.shape[0]}")
    x, y = x.double(), y.double()
    if unbiased:
        if x.shape[0] < 4:
            raise ValueError("the unbiased CKA estimator needs at least 4 examples")
        k, l = x @ x.T, y @ y.T  # noqa: E741
        xy, xx, yy = _hsic_unbiased(k, l), _hsic_unbiased(k, k), _hsic_unbiased(l, l)
    else:
        x, y = x - x.mean(0), y - y.mean(0)
        xy, xx, yy = (x.T @ y).norm() ** 2, (x.T @ x).norm() ** 2, (y.T @ y).norm() ** 2
    return float(xy / (xx * yy).clamp(min=1e-300).sqrt())


def hidden_states(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every layer's hidden states at the batch's non-padding tokens (tokens x width each)."""
    mask = batch["source_idx"] >= 0
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids"), output_hidden_states=True)
    return [h[mask].float() for h in out.hidden_states]


@DIAGNOSTICS.register("cka")
class CKA(Diagnostic):
    """Linear CKA (unbiased) and mean-state cosine between base and tuned, per layer and source."""

    @dataclass
    class Params:
        max_tokens: int = 512
        """Tokens per source (sampled with a fixed seed when there are more)."""

    def run(self, ctx: Context) -> dict[str, Any]:
        """``{source: {"cka": [per layer], "mean_cosine": [per layer], "tokens": n}}``."""
        tuned, _ = ctx.tuned
        out: dict[str, Any] = {}
        for source, batch in ctx.probes.items():
            base_h, tuned_h = hidden_states(ctx.base, batch), hidden_states(tuned, batch)
            n = base_h[0].shape[0]
            pick = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: self.params.max_tokens]
            out[source] = {
                "tokens": int(min(n, self.params.max_tokens)),
                "cka": [linear_cka(b[pick], t[pick]) for b, t in zip(base_h, tuned_h)],
                "mean_cosine": [float(torch.nn.functional.cosine_similarity(b.mean(0), t.mean(0), dim=0))
                                for b, t in zip(base_h, tuned_h)],
            }
        return {"layers": "embeddings, then each decoder layer (the last after the final norm)", "sources": out}

    @classmethod
    def panel(cls, result: dict[str, Any]) -> Panel:
        """CKA and mean-state cosine against the layer, one line per source."""
        from matplotlib.ticker import MaxNLocator

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5, 3))
        for source, v in result["sources"].items():
            ax.plot(v["cka"], "o-", label=f"{source} CKA")
            ax.plot(v["mean_cosine"], "x--", label=f"{source} mean cosine", alpha=0.6)
        ax.set(xlabel="layer (0 = embeddings)", title="Base vs tuned representations", ylim=(-0.05, 1.05))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        return Panel(f"Representation drift{cost(result)}", figure=fig, label="cka")
