"""Next-token loss without full-vocabulary logits.

The model runs with its own LM head on the last position only (``keep_last``), and we
take the final normed hidden state, keep only positions that carry a target, and apply
the LM head + cross-entropy chunk by chunk: logits for at most ``chunk`` positions exist at
once, and prompt positions cost no head FLOPs at all. Pre-hooks on the LM head (e.g. very
large dropout) still apply.

A frozen, bias-free head (every adapter method) takes :class:`LinearCrossEntropy`: each
chunk's loss *and* its gradient with respect to the hidden states are computed in the forward
pass, so backward is one multiply and no logits are kept or recomputed (2 head GEMMs per
chunk instead of 3, one pass over the logits instead of three). A trainable or wrapped head
takes the generic path: the head + cross-entropy per chunk under activation checkpointing.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tunelab.data.tokenize import IGNORE
from tunelab.models.load import base_model, final_hidden_states
from tunelab.train.precision import cast_once


def _capped(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def head_and_ce(head: nn.Module, softcap: float | None, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = _capped(head(h).float(), softcap)  # (n, V)
    return F.cross_entropy(logits, y, reduction="none")  # (n,)


@functools.cache
def compiled_head_and_ce():
    """``head_and_ce`` through ``torch.compile`` (built once): the log-softmax, its gather and its
    backward fuse into single passes over the logits (CPU, SmolLM2 LoRA step: 1.24x)."""
    return torch.compile(head_and_ce, dynamic=True)


def ce_and_grad(logits: torch.Tensor, y: torch.Tensor, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cross-entropy of ``logits`` (n, V) against ``y`` and its gradient w.r.t. the
    logits, ``softmax - onehot`` (through the soft cap when there is one), in the logits' dtype.
    Consumes ``logits``: fp32 logits are overwritten."""
    z = logits.float()
    if softcap:
        t = torch.tanh(z / softcap)
        z = t * softcap
    lse = torch.logsumexp(z, dim=-1)
    loss = lse - z.gather(1, y[:, None]).squeeze(1)
    if torch.compiler.is_compiling():  # one fused pointwise pass, nothing (n, V) but the result
        p = torch.exp(z - lse[:, None])
        grad = torch.where(torch.arange(z.shape[-1], device=z.device) == y[:, None], p - 1, p)
    else:  # eager: in place, one fp32 (n, V) buffer
        grad = z.sub_(lse[:, None]).exp_().scatter_add_(1, y[:, None], z.new_full((y.shape[0], 1), -1.0))
    if softcap:
        grad = grad.mul_(1 - t * t)
    return loss, grad.to(logits.dtype)


@functools.cache
def compiled_ce_and_grad():
    """``ce_and_grad`` through ``torch.compile``: two fused passes over the logits."""
    return torch.compile(ce_and_grad, dynamic=True)


class LinearCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of ``h @ weight.T`` against ``y`` for a frozen ``weight``.

    Forward computes, chunk by chunk, the losses and ``d loss_i / d h_i``; backward scales those
    rows by the incoming gradient (exact: each loss depends on its own row of ``h`` only).
    """

    @staticmethod
    def forward(ctx, h, weight, y, softcap, chunk, compute_dtype, compiled):
        fn = compiled_ce_and_grad() if compiled else ce_and_grad
        w = cast_once(weight, compute_dtype)
        losses, grads = [], []
        for i in range(0, h.shape[0], chunk):
            hc = h[i : i + chunk].to(compute_dtype)
            loss, g = fn(hc @ w.t(), y[i : i + chunk], softcap)
            losses.append(loss)
            grads.append((g @ w).to(h.dtype))
        ctx.save_for_backward(torch.cat(grads))
        return torch.cat(losses)

    @staticmethod
    def backward(ctx, grad_losses):
        (dh,) = ctx.saved_tensors
        return dh * grad_losses[:, None].to(dh.dtype), None, None, None, None, None, None


def _fused_ok(head: nn.Module) -> bool:
    return (type(head) is nn.Linear and head.bias is None and not head.weight.requires_grad
            and not head._forward_hooks)


AUTO_CHUNK_LOGITS = 2048 * 49152
"""Logit elements per head chunk under ``train.loss_chunk: auto``: 2048 positions of a 49,152-word
vocabulary (SmolLM2's), fewer positions for a larger one (384 for Gemma 3's 262,144), so the chunk's
bf16 logits, their fp32 copy and their bf16 gradient (8 bytes an element, ~800 MB) stay the same size
whatever the vocabulary, instead of growing with it (3.1 GB at 1,500 target positions of Gemma 3)."""


def head_chunk(chunk: int | str, vocab: int) -> int:
    """Target positions per head chunk: ``chunk``, or for ``auto`` :data:`AUTO_CHUNK_LOGITS` over the
    vocabulary size, between 64 and 2048 (a smaller vocabulary keeps the 2048 it always had)."""
    return max(64, min(2048, AUTO_CHUNK_LOGITS // max(vocab, 1))) if chunk == "auto" else int(chunk)


def token_losses(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    chunk: int | str = "auto",
    virtual_tokens: int = 0,
    compiled: bool = False,
    temperature: float = 1.0,
    hidden: torch.Tensor | None = None,
):
    """Per-target-token losses (n,) and the source index of each (n,).

    ``virtual_tokens``: positions the model prepends (prompt tuning), dropped before the head.
    ``compiled``: the head's cross-entropy through ``torch.compile`` (``train.compile``).
    ``temperature``: the losses of logits / temperature (a sampling distribution's log-probabilities,
    for online RL), computed as the head of hidden / temperature.
    ``hidden``: the decoder's final hidden states (B, T, C) when the caller ran the forward itself
    (:mod:`tunelab.train.shared_prefix`); None: this function runs it.

    Raises:
        ValueError: ``temperature`` other than 1 on a model that soft-caps its logits (the cap comes
            before the temperature there, so the scaling cannot move into the hidden state).
    """
    kwargs = {"position_ids": batch["position_ids"]}
    if "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
    if hidden is None:
        hidden = final_hidden_states(model, input_ids=batch["input_ids"], **kwargs)[:, virtual_tokens:]
    mask = batch["targets"] != IGNORE
    h, y = hidden[mask], batch["targets"][mask]  # (n, C), (n,)
    base = base_model(model)
    head = base.get_output_embeddings()
    chunk = head_chunk(chunk, head.weight.shape[0])
    softcap = getattr(base.config, "final_logit_softcapping", None)
    if temperature != 1.0:
        if softcap:
            raise ValueError("a sampling temperature other than 1 in the loss is not supported for a model that "
                             "soft-caps its logits (final_logit_softcapping)")
        h = h / temperature
    if h.shape[0] and _fused_ok(head):
        for hook in head._forward_pre_hooks.values():  # e.g. very large dropout on h
            out = hook(head, (h,))
            if out is not None:
                h = out[0] if isinstance(out, tuple) else out
        dtype = torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type) else head.weight.dtype
        if torch.is_grad_enabled() and h.requires_grad:
            losses = LinearCrossEntropy.apply(h, head.weight, y, softcap, chunk, dtype, compiled)
        else:
            w = cast_once(head.weight, dtype)
            losses = torch.cat([F.cross_entropy(_capped((h[i : i + chunk].to(dtype) @ w.t()).float(), softcap),
                                                y[i : i + chunk], reduction="none") for i in range(0, h.shape[0], chunk)])
        return losses, batch["source_idx"][mask]
    ce = compiled_head_and_ce() if compiled else head_and_ce
    parts = []
    for i in range(0, h.shape[0], chunk):
        hc, yc = h[i : i + chunk], y[i : i + chunk]
        if torch.is_grad_enabled() and hc.requires_grad:
            parts.append(checkpoint(ce, head, softcap, hc, yc, use_reentrant=False))
        else:
            parts.append(ce(head, softcap, hc, yc))
    # no target in the batch: an empty (0,) tensor that is still part of the graph (backward runs)
    losses = torch.cat(parts) if parts else (hidden.sum() * 0.0).reshape(1)[:0]
    return losses, batch["source_idx"][mask]


def per_source(losses: torch.Tensor, src: torch.Tensor, n_sources: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and token count per source index."""
    sums = torch.zeros(n_sources, dtype=torch.float64).index_add_(0, src, losses.detach().double())
    counts = torch.zeros(n_sources, dtype=torch.float64).index_add_(0, src, torch.ones_like(sums[src]))
    return sums, counts
