"""Generated sources (``generate: {kind: drill | sample | evolve, ...}``): built once, reused, keyed by
everything that determines them, checked without work; and every recipe and sweep file of the
repository validates on a fresh clone (no file a manual step must make first)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tunelab.config import ConfigError, SourceConfig, load_recipe
from tunelab.runner import generated
from tunelab.runner.generated import build, generated_key, parse_generated
from tunelab.runner.sweep_file import check_sweep, is_sweep_file
from tunelab.runner.validate import validate

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RECIPE_FILES = sorted((ROOT / "recipes").glob("*.yaml"))
SWEEP_FILES = sorted((ROOT / "recipes" / "sweeps").glob("*.yaml")) + sorted((ROOT / "experiments").glob("*.yaml"))
DRILL = {"kind": "drill", "env": "calculator", "tasks": 8, "seed": 0}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private TUNELAB_CACHE; returns its ``generated`` folder."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "generated"


def _key(spec: dict, recipe_dir: str | None = None) -> str:
    return generated_key(parse_generated(spec), recipe_dir)


# ----------------------------------------------------------------------------- built once, reused


def test_a_drill_source_builds_once_and_is_reused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = generated.BUILDERS["drill"]
    monkeypatch.setitem(generated.BUILDERS, "drill", lambda *a: calls.append(1) or real(*a))
    src = SourceConfig(name="calculator", format="trajectory", generate=DRILL)
    said: list[str] = []
    first = build(src, None, said.append)
    assert not first.reused and calls == [1]
    assert first.path == cache / f"drill-{first.key}.jsonl" and first.key == _key(DRILL)
    rows = [json.loads(line) for line in first.path.read_text().splitlines()]
    assert len(rows) == 16 and sum(r["outcome"]["success"] for r in rows) == 8  # a success and a failure per task
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["rows"] == 16 and meta["inputs"]["options"] == {"env": "calculator", "tasks": 8, "seed": 0}
    assert sorted(p.name for p in cache.iterdir()) == [f"drill-{first.key}.json", f"drill-{first.key}.jsonl"]
    mtime = first.path.stat().st_mtime_ns

    second = build(src, None, said.append)
    assert second.reused and second.path == first.path and calls == [1]  # nothing generated again
    assert first.path.stat().st_mtime_ns == mtime
    assert "reusing the generated drill pool" in said[-1] and "building" in said[0]
    # the pool is the one `python -m tunelab.envs.drill OUT 8` writes
    from tunelab.envs.drill import paired_set

    paired_set(cache.parent / "manual.jsonl", tasks=8)
    assert (cache.parent / "manual.jsonl").read_text() == first.path.read_text()


def test_a_run_reads_the_generated_pool_and_says_it_reused_it(cache: Path) -> None:
    from tunelab.models.tiny import tiny_tokenizer
    from tunelab.runner.run import _data

    cfg = load_recipe(ROOT / "recipes" / "failures.yaml", ["model.name=tiny", "data.sources.0.generate.tasks=8",
                                                          "data.heldout=2"])
    assert validate(cfg) == [] and not cache.exists()  # validation builds nothing
    tok = tiny_tokenizer()
    reused: dict = {}
    data = _data(cfg, tok, None, reused, say=lambda m: None)
    (entry,) = data.report["sources"]
    key = data.report["generated"]["calculator"]["key"]
    assert entry["origin"] == f"generated:drill-{key}" and reused["generated"] == []
    assert 0 < len(data.samples) <= 8 and all(s.meta["outcome"]["success"] for s in data.samples)  # positives
    assert cfg.data.sources[0].path is None  # the recipe is left as it was
    again: dict = {}
    assert [s.meta["id"] for s in _data(cfg, tok, None, again, say=lambda m: None).samples] == \
        [s.meta["id"] for s in data.samples]
    assert again["generated"] == ["calculator"] and data.report["generated"]["calculator"]["reused"] is False


def test_sample_and_evolve_sources_build_once(cache: Path) -> None:
    sample = {"kind": "sample", "env": "calculator", "model": "tiny", "attempts": 2, "limit": 2, "max_steps": 1,
              "max_new_tokens": 4, "env_options": {"source": "pairs", "oneshot": False}}
    evolve = {"kind": "evolve", "seeds": "task:instruct", "limit": 6, "evolver": "programmatic", "rounds": 1}
    for spec, rows in ((sample, 4), (evolve, None)):
        src = SourceConfig(name="pool", generate=spec)
        first = build(src, None, lambda m: None)
        n = len(first.path.read_text().splitlines())
        assert not first.reused and n == (rows or n) and n > 0
        assert build(src, None, lambda m: None).reused
        assert not (cache / f"{spec['kind']}-{first.key}.partial").exists()


def test_evolve_sources_that_select_other_generations_share_one_build(cache: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``keep_rounds`` and ``include_seeds`` choose generations, not the evolution: one build (every generation,
    seeds included) serves the seeds, round 1 and round 2, each source reading only its own rows."""
    from tunelab.config import RunConfig, from_dict
    from tunelab.runner.generated import resolve_generated

    calls = []
    real = generated.BUILDERS["evolve"]
    monkeypatch.setitem(generated.BUILDERS, "evolve", lambda *a: calls.append(1) or real(*a))
    base = {"kind": "evolve", "seeds": "task:instruct", "limit": 6, "evolver": "programmatic", "rounds": 2, "seed": 0}
    picks = {"seeds": {"keep_rounds": [0]}, "r1": {"keep_rounds": [1], "include_seeds": False},
             "r2": {"keep_rounds": [2]}, "evolved": {"include_seeds": False},
             "matched": {"keep_rounds": [0], "roots_kept_in": [2]}, "all": {}}
    assert len({_key({**base, **p}) for p in picks.values()}) == 1
    cfg = from_dict(RunConfig, {"model": "tiny", "data": {"sources": [
        {"name": name, "format": "messages", "generate": {**base, **p}} for name, p in picks.items()]}})
    resolved, built = resolve_generated(cfg, lambda m: None)
    assert calls == [1] and len({b.path for b in built.values()}) == 1
    rounds = {src.name: [json.loads(x)["round"] for x in Path(src.path).read_text().splitlines()]
              for src in resolved.data.sources}
    assert set(rounds["seeds"]) == {0} and len(rounds["seeds"]) == 6
    assert set(rounds["r1"]) == {1} and set(rounds["r2"]) == {2} and set(rounds["evolved"]) == {1, 2}
    assert sorted(rounds["all"]) == sorted(rounds["seeds"] + rounds["evolved"])
    rows = {src.name: [json.loads(x) for x in Path(src.path).read_text().splitlines()] for src in resolved.data.sources}
    assert [r["root_id"] for r in rows["matched"]] == [r["root_id"] for r in rows["seeds"]
                                                       if r["root_id"] in {x["root_id"] for x in rows["r2"]}]
    assert set(rounds["matched"]) == {0} and 0 < len(rows["matched"]) <= len(rows["seeds"])
    assert Path(resolved.data.sources[-1].path) == built["all"].path  # everything selected: the build itself
    again, _ = resolve_generated(cfg, lambda m: None)  # the selections are files written once, then read
    assert [s.path for s in again.data.sources] == [s.path for s in resolved.data.sources] and calls == [1]


