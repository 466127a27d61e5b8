"""Environments with verifiers and trajectory sampling: safe calculator, verdicts, failure kinds, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.envs import EnvTask, get_env
from tunelab.envs.qa import exact_match, f1_score, normalize_answer, parse_yes_no
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


# -- sampling settings, waves ------------------------------------------------------------------


def test_sampling_settings_are_checked_before_any_work(tmp_path: Path) -> None:
    from tunelab.config import ConfigError

    out = tmp_path / "t.jsonl"
    for bad in ({"attempts": 0}, {"limit": -1}, {"max_steps": 0}, {"temperature": -0.5}, {"max_live": 0}):
        with pytest.raises(ConfigError, match=f"--{next(iter(bad)).replace('_', '-')}"):
            sample(get_env("calculator"), "calculator", _Scripted(), out, progress=False, **bad)
    assert not out.exists()


def test_at_most_max_live_attempts_advance_together(tmp_path: Path) -> None:
    from tunelab.envs.drill import ScriptedAgent

    class Recording(ScriptedAgent):
        def generate(self, prompts, cfg):
            self.sizes = [*getattr(self, "sizes", []), len(prompts)]
            return super().generate(prompts, cfg)

    agent = Recording("careful")
    env = get_env("calculator", source="pairs", oneshot=False)
    summary = sample(env, "calculator", agent, tmp_path / "t.jsonl", attempts=1, limit=10, max_live=4,
                     temperature=0.0, progress=False)
    assert summary["trajectories"] == 10 and summary["success_rate"] == 1.0
    assert max(agent.sizes) == 4 and sum(agent.sizes) == 20  # two turns per trajectory, never more than 4 live


# -- question answering: verifiers against published and recorded references ---------------------

def test_squad_normalisation_em_and_f1_on_worked_examples() -> None:
    # SQuAD v1.1 normalisation: lower case, punctuation and articles dropped, whitespace collapsed
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # F1 over token bags: "denver broncos won" vs "denver broncos": P = 2/3, R = 1, F1 = 0.8
    assert f1_score("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    assert f1_score("Denver", "Denver Broncos") == pytest.approx(2 / 3)  # P = 1, R = 1/2
    assert f1_score("Carolina Panthers", "Denver Broncos") == 0.0
    assert f1_score("x y y", "y y z") == pytest.approx(2 / 3)  # bag overlap counts repeats: 2 of 3 each way
    assert f1_score("a y y", "y y z") == pytest.approx(0.8)  # the article goes: P = 2/2, R = 2/3
    # HotpotQA: a yes/no answer that differs scores 0 even with token overlap
    assert f1_score("yes", "yes it is") == 0.0 and f1_score("Yes.", "yes") == 1.0


def test_f1_and_em_match_fireacts_recorded_scores(data_dir: Path) -> None:
    """FireAct recorded em / f1 beside each prediction (their code, not ours): all 1,464 agree."""
    files = sorted((data_dir / "fireact_hotpotqa").glob("trajs_*.json"))
    if not files:
        pytest.skip("fireact_hotpotqa not in TUNELAB_DATA_DIR")
    rows = [r for f in files for r in json.loads(f.read_text()).values()]
    assert len(rows) == 1464 and sum(0 < r["f1"] < 1 for r in rows) > 300  # partial credit exercised
    assert all(f1_score(r["pred"] or "", r["gt"]) == pytest.approx(r["f1"], abs=1e-12) for r in rows)
    assert all(exact_match(r["pred"] or "", r["gt"]) == float(r["em"]) for r in rows)


def test_yes_no_verifier_is_exact() -> None:
    assert [parse_yes_no(x) for x in ("Yes", " no. ", "TRUE", "Yes, because", "Maybe", None)] == \
        [True, False, True, None, None, None]
    env, task = get_env("yesno_qa"), EnvTask("q", "Is it?", {"answer": True})
    assert env.verify(task, "yes")["success"] and not env.verify(task, "No")["success"]
    assert not env.verify(task, "Inconclusive")["success"] and env.verify(task, "Yes")["gold"] == "Yes"


def test_calculator_format_credit_grades_a_wrong_answer_in_the_format() -> None:
    task = EnvTask("q", "2+3?", {"answer": "5"})
    plain, graded = get_env("calculator"), get_env("calculator", format_credit=0.5)
    assert [plain.verify(task, a)["score"] for a in ("5", "6", None)] == [1.0, 0.0, 0.0]
    assert [graded.verify(task, a)["score"] for a in ("5.0", "6", None)] == [1.0, 0.5, 0.0]
    assert [graded.verify(task, a)["success"] for a in ("5", "6")] == [True, False]  # success stays exact
    with pytest.raises(Exception, match="format_credit"):
        get_env("calculator", format_credit=2)


def _qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    rows = [{"id": 1, "question": "Which city hosts the Louvre?", "answer": "Paris"},
            {"id": 2, "question": "Who wrote Hamlet?", "answer": "William Shakespeare",
             "context": "Hamlet is a tragedy by William Shakespeare."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_f1_env_is_offline_and_grades_with_f1(tmp_path: Path) -> None:
    env = get_env("f1_qa", path=str(_qa_file(tmp_path)))
    tasks = {t.id: t for t in env.tasks(None, seed=0)}
    assert set(tasks) == {"qa/1", "qa/2"}
    assert env.prompt(tasks["qa/2"]).startswith("Context: Hamlet is a tragedy")
    assert env.prompt(tasks["qa/1"]).endswith("Question: Which city hosts the Louvre?")
    step = env.act("Thought: look it up.\nAction: search[Louvre]")
    assert not step.done and "not available offline" in step.observation
    v = env.verify(tasks["qa/2"], "Shakespeare")
    assert not v["success"] and v["em"] == 0.0 and v["score"] == v["f1"] == pytest.approx(2 / 3)
    assert env.verify(tasks["qa/1"], "paris.")["success"]


# -- agent evaluation: failure-kind rates ---------------------------------------------------------


class _Mixed:
    """Per task index: careful, forgetful, malformed, never finishes (searches forever)."""

    fingerprint = "mixed"

    def generate(self, prompts, cfg):
        from tunelab.envs.drill import ScriptedAgent

        out = []
        for p in prompts:
            kind = int(p[0]["content"].split("has ")[1].split(" ")[0]) % 4  # by the first quantity
            if kind == 0:
                text = "I would rather not."
            elif kind == 1:
                text = "Thought: again.\nAction: calculate[1 + 1]"
            else:
                text = ScriptedAgent("careful" if kind == 2 else "forget_first").generate([p], cfg)[0][0]
            out.append([text] * cfg.n)
        return out


def test_agent_eval_reports_success_and_every_failure_kind_with_counts(tmp_path: Path) -> None:
    from tunelab.envs.base import FAILURE_KINDS
    from tunelab.eval.harness import evaluate
    from tunelab.eval.tasks.base import Signalled, get_task

    task = get_task("agent_calculator", source="pairs", oneshot=False, max_steps=3)
    result = evaluate(task, _Mixed(), limit=40, seed=0, out=tmp_path / "agent.jsonl")
    rows, s = result.rows, result.scores
    kinds = [r["failure"] for r in rows]
    expect = {k: kinds.count(k) for k in FAILURE_KINDS}
    assert expect["malformed_action"] and expect["step_limit"] and expect["wrong_answer"] and kinds.count(None)
    assert s["success"]["value"] == kinds.count(None) / 40 and s["success"]["n"] == 40
    for kind in FAILURE_KINDS:  # every kind reported, in the score shape, with its count
        assert s[f"failure/{kind}"]["count"] == expect[kind]
        assert s[f"failure/{kind}"]["value"] == pytest.approx(expect[kind] / 40) and len(s[f"failure/{kind}"]["ci"]) == 2
    limited = next(r for r in rows if r["failure"] == "step_limit")
    assert limited["steps"] == 3 and len(limited["answers"]) == 3
    signalled = Signalled(task, "Please solve the problem correctly.")
    item = signalled.items(1, 0)[0]
    follow = task.follow_up(item, ["Thought: x.\nAction: calculate[2 + 2]"])
    assert follow[0]["content"].endswith("correctly.") and follow[-1] == {"role": "user", "content": "Observation: 4"}


def test_cli_evaluates_an_agent_task(tmp_path: Path, capsys) -> None:
    assert main(["eval", "tiny", "--tasks", "agent_calculator", "--limit", "3", "--max-new-tokens", "8",
                 "--task-option", "agent_calculator.source=pairs", "--out", str(tmp_path / "ev"), "--json"]) == 0
    flat = json.loads(capsys.readouterr().out)["agent_calculator"]
    assert flat["n"] == 3 and sum(flat[f"failure/{k}"] for k in ("malformed_action", "wrong_answer",
                                                                 "no_answer", "step_limit", "env_error")) == 1.0
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())["agent_calculator"]["scores"]
    assert sum(scores[f"failure/{k}"]["count"] for k in ("malformed_action", "wrong_answer", "no_answer",
                                                          "step_limit", "env_error")) == 3
