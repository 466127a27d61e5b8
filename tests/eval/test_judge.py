"""LLM judge: parsing, order swapping, flips as ties, parse failures, length control, circularity."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tunelab.eval.harness import evaluate
from tunelab.eval.judge import (
    PAIR_PROMPT_VERSION,
    SINGLE_PROMPT_VERSION,
    Judge,
    circularity_warning,
    combine_judges,
    combine_orders,
    length_controlled_win_rate,
    model_family,
    parse_rating,
    parse_verdict,
    summarize_pairwise,
    summarize_single,
)
from tunelab.eval.tasks.judge_task import JudgeTask
from tunelab.generate.base import GenerationConfig

DATA = Path(os.environ.get("TUNELAB_DATA_DIR", "/work/shared/data"))
_REPLY = re.compile(r"\[Reply of assistant ([AB])\]\n(.*?)\n\[End of reply \1\]", re.S)


class ScriptedJudge:
    """A fake judge that reads the replies in its prompt and follows fixed rules.

    Single: "GREAT" -> ``Rating: [[9]]``, "OK" -> ``6/10``, "GARBLE" -> no rating.
    Pairwise: "GARBLE" anywhere -> unparseable; "FLIP" -> always ``[[A]]`` (position bias);
    otherwise the reply with "GREAT" wins, else ``[[C]]``.
    """

    def __init__(self, fingerprint: str = "scripted-judge", offset: float = 0) -> None:
        self.fingerprint, self.offset, self.prompts = fingerprint, offset, []

    def _single(self, text: str) -> str:
        last = text.rsplit("[Assistant]\n", 1)[-1]
        if "GARBLE" in last:
            return "I cannot decide."
        if "GREAT" in last:
            return f"Clear and correct.\nRating: [[{9 - self.offset:g}]]"
        return f"Fine. I'd give it {6 - self.offset:g}/10"

    def _pair(self, text: str) -> str:
        replies = dict(_REPLY.findall(text))
        if "GARBLE" in text:
            return "Both have merits."
        if "FLIP" in text:
            return "The first one. [[A]]"
        great = [k for k in "AB" if "GREAT" in replies[k]]
        return f"Verdict: [[{great[0]}]]" if len(great) == 1 else "Equal. [[C]]"

    def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
        out = []
        for p in prompts:
            self.prompts.append(p)
            text = p[-1]["content"]
            out.append([self._pair(text) if "[Reply of assistant A]" in text else self._single(text)])
        return out


def _q(i: int, category: str = "writing", reference: list[str] | None = None) -> dict:
    return {"id": str(i), "category": category, "turns": [f"Question {i}?"], "reference": reference}


@pytest.mark.parametrize("text, rating", [
    ("[[8]]", 8.0), ("Rating: 8", 8.0), ("Rating: [[7.5]]", 7.5), ("overall 8/10.", 8.0),
    ("I give [[3]]. On reflection [[4]]", 4.0), ("[[11]]", None), ("no rating", None), ("Score: 5", 5.0),
])  # fmt: skip
def test_parse_rating(text: str, rating: float | None) -> None:
    assert parse_rating(text) == rating


@pytest.mark.parametrize("text, verdict", [
    ("[[A]]", "A"), ("so [[b]]", "B"), ("[[C]]", "tie"), ("[[tie]]", "tie"), ("Verdict: A", "A"),
    ("[[A]] ... no, [[B]]", "B"), ("undecided", None),
])  # fmt: skip
def test_parse_verdict(text: str, verdict: str | None) -> None:
    assert parse_verdict(text) == verdict


def test_combine_orders() -> None:
    assert combine_orders("A", "B")["winner"] == "a"  # A first wins; B first, the other wins = A
    assert combine_orders("B", "A") == {
        "winner": "b",
        "consistent": True,
        "parse_failed": False,
        "verdict_ab": "B",
        "verdict_ba": "A",
    }
    flip = combine_orders("A", "A")
    assert flip["winner"] == "tie" and flip["consistent"] is False
    assert combine_orders("tie", "tie")["consistent"] is True
    assert combine_orders("A", "tie")["winner"] == "tie"
    assert combine_orders(None, "A")["winner"] == "error"


def test_single_grading_records() -> None:
    judge = Judge(ScriptedJudge())
    qs = [_q(1), _q(2, "math", ["42"]), _q(3)]
    recs = judge.single(qs, [["GREAT"], ["OK"], ["GARBLE"]])
    assert [r["rating"] for r in recs] == [9.0, 6.0, None]
    assert recs[2]["parse_failed"] and recs[2]["raw"] == "I cannot decide."
    assert recs[0]["judge"] == "scripted-judge" and recs[0]["prompt_version"] == SINGLE_PROMPT_VERSION
    assert recs[1]["reference_used"] and not recs[0]["reference_used"]
    assert "42" in judge.generator.prompts[1][-1]["content"]
    s = summarize_single(recs)
    assert s["rating"]["value"] == 7.5 and s["rating"]["n"] == 2
    assert s["parse_failure_rate"]["value"] == pytest.approx(1 / 3)


def test_pairwise_both_orders_flips_and_failures() -> None:
    fake = ScriptedJudge()
    judge = Judge(fake)
    qs = [_q(i) for i in range(5)]
    a = [["GREAT a"], ["meh a"], ["SAME"], ["FLIP a"], ["GARBLE"]]
    b = [["meh b"], ["GREAT b"], ["SAME"], ["x b"], ["y b"]]
    recs = judge.pairwise(qs, a, b)
    assert [r["winner"] for r in recs] == ["a", "b", "tie", "tie", "error"]
    assert [r["consistent"] for r in recs] == [True, True, True, False, None]
    first, swapped = (dict(_REPLY.findall(p[-1]["content"])) for p in fake.prompts[:2])
    assert first == {"A": "GREAT a", "B": "meh b"} and swapped == {"A": "meh b", "B": "GREAT a"}
    assert recs[0]["prompt_version"] == PAIR_PROMPT_VERSION and recs[0]["raw_ab"].endswith("[[A]]")
    s = summarize_pairwise(recs)
    assert s["win_rate"]["value"] == 0.5 and s["win_rate"]["n"] == 4
    assert s["position_consistency"]["value"] == 0.75
    assert s["tie_rate"]["value"] == 0.5 and s["parse_failure_rate"]["value"] == 0.2
    assert "lc_win_rate" in s


def test_length_controlled_win_rate() -> None:
    # A is longer on 16 of 20 questions; longer answers win 3/4 of the time whoever writes them
    outcomes = [1.0] * 12 + [0.0] * 4 + [1.0] + [0.0] * 3
    len_a, len_b = [200] * 16 + [100] * 4, [100] * 16 + [200] * 4
    raw = sum(outcomes) / len(outcomes)
    lc = length_controlled_win_rate(outcomes, len_a, len_b)
    assert raw == 0.65 and lc["value"] == pytest.approx(0.5, abs=0.03) and lc["n"] == 20
    assert lc["ci"][0] < lc["value"] < lc["ci"][1]


def test_two_judges_average_and_agreement() -> None:
    qs = [_q(1), _q(2)]
    r1 = Judge(ScriptedJudge("j1")).single(qs, [["GREAT"], ["OK"]])
    r2 = Judge(ScriptedJudge("j2", offset=3)).single(qs, [["GREAT"], ["OK"]])
    merged, agreement = combine_judges(r1, r2, "single")
    assert [m["rating"] for m in merged] == [7.5, 4.5] and merged[0]["judges"] == ["j1", "j2"]
    assert agreement["judge_agreement"]["value"] == 0.0
    p1 = Judge(ScriptedJudge("j1")).pairwise(qs, [["GREAT"], ["FLIP"]], [["x"], ["y"]])
    merged, agreement = combine_judges(p1, p1, "pairwise")
    assert agreement["judge_agreement"]["value"] == 1.0 and [m["winner"] for m in merged] == ["a", "tie"]


def test_families_and_circularity() -> None:
    assert model_family("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm"
    assert model_family("meta-llama/Llama-3.1-8B") == "llama" and model_family("gpt-4o-mini") == "gpt"
    assert model_family("Qwen/Qwen2.5-7B") == "qwen" and model_family("google/gemma-3-270m") == "gemma"
    assert model_family("something-else") is None
    assert "preference leakage" in circularity_warning("gpt-4-turbo", "gpt")
    assert circularity_warning("smollm", "smollm2-135m-instruct")
    assert circularity_warning("qwen", "llama") is None and circularity_warning("gpt", None) is None


class _Answerer:
    fingerprint = "answerer"

    def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
        return [["A GREAT answer."] for _ in prompts]


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not (DATA / "mt_bench" / "question.jsonl").is_file():
        pytest.skip(f"MT-Bench data not found under {DATA}")
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(DATA))
    return DATA


def test_judge_task_single_and_pairwise(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    task = JudgeTask(judge=ScriptedJudge(), judge2=ScriptedJudge("j2", offset=1), categories=["math"])
    res = evaluate(task, _Answerer(), limit=3)
    assert res.scores["rating"]["value"] == 8.5 and res.scores["judge_agreement"]["value"] == 1.0
    row = res.rows[0]
    assert row["id"] == "111" and row["reference_used"] and row["prompt_version"] == SINGLE_PROMPT_VERSION
    assert row["judges"] == ["scripted-judge", "j2"] and row["raw"].endswith("[[9]]")
    pair = JudgeTask(mode="pairwise", baseline="reference", judge=ScriptedJudge(), data_generator="gpt-4")
    assert pair.primary == "win_rate" and capsys.readouterr().err == ""
    res = evaluate(pair, _Answerer(), limit=4)
    assert len(res.rows) == 4 and res.scores["win_rate"]["value"] == 1.0
    assert res.scores["position_consistency"]["value"] == 1.0
    warned = JudgeTask(judge="https://api.example/v1#gpt-4o", data_generator="gpt-3.5-turbo")
    assert warned.warnings and "preference leakage" in capsys.readouterr().err


def test_judge_task_needs_a_judge(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNELAB_JUDGE", raising=False)
    with pytest.raises(ValueError, match="needs a judge"):
        evaluate(JudgeTask(), _Answerer(), limit=1)
    with pytest.raises(ValueError, match="baseline"):
        JudgeTask(mode="pairwise")
