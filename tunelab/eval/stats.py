"""Scores with confidence intervals and paired comparisons for evaluation results.

Every score is a plain dict with the project-wide shape ``{"value": float, "ci": [lo, hi], "n": int}``
(see :data:`Score`). Pure Python + numpy: this module must not import torch.

Methods:
    * Binary proportions: Wilson score interval (good coverage at small n and near 0/1).
    * Anything else: percentile bootstrap over items (seeded, so results are reproducible); values
      grouped by item (an MT-Bench question's turns) resample whole items (:func:`clustered_mean`).
    * pass@k: the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)``, computed as
      a product so it never overflows; the CI is a bootstrap over problems.
    * Paired binary outcomes (same items, two systems): exact McNemar test on the discordant pairs and
      Newcombe's hybrid-score interval for the difference of paired proportions (Newcombe 1998,
      "method 10").
    * Paired continuous outcomes: paired bootstrap of the mean difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

Score = dict
"""A score: ``{"value": float, "ci": [lo, hi], "n": int}`` (project contract)."""

_MAX_BOOT_CELLS = 2_000_000  # resample in chunks of at most this many drawn values


def _z(confidence: float) -> float:
    """Two-sided standard-normal quantile for a confidence level."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _score(value: float, lo: float, hi: float, n: int) -> Score:
    """Build a Score dict with plain Python floats (JSON-friendly)."""
    return {"value": float(value), "ci": [float(lo), float(hi)], "n": int(n)}


def _is_binary(values: np.ndarray) -> bool:
    """True when every entry is exactly 0 or 1."""
    return bool(np.all((values == 0) | (values == 1)))


