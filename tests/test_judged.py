"""tunelab judge: an LLM judge compares finished runs' answers pair by pair (raw and length-controlled
win rates, position and length bias, self-preference, Bradley-Terry for three runs), with clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.config import ConfigError, dump_yaml, load_recipe
from tunelab.data.formats import DataError
from tunelab.eval.tasks.base import get_task
from tunelab.runner.judged import format_judged, judge_runs

ROOT = Path(__file__).resolve().parents[1]
_REPLY = re.compile(r"\[Reply of assistant (A|B)\]\n(.*?)\n\[End of reply", re.S)


def _run(root: Path, name: str, quality: int, padding: int, model: str = "tiny",
         correct: object = lambda k: 1) -> Path:
    """A finished run folder: its recipe, and answers to 12 arith items whose "quality" (stars) and
    length the stub judges read."""
    run = root / name
    (run / "eval" / "tuned").mkdir(parents=True)
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml", ["eval.tasks=[arith]", "eval.limit=12", f"model.name={model}"])
    (run / "config.yaml").write_text(dump_yaml(cfg))
    items = get_task("arith").items(12, cfg.eval.seed)
    rows = [{"id": it.id, "completion": "*" * quality + " answer" + " filler" * (padding * (k % 3)),
             **({"correct": correct(k)} if correct(k) is not None else {})} for k, it in enumerate(items)]
    (run / "eval" / "tuned" / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


class StubJudge:
    """``fair``: the reply with more stars wins (a tie when equal); ``first``: always [[A]];
    ``mute``: names no winner."""

    def __init__(self, how: str) -> None:
        self.how, self.fingerprint = how, f"stub-{how}"

    def generate(self, prompts: list, cfg: object) -> list[list[str]]:
        out = []
        for p in prompts:
            r = dict(_REPLY.findall(p[-1]["content"]))
            stars = {k: len(r[k]) - len(r[k].lstrip("*")) for k in "AB"}
            if self.how == "first":
                out.append(["A is better. [[A]]"])
            elif self.how == "mute":
                out.append(["Both have merits."])
            else:
                out.append(["[[A]]" if stars["A"] > stars["B"] else "[[B]]" if stars["B"] > stars["A"] else "[[C]]"])
        return out


def test_three_runs_judged_pair_by_pair_with_bradley_terry(tmp_path: Path) -> None:
    runs = [_run(tmp_path, "base", 1, 0), _run(tmp_path, "tuned", 2, 3), _run(tmp_path, "best", 3, 1)]
    said: list[str] = []
    result = judge_runs(runs, "arith", StubJudge("fair"), "smollm2-1.7b-instruct", say=said.append)
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [("base", "tuned"), ("base", "best"), ("tuned", "best")]
    first = result["pairs"][0]
    assert first["items"] == 12 and first["judged"] == 12 and first["raw_win_rate"]["value"] == 0.0
    assert first["position_bias"]["flip_rate"]["value"] == 0.0 and len(first["verdicts"]) == 12
    assert first["self_preference"]["own"] == [] and result["judge_family"] == "smollm"
    bt = result["bradley_terry"]
    assert bt["order"] == ["best", "tuned", "base"] and bt["reference"] == "base"
    assert len(said) == 3 and "base vs tuned on 12 items" in said[0]
    text = format_judged(result)
    assert "length-controlled" in text and "Bradley-Terry" in text and "flip rate" in text


def test_a_position_biased_judge_shows_in_the_comparison(tmp_path: Path) -> None:
    runs = [_run(tmp_path, "a", 1, 0), _run(tmp_path, "b", 2, 2)]
    pair = judge_runs(runs, "arith", StubJudge("first"), "qwen2.5-7b", say=lambda m: None)["pairs"][0]
    assert pair["raw_win_rate"]["value"] == 0.5  # every verdict flips with the order: ties
    assert pair["position_bias"]["flip_rate"]["value"] == 1.0 and pair["position_bias"]["first_shown"]["value"] == 1.0


def test_bad_input_fails_clearly(tmp_path: Path) -> None:
    a, b, c = _run(tmp_path, "a", 1, 0), _run(tmp_path, "b", 2, 0), _run(tmp_path, "c", 3, 0)
    with pytest.raises(ConfigError, match="at least two runs"):
        judge_runs([a], "arith", StubJudge("fair"), "x")
    with pytest.raises(DataError, match="no evaluation of 'gsm8k'"):
        judge_runs([a, b], "gsm8k", StubJudge("fair"), "x")
    with pytest.raises(DataError, match="not a run folder"):
        judge_runs([a, tmp_path / "nope"], "arith", StubJudge("fair"), "x")
    mute = judge_runs([a, b], "arith", StubJudge("mute"), "x", say=lambda m: None)["pairs"][0]
    assert mute["judged"] == 0 and mute["parse_failures"] == 12
    with pytest.raises(DataError, match="the judge named no winner on any item"):
        judge_runs([a, b, c], "arith", StubJudge("mute"), "x", say=lambda m: None)


def test_the_command_judges_two_runs_with_a_real_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The tiny model as a judge (it names no winner: counted as unparsed, never guessed); --out keeps
    every verdict."""
    a, b = _run(tmp_path, "a", 1, 0), _run(tmp_path, "b", 2, 0)
    assert main(["judge", str(a), str(b), "--task", "arith", "--judge", "tiny", "--limit", "3",
                 "--out", str(tmp_path / "judged.json")]) == 0
    out = capsys.readouterr().out
    assert "a vs b:" in out and "of 3 items judged" in out
    saved = json.loads((tmp_path / "judged.json").read_text())
    assert len(saved["pairs"][0]["verdicts"]) == 3 and saved["pairs"][0]["verdicts"][0]["raw_ab"] is not None


