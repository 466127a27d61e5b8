"""Scores with confidence intervals for evaluation results.

Every score is a plain dict with the project-wide shape ``{"value": float, "ci": [lo, hi], "n": int}``
(see :data:`Score`); a score of no items has ``n`` 0, NaN value and CI and a ``"note"`` saying so.
Pure Python + numpy + scipy: this module must not import torch.

Methods, each with its reference:
    * Binary proportions: Wilson score interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it
      at small n and near 0/1).
    * Anything else: percentile bootstrap over items (Efron & Tibshirani 1993; seeded, so results are
      reproducible); values grouped by item (an MT-Bench question's turns) resample whole items
      (:func:`clustered_mean`); ratios resample numerator and denominator together
      (:func:`ratio_of_sums`).
    * pass@k: the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)``, computed as
      a product so it never overflows; the CI is a bootstrap over problems.

Paired comparisons of two systems on the same items (McNemar, sign-flip, verdicts) are
:mod:`tunelab.eval.paired`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

Score = dict
"""A score: ``{"value": float, "ci": [lo, hi], "n": int}`` (project contract), plus ``"note"`` when
there is something to say (no items)."""

NO_ITEMS = "no items: nothing was scored"
"""The note of a score or comparison of zero items."""

MAX_BOOT_CELLS = 2_000_000
"""Resampling draws at most this many values at once (in chunks)."""
_NAN = math.nan


def z_quantile(confidence: float) -> float:
    """Two-sided standard-normal quantile for a confidence level in (0, 1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _score(value: float, lo: float, hi: float, n: int) -> Score:
    """Build a Score dict with plain Python floats (JSON-friendly)."""
    return {"value": float(value), "ci": [float(lo), float(hi)], "n": int(n)}


def empty_score() -> Score:
    """The score of no items: ``n`` 0, NaN value and CI, and a note that says so."""
    return {**_score(_NAN, _NAN, _NAN, 0), "note": NO_ITEMS}


def finite_values(values: Sequence[Any], what: str, ids: Sequence[Any] | None = None) -> np.ndarray:
    """``values`` as a 1-D float array; a NaN or infinite entry fails naming its item."""
    arr = np.asarray(values, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        item = f"item {ids[i]!r}" if ids is not None and i < len(ids) else f"item #{i}"
        raise ValueError(f"{what}: {item} has a non-finite score ({arr[i]}); scores must be finite numbers")
    return arr


def is_binary(values: np.ndarray) -> bool:
    """True when every entry is exactly 0 or 1."""
    return bool(np.all((values == 0) | (values == 1)))


def wilson(successes: int | float, n: int, confidence: float = 0.95) -> Score:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: Number of successes, ``0 <= successes <= n`` (may be fractional, e.g. a sum of
            partial credit in [0, 1]).
        n: Number of trials, ``n >= 0``.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        Score with ``value = successes / n``; for ``n == 0`` :func:`empty_score`.
    """
    if n < 0 or successes < 0 or successes > n or not math.isfinite(successes):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = z_quantile(confidence)
    if n == 0:
        return empty_score()
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return _score(p, max(0.0, center - half), min(1.0, center + half), n)


def _bootstrap_stats(
    values: np.ndarray, stat: Callable[..., Any], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Statistic of ``n_boot`` resamples (with replacement) of ``values``, drawn in memory-bounded chunks."""
    n = len(values)
    chunk = max(1, min(n_boot, MAX_BOOT_CELLS // max(n, 1)))
    out = np.empty(n_boot, dtype=float)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        samples = values[rng.integers(0, n, size=(size, n))]
        try:
            out[start : start + size] = stat(samples, axis=1)
        except TypeError:  # stat without an ``axis`` argument
            out[start : start + size] = [stat(row) for row in samples]
    return out


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[..., Any] = np.mean,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Score:
    """Percentile bootstrap CI of ``stat`` over items.

    Args:
        values: Per-item values, finite numbers (a NaN or infinity fails naming its position).
        stat: Statistic; called as ``stat(x, axis=1)`` on a 2-D batch of resamples when it accepts
            ``axis``, else once per resample. Resamples where it is NaN (undefined) are left out.
        confidence: Two-sided confidence level in (0, 1).
        n_boot: Number of bootstrap resamples, ``>= 1``.
        seed: Seed of the resampling RNG (same inputs and seed give the same CI).

    Returns:
        Score with ``value = stat(values)``; for no values :func:`empty_score`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    z_quantile(confidence)  # validates the level
    arr = finite_values(values, "bootstrap_ci")
    if arr.size == 0:
        return empty_score()
    value = float(stat(arr))
    boots = _bootstrap_stats(arr, stat, n_boot, np.random.default_rng(seed))
    boots = boots[~np.isnan(boots)]
    if boots.size == 0:
        return _score(value, _NAN, _NAN, arr.size)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return _score(value, lo, hi, arr.size)


def clustered_mean(
    groups: Sequence[Sequence[float]], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Score:
    """Mean of all values, with a percentile bootstrap CI that resamples whole groups.

    Values of one group (the turns of one question) are correlated, so the groups are resampled,
    not the values; each resample's statistic is its pooled mean ``sum / count``. Empty groups are
    left out.

    Args:
        groups: Per-item lists of finite values.
        confidence: Two-sided confidence level in (0, 1).
        n_boot: Number of bootstrap resamples, ``>= 1``.
        seed: Seed of the resampling RNG.

    Returns:
        Score with ``value`` = the mean of all values and ``n`` = their number; for no values
        :func:`empty_score`.
    """
    kept = [g for g in groups if len(g)]
    score = ratio_of_sums([float(np.sum(g)) for g in kept], [len(g) for g in kept], confidence, n_boot, seed)
    if kept:
        score["n"] = sum(len(g) for g in kept)
    return score


def ratio_of_sums(
    numerators: Sequence[float],
    denominators: Sequence[float],
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Score:
    """``sum(numerators) / sum(denominators)`` (e.g. loss per token over items), with a percentile
    bootstrap CI that resamples items (each item keeps its numerator and denominator together).

    Domain: finite numerators; finite denominators ``>= 0`` (an item with denominator 0, a
    zero-token item, adds nothing; resamples whose denominators sum to 0 are undefined and left out).

    Returns:
        Score with ``n`` = the number of items; for no items (or all denominators 0)
        :func:`empty_score`, with ``n`` the number of items.
    """
    if len(numerators) != len(denominators):
        raise ValueError("ratio_of_sums: numerators and denominators differ in length")
    num = finite_values(numerators, "ratio_of_sums (numerators)")
    den = finite_values(denominators, "ratio_of_sums (denominators)")
    if np.any(den < 0):
        raise ValueError(f"ratio_of_sums: denominators must be >= 0, got {float(den.min())}")
    if not len(num) or den.sum() == 0:
        return {**empty_score(), "n": len(num)}

    def ratio(idx: np.ndarray, axis: int | None = None) -> Any:
        idx = idx.astype(int)
        total = den[idx].sum(axis=axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, num[idx].sum(axis=axis) / np.where(total > 0, total, 1), np.nan)

    return bootstrap_ci(np.arange(len(num)), ratio, confidence=confidence, n_boot=n_boot, seed=seed)


def proportion_score(flags: Sequence[bool | int | float], confidence: float = 0.95) -> Score:
    """Score of per-item outcomes: Wilson when all are 0/1, else a bootstrap CI of the mean.

    Args:
        flags: Per-item outcomes (booleans, 0/1, or partial credit); finite.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        The score; for no items :func:`empty_score`.
    """
    arr = finite_values(flags, "proportion_score")
    if is_binary(arr):
        return wilson(float(arr.sum()), arr.size, confidence)
    return bootstrap_ci(arr, confidence=confidence)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate for one problem: ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1..n} (1 - k/i)``, which is exact in real arithmetic and stable.

    Args:
        n: Samples drawn for the problem.
        c: Samples that passed, ``0 <= c <= n``.
        k: The k of pass@k, ``1 <= k <= n``.

    Returns:
        The estimate; 1.0 when ``n - c < k`` (every k-subset contains a correct sample).
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=float)))


def pass_at_k_score(per_item: Sequence[tuple[int, int]], k: int, confidence: float = 0.95) -> Score:
    """pass@k over problems: mean of per-problem estimates; Wilson CI when every estimate is 0 or 1
    (one greedy sample per problem), else a bootstrap CI over problems.

    Args:
        per_item: ``(n, c)`` per problem: samples drawn and samples passed (see :func:`pass_at_k`).
        k: The k of pass@k.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        Score; for no problems :func:`empty_score`.
    """
    if len(per_item) == 0:
        return empty_score()
    estimates = [pass_at_k(n, c, k) for n, c in per_item]
    return proportion_score(estimates, confidence=confidence)
