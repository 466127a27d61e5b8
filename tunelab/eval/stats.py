"""Scores with confidence intervals and paired comparisons for evaluation results.

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
    * Paired binary outcomes (same items, two systems): exact McNemar test, i.e. the two-sided
      binomial test of the discordant pairs (``scipy.stats.binomtest``), and Newcombe's (1998)
      "method 10" interval for the difference of paired proportions: Wilson limits of both
      marginals combined with the continuity-corrected phi correlation, as published.
    * Paired continuous outcomes: the sign-flip permutation test of the mean difference (Fisher 1935;
      Good 2005): exact enumeration of all ``2**n`` sign patterns for ``n <= 16``, above that
      ``n_perm`` random sign patterns with the add-one p-value (Phipson & Smyth 2010). Under "no
      difference" (exchangeable systems) the paired differences are symmetric about 0, so the test
      holds its level at every n, where the paired bootstrap was too liberal at small n (a false-win
      rate of 0.18 at n=5). The CI is the same test inverted (every shift it does not reject).
    * Verdicts (:func:`compare_paired`): one rule for both kinds. A win needs the p-value below
      ``1 - confidence`` and the CI on the same side of 0; if the two disagree, no verdict is given
      and the result says why. Below :func:`min_items_for_verdict` items (6 at 95%: the exact
      tests' smallest p-value is ``2 ** (1 - n)``) no verdict is given at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.stats import binomtest

Score = dict
"""A score: ``{"value": float, "ci": [lo, hi], "n": int}`` (project contract), plus ``"note"`` when
there is something to say (no items)."""

NO_ITEMS = "no items: nothing was scored"
"""The note of a score or comparison of zero items."""

EXACT_FLIPS_MAX_N = 16
"""Largest n for which the sign-flip test enumerates all ``2**n`` sign patterns."""

_MAX_BOOT_CELLS = 2_000_000  # resample in chunks of at most this many drawn values
_NAN = math.nan


def _z(confidence: float) -> float:
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


def _finite(values: Sequence[Any], what: str, ids: Sequence[Any] | None = None) -> np.ndarray:
    """``values`` as a 1-D float array; a NaN or infinite entry fails naming its item."""
    arr = np.asarray(values, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        item = f"item {ids[i]!r}" if ids is not None and i < len(ids) else f"item #{i}"
        raise ValueError(f"{what}: {item} has a non-finite score ({arr[i]}); scores must be finite numbers")
    return arr


def _is_binary(values: np.ndarray) -> bool:
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
    z = _z(confidence)
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
    _z(confidence)  # validates the level
    arr = _finite(values, "bootstrap_ci")
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
    num = _finite(numerators, "ratio_of_sums (numerators)")
    den = _finite(denominators, "ratio_of_sums (denominators)")
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
    arr = _finite(flags, "proportion_score")
    if _is_binary(arr):
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


# ----------------------------------------------------------------------------- paired comparisons


def min_items_for_verdict(confidence: float = 0.95) -> int:
    """The fewest paired items at which the exact tests here can reach ``p < 1 - confidence``.

    Both the exact McNemar test and the sign-flip test have a smallest two-sided p-value of
    ``2 ** (1 - n)`` for n informative pairs, so fewer items can never give a verdict: 6 at 95%.
    """
    alpha = 1.0 - confidence
    _z(confidence)
    return max(1, math.ceil(1 - math.log2(alpha) + 1e-12))


def _paired(a: Sequence[Any], b: Sequence[Any], ids: Sequence[Any] | None, what: str
            ) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length finite float arrays (a non-finite score fails naming its item)."""
    xa, xb = _finite(a, f"{what} (system A)", ids), _finite(b, f"{what} (system B)", ids)
    if xa.size != xb.size:
        raise ValueError(f"paired samples need equal lengths, got {xa.size} and {xb.size}")
    if ids is not None and len(ids) != xa.size:
        raise ValueError(f"ids: {len(ids)} ids for {xa.size} pairs")
    return xa, xb


def _no_items(method: str) -> dict:
    """The comparison of zero pairs: NaN figures, no verdict, and the note."""
    return {"delta": _NAN, "ci": [_NAN, _NAN], "p_value": _NAN, "n": 0, "method": method,
            "verdict": "no items", "note": NO_ITEMS}


def mcnemar_p_value(b_only: int, a_only: int) -> float:
    """Exact two-sided McNemar p-value: the binomial test of ``b_only`` successes in
    ``b_only + a_only`` fair-coin trials (``scipy.stats.binomtest``); 1.0 with no discordant pairs."""
    if b_only < 0 or a_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b_only}, {a_only}")
    m = b_only + a_only
    return 1.0 if m == 0 else float(binomtest(b_only, m, 0.5, alternative="two-sided").pvalue)