def test_gold_demonstrations_play_the_reference_equations_and_all_succeed(cache: Path) -> None:
    from tunelab.envs.base import get_env
    from tunelab.envs.gold import equations

    assert equations("6 * 4 = 24. 31 - 24 = 7.\n#### 7") == ["6 * 4", "31 - 24"]
    built = build(SourceConfig(name="gold", generate={"kind": "gold", "limit": 12, "seed": 3}), None, lambda m: None)
    rows = [json.loads(x) for x in built.path.read_text().splitlines()]
    tasks = {t.id: t for t in get_env("calculator").tasks(12, 3)}
    assert len(rows) == 12 and all(r["outcome"]["success"] for r in rows)
    for r in rows:
        actions = [m["content"].split("Action: ", 1)[1] for m in r["messages"] if m["role"] == "assistant"]
        want = [f"calculate[{e}]" for e in equations(tasks[r["task_id"]].meta["solution"])]
        assert actions[:-1] == want and actions[-1] == f"finish[{tasks[r['task_id']].meta['answer']}]"


def test_a_pool_sampled_from_the_model_a_recipe_trains(cache: Path, tmp_path: Path) -> None:
    """``model: recipe:<file>``: the recipe (itself on a generated gold source) is trained once into the
    cache, then sampled; a second pool with the same recipe reuses the run; editing the recipe changes
    the pool's key."""
    gold = {"kind": "gold", "env_options": {"oneshot": False}, "limit": 8}
    recipe = {"model": "tiny", "data": {"sources": [{"name": "gold", "format": "trajectory", "generate": gold}],
                                        "max_length": 512},
              "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
              "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "precision": "fp32", "save_every": 0},
              "eval": {"tasks": []}}
    (tmp_path / "teach.yaml").write_text(yaml.safe_dump(recipe))
    spec = {"kind": "sample", "env": "calculator", "model": "recipe:teach.yaml", "attempts": 2, "limit": 2,
            "max_steps": 1, "max_new_tokens": 4, "env_options": {"source": "pairs", "oneshot": False}}
    said: list[str] = []
    first = build(SourceConfig(name="pool", generate=spec), str(tmp_path), said.append)
    assert len(first.path.read_text().splitlines()) == 4
    assert any("training it first" in m for m in said)
    runs = list((cache / "runs").glob("*/*/results.json"))
    assert len(runs) == 1
    said.clear()
    other = build(SourceConfig(name="pool", generate={**spec, "seed": 1}), str(tmp_path), said.append)
    assert not other.reused and any("reusing the run" in m for m in said)
    before = _key(spec, str(tmp_path))
    recipe["train"]["max_steps"] = 3
    (tmp_path / "teach.yaml").write_text(yaml.safe_dump(recipe))
    assert _key(spec, str(tmp_path)) != before
    problems = generated.check_generated(SourceConfig(name="pool", generate={**spec, "model": "recipe:nope.yaml"}),
                                         str(tmp_path))
    assert problems and "generate.model" in problems[0] and "nope.yaml" in problems[0]


