"""PromptIntern: the prompt-structure format, the per-step schedule, template compression, exact resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import skip_without_shared_data

from tunelab.cli import main
from tunelab.config import ConfigError, ModelConfig, SourceConfig, load_recipe
from tunelab.data.pipeline import build_data
from tunelab.data.prompt_parts import PARTS_KEY, Example, PromptParts
from tunelab.data.sources import load_source
from tunelab.data.transforms import TRANSFORMS, TransformContext, build_transforms
from tunelab.models import surprisal
from tunelab.models.surprisal import surprisal_scorer
from tunelab.promptintern import compress
from tunelab.promptintern.compress import Compressor, split_units
from tunelab.promptintern.examples import rank_examples
from tunelab.promptintern.prompt_sets import ARITH_TEMPLATE
from tunelab.promptintern.rows import stage_rows
from tunelab.promptintern.schedule import promptintern_spec
from tunelab.types import Sample

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ("Answer the arithmetic problem. Write each step as an equation. Put the equations on one line. "
            "End with a line #### N. Never explain.")
SPEC = f"{{name: promptintern, template: '{TEMPLATE}', examples: source, shots: 2}}"


def _transform(**params):
    (t,) = build_transforms([{"name": "promptintern", **params}])
    return t


def test_registered_listed_and_bad_params_fail(capsys) -> None:
    assert "promptintern" in TRANSFORMS
    assert main(["ls", "transforms"]) == 0 and "promptintern" in capsys.readouterr().out
    for bad, fragment in [({"prompt": "nope"}, "unknown prompt set"),
                          ({"stages": [{"until": 0.5}, {"until": 0.4}]}, "stages[1]"),
                          ({"stages": [{"until": 1.0, "keep": 2}]}, "keep in [0, 1]"),
                          ({"stages": [{"when": 1.0}]}, "keys are until, keep, shots"),
                          ({"levels": 1}, "levels"), ({"examples": "prompt"}, "needs a prompt set"),
                          ({"schedule": "exponential"}, "valid choices")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            _transform(**bad)


def test_schedules_map_progress_to_levels() -> None:
    t = _transform(shots=4)  # default stages: quarters, the paper's 100 / 60 / 30 % templates, then none
    assert [t.level(p) for p in (0.0, 0.3, 0.6, 0.9)] == [(1.0, 4), (0.6, 2), (0.3, 1), (0.0, 0)]
    assert t.plan(8) == [(1.0, 4)] * 2 + [(0.6, 2)] * 2 + [(0.3, 1)] * 2 + [(0.0, 0)] * 2
    lin = _transform(schedule="linear", shots=8, levels=3)
    plan = lin.plan(30)
    assert sorted(set(plan), reverse=True) == [(1.0, 8), (0.5, 4), (0.0, 0)]  # quantised to 3 levels
    assert plan == sorted(plan, reverse=True)  # never goes back up
    cos = _transform(schedule="cosine", shots=8, levels=5).plan(100)
    assert len(set(cos)) == 5 and cos.count((1.0, 8)) > _transform(schedule="linear", shots=8, levels=5).plan(
        100).count((1.0, 8))  # cosine stays longer at the start
    assert set(_transform(schedule="constant", keep_start=0.0, shots_start=0).plan(10)) == {(0.0, 0)}


def test_compression_is_reproducible_and_nested(tiny) -> None:
    model, tok = tiny
    template = ARITH_TEMPLATE
    units = split_units(template, "sentence")
    assert "".join(units) == template.strip() and len(units) > 10
    c = Compressor("sentence", "surprisal", model="tiny-test")
    with pytest.raises(ValueError, match="needs a scorer"):  # the caller builds the scorer: nothing loads a model here
        c.compress(template, 0.5)
    scorer = surprisal_scorer(model, tok)
    first = c.ranking(template, scorer)
    compress._RANKINGS.clear()
    assert c.ranking(template, scorer) == first  # recomputed from scratch: the same order
    texts = {keep: c.compress(template, keep, scorer) for keep in (0.0, 0.3, 0.6, 1.0)}
    assert texts[1.0] == template.strip() and texts[0.0] == ""
    n = {k: len(v.split()) for k, v in texts.items()}
    assert 0 < n[0.3] <= 0.3 * n[1.0] and n[0.3] < n[0.6] <= 0.6 * n[1.0]
    kept = {k: {u.strip() for u in split_units(v, "sentence")} for k, v in texts.items()}
    assert kept[0.3] <= kept[0.6] <= kept[1.0]  # a smaller fraction keeps a subset of the units
    by_position = Compressor("sentence", "position").compress(template, 0.3)
    assert by_position.startswith("".join(units[:3]).strip())  # earlier units first (later short ones may fit)
    r0, r1 = (Compressor("word", "random", seed=s).compress(template, 0.5) for s in (0, 1))
    assert r0 == Compressor("word", "random", seed=0).compress(template, 0.5) and r0 != r1


def test_examples_by_similarity_or_seeded_random() -> None:
    pool = [Example("red apples and pears", "a"), Example("blue cars", "b"), Example("apples apples", "c")]
    assert rank_examples(["apples"], pool, "similarity", 2) == [[2, 0]]
    assert rank_examples(["apples"], pool, "similarity", 3, exclude_same=True) == [[2, 0, 1]]
    assert rank_examples(["apples apples"], pool, "similarity", 3, exclude_same=True) == [[0, 1]]
    a = rank_examples(["x", "y"], pool, "random", 2, keys=["1", "2"], seed=3)
    assert a == rank_examples(["x", "y"], pool, "random", 2, keys=["1", "2"], seed=3) and len(a[0]) == 2


def test_the_transform_attaches_parts_and_renders_the_full_prompt() -> None:
    samples = [Sample([{"role": "system", "content": "sys"}, {"role": "user", "content": f"q{i} apples"},
                       {"role": "assistant", "content": f"a{i}"}], {"source": "s", "id": str(i)}) for i in range(4)]
    out, removed = _transform(template="T.", examples="source", shots=2)(samples, TransformContext())
    assert removed == {} and len(out) == 4
    parts = PromptParts.from_meta(out[0].meta[PARTS_KEY])
    assert parts.query == "q0 apples" and parts.answer == "a0" and len(parts.examples) == 2
    assert all(e.query != "q0 apples" for e in parts.examples)  # never its own example
    user = out[0].messages[1]["content"]
    assert user.startswith("T.\n\nExample 1:\n") and user.endswith("Now the task:\nq0 apples")
    assert out[0].messages[0] == {"role": "system", "content": "sys"} and out[0].messages[2]["content"] == "a0"
    gsm = _transform(prompt="gsm8k_cot")(samples[:1], TransformContext())[0][0]
    assert len(PromptParts.from_meta(gsm.meta[PARTS_KEY]).examples) == 8
    assert "The answer is 6.\n#### 6" in gsm.messages[1]["content"]


def test_the_prompt_structure_format(tmp_path: Path) -> None:
    rows = [{"template": "Rules.", "examples": [{"query": "1+1", "answer": "2"}, ["2+2", "4"]],
             "query": f"{i}+{i}", "answer": str(2 * i)} for i in range(6)]
    path = tmp_path / "ps.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = SourceConfig(name="ps", path=str(path), format="prompt_structure")
    loaded = load_source(src, None, 0, 0)
    s = loaded.train[0]
    assert s.messages == [{"role": "user", "content": "0+0"}, {"role": "assistant", "content": "0"}]
    out, _ = _transform(shots=1)(loaded.train, TransformContext())
    assert out[2].messages[0]["content"] == "Rules.\n\nExample 1:\n2+2\nAnswer:\n4\n\nNow the task:\n2+2"
    assert out[3].messages[0]["content"].startswith("Rules.\n\nExample 1:\n1+1\n")  # no overlap: pool order
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "examples": [3]}) + "\n")
    with pytest.raises(Exception, match=r"bad.jsonl:1.*examples\[0\]"):
        load_source(SourceConfig(name="b", path=str(bad), format="prompt_structure"), None, 0, 0)


@pytest.mark.parametrize("packing", [True, False])
def test_stage_rows_change_over_steps_with_the_same_examples(tiny, packing: bool) -> None:
    model, tok = tiny
    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml", [
        "data.sources.0.count=24", "data.max_length=1400", "train.max_steps=8", f"data.packing={str(packing).lower()}",
        f"data.transforms=[{SPEC}]"])
    data = build_data(cfg, tok)
    assert promptintern_spec(cfg.data.transforms)["name"] == "promptintern"
    stages = stage_rows(cfg, tok, data.samples, data.rows, data.sources, surprisal_scorer(model, tok))
    levels = stages.report["levels"]
    assert [(lv["keep"], lv["shots"], lv["steps"]) for lv in levels] == [(1.0, 2, 2), (0.6, 1, 2), (0.3, 1, 2),
                                                                         (0.0, 0, 2)]
    sizes = [sum(len(r.input_ids) for r in stages(k)) for k in range(8)]
    assert sizes[0] == sum(len(r.input_ids) for r in data.rows)  # step 0: the full prompt, as built
    assert sizes[0] > sizes[2] > sizes[4] > sizes[6] and sizes[6] == sizes[7]
    for k in range(8):
        rows = stages(k)
        assert len(rows) == len(data.rows) and [r.ids for r in rows] == [r.ids for r in data.rows]
        # the answers (targets) are the same at every level: only the prompt shrinks
        assert [[t for t in r.targets if t != -100] for r in rows] == [[t for t in r.targets if t != -100]
                                                                        for r in data.rows]
    last = stages(7)[0]
    assert tok.decode(last.input_ids).count("Example") == 0


def test_a_promptintern_run_trains_and_resumes_exactly(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tunelab.runner.run import run

    overrides = ["data.sources.0.count=24", "data.max_length=1400", "train.max_steps=8", "train.save_every=4",
                 "train.batch_size=2", "eval.tasks=[]", "data.heldout=4", f"data.transforms=[{SPEC}]", "name=pi"]
    ref = run(ROOT / "recipes" / "tiny.yaml", overrides, out=str(tmp_path / "a"), quiet=True)
    report = json.loads((ref / "data" / "promptintern.json").read_text())
    assert len(report["levels"]) == 4
    tokens = [json.loads(line)["tokens"] for line in (ref / "metrics.jsonl").read_text().splitlines()
              if "tokens" in json.loads(line)]
    assert tokens[0] > tokens[-1]  # the prompts shrink as training goes
    b = run(ROOT / "recipes" / "tiny.yaml", overrides, out=str(tmp_path / "b"), quiet=True)
    assert (b / "checkpoints" / "step-4").is_dir()
    # as if killed after the step-4 checkpoint: the resumed run crosses two stage boundaries
    for name in ("final", "results.json"):
        target = b / name
        __import__("shutil").rmtree(target) if target.is_dir() else target.unlink()
    run(ROOT / "recipes" / "tiny.yaml", overrides, out=str(tmp_path / "b"), resume=True, quiet=True)
    wa, wb = (load_file(d / "final" / "adapter_model.safetensors") for d in (ref, b))
    assert wa.keys() == wb.keys() and all((wa[k] - wb[k]).abs().max() <= 1e-6 for k in wa)
    resumed = json.loads((b / "results.json").read_text())["run"]["train"]
    assert resumed["resumed_from"] == 4


def test_the_tuned_evaluation_compresses_with_the_base_model_not_the_trained_one(tmp_path: Path) -> None:
    """A full-prompt run (constant schedule: nothing compressed while training) in bf16, evaluated on the
    compressed regime only after training: the evaluation's scorer must load the base model afresh. It used
    to find the run's own model registered for the process, by then with adapters and bf16 frozen weights,
    and fail on the dtypes (seed 1 of the PromptIntern study, 2026-12-07)."""
    from tunelab.runner.run import run

    surprisal._SCORERS.pop("tiny", None)
    compress._RANKINGS.clear()
    run_dir = run(ROOT / "recipes" / "tiny.yaml", [
        "data.sources.0.count=16", "data.max_length=2048", "train.max_steps=2", "train.precision=bf16",
        "eval.limit=2", "eval.max_new_tokens=2", "eval.baseline=false", "eval.tasks=[arith_rules_compressed]",
        "data.heldout=0", "train.save_every=0",
        "data.transforms=[{name: promptintern, prompt: arith_rules, shots: 1, schedule: constant, score: surprisal}]",
        "eval.task_options={arith_rules_compressed: {shots: 1}}"], out=str(tmp_path), quiet=True)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["arith_rules_compressed"]["tuned"]["n"] == 2
    from tunelab.models.load import load_model

    base, tok, _ = load_model(ModelConfig(name="tiny"))  # the evaluation's scorer scores as the untrained model
    text = "Answer the arithmetic problem. Write each step as an equation."
    assert surprisal._SCORERS["tiny"](text) == surprisal_scorer(base, tok)(text)


def test_recipes_and_sweeps_validate(capsys) -> None:
    from tunelab.runner.sweep_file import check_sweep, load_sweep

    recipes = sorted((ROOT / "recipes").glob("promptintern*.yaml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        if main(["validate", str(recipe)]) != 0:
            err = capsys.readouterr().err
            skip_without_shared_data([line.split(": ", 2)[-1] for line in err.splitlines()])
            raise AssertionError(err)
    for sweep in sorted((ROOT / "recipes" / "sweeps").glob("promptintern*.yaml")):
        if problems := check_sweep(sweep):
            skip_without_shared_data(problems)
        planned = load_sweep(sweep)
        assert len(planned.seeds) >= 3 and len(planned.runs) == 3 * len(planned.seeds)
