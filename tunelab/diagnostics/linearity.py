"""How linear the update is: the tuned model against its first-order Taylor expansion around the base.

f(base + dW) is compared with f(base) + J(base) . dW (a Jacobian-vector product along the update,
``torch.func.jvp``) on the probe set's target positions: the share of positions where both predict
the same next token, and the mean KL(tuned || linearised) of the next-token distributions. The
very-large-dropout paper argues fine-tuning is close to linear; this measures it for the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call, jvp

from tunelab.diagnostics.base import DIAGNOSTICS, Context, Diagnostic, Panel, cost
from tunelab.diagnostics.weights import weight_deltas


def linearised_logits(base: torch.nn.Module, deltas: dict[str, torch.Tensor], inputs: dict[str, Any]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(base), f(base) + J . delta) for the model's logits on ``inputs``."""
    if hasattr(base, "set_attn_implementation"):  # fused attention kernels have no forward-mode AD
        base.set_attn_implementation("eager")
    names = list(deltas)
    params = dict(base.named_parameters())
    primals = tuple(params[n].detach() for n in names)
    tangents = tuple(deltas[n].to(params[n].dtype) for n in names)

    def f(*values: torch.Tensor) -> torch.Tensor:
        return functional_call(base, dict(zip(names, values)), args=(), kwargs=inputs).logits

    out, direction = jvp(f, primals, tangents)
    return out, out + direction


def compare(tuned: torch.Tensor, linear: torch.Tensor) -> dict[str, float]:
    """Next-token agreement and mean KL(tuned || linear) over positions (rows of logits)."""
    agree = float((tuned.argmax(-1) == linear.argmax(-1)).float().mean())
    log_p, log_q = tuned.log_softmax(-1), linear.log_softmax(-1)
    kl = float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
    return {"agreement": agree, "kl": kl}


@DIAGNOSTICS.register("linearity")
class Linearity(Diagnostic):
    """Tuned vs first-order Taylor prediction around the base weights, per source."""

    @dataclass
    class Params:
        rows: int = 4
        """Probe rows per source (full-vocabulary logits: memory grows with rows x length x vocab)."""

    def run(self, ctx: Context) -> dict[str, Any]:
        """``{source: {"agreement", "kl", "base_agreement", "base_kl", "positions"}}``."""
        base, tuned = ctx.base, ctx.tuned[0]
        deltas = {n: d for n, (_, d) in weight_deltas(base, tuned).items()
                  if n in dict(base.named_parameters())}
        if not deltas:
            return {"note": "no weight changed: nothing to linearise"}
        out = {}
        for source, batch in ctx.probes.items():
            inputs = {"input_ids": batch["input_ids"][: self.params.rows]}
            mask = (batch["targets"][: self.params.rows] >= 0)
            with torch.no_grad():
                tuned_logits = tuned(**inputs).logits
            base_logits, lin = linearised_logits(base, deltas, inputs)
            t, b, q = tuned_logits[mask], base_logits.detach()[mask], lin.detach()[mask]
            linear, zero_order = compare(t, q), compare(t, b)
            out[source] = {**linear, "base_agreement": zero_order["agreement"], "base_kl": zero_order["kl"],
                           "positions": int(mask.sum())}
        return {"sources": out}

    @classmethod
    def panel(cls, result: dict[str, Any]) -> Panel:
        """Per source: agreement and KL of the tuned model with its linearisation and with the base."""
        def num(x: Any, spec: str = ".3f") -> str:
            return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

        rows = [[s, num(v["agreement"]), num(v["kl"], ".4f"), num(v["base_agreement"]), num(v["base_kl"], ".4f"),
                 v["positions"]] for s, v in result["sources"].items()]
        return Panel(f"Linearity{cost(result)}", table=(
            ["source", "agreement tuned vs linear", "KL tuned || linear", "agreement tuned vs base",
             "KL tuned || base", "positions"], rows))
