"""A study's judged claims: the ``instructions`` task, the sweep file's ``judged:`` section, ``tunelab sweep
judge`` from the records (resumable), and the findings' win rates checked against the verdicts recomputed
by hand and scipy/our sign-flip test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tunelab.cli import main
from tunelab.config import ConfigError
from tunelab.eval.paired import sign_flip_test
from tunelab.eval.tasks.base import get_task
from tunelab.io import DataError, read_json_gz
from tunelab.report import findings, findings_doc
from tunelab.report.findings import judged_claims
from tunelab.runner.judged_study import judge_study
from tunelab.runner.plan import plan
from tunelab.runner.sweep import run_sweep
from tunelab.runner.sweep_file import load_sweep

ROOT = Path(__file__).resolve().parents[1]
_REPLY = re.compile(r"\[Reply of assistant (A|B)\]\n(.*?)\n\[End of reply", re.S)
WIZARD_ROWS = [{"idx": k, "Skill": "Math" if k % 2 else "Writing", "Difficulty": k % 10 + 1,
                "Instruction": f"Write {k} short words about the number {k}."} for k in range(1, 13)]


def _instructions(tmp_path: Path, rows: list = WIZARD_ROWS) -> Path:
    path = tmp_path / "wizard.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class LongerWins:
    """A judge that prefers the longer reply (a tie when equal); ``first``: always the reply shown first."""

    def __init__(self, first: bool = False) -> None:
        self.first, self.fingerprint = first, "stub-first" if first else "stub-longer"

    def generate(self, prompts: list, cfg: object) -> list[list[str]]:
        out = []
        for p in prompts:
            r = dict(_REPLY.findall(p[-1]["content"]))
            if self.first:
                out.append(["[[A]]"])
            else:
                out.append(["[[A]]" if len(r["A"]) > len(r["B"]) else "[[B]]" if len(r["B"]) > len(r["A"]) else "[[C]]"])
        return out


def test_instructions_task_reads_wizardlm_rows_and_scores_length_only(tmp_path: Path) -> None:
    path = _instructions(tmp_path)
    task = get_task("instructions", file=str(path))
    items = task.items(5, seed=3)
    assert [it.id for it in items] == ["1", "2", "3", "4", "5"]  # the file's order, seed unused
    assert items[0].prompt == [{"role": "user", "content": "Write 1 short words about the number 1."}]
    assert items[0].meta["skill"] == "Math" and items[0].meta["difficulty"] == 2
    row = task.score(items[0], ["one two  three\n"])
    assert (row["value"], row["words"], row["chars"], row["difficulty"]) == (3.0, 3, 15, 2)
    agg = task.aggregate([{"words": 3}, {"words": 0}, {"words": 6}])
    assert agg["answer_words"]["value"] == pytest.approx(3.0) and agg["empty_answer"]["value"] == pytest.approx(1 / 3)
    hard = get_task("instructions", file=str(path), min_difficulty=8).items(None, 0)
    assert [it.meta["difficulty"] for it in hard] == [8, 9, 10]


def test_instructions_from_several_files_with_skills_left_out(tmp_path: Path) -> None:
    wizard = _instructions(tmp_path)
    alpaca = tmp_path / "alpaca_outputs.json"
    alpaca.write_text(json.dumps([{"dataset": "selfinstruct", "instruction": "Trained on this.", "output": "x"},
                                  {"dataset": "koala", "instruction": "Explain tides.", "output": "y"}]))
    task = get_task("instructions", file=[str(wizard), str(alpaca)], exclude_skills=["selfinstruct"])
    items = task.items(None, 0)
    assert len(items) == 13 and items[0].id == "wizard:1" and items[-1].id == "alpaca_outputs:seed-1"
    assert items[-1].meta["skill"] == "koala" and items[-1].meta["difficulty"] is None
    with pytest.raises(DataError, match="no instruction left after the filters"):
        get_task("instructions", file=str(alpaca), exclude_skills=["selfinstruct", "koala"]).items(None, 0)
    with pytest.raises(ValueError, match="file must be a path or a list of paths"):
        get_task("instructions", file=[])
    one = get_task("instructions", file=str(alpaca), exclude_skills="selfinstruct").items(None, 0)
    assert [it.meta["skill"] for it in one] == ["koala"]  # a single name is a list of one, not of letters
    with pytest.raises(DataError, match="also an id of"):
        get_task("instructions", file=[str(wizard), str(wizard)]).items(None, 0)
    again = tmp_path / "more.jsonl"
    again.write_text(json.dumps({"id": "m1", "instruction": "Explain  TIDES."}) + "\n"
                     + json.dumps({"id": "m2", "instruction": "New one."}) + "\n")
    both = get_task("instructions", file=[str(alpaca), str(again)]).items(None, 0)
    assert [it.id for it in both] == ["alpaca_outputs:seed-0", "alpaca_outputs:seed-1", "more:m2"]


@pytest.mark.parametrize(("rows", "message"), [
    ([{"idx": 1, "Skill": "x"}], r"wizard.jsonl:1: field 'instruction': missing"),
    ([{"idx": 1, "Instruction": "a b c", "Difficulty": "hard"}], r"wizard.jsonl:1: field 'difficulty': expected a number"),
    ([{"idx": 1, "Instruction": "a b c"}, {"idx": 1, "Instruction": "d e f"}], r"wizard.jsonl:2: field 'id': duplicate id '1'"),
])
def test_bad_instruction_rows_fail_naming_file_row_and_field(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(DataError, match=message):
        get_task("instructions", file=str(_instructions(tmp_path, rows))).items(None, 0)


def _spec(tmp_path: Path, judged: dict | None = None, tasks: str = "[instructions]") -> Path:
    file = _instructions(tmp_path)
    spec = {"recipe": str(ROOT / "recipes" / "tiny.yaml"),
            "overrides": ["train.max_steps=2", "train.save_every=0", "data.sources.0.count=32", "data.heldout=0",
                          f"eval.tasks={tasks}", f"eval.task_options.instructions.file={file}", "eval.limit=12",
                          "eval.max_new_tokens=12"],
            "factors": {"rank": {"method.r": [2, 4]}}, "seeds": 2, "out": str(tmp_path / "out"),
            "records": str(tmp_path / "studies" / "judged_toy" / "records"), "name": "judged_toy",
            "question": "Does rank 4 answer better?",
            "judged": judged or {"task": "instructions", "judge": "stub", "subset": {"difficulty": 8},
                                 "claims": [{"claim": "rank 4 answers better", "arm": "rank=4", "direction": "better",
                                             "effect": 0.1, "source": "a test"}]}}
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(("judged", "message"), [
    ({"task": "instructions", "claims": [{"claim": "x", "arm": "rank=4", "effect": 0.1, "source": "s"}]},
     "judged: 'judge' is required"),
    ({"task": "instructions", "judge": "j", "claims": [{"claim": "x", "arm": "rank=4", "effect": 0.7, "source": "s"}]},
     r"judged: claims\[0\]: effect: the claimed win rate above one half"),
    ({"task": "instructions", "judge": "j", "claims": [{"claim": "x", "arm": "rank=2", "effect": 0.1, "source": "s"}]},
     "arm and versus are the same arm"),
    ({"task": "instructions", "judge": "j", "claims": [{"claim": "x", "arm": "ensemble(rank=4)", "effect": 0.1,
                                                        "source": "s"}]}, "an ensemble has no answers to judge"),
    ({"task": "instructions", "judge": "j", "verdict": "vote", "claims": [
        {"claim": "x", "arm": "rank=4", "effect": 0.1, "source": "s"}]}, "verdict: 'vote' is not text or logprob"),
    ({"task": "instructions", "judge": "j", "claims": []}, "name at least one pair of arms to judge"),
    ({"task": "arith", "judge": "j", "claims": [{"claim": "x", "arm": "rank=4", "effect": 0.1, "source": "s"}]},
     "task 'arith' is not evaluated by arm"),
])
def test_a_bad_judged_section_fails_naming_the_file(tmp_path: Path, judged: dict, message: str) -> None:
    path = _spec(tmp_path, judged)
    with pytest.raises(ConfigError, match=message) as e:
        load_sweep(path)
    assert f"{path}: judged" in str(e.value)


def test_sweep_judge_from_records_then_findings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _spec(tmp_path)
    run_sweep(path, backend="inline", quiet=True)
    sweep = load_sweep(path)
    # a study of judged claims alone still records its pilot and saves its plan
    pilot = json.loads((sweep.study_folder / "pilot.json").read_text())
    assert pilot["passed"] and (sweep.study_folder / "plan.json").is_file()
    said: list[str] = []
    done = judge_study(sweep, judge=LongerWins(), say=said.append)
    assert len(done["judged"]) == 2 and not done["waiting"] and len(said) == 4
    files = sorted((tmp_path / "studies" / "judged_toy" / "judged").glob("*.json.gz"))
    assert [f.name for f in files] == ["rank=4__vs__rank=2-seed0.json.gz", "rank=4__vs__rank=2-seed1.json.gz"]
    saved = read_json_gz(files[0])
    assert saved["judge"] == "stub" and saved["judge_fingerprint"] == "stub-longer" and len(saved["verdicts"]) == 12
    # a second call judges nothing again (resumable)
    assert judge_study(sweep, judge=LongerWins(), say=said.append)["judged"] == []

    # the win rate recomputed from the records by hand: the longer answer wins, equal lengths tie
    found, _ = sweep.recorded()
    answers = {(p.arm.label, p.seed): {r["id"]: r["prediction"] for r in found[p.name]["items"]["instructions"]["rows"]}
               for p in sweep.runs}
    per_item = {}
    for seed in (0, 1):
        a, b = answers[("rank=4", seed)], answers[("rank=2", seed)]
        for i in a:
            per_item.setdefault(i, []).append(1.0 if len(a[i]) > len(b[i]) else 0.0 if len(a[i]) < len(b[i]) else 0.5)
    ids = sorted(per_item)
    wins = [float(np.mean(per_item[i])) for i in ids]
    claim = judged_claims(sweep)["claims"][0]
    assert claim["items"] == 12 and claim["seeds"] == [0, 1] and claim["unparsed"] == 0
    assert claim["win_rate"] == pytest.approx(np.mean(wins))
    ref = sign_flip_test([0.5] * 12, wins, ids=ids)
    assert claim["test"]["p_value"] == pytest.approx(ref["p_value"]) and claim["p_holm"] == pytest.approx(ref["p_value"])
    assert claim["position"]["flip_rate"]["value"] == 0.0  # a length rule does not depend on the order
    assert claim["subset"]["items"] == 3 and set(claim["per_seed"]) == {0, 1}
    assert claim["verdict"]

    study = findings.report(path)
    text = findings_doc.markdown(study)
    assert "**Judged claims**" in text and "| rank 4 answers better | rank=4 vs rank=2 | 2 | 12 |" in text
    assert "difficulty >= 8 (3)" in text and "Source: a test" in text
    assert "rank 4 answers better [judged: rank=4 vs rank=2]" in findings_doc.summary(study)
    from tunelab.report.run_report import sweep_report

    page = sweep_report({k: v for k, v in study.items() if not k.startswith("_")}, path=tmp_path / "page.html")
    assert "Judged claims (instructions, judge stub)" in page.read_text() and "rank 4 answers better" in page.read_text()
    # the plan reads the judged verdicts for the item sd
    judged_plan = plan(sweep)["judged"][0]
    assert judged_plan["items"] == 12 and judged_plan["item_sd_from"] == "judged verdicts"

    # a quick look on 4 items is written but not counted, and a later full call judges every item again
    assert len(judge_study(sweep, judge=LongerWins(), limit=4, say=said.append)["judged"]) == 2
    assert len(read_json_gz(files[0])["verdicts"]) == 4
    assert judged_claims(sweep)["claims"][0]["verdict"] == "not judged yet"
    assert any("first 4 items only" in s for s in judged_claims(sweep)["stale"])
    assert len(judge_study(sweep, judge=LongerWins(), say=said.append)["judged"]) == 2
    assert judged_claims(sweep)["claims"][0]["win_rate"] == pytest.approx(np.mean(wins))

    # another judge's verdicts (--judge) are kept apart from the findings until the sweep file names that judge
    judge_study(sweep, judge=LongerWins(first=True), judge_spec="first", say=said.append)
    assert judged_claims(sweep)["claims"][0]["verdict"] == "not judged yet"
    assert any("judged by first (text verdicts), not the sweep file's judge stub" in s
               for s in judged_claims(sweep)["stale"])
    sweep.judged["judge"] = "first"  # a judge that always picks the first shown: every item a tie
    claim = judged_claims(sweep)["claims"][0]
    assert claim["judges"] == ["first"] and claim["win_rate"] == 0.5
    assert claim["position"]["flip_rate"]["value"] == 1.0 and claim["position"]["first_shown"]["value"] == 1.0
    assert claim["verdict"].startswith("inconclusive") or claim["verdict"].startswith("does not replicate")

    capsys.readouterr()
    assert main(["sweep", "judge"]) == 2 and "name the sweep file" in capsys.readouterr().err


def test_judging_waits_for_both_arms_records(tmp_path: Path) -> None:
    path = _spec(tmp_path)
    sweep = load_sweep(path)
    done = judge_study(sweep, judge=LongerWins(), say=lambda m: None)
    assert done["judged"] == [] and len(done["waiting"]) == 2
    claim = judged_claims(sweep)["claims"][0]
    assert claim["verdict"] == "not judged yet" and claim["items"] == 0
    sweep.judged = None  # a sweep file without the section
    with pytest.raises(ConfigError, match="no 'judged:' section"):
        judge_study(sweep, judge=LongerWins())
    assert judged_claims(sweep) is None
