"""``tunelab_cpu``: CPU training attention, SDPA's flash kernel forward and a matmul backward.

On CPU, PyTorch's flash-attention kernel is fast forward but slow backward: in a SmolLM2 LoRA
step (8 x 220 tokens, bf16) its backward was 21% of the step. Eager attention (two GEMMs and a
softmax, compiled) has a fast backward, but keeps the (B, H, T, S) probabilities of every layer
for it: at 8 x 512 tokens that is +3.9 GB peak. This keeps the flash forward (saving only its
output and log-sum-exp, as SDPA does) and writes backward as flash attention's own
recurrence in batched GEMMs: recompute P = exp(Q K^T s - lse), then dV = P^T dO,
dS = P (dO V^T - rowsum(dO O)), dQ = dS K s, dK = dS^T Q s. The query heads that share a
key/value head are batched together, so K and V are never repeated and dK, dV come out summed
over their group. Inside a ``torch.compile``-d decoder layer inductor fuses the elementwise
steps. The (B, H, T, S) tensors exist only inside one layer's backward.

Registered with transformers' ``AttentionInterface`` together with the SDPA mask builder (the
mask is ``None`` for plain causal batches, boolean for padding, packing and sliding windows).
Anything it does not cover (attention dropout, soft-capping, sinks, a query longer or shorter
than the keys) goes to SDPA. The training loop switches compiled CPU runs to it and back.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "tunelab_cpu"  # no "flash" in it: transformers would take it for a flash-attention kernel


class FlashMatmulAttention(torch.autograd.Function):
    """softmax(Q K^T s + mask) V for q (B, H, T, D), k and v (B, KV, T, D); ``allowed``: None
    (causal) or a boolean (B|1, 1, T, T) mask, True where a query may attend."""

    @staticmethod
    def forward(ctx, q, k, v, allowed, scale):
        bias = None if allowed is None else torch.where(allowed, 0.0, float("-inf")).to(q.dtype)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, allowed is None, attn_mask=bias, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse, allowed)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse, allowed = ctx.saved_tensors
        s = ctx.scale
        b, h, t, d = q.shape
        kv = k.shape[1]
        g = h // kv
        grouped = (b, kv, g * t, d)  # the g query heads of one KV head, one after the other
        qg, dog = q.reshape(grouped), d_out.reshape(grouped)
        scores = torch.matmul(qg, k.transpose(-1, -2)).float().view(b, kv, g, t, t)
        if allowed is None:
            keep = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        else:
            keep = allowed.unsqueeze(1)  # (B|1, 1, 1, T, T)
        p = torch.exp(scores * s - lse.view(b, kv, g, t, 1)).masked_fill(~keep, 0.0)
        delta = (d_out.float() * out.float()).sum(-1).view(b, kv, g, t, 1)
        dp = torch.matmul(dog, v.transpose(-1, -2)).float().view(b, kv, g, t, t)
        ds = (p * (dp - delta) * s).to(q.dtype).view(b, kv, g * t, t)
        dv = torch.matmul(p.to(q.dtype).view(b, kv, g * t, t).transpose(-1, -2), dog)
        dq = torch.matmul(ds, k).view(b, h, t, d)
        dk = torch.matmul(ds.transpose(-1, -2), qg)
        return dq, dk, dv, None, None


def flash_matmul_attention_forward(
    module: nn.Module,
    query: torch.Tensor,  # (B, H, T, D)
    key: torch.Tensor,  # (B, KV, S, D)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    mask_ok = attention_mask is None or (attention_mask.dtype == torch.bool and attention_mask.shape[1] == 1)
    if (not mask_ok or softcap or (dropout and module.training) or kwargs.get("s_aux") is not None
            or query.device.type != "cpu" or query.shape[2] != key.shape[2] or query.shape[1] % key.shape[1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, softcap=softcap, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    dtype = value.dtype  # under autocast q/k may be fp32 after rotary; v came out of a bf16 linear
    out = FlashMatmulAttention.apply(query.to(dtype), key.to(dtype), value, attention_mask, scale)
    return out.transpose(1, 2), None  # (B, T, H, D), as the other implementations return


def register() -> str:
    """Register ``tunelab_cpu`` with transformers (idempotent); returns its name."""
    AttentionInterface.register(NAME, flash_matmul_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
