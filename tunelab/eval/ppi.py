"""Prediction-powered inference: a judge's verdicts on every item, corrected by a few human labels.

An LLM judge labels every item cheaply but with a bias; people label a few items without it. PPI
(Angelopoulos, Bates, Fannjiang, Jordan & Zrnic 2023, *Science* 382, arXiv 2301.09633) estimates the
human mean from both: the judge's mean over the unlabeled items plus the mean of the human-minus-judge
differences (the *rectifier*) on the labeled ones. The interval stays valid whatever the judge's bias;
it is narrower than the human-only interval when the judge agrees with people.

Here the power-tuned form, PPI++ (Angelopoulos, Duchi & Zrnic 2023, arXiv 2311.01453), for a mean:

    theta = mean(Y_n) + lam * (mean(f_N) - mean(f_n))
    var   = Var(Y_n - lam * f_n) / n + lam^2 * Var(f_N) / N
    lam   = Cov(Y_n, f_n) / ((1 + n / N) * Var(f_n and f_N)),  clipped to [0, 1]

with ``Y_n`` the human outcomes of the n labeled items, ``f_n`` the judge's outcomes on the same items
and ``f_N`` its outcomes on the N items no person rated; ``lam = 1`` is the original PPI, ``lam = 0``
the human-only mean. The interval is normal (``theta +- z * sqrt(var)``); variances and the covariance
divide by the count, the variance in ``lam`` by the count - 1, as the authors' ``ppi_py`` does (a test
holds our figures to its ``ppi_mean_ci``). An outcome is a win rate's
item value (1 the candidate wins, 0.5 a tie, 0 it loses) or any bounded score.

Valid when the labeled items are a random sample of the judged ones (the web app's rating order is a
fixed shuffle of the items, so the first n rated are one). Several raters of one item count as one
label, their mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tunelab.eval.stats import Score, z_quantile


class PPIError(ValueError):
    """Inputs PPI cannot use (no human labels, labels of items the judge never saw, ...)."""


def _normal(value: float, var: float, n: int, confidence: float) -> Score:
    half = z_quantile(confidence) * math.sqrt(max(var, 0.0))
    return {"value": float(value), "ci": [float(value - half), float(value + half)], "n": int(n)}


def _var(x: np.ndarray) -> float:
    """The variance dividing by the count (0 for no value)."""
    return float(np.var(x)) if x.size else 0.0


def ppi_mean(judge_unlabeled: Sequence[float], judge_labeled: Sequence[float], human: Sequence[float],
             confidence: float = 0.95, power_tuning: bool = True) -> dict[str, Any]:
    """The human mean estimated from a judge's outcomes on every item and people's on a few.

    Args:
        judge_unlabeled: The judge's outcomes on the items no person rated (N of them).
        judge_labeled: The judge's outcomes on the rated items (n), in the order of ``human``.
        human: People's outcomes on those items (one per item: the mean of its raters).
        confidence: Two-sided level of every interval.
        power_tuning: PPI++'s ``lam`` (else ``lam = 1``, the original PPI).

    Returns:
        ``ppi`` (the estimate and interval), ``human_only`` (the mean of ``human`` with a normal
        interval), ``judge_only`` (the judge's mean over all N + n items, its interval blind to the
        judge's bias), ``rectifier`` (mean human - judge on the rated items: the judge's bias, with its
        interval), ``lam``, ``n`` and ``N``.

    Raises:
        PPIError: no human labels, or ``judge_labeled`` and ``human`` of different lengths, or a value
            that is not a finite number.
    """
    f_n, y = np.asarray(judge_labeled, dtype=float), np.asarray(human, dtype=float)
    f_N = np.asarray(judge_unlabeled, dtype=float)
    if y.size == 0:
        raise PPIError("no human ratings: PPI needs at least two items rated by people")
    if f_n.size != y.size:
        raise PPIError(f"{y.size} human ratings but {f_n.size} judge verdicts on the rated items; each rated item "
                       f"needs the judge's verdict")
    for name, arr in (("human", y), ("judge_labeled", f_n), ("judge_unlabeled", f_N)):
        if not np.all(np.isfinite(arr)):
            raise PPIError(f"{name}: position {int(np.flatnonzero(~np.isfinite(arr))[0])} is not a finite number")
    n, N = int(y.size), int(f_N.size)
    if n < 2:
        raise PPIError(f"only {n} human rating: PPI's interval needs at least two rated items")
    human_only = _normal(float(y.mean()), _var(y) / n, n, confidence)
    every = np.concatenate([f_N, f_n])
    judge_only = _normal(float(every.mean()), _var(every) / every.size, every.size, confidence)
    rect = y - f_n
    rectifier = _normal(float(rect.mean()), _var(rect) / n, n, confidence)
    if N == 0:  # every judged item is rated: nothing for the judge to add
        lam = 0.0
    elif power_tuning:
        var_f = float(np.var(every, ddof=1))
        cov = float(np.mean((y - y.mean()) * (f_n - f_n.mean())))
        lam = 0.0 if var_f == 0 else float(np.clip(cov / ((1 + n / N) * var_f), 0.0, 1.0))
    else:
        lam = 1.0
    value = float(y.mean() + lam * ((f_N.mean() if N else 0.0) - f_n.mean()))
    var = _var(y - lam * f_n) / n + (lam**2 * _var(f_N) / N if N else 0.0)
    return {"ppi": _normal(value, var, n + N, confidence), "human_only": human_only, "judge_only": judge_only,
            "rectifier": rectifier, "lam": lam, "n": n, "N": N}


def ratings_needed(estimate: Mapping[str, Any], judge_unlabeled: Sequence[float], judge_labeled: Sequence[float],
                   human: Sequence[float], width: float, confidence: float = 0.95) -> dict[str, Any]:
    """How many human ratings give an interval of ``width`` (hi - lo), PPI and human-only, from the
    variances the rated items show (the judge's verdicts on the N unrated items held fixed).

    Returns:
        ``{"width", "ppi": n or None, "human_only": n, "note"}``: None when the judge's own noise over
        the N items is already wider than ``width`` (more judged items are needed, not ratings).
    """
    if not width > 0:
        raise PPIError(f"width must be positive, got {width}")
    f_n, y, f_N = (np.asarray(v, dtype=float) for v in (judge_labeled, human, judge_unlabeled))
    lam, N = float(estimate["lam"]), int(f_N.size)
    budget = (width / (2 * z_quantile(confidence))) ** 2
    judge_part = lam**2 * _var(f_N) / N if N else 0.0
    human_only = math.ceil(_var(y) / budget) if _var(y) > 0 else 2
    out: dict[str, Any] = {"width": float(width), "human_only": max(human_only, 2)}
    if budget <= judge_part:
        return out | {"ppi": None, "note": f"the judge's verdicts on {N} unrated items alone give a wider interval; "
                                           f"judge more items"}
    out["ppi"] = max(math.ceil(_var(y - lam * f_n) / (budget - judge_part)), 2)
    return out


def labeled_split(judge: Mapping[str, float], human: Mapping[str, Sequence[float]],
                  what: str = "") -> tuple[list[float], list[float], list[float], list[str]]:
    """The three arrays of :func:`ppi_mean` from per-item outcomes: the judge's by item, people's by item
    (a list per item: its raters); plus the rated items' ids.

    Raises:
        PPIError: no human ratings, or ratings of items the judge has no verdict on (a rating of
            another pair of runs or task, most likely), naming ``what`` and the first such items.
    """
    rated = [i for i, values in human.items() if len(values)]
    if not rated:
        raise PPIError(f"{what + ': ' if what else ''}no human ratings; rate some items first")
    unknown = [i for i in rated if i not in judge]
    if unknown:
        raise PPIError(f"{what + ': ' if what else ''}{len(unknown)} rated items have no judge verdict "
                       f"(e.g. {', '.join(sorted(unknown)[:3])}); are the ratings of another pair of runs or task?")
    rated.sort()
    labeled = [float(judge[i]) for i in rated]
    people = [float(np.mean(human[i])) for i in rated]
    unlabeled = [float(v) for i, v in sorted(judge.items()) if i not in set(rated)]
    return unlabeled, labeled, people, rated
