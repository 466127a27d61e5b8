"""Length-controlled win rates (AlpacaEval 2; Dubois, Galambosi, Liang & Hashimoto 2024, arXiv 2404.04475).

Judges prefer longer answers. AlpacaEval 2 fits a GLM of the judge's preference on the length difference
and reads the win rate off it at equal lengths: "what would the preference be if both answers had the
same length?". Its Spearman correlation with Chatbot Arena rises from 0.94 to 0.98.

Here, for one pair of systems judged item by item (AlpacaEval's ``length_controlled_v1`` without its
instruction-difficulty term, which needs many systems per instruction):

    logit P(A preferred) = b0 + phi * tanh(dlen / sd(dlen)),   dlen = len(answer A) - len(answer B)

fitted by statsmodels' GLM with a binomial family on outcomes in [0, 1] (a tie is 0.5), its dispersion
estimated (quasi-binomial: ties make the outcome less variable than a coin). The length-controlled win
rate is ``sigmoid(b0)``, its interval the transformed interval of ``b0``; ``phi`` is the judge's length
bias on these items (positive: the longer answer is preferred), with its interval and p-value. Lengths
are in characters, as AlpacaEval's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab.eval.stats import Score, empty_score, z_quantile


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def length_controlled(outcomes: Sequence[float], len_a: Sequence[int], len_b: Sequence[int],
                      confidence: float = 0.95) -> dict[str, Any]:
    """The raw and the length-controlled win rate of A, and the judge's length bias.

    Args:
        outcomes: Per item, 1 when A is preferred, 0.5 a tie, 0 when B is (values in [0, 1]).
        len_a: Length of A's answer per item (characters).
        len_b: Length of B's answer per item.
        confidence: Two-sided level.

    Returns:
        ``raw`` (the mean outcome, its normal interval), ``lc_win_rate`` (A's win rate at equal length),
        ``length_bias`` (``phi`` with its interval, ``p`` and ``per_sd``: the change of the win
        probability from equal lengths to A one standard deviation longer), ``mean_dlen`` and a
        ``note`` when the fit cannot separate length from the intercept (every length difference the same,
        or one outcome everywhere): then ``lc_win_rate`` is the raw one.

    Raises:
        ValueError: lengths of another count than the outcomes, or an outcome outside [0, 1].
    """
    import statsmodels.api as sm

    y = np.asarray(outcomes, dtype=float)
    a, b = np.asarray(len_a, dtype=float), np.asarray(len_b, dtype=float)
    if not (y.size == a.size == b.size):
        raise ValueError(f"length control: {y.size} outcomes but {a.size} and {b.size} lengths")
    if y.size == 0:
        return {"raw": empty_score(), "lc_win_rate": empty_score(), "length_bias": empty_score(), "mean_dlen": math.nan}
    if not np.all((y >= 0) & (y <= 1)):
        bad = int(np.flatnonzero(~((y >= 0) & (y <= 1)))[0])
        raise ValueError(f"length control: outcome {float(y[bad])} at position {bad} is outside [0, 1]")
    z, n = z_quantile(confidence), int(y.size)
    sd = float(np.std(y, ddof=1)) if n > 1 else 0.0
    raw = {"value": float(y.mean()), "ci": [float(y.mean() - z * sd / math.sqrt(n)), float(y.mean() + z * sd / math.sqrt(n))],
           "n": n}
    dlen = a - b
    out: dict[str, Any] = {"raw": raw, "mean_dlen": float(dlen.mean())}
    spread = float(np.std(dlen, ddof=1)) if n > 1 else 0.0
    if spread == 0 or y.min() == y.max() or n < 3:
        why = ("every length difference is the same" if spread == 0 else
               "every outcome is the same" if y.min() == y.max() else "fewer than 3 items")
        return out | {"lc_win_rate": dict(raw), "length_bias": {**empty_score(), "n": n},
                      "note": f"length cannot be separated from quality here ({why}); the controlled rate is the raw one"}
    x = np.tanh(dlen / spread)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation is reported through the note below, not a warning
        fit = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit(scale="X2")
    (b0, phi), (se0, se1) = fit.params, fit.bse
    lc: Score = {"value": _sigmoid(b0), "ci": [_sigmoid(b0 - z * se0), _sigmoid(b0 + z * se0)], "n": n}
    bias = {"value": float(phi), "ci": [float(phi - z * se1), float(phi + z * se1)], "n": n,
            "p": float(fit.pvalues[1]), "per_sd": float(_sigmoid(b0 + phi * math.tanh(1.0)) - _sigmoid(b0))}
    out |= {"lc_win_rate": lc, "length_bias": bias}
    if not (np.isfinite(se0) and np.isfinite(se1)) or abs(phi) > 20:
        out["note"] = "the fit separates the outcomes by length (every longer answer wins or every one loses)"
    return out
