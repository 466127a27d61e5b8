"""AdamW over a method's parameter groups, a stateless LR schedule, and optimizer rebuilds.

The schedule is a pure function of the global step, so resume and optimizer rebuilds
(LISA switching layers) never disturb it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tunelab.config import TrainConfig
from tunelab.methods.base import Method

NO_DECAY = ("bias", "norm", "ln_", "layernorm")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warm-up then cosine/linear/constant decay to ``min_lr_ratio * lr``."""
    warm = int(cfg.warmup_ratio * cfg.max_steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warm) / max(1, cfg.max_steps - warm)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def _groups(model: nn.Module, method: Method, cfg: TrainConfig) -> list[dict]:
    """Split each method group into decay / no-decay groups (norms and biases never decay)."""
    names = {id(p): n.lower() for n, p in model.named_parameters()}
    groups = []
    for g in method.param_groups(model):
        decay = [p for p in g["params"] if p.ndim >= 2 and not any(k in names.get(id(p), "") for k in NO_DECAY)]
        rest = [p for p in g["params"] if not any(p is q for q in decay)]
        for params, wd in ((decay, cfg.weight_decay), (rest, 0.0)):
            if params:
                groups.append({"params": params, "weight_decay": wd, "lr_mult": g.get("lr_mult", 1.0)})
    return groups


def build_optimizer(model: nn.Module, method: Method, cfg: TrainConfig,
                    previous: torch.optim.Optimizer | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; keeps ``previous``'s state for parameters still trained."""
    groups = _groups(model, method, cfg)
    if not groups:
        raise ValueError(f"method {method.name!r} left no trainable parameters")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), foreach=True)
    if previous is not None:
        for g in opt.param_groups:
            for p in g["params"]:
                if p in previous.state:
                    opt.state[p] = previous.state[p]
        previous.state.clear()  # state of deactivated parameters is dropped here
    return opt


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
