"""Environments with verifiers and trajectory sampling: safe calculator, verdicts, failure kinds, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.envs import get_env
from tunelab.envs.safe_math import CalcError, calculate, format_number
from tunelab.envs.sample import sample


def test_safe_calculator_computes_exactly_and_refuses_code() -> None:
    assert format_number(calculate("(48 / 2) + 48")) == "72" and format_number(calculate("1,000 * 3")) == "3000"
    assert format_number(calculate("$12/60")) == "0.2" and format_number(calculate("2 ** 10")) == "1024"
    assert format_number(calculate("0.1 + 0.2")) == "0.3"  # exact, not 0.30000000000000004
    for bad in ("__import__('os').system('true')", "open('x')", "a + 1", "9 ** 9 ** 9", "1 / 0", "[1] * 9", ""):
        with pytest.raises(CalcError):
            calculate(bad)


class _Scripted:
    """A fake agent: answers by the task's question and the number of turns so far."""

    fingerprint = "scripted"

    def __init__(self, die_on_call: int | None = None) -> None:
        self.calls, self.die_on_call, self.prompts = 0, die_on_call, 0

    def generate(self, prompts, cfg):
        self.calls += 1
        if self.calls == self.die_on_call:
            raise KeyboardInterrupt("killed")
        self.prompts += len(prompts) * cfg.n  # completions asked for
        out = []
        for messages in prompts:
            question = messages[0]["content"].rsplit("Question: ", 1)[1]
            turns = sum(m["role"] == "assistant" for m in messages)
            if "Mia" in question:  # malformed
                text = ["I think it is 5."]
            elif turns == 0:
                text = ["Thought: compute.\nAction: calculate[2 * 3]"]
            else:  # the right answer for even tasks, a wrong one for odd ones
                text = [f"Thought: done.\nAction: finish[{messages[0]['gold'] if 'gold' in messages[0] else 0}]"]
            out.append(text * cfg.n)
        return out


def test_sampling_records_outcomes_failure_kinds_and_lineage(tmp_path: Path) -> None:
    env = get_env("calculator")
    out = tmp_path / "traj.jsonl"
    summary = sample(env, "calculator", _Scripted(), out, attempts=3, limit=4, temperature=0.7, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["trajectories"] == len(rows) == 12 and len({r["id"] for r in rows}) == 12
    for r in rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles[0] == "user" and "Question:" in r["messages"][0]["content"]
        assert r["origin"] == {"env": "calculator", "sampler": "scripted", "temperature": 0.7, "seed": 0,
                               "max_steps": 6, "attempt": r["attempt"]}
        if r["outcome"]["failure"] == "malformed_action":
            assert roles == ["user", "assistant"]
        else:  # calculate -> observation (a user turn: no loss) -> finish
            assert roles == ["user", "assistant", "user", "assistant"] and r["messages"][2]["content"] == "Observation: 6"
    kinds = {r["outcome"]["failure"] for r in rows}
    assert kinds <= {"malformed_action", "wrong_answer", None} and summary["failures"]
    assert summary["positives"] + summary["negatives"] == 12


def test_a_killed_sampling_run_resumes_without_repeats_or_losses(tmp_path: Path) -> None:
    env = get_env("calculator")
    out = tmp_path / "traj.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sample(env, "calculator", _Scripted(die_on_call=2), out, attempts=2, limit=5, progress=False)
    partial = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < len(partial) < 10  # malformed attempts finished in the first round
    out.write_text(out.read_text() + '{"id": "cut by a ki')  # a line cut by kill -9
    resumed = _Scripted()
    summary = sample(env, "calculator", resumed, out, attempts=2, limit=5, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["trajectories"] == 10 and len({(r["task_id"], r["attempt"]) for r in rows}) == 10
    assert resumed.prompts == 2 * (10 - len(partial))  # only the unfinished attempts, two turns each


def test_an_environment_crash_is_recorded_and_sampling_goes_on(tmp_path: Path, monkeypatch) -> None:
    env = get_env("calculator")
    monkeypatch.setattr(env, "tool", lambda name, arg: (_ for _ in ()).throw(RuntimeError("tool down")))
    summary = sample(env, "calculator", _Scripted(), tmp_path / "t.jsonl", attempts=1, limit=4, progress=False)
    assert summary["trajectories"] == 4 and summary["failures"].get("env_error", 0) >= 1


def test_cli_samples_with_a_tiny_model_and_lists_envs(tmp_path: Path, capsys) -> None:
    assert main(["ls", "envs"]) == 0 and "calculator" in capsys.readouterr().out
    out = tmp_path / "t.jsonl"
    assert main(["sample", "calculator", "--model", "tiny", "--attempts", "2", "--limit", "2",
                 "--max-new-tokens", "16", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trajectories"] == 4 and len(out.read_text().splitlines()) == 4
    assert main(["sample", "calculator", "--model", "tiny", "--env-option", "source=nope", "--out", str(out)]) == 2