def wilson(successes: int | float, n: int, confidence: float = 0.95) -> Score:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: Number of successes (may be fractional, e.g. a sum of partial credit in [0, 1]).
        n: Number of trials.
        confidence: Two-sided confidence level.

    Returns:
        Score with ``value = successes / n``. For ``n == 0`` the value is 0.0 and the CI is [0, 1].
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return _score(0.0, 0.0, 1.0, 0)
    z = _z(confidence)
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
    chunk = max(1, min(n_boot, _MAX_BOOT_CELLS // max(n, 1)))
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
        values: Per-item values.
        stat: Statistic; called as ``stat(x, axis=1)`` on a 2-D batch of resamples when it accepts
            ``axis``, else once per resample.
        confidence: Two-sided confidence level.
        n_boot: Number of bootstrap resamples.
        seed: Seed of the resampling RNG (same inputs and seed give the same CI).

    Returns:
        Score with ``value = stat(values)``.

    Raises:
        ValueError: If ``values`` is empty.
    """
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    _z(confidence)  # validates the level
    value = float(stat(arr))
    boots = _bootstrap_stats(arr, stat, n_boot, np.random.default_rng(seed))
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
        groups: Per-item lists of values.
        confidence: Two-sided confidence level.
        n_boot: Number of bootstrap resamples.
        seed: Seed of the resampling RNG.

    Returns:
        Score with ``value`` = the mean of all values and ``n`` = their number; for no values, NaN
        value and CI with ``n`` 0.
    """
    kept = [g for g in groups if len(g)]
    score = ratio_of_sums([float(np.sum(g)) for g in kept], [len(g) for g in kept], confidence, n_boot, seed)
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

    Returns:
        Score with ``n`` = the number of items; for no items, NaN value and CI.
    """
    if len(numerators) != len(denominators):
        raise ValueError("ratio_of_sums: numerators and denominators differ in length")
    if not len(numerators):
        return _score(math.nan, math.nan, math.nan, 0)
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)

    def ratio(idx: np.ndarray, axis: int | None = None) -> Any:
        idx = idx.astype(int)
        return num[idx].sum(axis=axis) / den[idx].sum(axis=axis)

    return bootstrap_ci(np.arange(len(num)), ratio, confidence=confidence, n_boot=n_boot, seed=seed)


def proportion_score(flags: Sequence[bool | int | float], confidence: float = 0.95) -> Score:
    """Score of per-item outcomes: Wilson when all are 0/1, else a bootstrap CI of the mean.

    Args:
        flags: Per-item outcomes (booleans, 0/1, or partial credit).
        confidence: Two-sided confidence level.
    """
    arr = np.asarray(flags, dtype=float).ravel()
    if _is_binary(arr):
        return wilson(float(arr.sum()), arr.size, confidence)
    return bootstrap_ci(arr, confidence=confidence)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate for one problem: ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1..n} (1 - k/i)``, which is exact in real arithmetic and stable.

    Args:
        n: Samples drawn for the problem.
        c: Samples that passed.
        k: The k of pass@k (``1 <= k <= n``).

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
        per_item: ``(n, c)`` per problem: samples drawn and samples passed.
        k: The k of pass@k.
        confidence: Two-sided confidence level.

    Returns:
        Score; for no problems, value 0.0 with CI [0, 1] and n 0.
    """
    if len(per_item) == 0:
        return _score(0.0, 0.0, 1.0, 0)
    estimates = [pass_at_k(n, c, k) for n, c in per_item]
    return proportion_score(estimates, confidence=confidence)


def _paired_arrays(a: Sequence[Any], b: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length, non-empty float arrays."""
    xa = np.asarray(a, dtype=float).ravel()
    xb = np.asarray(b, dtype=float).ravel()
    if xa.size != xb.size:
        raise ValueError(f"paired samples need equal lengths, got {xa.size} and {xb.size}")
    if xa.size == 0:
        raise ValueError("paired comparison needs at least one pair")
    return xa, xb


def _binom_two_sided_half(k: int, m: int) -> float:
    """Exact two-sided p-value of k successes in m fair-coin trials (symmetric case)."""
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(k, m - k) + 1))
    return min(1.0, 2 * tail / 2**m)


def _newcombe_paired_ci(both: int, a_only: int, b_only: int, neither: int, confidence: float) -> list[float]:
    """Newcombe (1998) hybrid-score CI ("method 10") for ``p_b - p_a`` on paired binary data."""
    n = both + a_only + b_only + neither
    pa, pb = (both + a_only) / n, (both + b_only) / n
    wa, wb = wilson(both + a_only, n, confidence), wilson(both + b_only, n, confidence)
    la, ua = wa["ci"]
    lb, ub = wb["ci"]
    denom = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = (both * neither - a_only * b_only) / math.sqrt(denom) if denom > 0 else 0.0
    d = pb - pa
    lo = d - math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    hi = d + math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return [max(-1.0, lo), min(1.0, hi)]


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool], confidence: float = 0.95) -> dict:
    """Paired binary comparison of system A and system B on the same items.

    The p-value is the exact two-sided binomial (McNemar) test on the discordant pairs. The CI for
    ``delta = mean(b) - mean(a)`` is Newcombe's hybrid-score interval for paired proportions
    (Newcombe 1998, method 10: Wilson intervals of both marginals combined with the phi correlation).

    Args:
        a: Per-item outcomes of system A (0/1).
        b: Per-item outcomes of system B on the same items, same order.
        confidence: Two-sided confidence level of the CI.

    Returns:
        ``{"delta", "ci", "p_value", "n", "b_only", "a_only"}``.
    """
    xa, xb = _paired_arrays(a, b)
    if not (_is_binary(xa) and _is_binary(xb)):
        raise ValueError("mcnemar_exact needs 0/1 outcomes; use paired_bootstrap for other values")
    ia, ib = xa.astype(bool), xb.astype(bool)
    both, neither = int(np.sum(ia & ib)), int(np.sum(~ia & ~ib))
    a_only, b_only = int(np.sum(ia & ~ib)), int(np.sum(~ia & ib))
    return {
        "delta": float(xb.mean() - xa.mean()),
        "ci": _newcombe_paired_ci(both, a_only, b_only, neither, confidence),
        "p_value": _binom_two_sided_half(b_only, a_only + b_only),
        "n": int(xa.size),
        "b_only": b_only,
        "a_only": a_only,
    }


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 5000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Paired bootstrap of the mean difference ``mean(b) - mean(a)`` (items resampled as pairs).

    The CI is the percentile interval of the resampled mean differences. The two-sided p-value is the
    percentile-inversion bootstrap p: ``2 * min(#(d* <= 0), #(d* >= 0)) / n_boot``, with an add-one
    correction ``(count + 1) / (n_boot + 1)`` so it is never exactly 0, capped at 1. It agrees with the
    CI: the CI at level ``1 - alpha`` excludes 0 roughly when ``p < alpha``.

    Args:
        a: Per-item scores of system A.
        b: Per-item scores of system B on the same items, same order.
        n_boot: Number of bootstrap resamples.
        seed: RNG seed.
        confidence: Two-sided confidence level of the CI.

    Returns:
        ``{"delta", "ci", "p_value", "n"}``.
    """
    xa, xb = _paired_arrays(a, b)
    _z(confidence)
    diffs = xb - xa
    boots = _bootstrap_stats(diffs, np.mean, n_boot, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    tail = min(int(np.sum(boots <= 0)), int(np.sum(boots >= 0)))
    p_value = min(1.0, 2 * (tail + 1) / (n_boot + 1))
    return {"delta": float(diffs.mean()), "ci": [float(lo), float(hi)], "p_value": p_value, "n": int(xa.size)}


def compare_paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Compare two systems on the same items and give a conservative verdict.

    Uses :func:`mcnemar_exact` when both outcome lists are 0/1, else :func:`paired_bootstrap`.
    The verdict is ``"b better"`` / ``"a better"`` only when the CI of ``mean(b) - mean(a)`` excludes 0
    AND the p-value is below ``1 - confidence``; otherwise ``"no significant difference"``. A CI that
    touches or crosses 0 never yields a win.

    Args:
        a: Per-item outcomes of system A.
        b: Per-item outcomes of system B, same items and order.
        confidence: Confidence level of the CI and the test.

    Returns:
        The chosen test's dict plus ``"method"`` (``"mcnemar_exact"`` or ``"paired_bootstrap"``)
        and ``"verdict"``.
    """
    xa, xb = _paired_arrays(a, b)
    if _is_binary(xa) and _is_binary(xb):
        result = mcnemar_exact(xa, xb, confidence=confidence)
        result["method"] = "mcnemar_exact"
    else:
        result = paired_bootstrap(xa, xb, confidence=confidence)
        result["method"] = "paired_bootstrap"
    lo, hi = result["ci"]
    significant = result["p_value"] < 1.0 - confidence
    if lo > 0 and significant:
        result["verdict"] = "b better"
    elif hi < 0 and significant:
        result["verdict"] = "a better"
    else:
        result["verdict"] = "no significant difference"
    return result