def test_people_calibrate_the_judged_comparison(tmp_path: Path) -> None:
    """--ratings: the pair people rated gets PPI from the judge's verdicts and their ratings; a run
    outside the ui's folder is refused."""
    from tunelab.cli.results import _with_people
    from tunelab.ui import Catalog

    root = tmp_path / "ui"
    a, b = _run(root, "a", 1, 0), _run(root, "b", 2, 2, model="smollm2-135m-instruct")
    result = judge_runs([a, b], "arith", StubJudge("fair"), "smollm2-1.7b", say=lambda m: None)
    ids = [v["id"] for v in result["pairs"][0]["verdicts"]]
    catalog = Catalog(root)
    with catalog._db() as db:  # people agree with the judge (b better) on 5 items, call 1 a tie
        for k, item in enumerate(ids[:6]):
            db.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       ("eve", "t", "a", "b", "arith", item, "tie" if k == 0 else "b", "a"))
    _with_people(result, [str(a), str(b)], str(root))
    human = result["pairs"][0]["human"]
    assert human["n"] == 6 and human["N"] == 6 and human["human_only"]["value"] == pytest.approx(11 / 12)
    assert human["rectifier"]["value"] == pytest.approx(-1 / 12)  # the judge said b where eve said tie
    assert result["pairs"][0]["self_preference"]["own"] == ["b"]
    assert "people (6 rated): PPI" in format_judged(result)
    with pytest.raises(ConfigError, match="is not under it"):
        _with_people(result, [str(a), str(_run(tmp_path, "outside", 1, 0))], str(root))


def test_the_judge_calibrated_on_a_verifier(tmp_path: Path) -> None:
    """--gold: a random 8 of 12 judged items get their gold winner; PPI corrects the judge (it always
    says b) towards the gold rate over all items (0.75), which the judge alone overstates (1.0)."""
    a = _run(tmp_path, "a", 1, 0, correct=lambda k: int(k % 2 == 0))
    b = _run(tmp_path, "b", 2, 0)
    g = judge_runs([a, b], "arith", StubJudge("fair"), "x", gold=8, say=lambda m: None)["pairs"][0]["gold"]
    assert g["truth"] == 0.75 and g["judge_only"]["value"] == 1.0 and (g["n"], g["N"]) == (8, 4)
    assert g["ppi"]["ci"][0] <= 0.75 <= g["ppi"]["ci"][1] and g["labels"] == "verifier"
    again = judge_runs([a, b], "arith", StubJudge("fair"), "x", gold=8, say=lambda m: None)["pairs"][0]["gold"]
    assert again == g  # the draw is seeded
    c = _run(tmp_path, "c", 3, 0, correct=lambda k: None)

    class Never(StubJudge):
        def generate(self, prompts: list, cfg: object) -> list[list[str]]:
            raise AssertionError("judged although the task has no verifier")

    with pytest.raises(DataError, match="of run 'c' has no verifier score"):  # before any judging
        judge_runs([a, c], "arith", Never("fair"), "x", gold=4, say=lambda m: None)
    said: list[str] = []  # too few verdicts for the draw: said, and the judging is kept
    pair = judge_runs([a, b], "arith", StubJudge("fair"), "x", gold=20, say=said.append)["pairs"][0]
    assert pair["gold"] == {"error": "--gold 20: only 12 items were judged"} and pair["judged"] == 12
    assert any("no gold calibration" in line for line in said)
    assert "no gold calibration: --gold 20: only 12 items were judged" in format_judged(
        judge_runs([a, b], "arith", StubJudge("fair"), "x", gold=20, say=lambda m: None))


def test_a_small_local_judge_gives_its_most_likely_verdict(tmp_path: Path) -> None:
    """--verdict logprob: the tiny model never writes [[A]], but the most likely of [[A]] / [[B]] / [[C]]
    (asked for the verdict alone) is a verdict on every item, with its log-probabilities kept; the
    verdict equals the argmax of the scorer's own log-likelihoods."""
    from tunelab.eval.judge import DIRECT, JUSTIFY, Judge, pair_prompt
    from tunelab.generate.build import build_generator
    from tunelab.generate.loglik import scorer_for

    a, b = _run(tmp_path, "a", 1, 0), _run(tmp_path, "b", 2, 1)
    tiny = build_generator("tiny", progress=False)
    result = judge_runs([a, b], "arith", tiny, "tiny", limit=4, verdict="logprob", say=lambda m: None)
    pair = result["pairs"][0]
    assert result["verdict"] == "logprob" and pair["judged"] == 4 and pair["parse_failures"] == 0
    v = pair["verdicts"][0]
    assert "log-probabilities: A " in v["raw_ab"]
    q = {"id": v["id"], "turns": ["q"]}
    prompt = pair_prompt(q, ["x"], ["y"])
    direct = [*prompt[:-1], {**prompt[-1], "content": prompt[-1]["content"].replace(JUSTIFY, DIRECT)}]
    lp = scorer_for(tiny).loglik([(direct, f"[[{c}]]") for c in "ABC"])
    raw = Judge(tiny, verdict="logprob")._ask_verdicts([prompt])[0]
    assert raw.startswith(f"[[{'ABC'[lp.index(max(lp))]}]]") and DIRECT not in prompt[-1]["content"]
    with pytest.raises(ValueError, match="judge verdict: 'vote'"):
        Judge(tiny, verdict="vote")
