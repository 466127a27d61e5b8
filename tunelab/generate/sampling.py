"""How the continuous-batching decoder picks each row's next token, every row with its own settings.

Greedy rows take the argmax; the others draw by inverse CDF with one uniform from their own
``torch.Generator``, seeded from the request's seed, its prompt and the sample's index
(:func:`row_seed`), so a row's draw does not depend on what else shares the batch and two prompts
with the same seed do not draw the same random numbers.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Any

import torch


def row_seed(seed: int, ids: list[int], sample: int) -> int:
    """The generator seed of sample ``sample`` of prompt ``ids`` in a request seeded ``seed``."""
    h = hashlib.blake2b(f"{seed}|{sample}|".encode(), digest_size=8)
    h.update(array("q", ids).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1  # 63 bits


def sample_rows(logits: torch.Tensor, rows: list[Any]) -> torch.Tensor:
    """Next token per row, each with its own settings: logits (B, V) fp32 -> tokens (B,). A row has
    ``cfg`` (its :class:`~tunelab.generate.base.GenerationConfig`) and ``gen`` (its generator, or None
    when greedy).

    Greedy rows take the argmax; the others draw with their own generator. Rows with and without
    top_p are drawn apart, so that no row's draw depends on the other rows' settings.
    """
    picked = logits.argmax(-1)  # (B,)
    hot = [j for j, r in enumerate(rows) if r.cfg.temperature > 0]
    for nucleus in (False, True):
        group = [j for j in hot if (rows[j].cfg.top_p < 1.0) == nucleus]
        if group:
            idx = torch.tensor(group, device=logits.device)
            picked[idx] = _draw(logits[idx], [rows[j] for j in group], nucleus)
    return picked


def _draw(logits: torch.Tensor, rows: list[Any], nucleus: bool) -> torch.Tensor:
    """Inverse-CDF draws, one uniform from each row's generator: logits (k, V) -> tokens (k,)."""
    dev = logits.device
    temps = torch.tensor([r.cfg.temperature for r in rows], device=dev)[:, None]  # (k, 1)
    probs = torch.softmax(logits / temps, dim=-1)  # (k, V)
    order = None
    if nucleus:
        probs, order = probs.sort(dim=-1, descending=True)
        top_p = torch.tensor([r.cfg.top_p for r in rows], device=dev)[:, None]
        probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0.0)  # mass before it already > top_p
    cdf = probs.cumsum(-1)  # (k, V)
    u = torch.cat([torch.rand(1, generator=r.gen, device=dev) for r in rows])  # (k,)
    pos = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[1] - 1)
    return (pos if order is None else order.gather(-1, pos)).squeeze(-1)
