"""``tunelab eval``: scoring predictions files and evaluating the tiny model, with --json output."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from tunelab.cli import main

DATA = Path(os.environ.get("TUNELAB_DATA_DIR", "/work/shared/data"))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _gsm8k_rows(n: int) -> list[dict]:
    with (DATA / "gsm8k" / "test.jsonl").open() as f:
        return [json.loads(next(f)) for _ in range(n)]


def test_gsm8k_predictions_json(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gold = _gsm8k_rows(4)
    answer = [g["answer"].split("####")[-1].strip() for g in gold]
    preds = _jsonl(tmp_path / "preds.jsonl", [
        {"question": gold[0]["question"], "completion": f"so\n#### {answer[0]}"},   # by question text
        {"id": 1, "completion": f"The answer is {answer[1]}.00"},                  # int id, flexible only
        {"id": "2", "completion": "#### 123456789"},                                # string id, wrong
        {"id": 3, "completion": "no idea"},
    ])  # fmt: skip
    out = tmp_path / "out"
    assert main(["eval", "--tasks", "gsm8k", "--predictions", str(preds), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["gsm8k"]
    assert result["exact_match_flexible"] == 0.5 and result["exact_match_strict"] == 0.25
    assert result["extraction_failure_rate"] == 0.5 and result["n"] == 4
    lo, hi = result["exact_match_flexible_ci"]
    assert lo < 0.5 < hi
    rows = [json.loads(line) for line in (out / "gsm8k.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[1]["extracted_flexible"] == f"{answer[1]}.00" and rows[1]["pred_flexible"] == answer[1]
    assert (out / "scores.json").is_file()


def test_unknown_id_is_an_error_naming_the_row(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    preds = _jsonl(tmp_path / "p.jsonl", [{"id": 0, "completion": "1"}, {"id": 99999, "completion": "2"}])
    assert (
        main(["eval", "--tasks", "gsm8k", "--predictions", str(preds), "--out", str(tmp_path), "--json"]) == 2
    )
    captured = capsys.readouterr()
    assert captured.out == "" and f"{preds}:2" in captured.err and "99999" in captured.err
    preds = _jsonl(tmp_path / "q.jsonl", [{"question": "What is love?", "completion": "1"}])
    assert main(["eval", "--tasks", "gsm8k", "--predictions", str(preds), "--out", str(tmp_path)]) == 2
    assert f"{preds}:1" in capsys.readouterr().err


@pytest.mark.xdist_group("sandbox")  # runs code in the sandbox: never beside the fork-bomb drill's uid count
def test_humaneval_predictions_pass_at_k(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tunelab.eval.tasks.code_exec import HumanEval

    monkeypatch.setenv("TUNELAB_DATA_DIR", str(DATA))
    monkeypatch.setenv("TUNELAB_ALLOW_UNSANDBOXED", "1")
    try:
        problems = HumanEval().problems()[:3]
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"HumanEval data unavailable: {e}")
    rows = []
    for i, p in enumerate(problems):  # problem i: i good samples out of 2 (capped)
        rows += [
            {"task_id": p["task_id"], "completion": p["canonical_solution"] if j < i else "    return None\n"}
            for j in range(2)
        ]
    preds = _jsonl(tmp_path / "samples.jsonl", rows)
    args = [
        "eval",
        "--tasks",
        "humaneval",
        "--predictions",
        str(preds),
        "--out",
        str(tmp_path / "o"),
        "--k",
        "1,2,10",
    ]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["humaneval"]
    assert result["pass@1"] == pytest.approx((0 + 0.5 + 1) / 3) and result["pass@2"] == pytest.approx(2 / 3)
    assert (
        "pass@10" not in result and result["n"] == 3 and result["isolation"] in ("bubblewrap", "rlimits-only")
    )
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "pass@1" in text and "95% CI" in text and "per-item rows in" in text


def test_eval_tiny_model_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "tiny",
            "--tasks",
            "arith,nlp_mc",
            "--limit",
            "4",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "4",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds only JSON
    assert set(result) == {"arith", "nlp_mc"}
    assert 0 <= result["arith"]["accuracy"] <= 1 and result["arith"]["n"] == 4
    assert set(result["nlp_mc"]) >= {"accuracy", "accuracy_ci", "accuracy_norm", "n"}
    rows = [json.loads(line) for line in (out / "nlp_mc.jsonl").read_text().splitlines()]
    assert rows and all(r["pred"] in r["choices"] and len(r["logliks"]) == len(r["choices"]) for r in rows)
    assert (out / "arith.jsonl").is_file()


def test_loglik_scorer_matches_manual_sum() -> None:
    import torch

    from tunelab.generate.loglik import HFLoglikScorer
    from tunelab.models.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    scorer = HFLoglikScorer(model, tok, batch_size=2)
    pairs = [("abc", "de"), ([{"role": "user", "content": "hi"}], "yes"), ("a", "long continuation")]
    got = scorer.loglik(pairs)
    for (prompt, cont), value in zip(pairs, got):  # unpadded, one at a time
        ids, n = scorer.encode(prompt, cont)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        expected = sum(float(logp[i - 1, ids[i]]) for i in range(len(ids) - n, len(ids)))
        assert value == pytest.approx(expected, abs=1e-4)


def test_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--tasks", "no_such_task", "--predictions", "x.jsonl"]) == 2
    assert "unknown eval task" in capsys.readouterr().err
    assert main(["eval", "--tasks", "arith"]) == 2
    assert "--predictions" in capsys.readouterr().err


# ----------------------------------------------------------------------------- task options


def test_parse_task_options() -> None:
    from tunelab.eval.tasks.base import parse_task_options

    opts = parse_task_options(
        [
            "gsm8k.fewshot=5",
            "judge.categories=[math, coding]",
            "judge.mode=pairwise",
            "arith.big=true",
            "path=x.jsonl",
        ],
        ["gsm8k", "judge", "arith"],
    )
    # values are YAML; a bare key goes to every task whose constructor names it (not to **options families)
    assert opts == {
        "gsm8k": {"fewshot": 5, "path": "x.jsonl"},
        "judge": {"categories": ["math", "coding"], "mode": "pairwise"},
        "arith": {"big": True},
    }
    assert parse_task_options([], ["gsm8k"]) == {}


@pytest.mark.parametrize("spec, message", [
    ("gsm8k.shots=5", "task 'gsm8k': unknown option(s) shots; accepted options: fewshot, path, train_path"),
    ("mbpp.fewshot=5", "task 'mbpp' is not among the tasks (gsm8k, judge)"),
    ("shots=5", "no task takes 'shots' (accepted options: gsm8k: fewshot, path, train_path; judge: mode,"),
    ("fewshot", "expected task.key=value"),
])  # fmt: skip
def test_unknown_task_options_fail_naming_the_task(spec: str, message: str) -> None:
    from tunelab.eval.tasks.base import TaskOptionError, parse_task_options

    with pytest.raises(TaskOptionError) as e:
        parse_task_options([spec], ["gsm8k", "judge"])
    assert message in str(e.value)


def test_get_task_checks_options_against_the_constructor() -> None:
    from tunelab.eval.tasks.base import TaskOptionError, get_task

    assert get_task("gsm8k", fewshot=3).fewshot == 3 and get_task("nlp_mc", split="ood").split == "ood"
    assert get_task("arith", big=True).family.options == {"big": True}  # families take any option
    with pytest.raises(TaskOptionError, match="task 'nlp_mc': unknown option.*accepted options: split"):
        get_task("nlp_mc", splits="ood")


def test_task_options_from_the_command_line(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    test = _jsonl(tmp_path / "test.jsonl", _gsm8k_rows(3)[1:])  # a two-item test file via the `path` option
    answers = [r["answer"].split("####")[-1].strip() for r in _gsm8k_rows(3)[1:]]
    preds = _jsonl(
        tmp_path / "p.jsonl", [{"id": 0, "completion": f"#### {answers[0]}"}, {"id": 1, "completion": "0"}]
    )
    args = ["eval", "--tasks", "gsm8k", "--predictions", str(preds), "--out", str(tmp_path / "o"), "--json"]
    assert main([*args, "--task-option", f"gsm8k.path={test}", "--task-option", "fewshot=2"]) == 0
    result = json.loads(capsys.readouterr().out)["gsm8k"]
    assert result["n"] == 2 and result["exact_match_strict"] == 0.5
    assert main([*args, "--task-option", "gsm8k.shots=5"]) == 2
    err = capsys.readouterr().err
    assert "task 'gsm8k': unknown option(s) shots; accepted options: fewshot, path, train_path" in err
    assert main([*args, "--task-option", "judge.mode=single"]) == 2
    assert "task 'judge' is not among the tasks (gsm8k)" in capsys.readouterr().err


def test_judge_options_from_the_command_line(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Both turns through the CLI with a local judge (the tiny model: it never writes a grade)."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    questions = _jsonl(tmp_path / "question.jsonl", [
        {"question_id": 1, "category": "writing", "turns": ["Hi?", "And then?"]},
        {"question_id": 2, "category": "math", "turns": ["1+1?", "Times 3?"], "reference": ["2", "6"]},
        {"question_id": 3, "category": "roleplay", "turns": ["Be a cat."]},
    ])  # fmt: skip
    out = tmp_path / "out"
    args = ["eval", str(tiny_dir), "--tasks", "judge", "--max-new-tokens", "4", "--out", str(out), "--json"]
    opts = [f"judge.questions={questions}", f"judge.judge={tiny_dir}", "judge.max_judge_tokens=4"]
    assert main([*args, *(x for o in opts for x in ("--task-option", o))]) == 0
    result = json.loads(capsys.readouterr().out)["judge"]
    assert result["parse_failure_rate"] == 1.0 and result["parse_failure_rate_ci"][1] == 1.0
    # reported, with no parsed grade: NaN
    assert all(math.isnan(x) for x in [*result["score_turn1_ci"], *result["score_turn2_ci"]])
    rows = [json.loads(line) for line in (out / "judge.jsonl").read_text().splitlines()]
    assert [len(r["answers"]) for r in rows] == [2, 2, 1] and [r["turns"] for r in rows] == [2, 2, 1]
    assert [len(r["judgements"]) for r in rows] == [2, 2, 1] and all(
        r["parse_failures"] == r["turns"] for r in rows
    )
    assert (
        main([*args, "--task-option", f"judge.questions={questions}", "--task-option", "judge.turns=3"]) == 2
    )
    assert "judge turns must be 1 or 2, got 3" in capsys.readouterr().err
