"""A token and cost estimate before a run (``tunelab evolve ... --estimate``), per role.

An upper bound: every item of every round is evolved, judged and answered, each completion uses
its whole budget, nothing is eliminated or cached. Prompt tokens are characters / 4 of the real
prompts of round 1 (later rounds' instructions grow: they are counted 1.5 times as long).
"""

from __future__ import annotations

import math
from typing import Any

from tunelab.evolve.config import PROGRAMMATIC, EvolveConfig
from tunelab.evolve.operators import OPERATORS, judge_prompt


def _chars(prompt: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in prompt)


def estimate(cfg: EvolveConfig, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """``{role: {requests, prompt_tokens, completion_tokens, cost}}`` and the total (upper bounds)."""
    n, rounds = len(seeds), cfg.rounds
    mean_instr = sum(len(s["instruction"]) for s in seeds) / max(n, 1)
    mean_template = sum(_chars(op.prompt("")) for op in OPERATORS.values()) / len(OPERATORS)
    grown = 1.5 * mean_instr
    unanswered = sum(s.get("response") is None for s in seeds) if not cfg.answer_seeds else n
    plan = {
        "evolver": (n * rounds, mean_template + grown, cfg.max_new_tokens),
        "judge": (n * rounds if cfg.eliminator.no_information_gain else 0,
                  _chars(judge_prompt("", "")) + mean_instr + grown, 8),
        "answerer": (n * rounds + unanswered, grown, cfg.answer_max_new_tokens),
    }
    out: dict[str, Any] = {}
    for role, (requests, prompt_chars, budget) in plan.items():
        spec = getattr(cfg, role)
        if spec == PROGRAMMATIC or requests == 0:
            continue
        price = cfg.prices.get(role) or cfg.prices.get(spec) or {}
        p_tok, c_tok = requests * math.ceil(prompt_chars / 4), requests * budget
        cost = (p_tok * price.get("input", 0.0) + c_tok * price.get("output", 0.0)) / 1e6
        out[role] = {"model": spec, "requests": requests, "prompt_tokens": p_tok, "completion_tokens": c_tok,
                     "cost": round(cost, 4)}
    out["total"] = {k: round(sum(r[k] for r in out.values()), 4)
                    for k in ("requests", "prompt_tokens", "completion_tokens", "cost")}
    return out
