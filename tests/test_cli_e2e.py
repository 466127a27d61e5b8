"""End to end through the CLI on the tiny model; recipes validate; bad input fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import skip_without_shared_data

from tunelab.cli import main
from tunelab.config import ConfigError, load_recipe
from tunelab.runner.validate import validate

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_tiny_run_through_cli_writes_the_run_folder(tmp_path, capsys):
    assert main(["run", "recipes/tiny.yaml", "--out", str(tmp_path), "train.max_steps=4"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    for name in ("config.yaml", "env.json", "metrics.jsonl", "results.json", "data/mixture.json",
                 "final/adapter_model.safetensors", "final/adapter_config.json", "eval/base/arith.jsonl",
                 "eval/tuned/arith.jsonl", "checkpoints/step-3/trainable.safetensors"):
        assert (run_dir / name).is_file(), name
    res = json.loads((run_dir / "results.json").read_text())
    for which in ("base", "tuned"):
        score = res["arith"][which]
        assert set(score) >= {"value", "ci", "n"} and score["n"] == 8 and 0 <= score["ci"][0] <= score["ci"][1] <= 1
    env = json.loads((run_dir / "env.json").read_text())
    assert env["precision"] == "fp32" and env["model"]["kind"] in ("tiny", "cached")
    from tunelab.train.speed import glibc_malloc
    # the process's own malloc: "glibc" exactly when glibc's is the one in use (unless the tests were preloaded)
    assert (env["allocator"] == "glibc") == (glibc_malloc() is not None) and env["allocator"]
    assert env["speed"]["compile"] is False and env["speed"]["compile_decision"]["requested"] == "auto"
    assert any("parameters" in why for why in env["speed"]["compile_decision"]["why"])  # tiny: eager, and why
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3, 4]
    assert "heldout_loss/arith" in steps[-1]
    # the run's wall time, phase by phase (benchmarks/study_run.py prints them): they add up to it
    phases, train = res["run"]["phases"], res["run"]["train"]
    assert list(phases) == ["load", "data", "base_eval", "prepare", "train", "save", "evaluate"]
    assert all(v >= 0 for v in phases.values()) and phases["base_eval"] > 0 and phases["evaluate"] > 0
    assert abs(sum(phases.values()) - res["run"]["seconds"]) <= 0.2 + 0.01 * res["run"]["seconds"]
    assert 0 < train["first_step_seconds"] <= train["step_seconds"] <= phases["train"]
    assert train["heldout_seconds"] > 0 and train["step_seconds"] + train["heldout_seconds"] <= phases["train"]
    # a second identical run is skipped, not redone
    assert main(["run", "recipes/tiny.yaml", "--out", str(tmp_path), "train.max_steps=4"]) == 0
    assert "skipping" in capsys.readouterr().out
    # the fine-tuned run answers through `chat`
    assert main(["chat", str(run_dir), "--prompt", "2+2?", "--max-new-tokens", "4"]) == 0


def test_export_merge_writes_a_plain_hf_model(tmp_path):
    assert main(["run", "recipes/tiny.yaml", "--out", str(tmp_path), "train.max_steps=2", "eval.tasks=[]"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert main(["export", str(run_dir), "--merge", "--out", str(tmp_path / "merged")]) == 0
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates(recipe):
    problems = validate(load_recipe(recipe))
    skip_without_shared_data(problems)
    assert problems == []  # failures.yaml too: its pool is a generated source


@pytest.mark.parametrize("override, message", [
    ("train.max_step=3", "unknown key 'train.max_step'; valid keys: max_steps"),
    ("train.lr=fast", "train.lr: expected a number"),
    ("train.precision=fp8", "valid choices: auto, fp32, bf16"),
    ("method.name=lorra", "unknown method 'lorra'; valid choices:"),
    ("method.rank=3", "unknown key 'method.rank'"),
    ("data.sources.0.task=arithmetic", "unknown task family"),
    ("data.sources.0.on_error=ignore", "valid choices: fail, skip"),
])
def test_bad_recipes_fail_before_work_naming_the_key(override, message, capsys):
    assert main(["validate", "recipes/tiny.yaml", override]) != 0
    assert message in capsys.readouterr().err


def test_missing_data_file_names_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path / "data"))
    r = tmp_path / "r.yaml"
    r.write_text("model: tiny\ndata:\n  sources:\n    - {name: x, path: nowhere/file.jsonl, format: messages}\n")
    assert main(["validate", str(r)]) != 0
    err = capsys.readouterr().err
    assert "nowhere/file.jsonl" in err and "TUNELAB_DATA_DIR" in err


def test_bad_data_row_fails_with_file_line_and_field(tmp_path, capsys):
    data = tmp_path / "chat.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    r = tmp_path / "r.yaml"
    r.write_text(f"model: tiny\ndata:\n  sources:\n    - {{name: x, path: {data}, format: messages}}\n"
                 "  heldout: 0\ntrain: {max_steps: 1, precision: fp32}\n")
    assert main(["run", str(r), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "chat.jsonl:2" in err and "role" in err and "bot" in err


def test_yaml_syntax_error_and_missing_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "none.yaml")


def test_recipe_task_options_are_checked_and_used(tmp_path, capsys, tiny):
    from tunelab.eval.tasks import get_task
    from tunelab.runner.run import evaluate_model

    cfg = load_recipe("recipes/tiny.yaml", ["eval.tasks=[nlp_mc]", "eval.task_options.nlp_mc.split=ood",
                                            "eval.limit=3"])
    assert validate(cfg) == [] and cfg.eval.task_options == {"nlp_mc": {"split": "ood"}}
    model, tok = tiny
    out = evaluate_model(model, tok, cfg, "fp32", tmp_path, quiet=True)  # the runner builds the ood task
    ood_ids = [it.id for it in get_task("nlp_mc", split="ood").items(3, cfg.eval.seed)]
    assert [r["id"] for r in out["nlp_mc"].rows] == ood_ids and all("-ood-" in i for i in ood_ids)
    assert main(["validate", "recipes/tiny.yaml", "eval.tasks=[nlp_mc]", "eval.task_options.nlp_mc.splits=ood"]) == 1
    assert "task 'nlp_mc': unknown option(s) splits; accepted options: split" in capsys.readouterr().err
    assert main(["validate", "recipes/tiny.yaml", "eval.task_options.gsm8k.fewshot=5"]) == 1
    assert "eval.task_options: 'gsm8k' is not in eval.tasks (arith)" in capsys.readouterr().err


def test_a_second_run_reuses_the_base_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    args = ["run", "recipes/tiny.yaml", "train.max_steps=2", "eval.limit=4", "eval.max_new_tokens=8"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    assert main(args + ["--out", str(tmp_path / "two")]) == 0
    first, second = (next((tmp_path / d).iterdir()) for d in ("one", "two"))
    reused = lambda d: json.loads((d / "results.json").read_text())["run"]["reused"]  # noqa: E731
    assert reused(first)["base_eval"] == [] and reused(second)["base_eval"] == ["arith"]
    assert (first / "eval/base/arith.jsonl").read_text() == (second / "eval/base/arith.jsonl").read_text()
    monkeypatch.setenv("TUNELAB_NO_EVAL_CACHE", "1")
    assert main(args + ["--out", str(tmp_path / "three")]) == 0
    assert reused(next((tmp_path / "three").iterdir()))["base_eval"] == []


def test_merged_evaluation_answers_as_the_live_adapters_do_and_says_so(tmp_path):
    rows = {}
    for merge in (False, True):
        out = tmp_path / str(merge)
        assert main(["run", "recipes/tiny.yaml", "--out", str(out), "train.max_steps=3", "train.lr=0.05",
                     "eval.limit=6", "eval.baseline=false", f"eval.merge_adapters={str(merge).lower()}"]) == 0
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        res = json.loads((run_dir / "results.json").read_text())
        assert res["run"].get("merged_for_eval", False) is merge
        assert (run_dir / "final" / "adapter_model.safetensors").is_file()  # the adapter is saved, unmerged
        rows[merge] = [json.loads(x) for x in (run_dir / "eval" / "tuned" / "arith.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows[True]] == [r["completion"] for r in rows[False]]  # fp32: the same answers
