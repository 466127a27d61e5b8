"""The three prompt regimes (full / compressed / query only): prompts, token counts, the trade-off tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.eval.harness import evaluate_tasks
from tunelab.eval.regimes import (
    UNTRAINED,
    format_regimes,
    format_sweep_regimes,
    regime_table,
    sweep_regime_table,
)
from tunelab.eval.tasks.base import get_task, task_names
from tunelab.generate.build import build_generator
from tunelab.io import read_jsonl
from tunelab.promptintern.prompt_sets import mbpp_query

ROOT = Path(__file__).resolve().parents[2]
REGIMES = ("full", "compressed", "query")


def test_every_suite_has_three_registered_regimes() -> None:
    names = set(task_names())
    assert {f"{s}_{r}" for s in ("gsm8k_cot", "mbpp_long", "arith_rules") for r in REGIMES} <= names
    with pytest.raises(ValueError, match="keep"):
        get_task("arith_rules_compressed", keep=1.5)


def test_regime_prompts_and_the_table_with_token_counts(tiny) -> None:
    model, tok = tiny
    tasks = {f"arith_rules_{r}": get_task(f"arith_rules_{r}", shots=2, score="position") for r in REGIMES}
    for t in tasks.values():
        t.bind(tok, "tiny")
    items = {r: tasks[f"arith_rules_{r}"].items(4, 1234) for r in REGIMES}
    base = get_task("arith").items(4, 1234)
    assert [it.id for it in items["query"]] == [it.id for it in base]
    assert [it.prompt for it in items["query"]] == [it.prompt for it in base]  # the bare query is the task's own
    full = items["full"][0].prompt[-1]["content"]
    assert full.startswith("You solve short arithmetic") and full.count("Example ") == 2
    assert full.endswith("Now the task:\n" + base[0].prompt[-1]["content"])
    compressed = items["compressed"][0].prompt[-1]["content"]
    assert compressed.count("Example ") == 1 and len(compressed) < len(full)  # round(0.3 * 2) examples
    generator = build_generator(model, tokenizer=tok, precision="fp32", batch_size=4, progress=False)
    results = evaluate_tasks(tasks, generator, limit=4, max_new_tokens=4, log=False)
    table = regime_table(results, tasks)["arith_rules"]
    tokens = [table[r]["input_tokens"]["value"] for r in REGIMES]
    assert tokens[0] > tokens[1] > tokens[2] > 0
    rendered = [tok.apply_chat_template(it.prompt, tokenize=False, add_generation_prompt=True) for it in items["query"]]
    assert tokens[2] == pytest.approx(sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in rendered) / 4)
    assert 0 < table["query"]["token_saving"] < 1 and table["compressed"]["vs_full"]["n"] == 4
    for r in REGIMES:
        assert table[r]["metric"] == "accuracy" and len(table[r]["score"]["ci"]) == 2
        assert table[r]["seconds_per_item"] >= 0
    assert all("input_tokens" in row and row["regime"] == "full" for row in results["arith_rules_full"].rows)
    text = format_regimes({"arith_rules": table})
    assert all(r in text for r in REGIMES) and "%" in text


def test_gsm8k_and_mbpp_suites_build_their_prompts(data_dir: Path) -> None:
    gsm = get_task("gsm8k_cot_full", score="position").items(2, 0)
    text = gsm[0].prompt[-1]["content"]
    assert text.count("Example ") == 8 and "The answer is 8.\n#### 8" in text
    assert text.endswith("Now the task:\n" + gsm[0].meta["question"])
    assert get_task("gsm8k_cot_query").items(1, 0)[0].prompt[-1]["content"] == gsm[0].meta["question"]
    if not (data_dir / "mbpp" / "mbpp.jsonl").is_file():
        pytest.skip("MBPP data not found")
    mb = get_task("mbpp_long_query").items(1, 0)[0]
    row = next(r for r in read_jsonl(data_dir / "mbpp" / "mbpp.jsonl") if str(r["task_id"]) == mb.id)
    assert mb.prompt[-1]["content"] == mbpp_query(row["text"], row["test_list"])  # as training rows write it
    full = get_task("mbpp_long_full", score="position").items(1, 0)[0].prompt[-1]["content"]
    assert full.count("Example ") == 3 and "def similar_elements" in full


def _write_run(folder: Path, name: str, rows: dict[str, dict[str, list[int]]], tokens: dict[str, int]) -> None:
    """A fake run: per-item ``correct`` of its base and tuned evaluations, per regime."""
    run_dir = folder / "runs" / name
    regimes: dict[str, dict] = {}
    for when, by_regime in rows.items():
        for regime, correct in by_regime.items():
            path = run_dir / "eval" / when / f"arith_rules_{regime}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"id": str(i), "correct": c, "input_tokens": tokens[regime]}) + "\n"
                                    for i, c in enumerate(correct)))
            regimes.setdefault(when, {}).setdefault("arith_rules", {})[regime] = {"seconds_per_item": tokens[regime] / 1e3}
    (run_dir / "results.json").write_text(json.dumps({"run": {"regimes": regimes}}))


def test_the_sweep_table_compares_arms_and_regimes(tmp_path: Path, capsys) -> None:
    tokens = {"full": 600, "compressed": 300, "query": 60}
    n = 40
    base = {"full": [1] * 20 + [0] * 20, "query": [0] * n}
    arms = {"train=full_prompt": {"full": [1] * 30 + [0] * 10, "query": [1] * 10 + [0] * 30},
            "train=promptintern": {"full": [1] * 28 + [0] * 12, "query": [1] * 29 + [0] * 11}}
    runs = {}
    for arm, by_regime in arms.items():
        for seed in range(3):
            name = f"{arm.split('=')[1]}-seed{seed}"
            _write_run(tmp_path, name, {"base": base, "tuned": by_regime}, tokens)
            runs[name] = {"arm": arm, "seed": seed, "status": "done"}
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": runs}))
    table = sweep_regime_table(tmp_path)["arith_rules"]
    cells = {(r["arm"], r["regime"]): r for r in table["rows"]}
    assert set(cells) == {(UNTRAINED, "full"), (UNTRAINED, "query")} | {(a, r) for a in arms for r in ("full", "query")}
    assert table["reference"] == [UNTRAINED, "full"] and table["best_full"] == ["train=full_prompt", "full"]
    pi = cells[("train=promptintern", "query")]
    assert pi["seeds"] == 3 and pi["score"]["value"] == pytest.approx(29 / 40)
    assert pi["vs_best_full"]["within_ci"] and pi["vs_reference"]["token_saving"] == pytest.approx(0.9)
    assert pi["vs_reference"]["p_value"] < 0.05 and pi["vs_reference"]["delta"] == pytest.approx(9 / 40)
    assert not cells[("train=full_prompt", "query")]["vs_best_full"]["within_ci"]
    assert main(["regimes", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train=promptintern" in out and (tmp_path / "regimes.json").is_file()
    assert "in CI" in format_sweep_regimes(sweep_regime_table(tmp_path))


def test_a_run_writes_the_regime_table(tmp_path: Path, capsys) -> None:
    from tunelab.runner.run import run

    run_dir = run(ROOT / "recipes" / "tiny.yaml", [
        "data.sources.0.count=16", "data.max_length=2048", "train.max_steps=2", "eval.limit=2", "eval.max_new_tokens=2",
        "eval.tasks=[arith_rules_full, arith_rules_query]", "data.heldout=0", "train.save_every=0",
        "data.transforms=[{name: promptintern, prompt: arith_rules, shots: 1}]",
        "eval.task_options={arith_rules_full: {shots: 1}}"], out=str(tmp_path), quiet=True)
    regimes = json.loads((run_dir / "results.json").read_text())["run"]["regimes"]
    for when in ("base", "tuned"):
        t = regimes[when]["arith_rules"]
        assert t["full"]["input_tokens"]["value"] > t["query"]["input_tokens"]["value"]
        assert t["query"]["vs_full"]["n"] == 2
    assert main(["regimes", str(run_dir)]) == 0 and "fine-tuned model:" in capsys.readouterr().out


def test_latency_items_time_each_item_alone_and_leave_the_answers_and_the_batched_seconds_as_they_are() -> None:
    from tunelab.eval.harness import evaluate
    from tunelab.generate.base import Generator

    class Counting(Generator):
        def __init__(self) -> None:
            self.calls: list[int] = []

        def generate(self, prompts, cfg):
            self.calls.append(len(prompts))
            return [["1"] * cfg.n for _ in prompts]

    task = get_task("arith")
    gen = Counting()
    plain = evaluate(task, gen, limit=6, max_new_tokens=4)
    assert "latency_batch1_s" not in plain.scores and gen.calls == [6]
    gen.calls.clear()
    timed = evaluate(task, gen, limit=6, max_new_tokens=4, latency_items=3)
    assert gen.calls == [6, 1, 1, 1]  # the batched pass, then three items one at a time
    lat = timed.scores["latency_batch1_s"]
    assert lat["n"] == 3 and 0 <= lat["ci"][0] <= lat["value"] <= lat["ci"][1]
    assert timed.rows == plain.rows and timed.scores["accuracy"] == plain.scores["accuracy"]
    assert evaluate(task, gen, limit=2, max_new_tokens=4, latency_items=10).scores["latency_batch1_s"]["n"] == 2


def test_the_base_evaluation_cache_key_is_unchanged_unless_latency_is_asked_for() -> None:
    from tunelab.config import RunConfig
    from tunelab.runner.cache import base_eval_key

    cfg = RunConfig()
    key = base_eval_key(cfg, "arith", "fp32")
    cfg.eval.latency_items = 0
    assert base_eval_key(cfg, "arith", "fp32") == key
    cfg.eval.latency_items = 5
    assert base_eval_key(cfg, "arith", "fp32") != key