# ----------------------------------------------------------------------------- the key


def test_the_key_covers_every_option_and_nothing_else() -> None:
    assert _key(DRILL) == _key(dict(DRILL)) == _key({"kind": "drill", "tasks": 8})  # defaults filled in
    assert len({_key(DRILL), _key({**DRILL, "tasks": 9}), _key({**DRILL, "seed": 1}), _key({"kind": "drill"})}) == 4
    sample = {"kind": "sample", "env": "calculator", "model": "tiny"}
    keys = [_key(sample), _key({**sample, "temperature": 0.5}), _key({**sample, "attempts": 2}),
            _key({**sample, "model": "smollm2-135m-instruct"}), _key({**sample, "env_options": {"source": "pairs"}})]
    assert len(set(keys)) == len(keys)
    evolve = {"kind": "evolve", "seeds": "task:instruct", "evolver": "programmatic"}
    assert _key(evolve) != _key({**evolve, "rounds": 3})
    assert _key(evolve) == _key({**evolve, "prices": {"evolver": {"input": 1.0, "output": 2.0}}})  # costs only
    assert set(generated.key_inputs(parse_generated(DRILL), None)) == {"kind", "options", "code"}


def test_the_key_follows_local_weights_and_input_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"0" * 8)
    spec = {"kind": "sample", "env": "calculator", "model": str(model)}
    before = _key(spec)
    (model / "model.safetensors").write_bytes(b"0" * 9)
    assert _key(spec) != before  # rewritten weights: a new pool
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "a"}\n')
    evolve = {"kind": "evolve", "seeds": "seeds.jsonl", "evolver": "http://localhost:1/v1#m"}
    first = _key(evolve, str(tmp_path))
    seeds.write_text('{"instruction": "b"}\n')
    assert _key(evolve, str(tmp_path)) != first


def test_the_code_that_makes_the_rows_is_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _key(DRILL)
    monkeypatch.setattr(generated, "code_fingerprint", lambda spec: "changed")
    assert _key(DRILL) != before


