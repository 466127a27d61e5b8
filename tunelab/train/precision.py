"""bf16 storage of frozen weights for training under bf16 autocast (see :mod:`tunelab.device` for
the precision decision itself)."""

from __future__ import annotations

import torch

from tunelab.models.load import base_model


def cast_frozen_linears(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store frozen ``nn.Linear`` weights in ``dtype``; returns how many weights were cast.

    Under bf16 autocast a linear layer casts its fp32 weight to bf16 at every call; autocast
    caches that cast only for weights that require grad, so frozen base weights (LoRA and the
    other adapter methods) were re-cast in every forward and again in every checkpointed
    recompute (13% of a LoRA step on CPU). Casting once gives the same bf16 operands, hence the
    same results. The embeddings and anything sharing their storage are left alone (a tied LM
    head, including peft's ``modules_to_save`` original; the input embedding feeds the fp32
    residual stream), and so is every parameter that trains.
    """
    inner = base_model(model)
    keep = set()  # storage of the embeddings and of everything tied to them (peft may wrap the head)
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(inner, get, lambda: None)()
        if module is not None:
            keep.update(p.data_ptr() for p in module.parameters())
    cast = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if (isinstance(module, torch.nn.Linear) and w is not None and not w.requires_grad
                and w.data_ptr() not in keep and w.dtype != dtype and w.is_floating_point()):
            module.weight.data = w.data.to(dtype)
            cast += 1
    return cast


def cast_once(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` in ``dtype``, cast once per weight version and kept on the parameter as long as it
    lives (a frozen tied LM head, left in fp32 by :func:`cast_frozen_linears`: once per run)."""
    if weight.dtype == dtype:
        return weight
    hit = cached_cast(weight, dtype)
    if hit is None:
        hit = weight.detach().to(dtype)
        weight._tunelab_cast = (weight._version, hit)
    return hit


def cached_cast(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The copy :func:`cast_once` keeps of ``weight`` in ``dtype`` at its current version, or None (never
    made, or the weight changed since). A bf16 decoding copy of the model shares it instead of casting
    the weight again (:class:`tunelab.generate.hf.HFGenerator`)."""
    hit = getattr(weight, "_tunelab_cast", None)
    return hit[1] if hit is not None and hit[0] == weight._version and hit[1].dtype == dtype else None
