"""``tunelab eval``: scoring predictions files and evaluating the tiny model, with --json output."""

from __future__ import annotations

import json
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

    from tunelab.eval.tasks.choice import HFLoglikScorer
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