# ----------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "drll"}, "generate.kind: got 'drll'; valid choices: drill, sample, evolve"),
    ({"tasks": 3}, "generate.kind: got None"),
    ({"kind": "drill", "tasks": 0}, "generate.tasks: must be >= 1, got 0"),
    ({"kind": "drill", "taks": 3}, "unknown key 'generate.taks'"),
    ({"kind": "drill", "env": "qa"}, "generate.env: got 'qa'; valid choices: calculator"),
    ({"kind": "sample", "env": "calculator"}, "generate.model: required for kind sample"),
    ({"kind": "sample", "model": "tiny"}, "generate.env: required for kind sample"),
    ({"kind": "sample", "env": "nowhere", "model": "tiny"}, "generate.env: unknown environment 'nowhere'; valid:"),
    ({"kind": "sample", "env": "calculator", "model": "tiny", "env_options": {"source": "mars"}},
     "generate.env_options: "),
    ({"kind": "sample", "env": "calculator", "model": "./no/such/model"}, "generate.model: './no/such/model' is not"),
    ({"kind": "sample", "env": "calculator", "model": "tiny", "temperature": -1}, "generate.temperature: must be >= 0"),
    ({"kind": "sample", "env": "calculator", "model": "tiny", "attempts": "many"}, "generate.attempts: expected an integer"),
    ({"kind": "evolve", "seeds": "task:instruct"}, "generate.evolver: required for kind evolve"),
    ({"kind": "evolve", "seeds": "task:instruct", "evolver": "programmatic", "out": "x.jsonl"},
     "generate.out: not an option of a generated source"),
    ({"kind": "evolve", "seeds": "task:instruct", "evolver": "programmatic", "operators": ["nope"]},
     "generate.operators: "),
    ({"kind": "evolve", "seeds": "missing_seeds.jsonl", "evolver": "tiny"},
     "generate.seeds: data file 'missing_seeds.jsonl' not found"),
    ({"kind": "evolve", "seeds": "task:instruct", "evolver": "tiny", "answerer": "programmatic"},
     "generate.answerer: 'programmatic' needs the programmatic evolver"),
])
def test_bad_generate_specs_fail_naming_the_source_and_field(spec: dict, message: str, tmp_path: Path,
                                                             cache: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "tiny", "data": {"sources": [{"name": "pool", "generate": spec}]}}))
    problems = validate(load_recipe(recipe))
    assert any(p.startswith("data.sources[0] (pool): ") and message in p for p in problems), problems
    assert not cache.exists()  # checked without building anything


def test_building_a_bad_spec_fails_naming_the_source_and_field(cache: Path) -> None:
    with pytest.raises(ConfigError, match=r"^source 'pool': generate\.tasks: must be >= 1, got 0"):
        build(SourceConfig(name="pool", generate={**DRILL, "tasks": 0}), None, lambda m: None)
    assert not cache.exists()


def test_a_generated_source_is_one_kind_and_a_mapping(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "tiny", "data": {"sources": [
        {"name": "pool", "path": "x.jsonl", "generate": DRILL}]}}))
    assert any("set exactly one of task, path, hub, generate (got path, generate)" in p
               for p in validate(load_recipe(recipe)))
    recipe.write_text(yaml.safe_dump({"model": "tiny", "data": {"sources": [{"name": "pool", "generate": "drill"}]}}))
    with pytest.raises(ConfigError, match=r"data\.sources\[0\]\.generate: expected a mapping"):
        load_recipe(recipe)


# ----------------------------------------------------------------------------- every recipe and sweep file


def _with_data(monkeypatch: pytest.MonkeyPatch) -> bool:
    """Point TUNELAB_DATA_DIR at the shared data beside the checkout when it is there (True), else unset it."""
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("TUNELAB_DATA_DIR", str(SHARED_DATA))
        return True
    monkeypatch.delenv("TUNELAB_DATA_DIR", raising=False)
    return False


