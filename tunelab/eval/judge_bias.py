"""A judge's biases, measured on the verdicts it gave: position, length and self-preference.

* **Position** (Zheng et al. 2023, arXiv 2306.05685, MT-Bench's "position bias"; Wang et al. 2023,
  arXiv 2305.17926): every pair is judged in both orders. ``flip_rate`` is the share of pairs whose
  verdict changes with the order; ``first_shown`` the share of decisive verdicts that pick the answer
  shown first (0.5 for a judge without the bias), with a binomial test against 0.5 (scipy).
* **Length** (AlpacaEval 2, :mod:`tunelab.eval.length_control`): the GLM's slope of the verdict on the
  standardised length difference, and the raw win rate beside the length-controlled one.
* **Self-preference** (Panickssery et al. 2024, arXiv 2404.13076; "preference leakage", arXiv
  2502.01534): the judge's model family against each candidate's and the training data's generator's.
  Measured where people rated the same items: the judge's win rate for the candidate of its own family
  minus people's (the PPI rectifier turned around, :mod:`tunelab.eval.ppi`), with its interval; not
  identifiable when both candidates or neither share the judge's family.

Every figure carries its interval and item count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scipy.stats import binomtest

from tunelab.eval.judge import combine_orders, model_family
from tunelab.eval.stats import empty_score, wilson


def position_bias(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """Flip rate and first-position preference of pairwise records (``verdict_ab``, ``verdict_ba``:
    "A" / "B" / "tie" / None as :meth:`tunelab.eval.judge.Judge.pairwise` stores them).

    Returns:
        ``flip_rate`` (Wilson), ``first_shown`` (Wilson, with ``p`` of the binomial test against 0.5
        and ``decisive``: the verdicts counted), ``pairs`` (parsed in both orders) and ``unparsed``.
    """
    both = [r for r in records if r.get("verdict_ab") is not None and r.get("verdict_ba") is not None]
    flips = sum(not combine_orders(r["verdict_ab"], r["verdict_ba"])["consistent"] for r in both)
    singles = [v for r in records for v in (r.get("verdict_ab"), r.get("verdict_ba")) if v in ("A", "B")]
    first = sum(v == "A" for v in singles)  # in either order, "A" is the answer shown first
    out: dict[str, Any] = {"pairs": len(both), "unparsed": len(records) - len(both)}
    out["flip_rate"] = wilson(flips, len(both), confidence) if both else empty_score()
    if singles:
        out["first_shown"] = {**wilson(first, len(singles), confidence), "decisive": len(singles),
                              "p": float(binomtest(first, len(singles), 0.5).pvalue)}
    else:
        out["first_shown"] = {**empty_score(), "decisive": 0, "p": float("nan")}
    return out


def self_preference(judge: str, candidates: Mapping[str, str | None], generator: str | None = None,
                    rectifier: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Whose family the judge shares, and (with people's ratings) how much it favours its own.

    Args:
        judge: The judge's model name (its family is read from it, :func:`tunelab.eval.judge.model_family`).
        candidates: Side ("a" / "b") -> the model the candidate was tuned from (None: unknown).
        generator: The model that wrote the training data, from the runs' lineage (None: not generated).
        rectifier: :func:`tunelab.eval.ppi.ppi_mean`'s ``rectifier`` for side "b"'s win rate (people minus
            the judge on the rated items), when people rated them.

    Returns:
        ``judge_family``, ``families`` (per side), ``own`` (the sides of the judge's family),
        ``circular`` (the judge's family wrote the training data) and ``measured``: the judge's excess win
        rate for its own side over people's, or ``None`` with ``why`` when it cannot be measured.
    """
    jf = model_family(judge)
    families = {side: model_family(name) if name else None for side, name in candidates.items()}
    own = sorted(side for side, f in families.items() if jf is not None and f == jf)
    out: dict[str, Any] = {"judge_family": jf, "families": families, "own": own,
                           "circular": jf is not None and generator is not None and model_family(generator) == jf}
    if rectifier is None:
        return out | {"measured": None, "why": "no human ratings of these items"}
    if len(own) != 1:
        return out | {"measured": None, "why": ("both candidates share the judge's family" if own else
                                                "neither candidate shares the judge's family")}
    sign = -1.0 if own == ["b"] else 1.0  # the rectifier is people - judge on b's win rate
    lo, hi = rectifier["ci"]
    value = sign * rectifier["value"]
    return out | {"measured": {"value": value, "ci": sorted([sign * lo, sign * hi]), "n": rectifier["n"]}}
