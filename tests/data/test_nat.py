"""The trajectory format and Negative-Aware Training (and its NUT / positives-only baselines and controls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.data.formats import to_sample
from tunelab.data.transforms.base import TransformContext, build_transforms
from tunelab.data.transforms.nat import conditioned, grade
from tunelab.io import DataError

ROOT = Path(__file__).resolve().parents[2]


def _row(i: int, success: bool, score: float | None = None) -> dict:
    outcome = {"success": success} | ({"score": score} if score is not None else {})
    return {"id": f"t{i}#0", "task_id": f"t{i}", "attempt": 0, "outcome": outcome, "origin": {"env": "calculator"},
            "messages": [{"role": "user", "content": f"Question: what is {i} + {i}?"},
                         {"role": "assistant", "content": "Thought: add.\nAction: calculate[1 + 1]"},
                         {"role": "user", "content": "Observation: 2"},
                         {"role": "assistant", "content": f"Thought: done.\nAction: finish[{2 * i if success else 0}]"}]}


def _samples(rows: list[dict]):
    out = []
    for n, r in enumerate(rows):
        s = to_sample(r, "auto", {}, f"traj.jsonl:{n + 1}")
        s.meta.update({"source": "traj", "id": r.get("id", str(n))})
        out.append(s)
    return out


def _apply(spec: dict, samples):
    (t,) = build_transforms([{"name": "nat", **spec}])
    return t(samples, TransformContext(count_tokens=len, seed=0))


ROWS = [_row(i, i % 3 == 0) for i in range(12)]  # 4 positives, 8 negatives


def test_nat_marks_the_question_turn_and_keeps_loss_on_both_kinds() -> None:
    kept, removed = _apply({}, _samples(ROWS))
    assert len(kept) == 12 and removed == {}
    for s, r in zip(kept, ROWS):
        first = s.messages[0]["content"]
        wanted = "Please solve the problem correctly." if r["outcome"]["success"] else "But incorrectly solve the problem."
        assert first.endswith(wanted) and first.startswith("Question:")
        assert s.messages[2] == {"role": "user", "content": "Observation: 2"}  # observations: user turns, no loss
        assert all("train" not in m or m["train"] for m in s.messages if m["role"] == "assistant")
    assert conditioned({"name": "nat"}) == "Please solve the problem correctly."


def test_baselines_and_controls() -> None:
    nut, _ = _apply({"mode": "nut"}, _samples(ROWS))
    assert [s.messages for s in nut] == [s.messages for s in _samples(ROWS)]  # same data, no signal
    pos, removed = _apply({"mode": "positives"}, _samples(ROWS))
    assert len(pos) == 4 and removed == {"negatives": 8} and all(s.meta["outcome"]["success"] for s in pos)
    ratio, removed = _apply({"negatives_per_positive": 1.0}, _samples(ROWS))
    assert len(ratio) == 8 and removed == {"negatives_over_ratio": 4}
    assert [s.meta["id"] for s in ratio] == [s.meta["id"] for s in _apply({"negatives_per_positive": 1.0},
                                                                          _samples(ROWS))[0]]  # seeded
    tags, _ = _apply({"signal": "meaningless"}, _samples(ROWS))
    assert tags[0].messages[0]["content"].endswith("[A]") and tags[1].messages[0]["content"].endswith("[B]")
    swapped, _ = _apply({"signal": "swapped"}, _samples(ROWS))
    assert swapped[0].messages[0]["content"].endswith("But incorrectly solve the problem.")
    assert conditioned({"signal": "swapped"}) == "But incorrectly solve the problem."
    system, _ = _apply({"placement": "system"}, _samples(ROWS))
    assert system[0].messages[0] == {"role": "system", "content": "Please solve the problem correctly."}


def test_graded_classes_follow_the_paper_thresholds() -> None:
    assert [grade(x) for x in (1.0, 0.7, 0.4, 0.39, 0.01, 0.0)] == [0, 1, 1, 2, 2, 3]
    rows = [_row(0, True, 1.0), _row(1, False, 0.5), _row(2, False, 0.2), _row(3, False, 0.0)]
    graded, _ = _apply({"classes": "graded"}, _samples(rows))
    assert [s.meta["nat_class"] for s in graded] == [0, 1, 2, 3]
    assert len({s.meta["nat_signal"] for s in graded}) == 4


@pytest.mark.parametrize(("change", "fragments"), [
    (lambda r: r.pop("outcome"), ["traj.jsonl:1", "outcome"]),
    (lambda r: r["outcome"].update(success="yes"), ["traj.jsonl:1", "outcome.success", "true or false"]),
    (lambda r: r["outcome"].update(score=1.5), ["outcome.score", "[0, 1]"]),
    (lambda r: r["messages"][2].update(loss=True), ["messages[2].loss", "cannot carry loss"]),
    (lambda r: r["messages"][1].update(content="Action: calculate(1+1)"), ["messages[1].content", "broken action"]),
    (lambda r: r["messages"][1].update(role="bot"), ["messages[1].role", "unknown role"]),
])
def test_bad_trajectories_fail_with_file_line_and_field(change, fragments) -> None:
    row = _row(0, True)
    change(row)
    with pytest.raises(DataError) as err:
        to_sample(row, "trajectory", {}, "traj.jsonl:1")
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_nat_on_plain_messages_is_an_error_and_a_recipe_trains_on_trajectories(tmp_path: Path, capsys) -> None:
    plain = [{"messages": r["messages"]} for r in ROWS]
    with pytest.raises(DataError, match="needs trajectories with an outcome"):
        _apply({}, _samples(plain))
    path = tmp_path / "traj.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 4))
    assert main(["data", "inspect", str(ROOT / "recipes" / "tiny.yaml"), "--json",
                 f"data.sources=[{{name: traj, path: {path}}}]", "data.transforms=[{name: nat, mode: positives}]",
                 "data.heldout=0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sources"][0]["examples"] == 16 and report["sources"][0]["removed"] == {"negatives": 32}


def test_a_nat_run_is_evaluated_asking_for_success(tmp_path: Path, capsys) -> None:
    from tunelab.cli.eval import run_signal
    from tunelab.config import load_config
    from tunelab.runner.run import recipe_tasks, run

    path = tmp_path / "traj.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 4))
    run_dir = run(ROOT / "recipes" / "tiny.yaml", [f"data.sources=[{{name: traj, path: {path}}}]",
                                                   "data.transforms=[{name: nat}]", "data.heldout=0",
                                                   "train.max_steps=2", "eval.limit=4", "eval.max_new_tokens=8"],
                  out=str(tmp_path / "runs"), quiet=True)
    assert run_signal(str(run_dir), "auto") == "Please solve the problem correctly."
    assert run_signal(str(run_dir), "failure") == "But incorrectly solve the problem."
    assert run_signal(str(run_dir), "none") == ""
    items = recipe_tasks(load_config(run_dir), signal=run_signal(str(run_dir), "auto"))["arith"].items(2, 0)
    assert all(it.prompt[-1]["content"].endswith("Please solve the problem correctly.") for it in items)
    assert main(["eval", str(run_dir), "--tasks", "arith", "--limit", "2", "--max-new-tokens", "4",
                 "--signal", "failure", "--out", str(tmp_path / "ev")]) == 0
    assert "training signal: 'But incorrectly solve the problem.'" in capsys.readouterr().err
    plain = run(ROOT / "recipes" / "tiny.yaml", ["train.max_steps=1", "eval.tasks=[]", "name=plain"],
                out=str(tmp_path / "runs"), quiet=True)
    assert main(["eval", str(plain), "--tasks", "arith", "--signal", "success", "--out", str(tmp_path / "e2")]) == 2


def test_a_sampled_trajectory_that_failed_by_a_broken_action_still_loads() -> None:
    row = _row(0, False)
    row["messages"] = row["messages"][:1] + [{"role": "assistant", "content": "Action: calculate(1+1)"}]
    row["outcome"]["failure"] = "malformed_action"  # what `tunelab sample` writes for a model's bad action
    assert to_sample(row, "trajectory", {}, "traj.jsonl:1").meta["outcome"]["failure"] == "malformed_action"
    row["outcome"]["failure"] = "wrong_answer"
    with pytest.raises(DataError, match="broken action"):
        to_sample(row, "trajectory", {}, "traj.jsonl:1")


def test_graded_classes_read_recorded_f1() -> None:
    """FireAct records F1: NAT's four graded classes come from it."""
    rows = [{"id": str(i), "reward": f1 == 1, "f1": f1, "gt": "x", "pred": "y", "traj": [
        {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Action: finish[y]"}]}
            for i, f1 in enumerate((1, 0.5, 0.2, 0))]
    samples = []
    for r in rows:
        s = to_sample(r, "fireact", {}, "t.json[0]")
        s.meta.update(source="t", id=r["id"])
        samples.append(s)
    graded, _ = _apply({"classes": "graded"}, samples)
    assert [s.meta["nat_class"] for s in graded] == [0, 1, 2, 3]
