"""Evol-Instruct (``tunelab evolve``): lineage, the eliminator's rules, programmatic operators with exact
verification, the item cache and resume (also after a real SIGKILL), the ledger, statistics, the HTTP
path against ``tunelab serve`` with concurrency, and bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tunelab.cli import main
from tunelab.config import ConfigError, SourceConfig, load_recipe
from tunelab.data.sources import load_source
from tunelab.data.tasks.base import get_family
from tunelab.evolve import EvolveConfig, EvolveError, evolve, load_evolve_config
from tunelab.evolve.config import EliminatorConfig
from tunelab.evolve.eliminate import check_answer, check_instruction, copy_phrases, only_stopwords
from tunelab.evolve.estimate import estimate
from tunelab.evolve.evol_instruct import read_items
from tunelab.evolve.operators import OPERATORS, parse_equal, parse_operators, pick_operator
from tunelab.evolve.seeds import load_seeds
from tunelab.evolve.stats import distinct_n, near_duplicate_rate
from tunelab.generate.base import GenerationConfig
from tunelab.runner.sweep_file import load_sweep

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ["Explain photosynthesis to a child.", "Write a haiku about rain.", "GARBAGE list three rivers.",
         "COPY describe a bicycle.", "SAME name a prime number.", "SORRY plan a picnic.", "STOP define entropy.",
         "Summarize the plot of Hamlet.", "Give tips for a job interview.", "Compare cats and dogs as pets.",
         "Translate hello into French.", "Suggest a name for a bakery."]


# ----------------------------------------------------------------------------- a scripted model


def _user(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def scripted(text: str) -> str:
    """What the scripted model says to one prompt (evolver, judge or answerer), from markers in the seeds."""
    if text.rstrip().endswith("New instruction:"):
        orig = text.split("Original instruction:\n", 1)[1].rsplit("\n\nNew instruction:", 1)[0]
        if "GARBAGE" in orig:
            return "}{ ## !! 42 ##"
        if "COPY" in orig:
            return f"#Rewritten Prompt#: {orig}"
        if "SAME" in orig:
            return orig
        return f"{orig} Use exactly {len(orig) % 5 + 2} examples."
    if text.rstrip().endswith("Reply:"):
        first = text.split("First instruction:\n", 1)[1].split("\n\nSecond instruction:", 1)[0]
        second = text.split("Second instruction:\n", 1)[1].rsplit("\n\nReply:", 1)[0]
        return "Equal" if first == second else "Not Equal"
    if "SORRY" in text:
        return "I am sorry, but I cannot help with that."
    if "STOP" in text:
        return "It is what it is, and so on."
    return f"A careful answer to '{text[:40]}' with three concrete points and an example."


class Scripted:
    """An in-process generator answering :func:`scripted`; counts prompts; can fail after N calls."""

    fingerprint = "scripted-v1"
    batch_size = 4

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts: list[str] = []
        self.calls, self.fail_after = 0, fail_after

    def generate(self, prompts, cfg: GenerationConfig) -> list[list[str]]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise ConnectionError("scripted model went away")
        self.prompts += [_user(p) for p in prompts]
        return [[scripted(_user(p))] * cfg.n for p in prompts]


def write_seeds(path: Path, n: int = len(SEEDS)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"s{i}", "instruction": t}) + "\n" for i, t in enumerate(SEEDS[:n])))
    return path


def config(tmp: Path, **kw) -> EvolveConfig:
    values = {"seeds": str(write_seeds(tmp / "seeds.jsonl")), "evolver": "scripted", "out": str(tmp / "out.jsonl"),
              "rounds": 2, "chunk": 4, "progress": False, **kw}
    return load_evolve_config(None, None, **values)


def rows_of(cfg: EvolveConfig) -> list[dict]:
    return sorted(read_items(cfg.folder / "items.jsonl"), key=lambda r: r["id"])


# ----------------------------------------------------------------------------- rules and operators


def test_the_judge_reply_is_read_not_equal_first() -> None:
    assert parse_equal("Not Equal") is False and parse_equal("They are NOT  equal.") is False
    assert parse_equal("Equal") is True and parse_equal("equal.") is True
    assert parse_equal("unequal???") is None and parse_equal("") is None


def test_each_rule_of_the_eliminator_fires_and_can_be_switched_off() -> None:
    cfg, phrases = EliminatorConfig(), copy_phrases(EliminatorConfig())
    assert check_instruction(cfg, "}{ ## !! 42 ##", phrases) == "degenerate"
    assert check_instruction(cfg, "ok", phrases) == "degenerate"
    assert check_instruction(cfg, "#Rewritten Prompt#: write a poem about rain", phrases) == "copied_prompt"
    assert check_instruction(cfg, "Rewrite the given prompt with more detail please", phrases) == "copied_prompt"
    assert check_instruction(cfg, "Write a poem about rain in exactly four lines.", phrases) is None
    assert check_answer(cfg, "Sorry, I can't do that.") == "sorry_short"
    assert check_answer(cfg, "Sorry for the wait. " + "word " * 90) is None  # long: not rule 2
    assert check_answer(cfg, "It is what it is, and so on!") == "stopwords_only"
    assert check_answer(cfg, "") == "stopwords_only" and only_stopwords("...!?")
    assert check_answer(cfg, "Paris is the capital of France.") is None
    assert check_answer(cfg, "Hello there.", [{"type": "lowercase"}]) == "unverified"
    off = EliminatorConfig(degenerate=False, copied_prompt=False, sorry_short=False, stopwords_only=False,
                           unverified=False)
    assert check_instruction(off, "#Rewritten Prompt# }{", phrases) is None
    assert check_answer(off, "Sorry.", [{"type": "lowercase"}]) is None


def test_operators_are_versioned_and_picked_by_seeded_weights() -> None:
    assert {op.kind for op in OPERATORS.values()} == {"depth", "breadth"} and len(OPERATORS) == 6
    assert all(op.prompt_version.startswith(f"{op.name}@") for op in OPERATORS.values())
    weights = parse_operators({"deepen": 3, "breadth": 1, "concretize": 0}, OPERATORS)
    picks = [pick_operator(weights, 0, 1, f"root{i}") for i in range(400)]
    assert set(picks) == {"deepen", "breadth"} and 0.65 < picks.count("deepen") / 400 < 0.85
    assert picks == [pick_operator(weights, 0, 1, f"root{i}") for i in range(400)]  # independent of order
    assert set(parse_operators([], OPERATORS)) == set(OPERATORS)
    with pytest.raises(ValueError, match="unknown operator"):
        parse_operators(["deeper"], OPERATORS)


# ----------------------------------------------------------------------------- a model-driven run


def test_a_scripted_run_records_lineage_counts_eliminations_and_writes_the_dataset(tmp_path: Path) -> None:
    gen = Scripted()
    cfg = config(tmp_path, prices={"evolver": {"input": 1.0, "output": 2.0}})
    report = evolve(cfg, {"scripted": gen}, say=lambda m: None)
    rows = rows_of(cfg)
    assert len(rows) == 3 * len(SEEDS) and len({r["id"] for r in rows}) == len(rows)
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        assert r["root_id"] == r["id"].split(".")[0]
        if r["round"]:
            assert {"parent_id", "operator", "prompt_version", "evolver", "judge", "answerer", "verdict",
                    "reason"} <= set(r)
            assert r["evolver"] == "scripted-v1" and r["prompt_version"] == OPERATORS[r["operator"]].prompt_version
            parent = by_id[r["parent_id"]]
            assert parent["verdict"] == "kept" and parent["round"] < r["round"]
    reasons = {r["root_id"]: r["reason"] for r in rows if r["round"] == 1}
    assert reasons == {"s0": None, "s1": None, "s2": "degenerate", "s3": "copied_prompt", "s4": "no_information_gain",
                       "s5": "sorry_short", "s6": "stopwords_only", **{f"s{i}": None for i in range(7, 12)}}
    # a failed evolution's parent goes back to the pool: round 2 evolves the seed again
    assert by_id["s2.r2"]["parent_id"] == "s2" and by_id["s0.r2"]["parent_id"] == "s0.r1"
    # the dataset mixes all generations, kept rows only, as trainable messages with lineage
    data = [json.loads(line) for line in Path(cfg.out).read_text().splitlines()]
    assert len(data) == report["dataset_rows"] == sum(r["verdict"] == "kept" for r in rows)
    assert {d["round"] for d in data} == {0, 1, 2} and all(d["messages"][1]["role"] == "assistant" for d in data)
    src = load_source(SourceConfig(name="ev", path=cfg.out), None, 0, 0)
    assert len(src.train) == len(data)
    # eliminations per round and operator, each rule counted
    table = report["stats"]["eliminations"]
    assert table["1"]["all"]["eliminated"] == 5 and table["1"]["all"]["by_rule"]["sorry_short"] == 1
    assert sum(c["attempted"] for op, c in table["2"].items() if op != "all") == len(SEEDS)
    gens = report["stats"]["generations"]
    assert gens["0"]["items"] == len(SEEDS) and gens["1"]["instruction_words"] > gens["0"]["instruction_words"]
    assert 0 <= gens["1"]["near_duplicate_rate"] <= 1 and 0 < gens["1"]["distinct_2"] <= 1
    ledger = report["ledger"]
    assert ledger["rounds"]["1"]["evolver"]["requests"] > 0 and ledger["by_role"]["evolver"]["cost"] > 0
    assert ledger["tokens_counted_by"]["evolver"].startswith("estimate")
    assert (cfg.folder / "report.json").is_file() and json.loads((cfg.folder / "run.json").read_text())["settings"]


def test_a_failed_run_resumes_with_nothing_generated_twice_or_lost(tmp_path: Path) -> None:
    ref_cfg = config(tmp_path / "ref")
    reference = Scripted()
    evolve(ref_cfg, {"scripted": reference}, say=lambda m: None)
    cfg = config(tmp_path / "run")
    dying = Scripted(fail_after=4)
    with pytest.raises(EvolveError, match="run the same command again"):
        evolve(cfg, {"scripted": dying}, say=lambda m: None)
    partial = read_items(cfg.folder / "items.jsonl")
    assert len(SEEDS) <= len(partial) < 3 * len(SEEDS)
    (cfg.folder / "items.jsonl").write_text((cfg.folder / "items.jsonl").read_text() + '{"id": "cut by a ki')
    again = Scripted()
    evolve(cfg, {"scripted": again}, say=lambda m: None)
    assert rows_of(cfg) == rows_of(ref_cfg)
    assert sorted(dying.prompts + again.prompts) == sorted(reference.prompts)  # each prompt exactly once
    # the cache is keyed by what decides a completion, not by how it was run: a new chunk size and a lost
    # items file cost no request
    (cfg.folder / "items.jsonl").unlink()
    third = Scripted()
    report = evolve(load_evolve_config(None, None, **{**_plain(cfg), "chunk": 7, "concurrency": 3}),
                    {"scripted": third}, say=lambda m: None)
    assert third.prompts == [] and rows_of(cfg) == rows_of(ref_cfg)
    assert report["ledger"]["rounds"]["1"]["evolver"]["cached"] > 0


def _plain(cfg: EvolveConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("eliminator", "recipe_dir")}


def test_other_settings_never_continue_a_work_folder(tmp_path: Path) -> None:
    cfg = config(tmp_path, rounds=1)
    evolve(cfg, {"scripted": Scripted()}, say=lambda m: None)
    more = config(tmp_path, rounds=2)  # more rounds continue the same folder
    evolve(more, {"scripted": Scripted()}, say=lambda m: None)
    assert {r["round"] for r in rows_of(more)} == {0, 1, 2}
    with pytest.raises(EvolveError, match="changed: seed"):
        evolve(config(tmp_path, seed=5), {"scripted": Scripted()}, say=lambda m: None)


def test_estimate_and_prices(tmp_path: Path) -> None:
    cfg = config(tmp_path, prices={"answerer": {"input": 0.5, "output": 1.5}})
    est = estimate(cfg, load_seeds(cfg.seeds))
    assert est["evolver"]["requests"] == 2 * len(SEEDS) and est["answerer"]["requests"] == 3 * len(SEEDS)
    assert est["answerer"]["cost"] > 0 and est["evolver"]["cost"] == 0
    assert est["total"]["completion_tokens"] >= 2 * len(SEEDS) * cfg.max_new_tokens


# ----------------------------------------------------------------------------- programmatic operators


def test_programmatic_evolution_of_instruct_items_is_exactly_verifiable(tmp_path: Path) -> None:
    cfg = load_evolve_config(None, None, seeds="task:instruct", limit=60, evolver="programmatic", rounds=2,
                             out=str(tmp_path / "ev.jsonl"), progress=False)
    report = evolve(cfg, say=lambda m: None)
    rows = rows_of(cfg)
    family = get_family("instruct")
    seeds = {s.meta["id"]: s for s in family.samples("train", 60, 0)}
    assert {r["root_id"] for r in rows} == set(seeds)
    evolved = [r for r in rows if r["round"] > 0]
    assert {r["operator"] for r in evolved} == {"add_constraint", "combine_constraints", "change_format"}
    for r in evolved:
        if r["verdict"] == "kept":
            verdict = family.verify({"constraints": r["constraints"]}, r["response"])
            assert verdict["correct"], r
            assert not family.in_test(r["instruction"])
        else:
            assert r["reason"] == "no_information_gain"
    gens = report["stats"]["generations"]
    assert gens["0"]["constraints"] == 1.0 < gens["1"]["constraints"] and gens["2"]["constraints"] > 1.0
    assert report["fingerprints"]["evolver"].startswith("programmatic:instruct")
    assert report["ledger"]["total"]["requests"] == 0  # no model was asked anything


def test_data_inspect_shows_an_item_beside_its_parent(tmp_path: Path, capsys) -> None:
    cfg = load_evolve_config(None, None, seeds="task:instruct", limit=10, evolver="programmatic", rounds=2,
                             out=str(tmp_path / "ev.jsonl"), progress=False)
    evolve(cfg, say=lambda m: None)
    assert main(["data", "inspect", cfg.out, "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "parent" in out and "evolved" in out and "operator" in out and " | " in out
    assert main(["data", "inspect", str(cfg.folder / "items.jsonl"), "--json", "--samples", "50"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["pairs"] and all(p["parent"] and p["operator"] for p in shown["pairs"])


# ----------------------------------------------------------------------------- statistics


def test_diversity_and_near_duplicates() -> None:
    assert distinct_n(["a b c", "a b c"], 2) == 0.5 and distinct_n([], 1) == 0.0
    texts = ["write a short poem about the sea and the wind tonight",
             "write a short poem about the sea and the wind today",
             "explain how a transistor amplifies a small signal"]
    assert near_duplicate_rate(texts, threshold=0.5) == pytest.approx(1 / 3, abs=1e-3)
    assert near_duplicate_rate(texts[1:], threshold=0.5) == 0.0


# ----------------------------------------------------------------------------- recipes and the experiment


def test_the_recipe_section_and_the_experiment_sweep_load(tmp_path: Path) -> None:
    recipe = ROOT / "recipes" / "evolve.yaml"
    assert load_recipe(recipe).evolve["evolver"] == "programmatic"
    cfg = load_evolve_config(recipe, ["rounds=3"])
    assert cfg.rounds == 3 and cfg.seeds == "task:instruct" and Path(cfg.out).is_absolute()
    with pytest.raises(ConfigError, match="unknown key 'evolve.roundz'"):
        load_evolve_config(recipe, ["roundz=3"])
    # the sweep: seeds only vs seeds + evolved, equal example counts, >= 3 seeds, instruct and instruct_ood
    # (the evolved source is generated: recipes/evolve.yaml's evolve section, built when a run needs it)
    spec = yaml.safe_load((ROOT / "experiments" / "evolve_instruct.yaml").read_text())
    levels = spec["factors"]["data"]
    evolved = levels["seeds_evolved"]["data.sources"][1]["generate"]
    assert {k: evolved[k] for k in ("seeds", "evolver", "rounds", "limit", "seed")} == \
        {k: load_recipe(recipe).evolve[k] for k in ("seeds", "evolver", "rounds", "limit", "seed")}
    spec["recipe"] = str(recipe)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    sweep = load_sweep(tmp_path / "sweep.yaml", out=str(tmp_path / "sweeps"))
    assert len(sweep.seeds) >= 3 and len(sweep.runs) == 2 * len(sweep.seeds)
    counts = {label: sum(s["count"] for s in lv["data.sources"]) for label, lv in levels.items()}
    assert len(set(counts.values())) == 1
    assert all(set(r.cfg.eval.tasks) == {"instruct", "instruct_ood", "instruct_ood_unseen"} and r.cfg.data.strategy == "fixed"
               for r in sweep.runs)


# ----------------------------------------------------------------------------- HTTP: tunelab serve, faults


def test_a_run_against_tunelab_serve_over_http_with_concurrency(tmp_path: Path) -> None:
    from tunelab.generate.hf import HFGenerator
    from tunelab.models.tiny import tiny_model, tiny_tokenizer
    from tunelab.serve import running_server

    tok = tiny_tokenizer()
    gen = HFGenerator(tiny_model(len(tok), seed=0), tok, batch_size=8, progress=False)
    with running_server(gen, model_name="tiny") as server:
        url = f"{server.url}/v1#tiny"
        cfg = config(tmp_path, evolver=url, rounds=2, limit=6, concurrency=6, chunk=6, max_new_tokens=12,
                     answer_max_new_tokens=12, temperature=0.8, eliminator={"degenerate": False})
        seeds = load_seeds(cfg.seeds, cfg.limit)
        report = evolve(cfg, say=lambda m: None)
        assert server.loop.max_rows > 1  # requests in flight together, decoded together
    rows = rows_of(cfg)
    assert len(rows) == 3 * len(seeds) and {r["round"] for r in rows} == {0, 1, 2}
    assert all(r["evolver"] == "openai:" + url.replace("#", "|") for r in rows if r["round"])
    ledger = report["ledger"]["rounds"]["1"]
    assert ledger["evolver"]["requests"] == len(seeds) and ledger["judge"]["requests"] >= 1


class _Fake(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint answering :func:`scripted` (or garbage), slowly; records requests."""

    requests: list[str] = []
    delay = 0.0
    garbage = False
    lock = threading.Lock()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._send({"data": [{"id": "fake"}]})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        with self.lock:
            self.requests.append(json.dumps([text, body.get("seed")]))
        time.sleep(self.delay)
        content = "\u0000\u0001 ][ }{" if self.garbage else scripted(text)
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    def _send(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_server() -> Iterator[tuple[str, type[_Fake]]]:
    handler = type("Fake", (_Fake,), {"requests": [], "delay": 0.0, "garbage": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1#fake", handler
    finally:
        server.shutdown()
        server.server_close()


def test_an_evolver_that_returns_garbage_is_eliminated_and_counted(tmp_path: Path, fake_server, capsys) -> None:
    url, handler = fake_server
    handler.garbage = True
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    out = tmp_path / "g.jsonl"
    assert main(["evolve", str(seeds), "--evolver", url, "--rounds", "2", "--out", str(out), "--quiet"]) == 0
    report = json.loads((tmp_path / "g.evolve" / "report.json").read_text())
    assert report["stats"]["eliminations"]["1"]["all"]["by_rule"]["degenerate"] == len(SEEDS)
    assert report["dataset_rows"] == len(SEEDS)  # the seeds alone survive


def test_an_unreachable_evolver_fails_before_any_work(tmp_path: Path, capsys) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    code = main(["evolve", str(seeds), "--evolver", "http://127.0.0.1:9/v1#x", "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "unreachable" in err and "http://127.0.0.1:9" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(("text", "fragments"), [
    ('{"instruction": "ok"}\n{"instruction": 5}\n', [":2:", "field 'instruction'", "expected a string"]),
    ('{"instruction": "ok"}\n{"text": "x"}\n', [":2:", "field 'instruction'", "missing"]),
    ('{"instruction": "ok"}\n{"instruction": \n', [":2:", "invalid JSON"]),
    ('{"messages": [{"role": "assistant", "content": "x"}]}\n', [":1:", "field 'messages'", "no user turn"]),
    ('{"id": 1, "instruction": "a"}\n{"id": 1, "instruction": "b"}\n', [":2:", "field 'id'", "repeats"]),
], ids=["wrong-type", "no-instruction", "bad-json", "no-user-turn", "duplicate-id"])
def test_a_malformed_seed_file_names_file_line_and_field(tmp_path: Path, capsys, text: str, fragments: list) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(text)
    code = main(["evolve", str(seeds), "--evolver", "programmatic", "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and str(seeds) in err, err
    assert all(f in err for f in fragments), err


def _kill_and_resume(tmp_path: Path, url: str, handler: type[_Fake]) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    common = [str(seeds), "--evolver", url, "--rounds", "2", "--concurrency", "2", "--quiet", "chunk=3"]
    ref = tmp_path / "ref.jsonl"
    evolve(load_evolve_config(None, ["chunk=3"], seeds=str(seeds), evolver=url, rounds=2, concurrency=2,
                              out=str(ref), progress=False), say=lambda m: None)
    reference = sorted(handler.requests)
    handler.requests.clear()
    handler.delay = 0.03
    out = tmp_path / "killed.jsonl"
    items = tmp_path / "killed.evolve" / "items.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tunelab.cli", "evolve", *common, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if items.is_file() and len(items.read_text().splitlines()) >= len(SEEDS) + 4:
            break
        time.sleep(0.01)
    proc.kill()  # SIGKILL mid-round 1: no cleanup, the lock stays behind
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    saved = len(read_items(items))
    assert len(SEEDS) + 4 <= saved < 3 * len(SEEDS)
    handler.delay = 0.0
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    got = sorted(read_items(items), key=lambda r: r["id"])
    want = sorted(read_items(tmp_path / "ref.evolve" / "items.jsonl"), key=lambda r: r["id"])
    assert got == want and len({r["id"] for r in got}) == 3 * len(SEEDS)
    repeated = len(handler.requests) - len(set(handler.requests))
    assert repeated <= 2  # at most the requests in flight at the kill (concurrency 2)
    assert sorted(set(handler.requests)) == sorted(set(reference))


@pytest.mark.slow
def test_sigkill_mid_round_then_rerun_loses_and_repeats_nothing(tmp_path: Path, fake_server) -> None:
    url, handler = fake_server
    _kill_and_resume(tmp_path, url, handler)


def test_cli_runs_a_recipe_and_prints_the_estimate(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"evolve": {"seeds": "task:instruct", "limit": 8, "evolver": "programmatic",
                                                 "rounds": 1, "out": "ev.jsonl", "progress": False}}))
    assert main(["evolve", str(recipe), "--estimate"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["requests"] == 0
    assert main(["evolve", str(recipe), "operators=[add_constraint]"]) == 0
    assert "dataset:" in capsys.readouterr().out and (tmp_path / "ev.jsonl").is_file()
    rows = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert {r["operator"] for r in rows if r["round"]} == {"add_constraint"}
    assert re.search(r"add_constraint@program\d", rows[-1]["prompt_version"])


def test_held_out_pairs_are_never_evolved_into_and_scored_apart(tmp_path: Path) -> None:
    """``hold_out_pairs``: no kept evolution combines a held-out constraint-type pair (without it, some do);
    ``instruct_ood_unseen`` holds exactly the out-of-distribution items that do."""
    from tunelab.data.tasks.instruct import HELD_OUT_PAIRS, holds_out, types_of
    from tunelab.eval.tasks.base import get_task

    def kept(hold: bool) -> list[dict]:
        cfg = load_evolve_config(None, None, seeds="task:instruct", limit=80, evolver="programmatic", rounds=2,
                                 hold_out_pairs=hold, out=str(tmp_path / f"ev-{hold}.jsonl"), progress=False)
        evolve(cfg, say=lambda m: None)
        return [r for r in rows_of(cfg) if r["round"] > 0 and r["verdict"] == "kept"]

    assert any(holds_out(types_of(r["constraints"])) for r in kept(False))
    held = kept(True)
    assert held and not any(holds_out(types_of(r["constraints"])) for r in held)
    items = get_task("instruct_ood_unseen").items(40, 3)
    assert len(items) == 40 and all(holds_out(types_of(i.meta["constraints"])) for i in items)
    assert all(len(p) == 2 for p in HELD_OUT_PAIRS)


def test_keep_rounds_makes_a_dataset_of_one_round(tmp_path: Path) -> None:
    cfg = load_evolve_config(None, None, seeds="task:instruct", limit=30, evolver="programmatic", rounds=3,
                             keep_rounds=[2], include_seeds=True, out=str(tmp_path / "r2.jsonl"), progress=False)
    report = evolve(cfg, say=lambda m: None)
    kept2 = [r for r in rows_of(cfg) if r["round"] == 2 and r["verdict"] == "kept"]
    assert report["dataset_rows"] == len(kept2) > 0
    assert len((tmp_path / "r2.jsonl").read_text().splitlines()) == len(kept2)
    assert set(report["stats"]["generations"]) == {"0", "1", "2", "3"}
