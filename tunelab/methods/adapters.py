"""Bottleneck adapters: Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"
(arXiv 1902.00751), and the Pfeiffer et al. 2020 placement ("AdapterFusion", arXiv 2005.00247).

An adapter is a small residual bottleneck inserted after a sublayer's output:
a(h) = h + W_up f(W_down h), W_down: d -> d/rf, W_up: d/rf -> d, with W_up (and its bias)
zero at init so the model starts exactly as the base. Houlsby places one after the
attention block and one after the MLP of every decoder layer; Pfeiffer only after the MLP.
Only adapter parameters train. Adapters are not in peft: they hang as child modules
``bottleneck_adapter`` of each ``self_attn`` / ``mlp`` and run from forward hooks, so the
base parameter names stay unchanged. ``final/`` holds ``adapter_model.safetensors`` and
``adapters_config.json`` (plus the tokenizer); merging does not apply (f is nonlinear).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.methods.base import METHODS, Method
from tunelab.methods.layers import decoder_layers

ADAPTER = "bottleneck_adapter"
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapters_config.json"
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
SITES = {"houlsby": ("self_attn", "mlp"), "pfeiffer": ("mlp",)}


@dataclass
class AdaptersParams:
    """Recipe keys of ``method: {name: adapters}``."""

    placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    """``houlsby``: after attention and after the MLP; ``pfeiffer``: after the MLP only."""
    reduction_factor: int = 16
    """Bottleneck width = hidden size / reduction_factor."""
    nonlinearity: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    """f between the down- and up-projection."""


class BottleneckAdapter(nn.Module):
    """h -> h + W_up f(W_down h); W_up = 0 at init (identity)."""

    def __init__(self, hidden: int, bottleneck: int, nonlinearity: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACTIVATIONS[nonlinearity]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        """The sublayer output plus the bottleneck's residual update."""
        return h + self.up(self.act(self.down(h)))


def _run_adapter(module: nn.Module, args: tuple, out: Any) -> Any:
    """Forward hook: pass the sublayer output (attention returns a tuple) through its adapter."""
    adapter = getattr(module, ADAPTER)
    if isinstance(out, tuple):
        return (adapter(out[0]), *out[1:])
    return adapter(out)


@METHODS.register("adapters")
class Adapters(Method):
    """Houlsby / Pfeiffer bottleneck adapters after attention and/or MLP; only adapters train."""

    Params = AdaptersParams
    trains = (f".{ADAPTER}.",)

    def may_change(self, param_name: str, model: nn.Module) -> bool:
        """The adapters at this placement's sites only (Pfeiffer: after the MLP)."""
        return any(f"{site}.{ADAPTER}." in param_name for site in SITES[self.params.placement])

    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze the model and hang an identity-initialised adapter on each site of each layer.

        Raises:
            ValueError: ``reduction_factor`` below 1.
        """
        p = self.params
        if p.reduction_factor < 1:
            raise ValueError(f"method.reduction_factor must be >= 1, got {p.reduction_factor}")
        hidden = model.config.get_text_config().hidden_size
        bottleneck = max(1, hidden // p.reduction_factor)
        for prm in model.parameters():
            prm.requires_grad_(False)
        _, layers = decoder_layers(model)
        for block in layers:
            for site in SITES[p.placement]:
                module = getattr(block, site)
                ref = next(module.parameters())
                module.add_module(ADAPTER, BottleneckAdapter(hidden, bottleneck, p.nonlinearity).to(ref.device, ref.dtype))
                module.register_forward_hook(_run_adapter)
        return model

    def save_final(self, model: nn.Module, tok, path: Path) -> None:
        """Adapter weights (safetensors), their config and the tokenizer; the base is not saved."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if f".{ADAPTER}." in n}
        save_file(weights, str(path / WEIGHTS))
        config = {"method": self.name, **dataclasses.asdict(self.params),
                  "hidden_size": model.config.get_text_config().hidden_size,
                  "base_model": getattr(model, "name_or_path", "")}
        (path / CONFIG).write_text(json.dumps(config, indent=1))
        tok.save_pretrained(path)

    @classmethod
    def load_final(cls, base: nn.Module, path: Path) -> nn.Module:
        """``base`` with adapters built from the saved config and loaded with the saved weights.

        Raises:
            ValueError: The saved weights do not fit ``base`` (another size or placement).
        """
        path = Path(path)
        config = json.loads((path / CONFIG).read_text())
        fields = {f.name for f in dataclasses.fields(AdaptersParams)}
        model = cls(AdaptersParams(**{k: v for k, v in config.items() if k in fields})).apply(base)
        weights = load_file(str(path / WEIGHTS))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [n for n in missing if f".{ADAPTER}." in n]
        if missing or unexpected:
            raise ValueError(f"{path / WEIGHTS} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model
