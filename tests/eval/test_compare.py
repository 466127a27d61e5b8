"""compare_runs / forgetting on fake run folders with crafted per-item rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.data.formats import DataError
from tunelab.runner.compare import compare_runs, forgetting, item_value


def _write(folder: Path, task: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    # clear win for B: 40 items A fails and B solves, 2 the other way (ids int in A, str in B)
    _write(a / "eval" / "tuned", "arith", [{"id": i, "correct": int(i < 12)} for i in range(100)])
    _write(
        b / "eval" / "cli",
        "arith",
        [{"id": str(i), "correct": int(i < 10 or 12 <= i < 52)} for i in range(100)],
    )
    # CI crossing 0: 3 discordant pairs each way
    _write(
        a / "eval" / "tuned", "nlp", [{"id": f"q{i}", "correct": int(i < 3 or i >= 50)} for i in range(60)]
    )
    _write(
        b / "eval" / "cli", "nlp", [{"id": f"q{i}", "correct": int(3 <= i < 6 or i >= 50)} for i in range(60)]
    )
    # code task rows: per-problem pass@1 = c / n, paired bootstrap
    _write(a / "eval" / "tuned", "humaneval", [{"id": f"H/{i}", "n": 4, "c": i % 3} for i in range(30)])
    _write(b / "eval" / "cli", "humaneval", [{"id": f"H/{i}", "n": 4, "c": i % 3} for i in range(30)])
    _write(a / "eval" / "tuned", "only_in_a", [{"id": 1, "correct": 1}])
    return a, b


def test_clear_win_and_no_win(runs: tuple[Path, Path]) -> None:
    a, b = runs
    out = compare_runs(a, b)
    assert set(out) == {"arith", "nlp", "humaneval"}
    win = out["arith"]
    assert win["verdict"] == "b better" and win["ci"][0] > 0 and win["n"] == 100
    assert win["delta"] == pytest.approx(0.38) and win["method"] == "mcnemar_exact"
    tie = out["nlp"]
    assert tie["verdict"] == "no significant difference" and tie["ci"][0] < 0 < tie["ci"][1]
    assert out["humaneval"]["method"] == "sign_flip_test" and out["humaneval"]["delta"] == 0
    assert out["humaneval"]["verdict"] == "no significant difference"
    reverse = compare_runs(b, a)
    assert reverse["arith"]["verdict"] == "a better" and reverse["arith"]["delta"] == pytest.approx(-0.38)


def test_partial_overlap_counts_unmatched(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a / "eval" / "tuned", "t", [{"id": i, "correct": 1} for i in range(5)])
    _write(b / "eval" / "tuned", "t", [{"id": i, "correct": 0} for i in range(3, 8)])
    r = compare_runs(a, b)["t"]
    assert (r["n"], r["only_a"], r["only_b"]) == (2, 3, 3)


def test_cli_compare_json(runs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    a, b = runs
    assert main(["compare", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["arith"]["verdict"] == "b better"
    assert main(["compare", str(a), str(b)]) == 0
    assert "arith: delta +0.380" in capsys.readouterr().out


def test_forgetting_and_errors(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run / "eval" / "base", "arith", [{"id": i, "correct": 1} for i in range(80)])
    _write(run / "eval" / "tuned", "arith", [{"id": i, "correct": int(i >= 30)} for i in range(80)])
    r = forgetting(run)["arith"]
    assert r["delta"] == pytest.approx(-30 / 80) and r["verdict"] == "a better"
    with pytest.raises(DataError, match="no per-item eval rows"):
        forgetting(tmp_path / "missing")
    _write(tmp_path / "dup" / "eval" / "tuned", "arith", [{"id": 1, "correct": 1}, {"id": "1", "correct": 0}])
    with pytest.raises(DataError, match="duplicate id"):
        compare_runs(tmp_path / "dup", run)


def test_item_value() -> None:
    assert item_value({"n": 4, "c": 1, "correct": 0}) == 0.25
    assert item_value({"correct": True}) == 1.0 and item_value({"rating": 7}) == 7.0
    assert item_value({"completion": "x"}) is None


def test_cli_compare_with_three_items_gives_no_verdict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a / "eval" / "tuned", "judge", [{"id": i, "rating": 3.0} for i in range(3)])
    _write(b / "eval" / "tuned", "judge", [{"id": i, "rating": 9.0} for i in range(3)])
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "too few items for a verdict" in out and "at least 6" in out
    _write(b / "eval" / "tuned", "judge", [{"id": 0, "rating": 9.0}, {"id": 1, "rating": float("inf")},
                                           {"id": 2, "rating": 9.0}])
    with pytest.raises(DataError, match="judge.jsonl: .*item '1' has a non-finite score"):
        compare_runs(a, b)
    assert main(["compare", str(a), str(b)]) == 2
    assert "item '1' has a non-finite score" in capsys.readouterr().err
