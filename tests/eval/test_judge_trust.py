"""Judges you can trust: PPI against the authors' ppi_py and in simulation, length control against a
length-biased stub judge, position bias of a stub judge, Bradley-Terry scores, self-preference, and
clear messages for bad input."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tunelab.eval.bradley_terry import SCALE, bradley_terry
from tunelab.eval.judge import Judge, summarize_pairwise
from tunelab.eval.judge_bias import position_bias, self_preference
from tunelab.eval.length_control import length_controlled
from tunelab.eval.ppi import PPIError, labeled_split, ppi_mean, ratings_needed

# ----------------------------------------------------------------------------- PPI

# Outcomes of 40 rated items (people, and the judge on the same items) and the judge's on 300 unrated
# ones: 88 losses, 32 ties, 180 wins.
Y = [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
     0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.0]
F = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0,
     0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.0]
F_UNRATED = [0.0] * 88 + [0.5] * 32 + [1.0] * 180


def test_ppi_matches_the_authors_ppi_py() -> None:
    """Figures of ppi_py 0.2.3 (``ppi_mean_pointestimate`` / ``ppi_mean_ci``, alpha 0.05) on these arrays."""
    tuned = ppi_mean(F_UNRATED, F, Y)
    assert tuned["ppi"]["value"] == pytest.approx(0.6213917478988245, abs=1e-12)
    assert tuned["ppi"]["ci"] == pytest.approx([0.521969902491358, 0.7208135933062909], abs=1e-12)
    assert tuned["lam"] == pytest.approx(0.7242453056013617, abs=1e-12)
    plain = ppi_mean(F_UNRATED, F, Y, power_tuning=False)
    assert plain["lam"] == 1.0 and plain["ppi"]["value"] == pytest.approx(0.6533333333333333, abs=1e-12)
    assert plain["ppi"]["ci"] == pytest.approx([0.5430503193247253, 0.7636163473419414], abs=1e-12)
    assert tuned["n"] == 40 and tuned["N"] == 300 and tuned["human_only"]["value"] == pytest.approx(np.mean(Y))
    assert tuned["rectifier"]["value"] == pytest.approx(np.mean(Y) - np.mean(F))


def _simulate(rng: np.random.Generator, n: int, N: int, truth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """People prefer B with probability ``truth``; a judge agrees with the person 75% of the time and
    otherwise says B: biased towards B by about 0.25 * (1 - truth)."""
    people = (rng.random(n + N) < truth).astype(float)
    judge = np.where(rng.random(n + N) < 0.75, people, 1.0)
    return judge[n:], judge[:n], people[:n]


def test_ppi_covers_the_human_rate_at_the_nominal_level_and_is_narrower_than_human_only() -> None:
    rng, truth, sims = np.random.default_rng(0), 0.4, 600
    covered = {"ppi": 0, "human_only": 0, "judge_only": 0}
    widths = {"ppi": [], "human_only": []}
    for _ in range(sims):
        est = ppi_mean(*_simulate(rng, 80, 800, truth))
        for k in covered:
            lo, hi = est[k]["ci"]
            covered[k] += lo <= truth <= hi
        for k in widths:
            widths[k].append(est[k]["ci"][1] - est[k]["ci"][0])
    assert 0.92 <= covered["ppi"] / sims <= 0.975  # nominal 0.95 (binomial SE 0.009 at 600 draws)
    assert 0.92 <= covered["human_only"] / sims <= 0.975
    assert covered["judge_only"] / sims < 0.05  # the judge alone is biased, its interval misses
    assert np.mean(widths["ppi"]) < 0.85 * np.mean(widths["human_only"])


def test_ratings_needed_gives_the_width_asked_for() -> None:
    unrated, rated, people = _simulate(np.random.default_rng(1), 60, 600, 0.4)
    est = ppi_mean(unrated, rated, people)
    plan = ratings_needed(est, unrated, rated, people, width=0.15)
    assert plan["ppi"] < plan["human_only"]
    # the planned n, with the variances seen, gives a width at most the one asked for
    var_rect = np.var(np.asarray(people) - est["lam"] * np.asarray(rated))
    width = 2 * 1.959963984540054 * math.sqrt(var_rect / plan["ppi"] + est["lam"] ** 2 * np.var(unrated) / len(unrated))
    assert width <= 0.15 < 2 * 1.959963984540054 * math.sqrt(var_rect / (plan["ppi"] - 1) + est["lam"] ** 2
                                                              * np.var(unrated) / len(unrated))
    tight = ratings_needed(est, unrated[:20], rated, people, width=0.01)
    assert tight["ppi"] is None and "judge more items" in tight["note"]


def test_ppi_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(PPIError, match="no human ratings"):
        ppi_mean([1.0, 0.0], [], [])
    with pytest.raises(PPIError, match="3 human ratings but 2 judge verdicts"):
        ppi_mean([1.0], [1.0, 0.0], [1.0, 0.0, 1.0])
    with pytest.raises(PPIError, match="position 1 is not a finite number"):
        ppi_mean([1.0], [1.0, float("nan")], [1.0, 0.0])
    judge = {"q1": 1.0, "q2": 0.0, "q3": 0.5}
    with pytest.raises(PPIError, match=r"run a vs b: no human ratings; rate some items first"):
        labeled_split(judge, {}, "run a vs b")
    with pytest.raises(PPIError, match=r"2 rated items have no judge verdict \(e.g. x1, x2\); are the ratings of "
                                       r"another pair of runs"):
        labeled_split(judge, {"x1": [1.0], "x2": [0.0], "q1": [1.0]})
    unlabeled, labeled, people, ids = labeled_split(judge, {"q1": [1.0, 0.0], "q3": [1.0]})
    assert ids == ["q1", "q3"] and labeled == [1.0, 0.5] and people == [0.5, 1.0] and unlabeled == [0.0]


# ----------------------------------------------------------------------------- length control


def _length_judged(rng: np.random.Generator, n: int, bias: float) -> tuple[list[float], list[int], list[int]]:
    """Equal quality (people would split 50/50); A is usually longer. A judge with ``bias`` prefers the
    longer answer: P(A) = sigmoid(bias * dlen / 100)."""
    len_b = rng.integers(200, 600, n)
    dlen = rng.normal(150, 200, n).round().astype(int)
    len_a = np.maximum(len_b + dlen, 1)
    p = 1 / (1 + np.exp(-bias * (len_a - len_b) / 100))
    outcomes = np.where(rng.random(n) < p, 1.0, 0.0)
    ties = rng.random(n) < 0.1
    outcomes[ties] = 0.5
    return outcomes.tolist(), len_a.tolist(), len_b.tolist()


def test_a_length_biased_judges_raw_win_rate_moves_and_the_controlled_one_does_not() -> None:
    biased = length_controlled(*_length_judged(np.random.default_rng(3), 600, bias=1.5))
    assert biased["raw"]["value"] > 0.68 and biased["raw"]["ci"][0] > 0.65  # raw: A "wins" by being longer
    lo, hi = biased["lc_win_rate"]["ci"]
    assert lo < 0.5 < hi and abs(biased["lc_win_rate"]["value"] - 0.5) < 0.06
    assert biased["length_bias"]["value"] > 1 and biased["length_bias"]["p"] < 1e-6
    assert biased["length_bias"]["per_sd"] > 0.2
    fair = length_controlled(*_length_judged(np.random.default_rng(4), 600, bias=0.0))
    assert abs(fair["raw"]["value"] - fair["lc_win_rate"]["value"]) < 0.04
    assert fair["length_bias"]["ci"][0] < 0 < fair["length_bias"]["ci"][1]


def test_length_control_degenerate_and_bad_input() -> None:
    same = length_controlled([1.0, 0.0, 1.0], [100, 120, 140], [50, 70, 90])
    assert "length cannot be separated" in same["note"] and same["lc_win_rate"]["value"] == same["raw"]["value"]
    with pytest.raises(ValueError, match="3 outcomes but 2 and 3 lengths"):
        length_controlled([1.0, 0.0, 1.0], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="outcome 2.0 at position 1 is outside"):
        length_controlled([1.0, 2.0, 0.0], [1, 2, 3], [3, 2, 1])


# ----------------------------------------------------------------------------- position bias

_REPLY = re.compile(r"\[Reply of assistant (A|B)\]\n(.*?)\n\[End of reply", re.S)


class StubJudge:
    """A judge model: ``first`` always names the answer shown first ([[A]]); otherwise the answer with
    "GOOD" in it wins, else a tie."""

    def __init__(self, first: bool) -> None:
        self.first, self.fingerprint = first, "stub-judge"

    def generate(self, prompts: list, cfg: object) -> list[list[str]]:
        out = []
        for p in prompts:
            replies = dict(_REPLY.findall(p[-1]["content"]))
            good = [k for k in "AB" if "GOOD" in replies[k]]
            out.append(["[[A]]" if self.first else f"[[{good[0]}]]" if len(good) == 1 else "[[C]]"])
        return out


def test_a_position_biased_stub_judge_is_detected() -> None:
    qs = [{"id": str(i), "turns": [f"question {i}"], "category": "writing"} for i in range(40)]
    a = [["GOOD answer" if i % 2 else "weak answer"] for i in range(40)]
    b = [["weak answer" if i % 2 else "GOOD answer"] for i in range(40)]
    biased = position_bias(Judge(StubJudge(first=True)).pairwise(qs, a, b))
    assert biased["flip_rate"]["value"] == 1.0 and biased["flip_rate"]["n"] == 40
    assert biased["first_shown"]["value"] == 1.0 and biased["first_shown"]["p"] < 1e-20
    fair_records = Judge(StubJudge(first=False)).pairwise(qs, a, b)
    fair = position_bias(fair_records)
    assert fair["flip_rate"]["value"] == 0.0 and fair["first_shown"]["value"] == 0.5 and fair["first_shown"]["p"] == 1.0
    s = summarize_pairwise(fair_records)
    assert s["win_rate"]["value"] == 0.5 and "length_bias" in s and "lc_win_rate" in s


# ----------------------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_of_two_systems_is_the_logit_of_the_win_rate() -> None:
    battles = [("base", "tuned", 0.0)] * 30 + [("base", "tuned", 1.0)] * 20
    bt = bradley_terry(battles, n_boot=50)
    assert bt["reference"] == "base" and bt["scores"]["base"]["value"] == 1000.0
    assert bt["scores"]["tuned"]["value"] == pytest.approx(1000 + SCALE * math.log(0.6 / 0.4), abs=1e-6)
    assert bt["order"] == ["tuned", "base"] and bt["scores"]["tuned"]["n"] == 50


def test_bradley_terry_recovers_four_systems_strengths() -> None:
    rng, strength = np.random.default_rng(5), {"a": 0.0, "b": 0.6, "c": 1.2, "d": -0.6}
    names, battles = list(strength), []
    for _ in range(2400):
        i, j = rng.choice(4, 2, replace=False)
        p = 1 / (1 + math.exp(-(strength[names[i]] - strength[names[j]])))
        battles.append((names[i], names[j], 1.0 if rng.random() < p else 0.0))
    bt = bradley_terry(battles, reference="a", n_boot=100)
    assert bt["order"] == ["c", "b", "a", "d"]
    for s, beta in strength.items():
        lo, hi = bt["scores"][s]["ci"]
        if s != "a":
            assert lo <= 1000 + SCALE * beta <= hi
            assert hi - lo < 80


def test_bradley_terry_bad_input() -> None:
    with pytest.raises(ValueError, match="battle 0 pits 'x' against itself"):
        bradley_terry([("x", "x", 1.0)])
    with pytest.raises(ValueError, match="battle 1 has outcome 2"):
        bradley_terry([("x", "y", 1.0), ("x", "y", 2)])
    with pytest.raises(ValueError, match="u, v never meet 'x'"):
        bradley_terry([("x", "y", 1.0), ("x", "y", 0.0), ("u", "v", 1.0)])
    with pytest.raises(ValueError, match="reference 'z' is in no battle"):
        bradley_terry([("x", "y", 1.0)], reference="z")


# ----------------------------------------------------------------------------- self-preference


def test_self_preference_is_measured_only_where_one_side_shares_the_judges_family() -> None:
    rect = {"value": -0.08, "ci": [-0.14, -0.02], "n": 60}  # people give b 8 points less than the judge
    own_b = self_preference("HuggingFaceTB/SmolLM2-1.7B-Instruct", {"a": "google/gemma-3-270m", "b": "smollm2-135m"},
                            generator="smollm2-360m", rectifier=rect)
    assert own_b["own"] == ["b"] and own_b["circular"] and own_b["judge_family"] == "smollm"
    assert own_b["measured"]["value"] == pytest.approx(0.08) and own_b["measured"]["ci"] == pytest.approx([0.02, 0.14])
    own_a = self_preference("gemma-3-1b", {"a": "google/gemma-3-270m", "b": "smollm2-135m"}, rectifier=rect)
    assert own_a["measured"]["value"] == pytest.approx(-0.08) and not own_a["circular"]
    both = self_preference("smollm2-1.7b", {"a": "smollm2-135m", "b": "smollm2-135m"}, rectifier=rect)
    assert both["measured"] is None and "both candidates" in both["why"]
    unrated = self_preference("smollm2-1.7b", {"a": "gemma-3-270m", "b": "smollm2-135m"})
    assert unrated["measured"] is None and "no human ratings" in unrated["why"]