def _check(problems: list[str], have_data: bool) -> None:
    """No problems, or (without the shared data) only data files that need $TUNELAB_DATA_DIR."""
    if not have_data and problems:
        others = [p for p in problems if "$TUNELAB_DATA_DIR is not set" not in p]
        assert others == []
        pytest.skip(f"needs the shared data ({SHARED_DATA} is absent): {problems[0]}")
    assert problems == []


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: f"recipes/{p.name}")
def test_every_recipe_validates_on_a_fresh_clone(path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    have_data = _with_data(monkeypatch)
    monkeypatch.chdir(cache.parent.parent)  # nothing the recipes name lies in the current folder
    _check(validate(load_recipe(path)), have_data)
    assert not cache.exists()  # generated sources are checked, not built


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_sweep_file_validates_on_a_fresh_clone(path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_sweep_file(path)
    have_data = _with_data(monkeypatch)
    monkeypatch.chdir(cache.parent.parent)
    _check(check_sweep(path), have_data)
    assert not cache.exists()


def _paths(tree: object) -> list[str]:
    """Every ``path:`` value in a YAML tree."""
    if isinstance(tree, dict):
        return [str(v) for k, v in tree.items() if k == "path"] + [p for v in tree.values() for p in _paths(v)]
    return [p for v in tree for p in _paths(v)] if isinstance(tree, list) else []


def test_no_recipe_or_sweep_reads_a_file_a_command_must_make_first() -> None:
    """What runs/ holds is made by a command (the pools, evolved data): a recipe names it as a generated
    source, so it validates even in a checkout where an old runs/ folder happens to hold the file."""
    for path in RECIPE_FILES + SWEEP_FILES:
        assert not [p for p in _paths(yaml.safe_load(path.read_text())) if "runs/" in p], path


def test_gold_needs_tasks_with_reference_equations(tmp_path: Path) -> None:
    src = SourceConfig(name="gold", generate={"kind": "gold", "env_options": {"source": "pairs"}})
    assert "generate.env_options.source" in generated.check_generated(src, None)[0]


def test_a_recipe_starts_from_the_model_another_recipe_trains(cache: Path, tmp_path: Path) -> None:
    """``model: recipe:<file>`` (DPO after SFT in one sweep): the first recipe is trained once into the cache,
    the second starts from its merged weights; a missing recipe fails validation naming model.name."""
    from tunelab.runner.run import run

    sft = {"model": "tiny", "data": {"sources": [{"name": "arith", "task": "arith", "count": 16}], "max_length": 256},
           "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
           "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "precision": "fp32", "save_every": 0},
           "eval": {"tasks": []}}
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(sft))
    second = {**sft, "model": "recipe:sft.yaml"}
    (tmp_path / "next.yaml").write_text(yaml.safe_dump(second))
    out = run(tmp_path / "next.yaml", out=str(tmp_path / "runs"), quiet=True)
    env = json.loads((out / "env.json").read_text())
    assert env["model"]["kind"] == "run" and "generated/runs/" in env["model"]["from_run"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**sft, "model": "recipe:missing.yaml"}))
    problems = validate(load_recipe(tmp_path / "bad.yaml"))
    assert any(p.startswith("model.name:") and "missing.yaml" in p for p in problems)


def test_a_studys_pools_travel_with_its_records(cache: Path, tmp_path: Path) -> None:
    """export_pools copies each pool the records trained on into studies/<study>/pools (gzip); on a fresh
    machine import_pools puts it back into the cache under its key, byte for byte, so nothing is sampled
    twice and every seed trains on the same rows."""
    from tunelab.runner.pools import export_pools, import_pools

    built = build(SourceConfig(name="calculator", format="trajectory", generate=DRILL), None, lambda m: None)
    study = tmp_path / "studies" / "drill_study"
    records = [{"pools": {"calculator": {"kind": "drill", "key": built.key, "rows": 16}}}, {"pools": {}}, {}]
    assert export_pools(study, records) == [f"drill-{built.key}"]
    assert sorted(p.name for p in (study / "pools").iterdir()) == [f"drill-{built.key}.json", f"drill-{built.key}.jsonl.gz"]
    assert export_pools(study, records) == []  # already there
    original = built.path.read_bytes()
    shutil.rmtree(cache)  # a fresh machine
    assert import_pools(study) == [f"drill-{built.key}"]
    assert built.path.read_bytes() == original and built.path.with_suffix(".json").is_file()
    again = build(SourceConfig(name="calculator", format="trajectory", generate=DRILL), None, lambda m: None)
    assert again.reused and again.path == built.path
    assert import_pools(study) == [] and import_pools(tmp_path / "no_study") == []


