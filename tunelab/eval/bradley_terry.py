"""Bradley-Terry scores of several systems from pairwise verdicts, with bootstrap intervals.

Chatbot Arena and Arena-Hard (Li, Chiang et al. 2024, arXiv 2406.11939) rank systems by a Bradley-Terry
model fitted to pairwise battles: ``P(i beats j) = sigmoid(beta_i - beta_j)``, a logistic regression on a
design with +1 for the first system and -1 for the second. Scores are on the Elo scale Arena-Hard prints
(``1000 + 400 * beta / ln 10``, the reference system at 1000), intervals a percentile bootstrap over
battles, as theirs. A tie is half a win for each side (a binomial GLM on outcomes in [0, 1]).

The fit is statsmodels' GLM (binomial, no intercept). When a system wins or loses every battle its
maximum-likelihood strength is infinite; the fit then takes a weak L2 penalty and says so
(``regularized``), as a bootstrap resample that separates does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

SCALE = 400 / math.log(10)
"""Elo points per unit of Bradley-Terry strength."""
INIT = 1000.0
"""The reference system's score."""
RIDGE = 1e-2
"""The L2 penalty (per battle) of a fit whose maximum-likelihood strengths are infinite."""


def _design(battles: Sequence[tuple[str, str, float]], systems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {s: k for k, s in enumerate(systems)}
    X = np.zeros((len(battles), len(systems)))
    for r, (a, b, _) in enumerate(battles):
        X[r, index[a]] += 1.0
        X[r, index[b]] -= 1.0
    return X[:, 1:], np.asarray([float(o) for *_, o in battles])  # the first system is the reference (0)


def _fit(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, bool]:
    """The strengths (the reference's left out) and whether they needed a ridge: when one system wins or
    loses every battle the maximum-likelihood strengths are infinite; a weak L2 penalty (``RIDGE`` per
    battle) keeps the order and gives finite scores."""
    import statsmodels.api as sm

    model = sm.GLM(y, X, family=sm.families.Binomial())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params = model.fit().params
            if np.all(np.isfinite(params)) and np.max(np.abs(params), initial=0.0) < 15:
                return params, False
        except (ValueError, np.linalg.LinAlgError):  # perfect separation
            pass
        return model.fit_regularized(alpha=RIDGE, L1_wt=0.0).params, True


def bradley_terry(battles: Sequence[tuple[str, str, float]], reference: str | None = None, n_boot: int = 200,
                  confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Bradley-Terry scores with bootstrap intervals.

    Args:
        battles: ``(system_a, system_b, outcome)`` with outcome 1 when a wins, 0.5 a tie, 0 when b wins.
        reference: The system at 1000 (default: the first named).
        n_boot: Bootstrap resamples of the battles.
        confidence: Two-sided level.
        seed: The resampling seed.

    Returns:
        ``{"scores": {system: {"value", "ci", "n"}}, "order": [best first], "reference", "battles",
        "regularized", "regularized_resamples"}``; ``n`` counts a system's battles.

    Raises:
        ValueError: fewer than two systems, a system battling itself, an outcome outside [0, 1], or
            systems no battle connects (their scores would not be comparable).
    """
    if not battles:
        raise ValueError("Bradley-Terry: no battles")
    systems: list[str] = []
    for k, (a, b, o) in enumerate(battles):
        if a == b:
            raise ValueError(f"Bradley-Terry: battle {k} pits {a!r} against itself")
        if not 0.0 <= float(o) <= 1.0:
            raise ValueError(f"Bradley-Terry: battle {k} has outcome {o!r}, outside [0, 1]")
        systems += [s for s in (a, b) if s not in systems]
    if reference is not None:
        if reference not in systems:
            raise ValueError(f"Bradley-Terry: reference {reference!r} is in no battle")
        systems.remove(reference)
        systems.insert(0, reference)
    _connected(battles, systems)
    X, y = _design(battles, systems)
    params, regularized = _fit(X, y)
    point = np.concatenate([[0.0], params])
    rng = np.random.default_rng(seed)
    boots, ridged = [], 0
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        params, r = _fit(X[idx], y[idx])
        boots.append(np.concatenate([[0.0], params]))
        ridged += r
    draws = np.asarray(boots)
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    counts = {s: sum(s in (a, b) for a, b, _ in battles) for s in systems}
    scores = {}
    for k, s in enumerate(systems):
        lo, hi = np.quantile(draws[:, k], [lo_q, hi_q])
        scores[s] = {"value": float(INIT + SCALE * point[k]), "ci": [float(INIT + SCALE * lo), float(INIT + SCALE * hi)],
                     "n": counts[s]}
    order = sorted(systems, key=lambda s: -scores[s]["value"])
    return {"scores": scores, "order": order, "reference": systems[0], "battles": len(battles),
            "regularized": regularized, "regularized_resamples": ridged}


def _connected(battles: Sequence[tuple[str, str, float]], systems: list[str]) -> None:
    """Raise when the battles split the systems into groups that never meet."""
    seen, todo = {systems[0]}, [systems[0]]
    while todo:
        s = todo.pop()
        for a, b, _ in battles:
            for x, other in ((a, b), (b, a)):
                if x == s and other not in seen:
                    seen.add(other)
                    todo.append(other)
    if len(seen) < len(systems):
        rest = sorted(set(systems) - seen)
        raise ValueError(f"Bradley-Terry: {', '.join(rest)} never meet {systems[0]!r} or its opponents; "
                         f"their scores could not be compared")