def newcombe_paired_ci(both: int, a_only: int, b_only: int, neither: int, confidence: float = 0.95
                       ) -> list[float]:
    """Newcombe's (1998) method 10 interval for ``p_b - p_a`` on paired binary outcomes.

    Wilson limits (l, u) of both marginal proportions, combined by "square and add" with the phi
    correlation of the two outcomes, corrected for continuity as published: with
    ``A = both * neither - a_only * b_only``, ``A - n/2`` when ``A > n/2``, 0 when
    ``0 <= A <= n/2``, ``A`` when negative; phi is 0 when a marginal is 0 or n. (The plain phi
    gives intervals that are too narrow when the systems mostly agree; with no discordant item
    they would collapse to [0, 0].)

    Args:
        both, a_only, b_only, neither: The paired 2x2 counts (``>= 0``).
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        ``[lo, hi]``, within [-1, 1]; ``[nan, nan]`` for no items.
    """
    cells = (both, a_only, b_only, neither)
    if min(cells) < 0:
        raise ValueError(f"counts must be >= 0, got {cells}")
    n = sum(cells)
    if n == 0:
        return [_NAN, _NAN]
    pa, pb = (both + a_only) / n, (both + b_only) / n
    la, ua = wilson(both + a_only, n, confidence)["ci"]
    lb, ub = wilson(both + b_only, n, confidence)["ci"]
    cross = both * neither - a_only * b_only
    if cross > n / 2:
        cross -= n / 2
    elif cross >= 0:
        cross = 0.0
    denom = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = cross / math.sqrt(denom) if denom > 0 else 0.0
    d = pb - pa
    lo = d - math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    hi = d + math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return [max(-1.0, lo), min(1.0, hi)]


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool], confidence: float = 0.95,
                  ids: Sequence[Any] | None = None) -> dict:
    """Paired binary comparison of system A and system B on the same items.

    The p-value is the exact McNemar test (:func:`mcnemar_p_value`); the CI of
    ``delta = mean(b) - mean(a)`` is Newcombe's method 10 (:func:`newcombe_paired_ci`).

    Args:
        a: Per-item outcomes of system A (0/1).
        b: Per-item outcomes of system B on the same items, same order.
        confidence: Two-sided confidence level of the CI in (0, 1).
        ids: Item ids, named in errors.

    Returns:
        ``{"delta", "ci", "p_value", "n", "b_only", "a_only", "method"}``; for no items NaN
        figures with a note.
    """
    xa, xb = _paired(a, b, ids, "mcnemar_exact")
    if not (_is_binary(xa) and _is_binary(xb)):
        raise ValueError("mcnemar_exact needs 0/1 outcomes; use sign_flip_test for other values")
    if xa.size == 0:
        return {**_no_items("mcnemar_exact"), "b_only": 0, "a_only": 0}
    ia, ib = xa.astype(bool), xb.astype(bool)
    both, neither = int(np.sum(ia & ib)), int(np.sum(~ia & ~ib))
    a_only, b_only = int(np.sum(ia & ~ib)), int(np.sum(~ia & ib))
    return {
        "delta": float(xb.mean() - xa.mean()),
        "ci": newcombe_paired_ci(both, a_only, b_only, neither, confidence),
        "p_value": mcnemar_p_value(b_only, a_only),
        "n": int(xa.size),
        "b_only": b_only,
        "a_only": a_only,
        "method": "mcnemar_exact",
    }