def test_a_study_keeps_its_pool_across_a_change_of_code(cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A code change gives the study's source a new key; pin_pools puts the study's pool into the cache
    under it (marked pinned), so the remaining seeds train on the same rows and nothing is sampled; a
    source with other options is not pinned; the pinned pool is not exported twice."""
    from tunelab.runner.pools import export_pools, import_pools, pin_pools
    from tunelab.runner.records import generated_pools

    built = build(SourceConfig(name="calculator", format="trajectory", generate=DRILL), None, lambda m: None)
    study = tmp_path / "studies" / "drill_study"
    export_pools(study, [{"pools": {"calculator": {"kind": "drill", "key": built.key}}}])
    shutil.rmtree(cache)  # the next session: a fresh machine, and the code that makes the rows has changed
    monkeypatch.setattr(generated, "code_fingerprint", lambda spec: "changed")
    new_key = _key(DRILL)
    assert new_key != built.key
    recipe = {"model": "tiny", "data": {"sources": [{"name": "calculator", "format": "trajectory", "generate": DRILL},
                                                    {"name": "other", "format": "trajectory",
                                                     "generate": {**DRILL, "seed": 1}}]}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    cfg = load_recipe(tmp_path / "r.yaml")
    assert import_pools(study) == [f"drill-{built.key}"]
    said = pin_pools(study, [cfg, cfg])
    assert len(said) == 1 and f"keeps its pool drill-{built.key}" in said[0] and "code" in said[0]
    kept = cache / f"drill-{new_key}.jsonl"
    assert kept.read_bytes() == built.path.read_bytes()
    meta = json.loads(kept.with_suffix(".json").read_text())
    assert meta["key"] == new_key and meta["pinned"] == {"pool": f"drill-{built.key}", "changed": ["code"]}
    assert not (cache / f"drill-{_key({**DRILL, 'seed': 1})}.jsonl").exists()  # other options: built anew
    again = build(cfg.data.sources[0], None, lambda m: None)
    assert again.reused and again.path == kept
    assert pin_pools(study, [cfg]) == []  # already in the cache
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "mixture.json").write_text(json.dumps({"generated": {"calculator": {"file": str(kept),
                                                                                          "key": new_key}}}))
    record = {"pools": generated_pools(run_dir)}
    assert record["pools"]["calculator"]["pinned"]["pool"] == f"drill-{built.key}"
    assert export_pools(study, [record]) == []  # the study holds it under its first key


def test_the_pin_is_the_key_without_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For a sampler a recipe trains: tunelab's training code changes the key, not the pin; an edit to
    the recipe or to the options changes both."""
    (tmp_path / "teach.yaml").write_text(yaml.safe_dump({"model": "tiny", "train": {"max_steps": 2}}))
    spec = parse_generated({"kind": "sample", "env": "calculator", "model": "recipe:teach.yaml", "limit": 2})
    key, pin = generated_key(spec, str(tmp_path)), generated.pin_key(spec, str(tmp_path))
    monkeypatch.setattr(generated, "recipe_model_key", lambda *a: "other training code")
    monkeypatch.setattr(generated, "code_fingerprint", lambda spec: "other env code")
    assert generated_key(spec, str(tmp_path)) != key and generated.pin_key(spec, str(tmp_path)) == pin
    (tmp_path / "teach.yaml").write_text(yaml.safe_dump({"model": "tiny", "train": {"max_steps": 3}}))
    assert generated.pin_key(spec, str(tmp_path)) != pin
    other = parse_generated({"kind": "sample", "env": "calculator", "model": "recipe:teach.yaml", "limit": 3})
    assert generated.pin_key(other, str(tmp_path)) != generated.pin_key(spec, str(tmp_path))


def test_a_study_finds_the_pool_of_a_sibling_study(cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A study built on another study's pool (the failures pool, reused by its rank interaction) finds it
    in the sibling's folder on a fresh machine, by key and, after a code change, by pin; it does not
    export a second copy."""
    from tunelab.runner.pools import export_pools, pin_pools

    built = build(SourceConfig(name="calculator", format="trajectory", generate=DRILL), None, lambda m: None)
    original = built.path.read_bytes()
    first, second = tmp_path / "studies" / "first", tmp_path / "studies" / "second"
    export_pools(first, [{"pools": {"calculator": {"kind": "drill", "key": built.key}}}])
    recipe = {"model": "tiny", "data": {"sources": [{"name": "calculator", "format": "trajectory", "generate": DRILL}]}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    cfg = load_recipe(tmp_path / "r.yaml")
    shutil.rmtree(cache)  # a fresh machine: the second study holds no pool, the first does
    said = pin_pools(second, [cfg])
    assert said == [f"source 'calculator': the pool drill-{built.key} of study 'first'"]
    assert built.path.read_bytes() == original
    assert export_pools(second, [{"pools": {"calculator": {"kind": "drill", "key": built.key}}}]) == []
    assert not (second / "pools").exists()
    shutil.rmtree(cache)  # and after a change of code: the pin finds it
    monkeypatch.setattr(generated, "code_fingerprint", lambda spec: "changed")
    said = pin_pools(second, [cfg])
    assert len(said) == 1 and f"keeps its pool drill-{built.key} of study 'first'" in said[0]
    assert (cache / f"drill-{_key(DRILL)}.jsonl").read_bytes() == original
