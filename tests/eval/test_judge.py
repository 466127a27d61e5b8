"""LLM judge: parsing, order swapping, flips as ties, parse failures, length control, circularity."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tunelab.eval.harness import evaluate
from tunelab.eval.judge import (
    PAIR_MULTI_PROMPT_VERSION,
    PAIR_PROMPT_VERSION,
    SINGLE_MULTI_PROMPT_VERSION,
    SINGLE_PROMPT_VERSION,
    Judge,
    circularity_warning,
    combine_judges,
    combine_orders,
    model_family,
    pair_prompt,
    parse_rating,
    parse_verdict,
    single_prompt,
    summarize_pairwise,
    summarize_single,
)
from tunelab.eval.judge_bias import position_bias
from tunelab.eval.length_control import length_controlled
from tunelab.eval.tasks.judge_task import JudgeTask
from tunelab.generate.base import GenerationConfig

DATA = Path(os.environ.get("TUNELAB_DATA_DIR", "/work/shared/data"))
_REPLY = re.compile(r"\[Reply of assistant ([AB])\]\n(.*?)\n\[End of reply \1\]", re.S)
_CONVERSATION = re.compile(r"\[Conversation of assistant ([AB])\]\n(.*?)\n\[End of conversation \1\]", re.S)


class ScriptedJudge:
    """A fake judge that reads the replies in its prompt and follows fixed rules.

    Only the reply being judged counts (the last assistant reply; on later turns, the last reply of
    each assistant's conversation). Single: "GREAT" -> ``Rating: [[9]]``, "OK" -> ``6/10``,
    "GARBLE" -> no rating. Pairwise: "GARBLE" in a reply -> unparseable; "FLIP" -> always ``[[A]]``
    (position bias); otherwise the reply with "GREAT" wins, else ``[[C]]``.
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
        for k, convo in _CONVERSATION.findall(text):  # later turns: each assistant's last reply
            replies[k] = convo.rsplit(f"[Assistant {k}]\n", 1)[-1]
        if any("GARBLE" in r for r in replies.values()):
            return "Both have merits."
        if any("FLIP" in r for r in replies.values()):
            return "The first one. [[A]]"
        great = [k for k in "AB" if "GREAT" in replies[k]]
        return f"Verdict: [[{great[0]}]]" if len(great) == 1 else "Equal. [[C]]"

    def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
        out = []
        for p in prompts:
            self.prompts.append(p)
            text = p[-1]["content"]
            pairwise = "[Reply of assistant A]" in text or "[Conversation of assistant A]" in text
            out.append([self._pair(text) if pairwise else self._single(text)])
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
    assert "lc_win_rate" in s and "length_bias" in s
    bias = position_bias(recs)
    assert bias["flip_rate"]["value"] == 0.25 and bias["flip_rate"]["n"] == 4 and bias["first_shown"]["decisive"] == 6


def test_length_controlled_win_rate() -> None:
    # A is longer on 16 of 20 questions; longer answers win 3/4 of the time whoever writes them
    outcomes = [1.0] * 12 + [0.0] * 4 + [1.0] + [0.0] * 3
    len_a, len_b = [200] * 16 + [100] * 4, [100] * 16 + [200] * 4
    raw = sum(outcomes) / len(outcomes)
    lc = length_controlled(outcomes, len_a, len_b)["lc_win_rate"]
    assert raw == 0.65 and lc["value"] == pytest.approx(0.5, abs=1e-6) and lc["n"] == 20
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
    assert res.scores["score_turn1"]["n"] == res.scores["score_turn2"]["n"] == 3
    row = res.rows[0]
    first, second = row["judgements"]
    assert row["id"] == "111" and row["turns"] == 2 and row["category"] == "math"
    assert first["reference_used"] and first["prompt_version"] == SINGLE_PROMPT_VERSION
    assert second["reference_used"] and second["prompt_version"] == SINGLE_MULTI_PROMPT_VERSION
    assert first["judges"] == ["scripted-judge", "j2"] and first["raw"].endswith("[[9]]")
    pair = JudgeTask(mode="pairwise", baseline="reference", judge=ScriptedJudge(), data_generator="gpt-4")
    assert pair.primary == "win_rate" and capsys.readouterr().err == ""
    res = evaluate(pair, _Answerer(), limit=4)
    assert len(res.rows) == 4 and res.scores["win_rate"]["value"] == 1.0
    assert res.scores["win_rate_turn2"]["n"] == 4 and res.scores["position_consistency"]["value"] == 1.0
    assert res.scores["flip_rate"]["value"] == 0.0 and "first_shown" in res.scores
    warned = JudgeTask(judge="https://api.example/v1#gpt-4o", data_generator="gpt-3.5-turbo")
    assert warned.warnings and "preference leakage" in capsys.readouterr().err


# ----------------------------------------------------------------------------- two turns


def test_turn2_prompts_show_the_conversation_and_both_references() -> None:
    q = {"id": "7", "category": "math", "turns": ["Q one?", "Q two?"], "reference": ["R one", "R two"]}
    text = single_prompt(q, ["A one", "A two"], turn=1)[-1]["content"]
    refs, convo = text.split("[Conversation]\n")
    assert refs.index("R one") < refs.index("Q two?") < refs.index("R two")  # both turns' references
    assert "second user question" in text and "Reference answers are given" in text
    assert [convo.index(x) for x in ("Q one?", "A one", "Q two?", "A two")] == sorted(
        convo.index(x) for x in ("Q one?", "A one", "Q two?", "A two")
    )
    assert "R one" not in convo
    first = single_prompt(q, ["A one", "A two"], turn=0)[-1]["content"]
    assert "R one" in first and "R two" not in first and "Q two?" not in first and "A two" not in first
    writing = single_prompt({**q, "category": "writing"}, ["A one", "A two"], turn=1)[-1]["content"]
    assert "R one" not in writing and "Reference" not in writing
    pair = pair_prompt(q, ["A1", "A2"], ["B1", "B2"], turn=1)[-1]["content"]
    convos = dict(_CONVERSATION.findall(pair))  # each assistant's own conversation
    assert "A1" in convos["A"] and "A2" in convos["A"] and "B1" not in convos["A"]
    assert "B1" in convos["B"] and "B2" in convos["B"] and "A2" not in convos["B"]
    assert "R two" in pair and "second user question" in pair


class _TwoTurnAnswerer:
    """Turn 1: "GREAT first answer to <question>"; turn 2: "OK second answer", or "GARBLE second"
    when the question says "garble". Keeps every prompt it is sent."""

    fingerprint = "two-turn"

    def __init__(self) -> None:
        self.prompts: list = []

    def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
        self.prompts += prompts
        out = []
        for p in prompts:
            last = p[-1]["content"]
            if len(p) == 1:
                out.append([f"GREAT first answer to {last}"] * cfg.n)
            else:
                out.append(["GARBLE second" if "garble" in last else "OK second answer"] * cfg.n)
        return out


@pytest.fixture
def two_turn_questions(tmp_path: Path) -> dict[str, str]:
    """Three questions: two turns (writing), two turns with references (math), one turn; and
    FastChat-style baseline answers (B's second answer to question 1 is the better one)."""
    questions = [
        {"question_id": 1, "category": "writing", "turns": ["Q1a?", "Q1b?"]},
        {"question_id": 2, "category": "math", "turns": ["Q2a?", "Q2b garble?"], "reference": ["R2a", "R2b"]},
        {"question_id": 3, "category": "roleplay", "turns": ["Q3a?"]},
    ]
    baseline = [
        {"question_id": 1, "choices": [{"index": 0, "turns": ["base one", "base GREAT two"]}]},
        {"question_id": 2, "choices": [{"index": 0, "turns": ["base one", "base two"]}]},
        {"question_id": 3, "choices": [{"index": 0, "turns": ["base one"]}]},
    ]
    paths = {"questions": tmp_path / "question.jsonl", "baseline": tmp_path / "baseline.jsonl"}
    for key, rows in (("questions", questions), ("baseline", baseline)):
        paths[key].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {k: str(v) for k, v in paths.items()}


def test_judge_task_two_turns_single(two_turn_questions: dict[str, str], tmp_path: Path) -> None:
    fake, model = ScriptedJudge(), _TwoTurnAnswerer()
    task = JudgeTask(judge=fake, questions=two_turn_questions["questions"])
    res = evaluate(task, model, out=tmp_path / "judge.jsonl")
    # the second generation pass: turn 2 asked with the model's own turn-1 answer in the conversation
    follow_ups = [p for p in model.prompts if len(p) > 1]
    assert [p[-1]["content"] for p in follow_ups] == ["Q1b?", "Q2b garble?"]  # question 3 has one turn
    assert follow_ups[0][:2] == [
        {"role": "user", "content": "Q1a?"},
        {"role": "assistant", "content": "GREAT first answer to Q1a?"},
    ]
    # the judge's turn-2 prompts show the whole conversation (and the math references of both turns)
    turn2 = [p[-1]["content"] for p in fake.prompts if "[Conversation]" in p[-1]["content"]]
    assert len(turn2) == 2 and "GREAT first answer to Q1a?" in turn2[0] and "OK second answer" in turn2[0]
    assert "GREAT first answer to Q2a?" in turn2[1] and "R2a" in turn2[1] and "R2b" in turn2[1]
    # per turn: 9, 9, 9 on turn 1; 6 and one unparseable grade on turn 2
    s = res.scores
    assert s["score_turn1"]["value"] == 9.0 and s["score_turn1"]["n"] == 3
    assert s["score_turn2"]["value"] == 6.0 and s["score_turn2"]["n"] == 1
    assert s["rating"]["value"] == pytest.approx((9 + 9 + 9 + 6) / 4) and s["rating"]["n"] == 4
    # questions are resampled with both their turns: a resample's mean is 7.5 (only question 1) at least
    assert 7.5 <= s["rating"]["ci"][0] < s["rating"]["ci"][1] <= 9.0
    assert s["parse_failure_rate"]["value"] == pytest.approx(1 / 5) and s["parse_failure_rate"]["n"] == 5
    rows = {r["id"]: r for r in res.rows}
    assert rows["1"]["answers"] == ["GREAT first answer to Q1a?", "OK second answer"]
    assert rows["1"]["rating"] == 7.5 and (rows["1"]["rating_turn1"], rows["1"]["rating_turn2"]) == (9.0, 6.0)
    assert (
        rows["2"]["rating_turn2"] is None and rows["2"]["parse_failures"] == 1 and rows["2"]["rating"] == 9.0
    )
    assert rows["3"]["turns"] == 1 and rows["3"]["answers"] == ["GREAT first answer to Q3a?"]
    raw = [j["raw"] for j in rows["1"]["judgements"]]
    assert raw[0].endswith("[[9]]") and raw[1] == "Fine. I'd give it 6/10"
    assert rows["2"]["judgements"][1]["raw"] == "I cannot decide." and rows["2"]["judgements"][1]["turn"] == 2
    written = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert written[1]["judgements"][1]["raw"] == "I cannot decide."


def test_judge_task_two_turns_with_the_tiny_model(two_turn_questions: dict[str, str], tiny) -> None:
    from tunelab.generate.hf import HFGenerator

    model, tok = tiny
    fake = ScriptedJudge()
    task = JudgeTask(judge=fake, questions=two_turn_questions["questions"])
    res = evaluate(task, HFGenerator(model, tok, batch_size=4, progress=False), max_new_tokens=4)
    rows = {r["id"]: r for r in res.rows}
    assert [len(rows[i]["answers"]) for i in "123"] == [2, 2, 1]
    assert rows["1"]["answers"][0] == rows["1"]["completion"]
    turn2 = [p[-1]["content"] for p in fake.prompts if "[Conversation]" in p[-1]["content"]]
    assert len(turn2) == 2 and f"[Assistant]\n{rows['1']['answers'][0]}\n\n[User]\nQ1b?" in turn2[0]
    assert res.scores["score_turn1"]["n"] + res.scores["score_turn2"]["n"] == 5  # tiny text never says GARBLE


def test_judge_task_turns_1_answers_and_judges_the_first_turn_only(
    two_turn_questions: dict[str, str],
) -> None:
    model = _TwoTurnAnswerer()
    task = JudgeTask(judge=ScriptedJudge(), questions=two_turn_questions["questions"], turns=1)
    res = evaluate(task, model)
    assert all(len(p) == 1 for p in model.prompts) and len(model.prompts) == 3
    assert res.scores["rating"] == res.scores["score_turn1"] and "score_turn2" not in res.scores
    assert res.scores["rating"]["value"] == 9.0 and res.scores["rating"]["ci"] == [9.0, 9.0]
    with pytest.raises(ValueError, match="turns must be 1 or 2"):
        JudgeTask(turns=3)


def test_judge_task_two_turns_pairwise(two_turn_questions: dict[str, str]) -> None:
    fake = ScriptedJudge()
    task = JudgeTask(
        mode="pairwise",
        baseline=two_turn_questions["baseline"],
        judge=fake,
        questions=two_turn_questions["questions"],
    )
    res = evaluate(task, _TwoTurnAnswerer())
    assert len(fake.prompts) == 2 * (3 + 2)  # both orders, three first turns and two second turns
    turn2 = [p[-1]["content"] for p in fake.prompts if "[Conversation of assistant A]" in p[-1]["content"]]
    convos = dict(_CONVERSATION.findall(turn2[0]))
    assert "GREAT first answer to Q1a?" in convos["A"] and "base one" in convos["B"]  # own histories
    assert "base GREAT two" in convos["B"] and "OK second answer" in convos["A"]
    assert dict(_CONVERSATION.findall(turn2[1]))["A"].endswith("base GREAT two")  # the swapped order
    s = res.scores
    assert s["win_rate_turn1"]["value"] == 1.0 and s["win_rate_turn1"]["n"] == 3
    assert (
        s["win_rate_turn2"]["value"] == 0.0 and s["win_rate_turn2"]["n"] == 1
    )  # one turn-2 verdict unparsed
    assert s["win_rate"]["value"] == 0.75 and s["win_rate"]["n"] == 4
    assert s["parse_failure_rate"]["value"] == pytest.approx(1 / 5)
    assert s["position_consistency"]["value"] == 1.0
    rows = {r["id"]: r for r in res.rows}
    assert (rows["1"]["winner_turn1"], rows["1"]["winner_turn2"]) == ("a", "b")
    assert (
        rows["2"]["winner_turn2"] == "error"
        and rows["2"]["judgements"][1]["prompt_version"] == PAIR_MULTI_PROMPT_VERSION
    )
    assert rows["3"]["turns"] == 1


def test_judge_predictions_need_every_turn(two_turn_questions: dict[str, str], tmp_path: Path) -> None:
    from tunelab.data.formats import DataError
    from tunelab.eval.predictions import score_predictions

    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        json.dumps({"question_id": 1, "turns": ["GREAT one", "OK two"]}) + "\n"
        + json.dumps({"question_id": 3, "completion": "GARBLE"}) + "\n"
    )  # fmt: skip
    task = JudgeTask(judge=ScriptedJudge(), questions=two_turn_questions["questions"])
    res = score_predictions(task, preds)
    assert res.scores["score_turn1"]["value"] == 9.0 and res.scores["score_turn2"]["value"] == 6.0
    assert res.scores["parse_failure_rate"]["value"] == pytest.approx(1 / 3)
    assert res.rows[0]["answers"] == ["GREAT one", "OK two"] and res.rows[0]["completion"] == "GREAT one"
    preds.write_text(json.dumps({"question_id": 1, "completion": "GREAT one"}) + "\n")
    with pytest.raises(DataError, match="question 1 has 1 answer\\(s\\) for 2 turns.*turns=1"):
        score_predictions(task, preds)


def test_judge_task_needs_a_judge(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNELAB_JUDGE", raising=False)
    with pytest.raises(ValueError, match="needs a judge"):
        evaluate(JudgeTask(), _Answerer(), limit=1)
    with pytest.raises(ValueError, match="baseline"):
        JudgeTask(mode="pairwise")