def _pattern_sums(d: np.ndarray, n_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(``s_k @ d``, ``sum(s_k)``, exact) over sign patterns s_k: all ``2**n`` of them for small n,
    else ``n_perm`` seeded random ones, drawn in memory-bounded chunks."""
    n = d.size
    if n <= EXACT_FLIPS_MAX_N:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
        signs = 1.0 - 2.0 * (codes & 1)
        return signs @ d, signs.sum(axis=1), True
    rng = np.random.default_rng(seed)
    u, v = np.empty(n_perm), np.empty(n_perm)
    chunk = max(1, _MAX_BOOT_CELLS // n)
    for start in range(0, n_perm, chunk):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(chunk, n_perm - start), n))
        u[start : start + len(signs)], v[start : start + len(signs)] = signs @ d, signs.sum(axis=1)
    return u, v, False


class _SignFlip:
    """p-values of the sign-flip test of "the mean difference is ``mu``", for any ``mu``.

    For patterns s_k, the statistic of ``d - mu`` is ``s_k @ d - mu * sum(s_k)``: two vectors
    computed once, so every ``mu`` costs O(patterns) (test inversion for the CI is cheap).
    """

    def __init__(self, d: np.ndarray, n_perm: int, seed: int) -> None:
        self.d, self.n = d, d.size
        self.u, self.v, self.exact = _pattern_sums(d, n_perm, seed)
        self.count = len(self.u)
        self.scale = float(np.abs(d).sum()) + 1.0

    def p(self, mu: float) -> float:
        """Two-sided p-value of the hypothesis "mean difference = mu"."""
        observed = abs(float(self.d.sum()) - self.n * mu)
        hits = int(np.sum(np.abs(self.u - mu * self.v) >= observed - 1e-9 * (self.scale + abs(mu) * self.n)))
        if self.exact:  # the identity pattern is among them
            return hits / self.count
        return (hits + 1) / (self.count + 1)

    def bound(self, alpha: float, side: int) -> float:
        """The CI limit on ``side`` (-1 lower, +1 upper): the outermost shift not rejected at ``alpha``."""
        center = float(self.d.mean())
        span = float(self.d.max() - self.d.min()) + 1.0
        outer = center + side * span
        if self.p(outer) >= alpha:  # no shift is ever rejected (too few items): unbounded
            return side * math.inf
        inner = center  # p(center) == 1: accepted
        for _ in range(64):
            mid = (inner + outer) / 2
            if self.p(mid) >= alpha:
                inner = mid
            else:
                outer = mid
            if abs(outer - inner) <= 1e-12 * span:
                break
        return inner


def sign_flip_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, n_perm: int = 10_000,
                   seed: int = 0, ids: Sequence[Any] | None = None) -> dict:
    """Paired comparison of continuous scores: the sign-flip permutation test of the mean difference.

    ``delta = mean(b) - mean(a)``. The p-value is the two-sided sign-flip test of ``delta = 0``
    (exact for ``n <= 16``, else ``n_perm`` seeded random sign patterns with the add-one p-value);
    the CI is the set of shifts the same test does not reject at ``1 - confidence``, so it
    excludes 0 exactly when ``p < 1 - confidence`` (up to the step function's ties).

    Args:
        a: Per-item scores of system A (finite).
        b: Per-item scores of system B on the same items, same order.
        confidence: Two-sided confidence level in (0, 1).
        n_perm: Random sign patterns above the exact range (``>= 1``).
        seed: Seed of the random patterns.
        ids: Item ids, named in errors.

    Returns:
        ``{"delta", "ci", "p_value", "n", "method", "exact"}``; the CI is ``[nan, nan]`` when no
        shift can be rejected (fewer than :func:`min_items_for_verdict` items).
    """
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    xa, xb = _paired(a, b, ids, "sign_flip_test")
    alpha = 1.0 - confidence
    _z(confidence)
    if xa.size == 0:
        return {**_no_items("sign_flip_test"), "exact": True}
    test = _SignFlip(xb - xa, n_perm, seed)
    lo, hi = test.bound(alpha, -1), test.bound(alpha, +1)
    ci = [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else [_NAN, _NAN]
    return {"delta": float(test.d.mean()), "ci": [float(c) for c in ci], "p_value": test.p(0.0),
            "n": int(xa.size), "method": "sign_flip_test", "exact": test.exact}


def verdict(result: dict, confidence: float = 0.95) -> tuple[str, str | None]:
    """(verdict, note) of a paired comparison: the one rule for binary and continuous scores.

    ``"b better"`` / ``"a better"`` only when ``p < 1 - confidence`` and the CI lies on that side
    of 0; ``"too few items for a verdict"`` below :func:`min_items_for_verdict` items; otherwise
    ``"no significant difference"``, with a note when the test and the CI disagree.
    """
    n, need = result["n"], min_items_for_verdict(confidence)
    if n == 0:
        return "no items", NO_ITEMS
    if n < need:
        return "too few items for a verdict", (
            f"{n} paired item(s); at least {need} are needed before an exact test can reach "
            f"p < {1 - confidence:.2g}")
    lo, hi = result["ci"]
    significant = result["p_value"] < 1.0 - confidence
    if significant and lo > 0:
        return "b better", None
    if significant and hi < 0:
        return "a better", None
    excludes_zero = lo > 0 or hi < 0
    if significant != excludes_zero:
        return "no significant difference", (
            f"the test (p = {result['p_value']:.3g}) and the CI [{lo:.3g}, {hi:.3g}] disagree; "
            "no verdict is given")
    return "no significant difference", None


def compare_paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                   ids: Sequence[Any] | None = None, n_perm: int = 10_000, seed: int = 0) -> dict:
    """Compare two systems on the same items (``delta = mean(b) - mean(a)``) and give a verdict.

    0/1 outcomes: :func:`mcnemar_exact`; other scores: :func:`sign_flip_test`. The verdict
    follows :func:`verdict` (the same rule for both).

    Args:
        a: Per-item outcomes of system A (finite; a NaN or infinity fails naming the item).
        b: Per-item outcomes of system B, same items and order.
        confidence: Confidence level of the CI and the test, in (0, 1).
        ids: Item ids, named in errors.
        n_perm: Random sign patterns of the sign-flip test above its exact range.
        seed: Seed of those patterns.

    Returns:
        The chosen test's dict (``delta``, ``ci``, ``p_value``, ``n``, ``method``, ...) plus
        ``"verdict"`` and, when there is something to say, ``"note"``.
    """
    xa, xb = _paired(a, b, ids, "compare_paired")
    if _is_binary(xa) and _is_binary(xb):
        result = mcnemar_exact(xa, xb, confidence=confidence)
    else:
        result = sign_flip_test(xa, xb, confidence=confidence, n_perm=n_perm, seed=seed)
    result["verdict"], note = verdict(result, confidence)
    if note:
        result["note"] = note
    return result
