"""Studies that finish: records, findings from records alone, budget chunks, plan, pilot gate, bad input."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.config import ConfigError
from tunelab.io import DataError, read_json_gz, write_json_gz
from tunelab.report.findings_doc import write_findings
from tunelab.runner import plan as plan_mod
from tunelab.runner.records import CURVE_POINTS, FORMAT, load_records, thin
from tunelab.runner.sweep import parse_budget, run_sweep
from tunelab.runner.sweep_file import check_sweep, load_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"
OVERRIDES = ["train.max_steps=4", "train.save_every=2", "data.sources.0.count=64", "data.heldout=4",
             "eval.tasks=[arith, perplexity]", "eval.task_options.perplexity.sources=arith", "eval.limit=8",
             "eval.max_new_tokens=8"]
CLAIMS = [{"claim": "rank 4 lowers the loss", "task": "perplexity", "arm": "rank=4", "direction": "better",
           "effect": 0.5, "source": "a test"},
          {"claim": "rank 4 moves accuracy by a hair", "task": "arith", "arm": "rank=4", "direction": "better",
           "effect": 0.0001, "source": "a test (far below any detectable effect)"}]


def _study(tmp_path: Path, name: str = "demo", **extra) -> Path:
    spec = {"name": name, "recipe": str(TINY), "overrides": OVERRIDES, "factors": {"rank": {"method.r": [2, 4]}},
            "seeds": 2, "out": str(tmp_path / "runs"), "records": str(tmp_path / "studies" / name / "records"),
            "question": "Does rank 4 beat rank 2?", "hypotheses": CLAIMS, "pilot_range": [0.0, 1.0], **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_records_are_small_complete_and_rebuild_the_findings_without_run_folders(tmp_path: Path) -> None:
    path = _study(tmp_path)
    result = run_sweep(path, backend="inline", quiet=True)
    records = sorted((tmp_path / "studies" / "demo" / "records").glob("*.json.gz"))
    assert len(records) == 4 and result["reused"]["runs_finished"] == 4
    for f in records:
        assert f.stat().st_size < 100_000  # no weights: a few KB
        r = read_json_gz(f)
        assert r["format"] == FORMAT and r["study"] == "demo" and r["run"] + ".json.gz" == f.name
        assert r["host"]["cpu"] and r["host"]["precision"] == "fp32" and r["host"]["torch"]
        assert r["train"]["steps"] == 4 and 1 <= len(r["loss_curve"]) <= CURVE_POINTS and r["seconds"] > 0
        assert "out" not in r["config"] and r["config"]["method"]["r"] in (2, 4)
        rows = r["items"]["arith"]["rows"]
        assert len(rows) == 8 and all(set(x) >= {"id", "value", "prediction"} for x in rows)
        assert all(len(x["prediction"]) <= 500 for x in rows) and r["items"]["perplexity"]["sign"] == -1
        with gzip.open(f) as g:  # byte-reproducible: no timestamp in the gzip header
            g.read()
        assert f.read_bytes()[4:8] == b"\0\0\0\0"
    # the findings, from the records; then the same bytes with every run folder gone (a fresh clone)
    doc = tmp_path / "docs" / "findings.md"
    write_findings(tmp_path / "studies", doc)
    first = doc.read_bytes()
    text = first.decode()
    assert "<!-- study:demo -->" in text and "**Question.** Does rank 4 beat rank 2?" in text
    assert "runs recorded: 4/4" in text and "| rank 4 lowers the loss | perplexity | rank=4 vs rank=2 |" in text
    assert "host: " in text and str(tmp_path) not in text  # no absolute paths in a committed document
    assert (doc.parent / "studies" / "demo.html").is_file() and "](studies/demo.html)" in text
    shutil.rmtree(tmp_path / "runs")
    doc.unlink()
    assert main(["findings", str(tmp_path / "studies"), "--out", str(doc)]) == 0
    assert doc.read_bytes() == first
    # and a sweep call on that fresh clone treats every recorded run as finished: nothing reruns
    again = run_sweep(path, backend="inline", quiet=True)
    assert {r["status"] for r in again["runs"].values()} == {"skipped (recorded)"}
    assert not (tmp_path / "runs" / "demo" / "runs").exists()


def test_rewriting_a_record_from_the_same_run_changes_no_byte(tmp_path: Path) -> None:
    obj = {"b": [1.5, "x"], "a": {"z": None}}
    write_json_gz(tmp_path / "one.json.gz", obj)
    write_json_gz(tmp_path / "two.json.gz", dict(reversed(list(obj.items()))))
    assert (tmp_path / "one.json.gz").read_bytes() == (tmp_path / "two.json.gz").read_bytes()
    assert thin(list(range(1000)))[0] == 0 and thin(list(range(1000)))[-1] == 999
    assert len(thin(list(range(1000)))) == CURVE_POINTS and thin([1, 2]) == [1, 2]


def test_budget_starts_only_what_fits_and_a_second_call_finishes(tmp_path: Path, capsys) -> None:
    path = _study(tmp_path, seeds=3)
    first = run_sweep(path, backend="inline", quiet=True, max_runs=1)  # the pilot, then one more run
    assert sum(r["status"] == "done" for r in first["runs"].values()) == 2 and first["left"]["runs"] == 4
    folder = tmp_path / "studies" / "demo" / "records"
    for f in folder.glob("*.json.gz"):  # make the timings deterministic: 100 s a run on this host
        r = read_json_gz(f)
        r["seconds"] = 100.0
        write_json_gz(f, r)
    with pytest.raises(ConfigError, match="below one run"):
        run_sweep(path, backend="inline", quiet=True, budget="60s")
    second = run_sweep(path, backend="inline", quiet=True, budget="250s")
    assert sum(r["status"] == "done" for r in second["runs"].values()) == 2 and second["left"]["runs"] == 2
    err = capsys.readouterr().err
    assert "budget 4.2 min: 2 of 4 runs (about 3.3 min)" in err and "left: 2 runs, about " in err
    # the chunks go seed by seed: both arms of a seed before the next seed
    done = {n for n, r in second["runs"].items() if r["status"] != "not run"}
    sweep = load_sweep(path)
    assert {p.seed for p in sweep.runs if p.name in done} == {0, 1}
    third = run_sweep(path, backend="inline", quiet=True, budget="1h")
    assert third["left"]["runs"] == 0 and all(r["status"] != "not run" for r in third["runs"].values())
    assert parse_budget("50m") == 3000 and parse_budget("2h") == 7200 and parse_budget("90") == 90
    for bad in ("0m", "soon", "-5s"):
        with pytest.raises(ConfigError, match="not a positive duration"):
            parse_budget(bad)


def test_plan_prints_detectable_effects_and_flags_a_claim_below_detection(tmp_path: Path, capsys) -> None:
    path = _study(tmp_path, assume={"item_correlation": 0.5})
    assert main(["sweep", "plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 0 recorded, 4 left" in out and "unknown: run the pilot first" in out
    assert main(["sweep", "pilot", str(path)]) == 0
    capsys.readouterr()
    assert main(["sweep", "plan", str(path), "--json"]) == 0
    the_plan = json.loads(capsys.readouterr().out)
    assert the_plan["runs_left"] == 3 and the_plan["alpha_per_claim"] == pytest.approx(0.025)
    loss, acc = the_plan["claims"]
    # loss items vary: MDE from the pilot's per-item variance with the assumed correlation
    assert loss["items"] == 8 and "pilot's per-item variance" in loss["item_sd_from"]
    assert loss["mde_items"] > 0 and math.isfinite(loss["mde_items"])
    from statsmodels.stats.power import TTestPower

    d = TTestPower().solve_power(nobs=8, alpha=0.025, power=0.8, alternative="two-sided")
    assert loss["mde_items"] == pytest.approx(d * loss["item_sd"])
    # all 8 pilot items score 0 on arith: no spread, the detectable effect is unknown (said, not invented)
    assert math.isnan(acc["mde_items"]) and acc["label"] == "detectable effect unknown"
    saved = json.loads((tmp_path / "studies" / "demo" / "plan.json").read_text())
    assert saved["claims"][0]["mde_items"] == pytest.approx(loss["mde_items"])
    # a claim below the detectable effect is labelled before any further run, and the findings keep it
    tiny = [{**CLAIMS[0], "effect": 0.0001}]
    small = _study(tmp_path, name="small", hypotheses=tiny)
    assert main(["sweep", "pilot", str(small)]) == 0
    assert main(["sweep", "plan", str(small)]) == 0
    assert "BELOW DETECTION AT THIS DESIGN" in capsys.readouterr().out
    run_sweep(small, backend="inline", quiet=True)
    assert main(["sweep", "report", str(small)]) == 0
    assert "below detection at this design" in capsys.readouterr().out
    # the plan is frozen once runs beyond the pilot are recorded
    assert json.loads((tmp_path / "studies" / "small" / "plan.json").read_text())["runs_left"] == 3


def test_pilot_refuses_a_floor_or_ceiling_baseline_unless_accepted(tmp_path: Path, capsys) -> None:
    path = _study(tmp_path, pilot_range=[0.2, 0.8])  # a random tiny model scores 0 on arith: the floor
    assert main(["sweep", "pilot", str(path)]) == 3
    err = capsys.readouterr().err
    assert "arith: at the floor (0.000 outside [0.2, 0.8])" in err and "--accept-floor-ceiling" in err
    with pytest.raises(ConfigError, match="at the floor"):
        run_sweep(path, backend="inline", quiet=True)  # no seed is spent
    records = list((tmp_path / "studies" / "demo" / "records").glob("*.json.gz"))
    assert len(records) == 1  # the pilot only
    pilot = json.loads((tmp_path / "studies" / "demo" / "pilot.json").read_text())
    assert pilot["not_gated"] == ["perplexity"] and not pilot["passed"] and not pilot["accepted"]
    # the ceiling, on the same gate: the baseline's record says 100%
    sweep = load_sweep(path)
    found, _ = load_records(sweep.records, sweep.name, sweep.digests())
    record = next(iter(found.values()))
    record["results"]["arith"]["tuned"]["value"] = 1.0
    gate = plan_mod.gate(sweep, {record["run"]: record})
    assert gate["outside"] == [{"task": "arith", "score": 1.0, "range": [0.2, 0.8], "why": "at the ceiling"}]
    assert "at the ceiling (1.000 outside [0.2, 0.8])" in plan_mod.gate_message(sweep, gate)
    # a range per task: this ceiling is inside a range that allows it
    sweep.pilot_range = {"arith": (0.2, 1.0), "default": (0.2, 0.8)}
    assert plan_mod.gate(sweep, {record["run"]: record})["passed"]
    # accepted: the seeds are spent and the findings say so
    run_sweep(path, backend="inline", quiet=True, accept_floor_ceiling=True)
    assert len(list((tmp_path / "studies" / "demo" / "records").glob("*.json.gz"))) == 4
    assert main(["sweep", "report", str(tmp_path / "studies" / "demo"), "--markdown"]) == 0
    assert "the seeds were spent anyway (--accept-floor-ceiling)" in capsys.readouterr().out


def test_sweep_runs_the_pilot_first(tmp_path: Path) -> None:
    path = _study(tmp_path)
    result = run_sweep(path, backend="inline", quiet=True, max_runs=1)
    sweep = load_sweep(path)
    done = [n for n, r in result["runs"].items() if r["status"] == "done"]
    pilot = [p.name for p in plan_mod.pilot_runs(sweep)]
    assert pilot[0] in done and len(pilot) == 1 and pilot[0].startswith("rank=2-seed0")
    assert (tmp_path / "studies" / "demo" / "pilot.json").is_file()


def test_stale_and_foreign_records(tmp_path: Path, capsys) -> None:
    path = _study(tmp_path, seeds=1)
    run_sweep(path, backend="inline", quiet=True)
    capsys.readouterr()
    # the sweep file changes (more steps): the old records match no planned run; said, not counted
    spec = json.loads(path.read_text())
    spec["overrides"] = [*OVERRIDES, "train.max_steps=5"]
    path.write_text(json.dumps(spec))
    plan = plan_mod.plan(load_sweep(path), host="h")
    assert plan["runs_left"] == 2 and len(plan["stale_records"]) == 2
    assert all("stale" in line and "not counted" in line for line in plan["stale_records"])
    # a record of another study in this study's folder is an error naming both
    records = tmp_path / "studies" / "demo" / "records"
    one = next(records.glob("*.json.gz"))
    r = read_json_gz(one)
    r["study"] = "other"
    write_json_gz(one, r)
    with pytest.raises(ConfigError, match="a record of study 'other', not of 'demo'"):
        plan_mod.plan(load_sweep(path), host="h")
    one.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a gzip-compressed JSON file"):
        plan_mod.plan(load_sweep(path), host="h")


def test_a_run_identical_to_another_studys_shares_its_record(tmp_path: Path) -> None:
    run_sweep(_study(tmp_path, seeds=1), backend="inline", quiet=True)  # demo: rank 2 and 4
    demo = {r.name: r for r in (tmp_path / "studies" / "demo" / "records").glob("*.json.gz")}
    cross = _study(tmp_path, "cross", seeds=1, factors={"rank": {"method.r": [4, 8]}},
                   hypotheses=[{**CLAIMS[0], "arm": "rank=8"}], baseline={"rank": "4"})
    result = run_sweep(cross, backend="inline", quiet=True)
    status = {n.split("-seed")[0]: r["status"] for n, r in result["runs"].items()}
    assert status == {"rank=4": "skipped (recorded)", "rank=8": "done"}
    own = list((tmp_path / "studies" / "cross" / "records").glob("*.json.gz"))
    assert len(own) == 1 and own[0].name.startswith("rank=8")  # nothing copied
    found, _ = load_sweep(cross).recorded()
    shared = [r for r in found.values() if r.get("shared_from")]
    assert len(shared) == 1 and shared[0]["study"] == "cross" and shared[0]["arm"] == {"rank": "4"}
    assert shared[0]["shared_from"].startswith("demo/rank=4") and shared[0]["shared_from"].split("/")[1] in demo
    doc = tmp_path / "docs" / "findings.md"
    write_findings(tmp_path / "studies", doc)
    assert "- shared runs: 1 of the recorded runs are study demo's" in doc.read_text()
    # a study whose runs are all another's: nothing runs, and no plan is written after the fact
    mirror = _study(tmp_path, "mirror", seeds=1)
    again = run_sweep(mirror, backend="inline", quiet=True)
    assert {r["status"] for r in again["runs"].values()} == {"skipped (recorded)"}
    assert not (tmp_path / "studies" / "mirror" / "plan.json").exists()
    assert not plan_mod.save_plan(load_sweep(mirror), plan_mod.plan(load_sweep(mirror)))
    # a study sharing only its baseline beyond the pilot (a rounds curve's round 0: nothing compared yet)
    # still saves its plan; demo's seed 1 comes from a second donor study
    run_sweep(_study(tmp_path, "donor", seeds=2), backend="inline", quiet=True)
    curve = _study(tmp_path, "curve", seeds=2, factors={"rank": {"method.r": [2, 16]}},
                   hypotheses=[{**CLAIMS[0], "arm": "rank=16"}])
    found, _ = load_sweep(curve).recorded()
    assert sorted(n.split("-")[0] + n.split("-")[1] for n in found) == ["rank=2seed0", "rank=2seed1"]
    assert plan_mod.save_plan(load_sweep(curve), plan_mod.plan(load_sweep(curve)))
    assert (tmp_path / "studies" / "curve" / "plan.json").is_file()
    write_findings(tmp_path / "studies", doc)
    section = doc.read_text().split("<!-- study:mirror -->")[1]
    assert "**Plan**: none was saved before the seeds were spent" in section


@pytest.mark.parametrize(("change", "message"), [
    ({"hypotheses": [{**CLAIMS[0], "effect": None}]}, "hypotheses[0]: 'effect' is required"),
    ({"hypotheses": [{**CLAIMS[0], "arm": "rank=8"}]}, "rank='8' names no level"),
    ({"pilot_arms": ["rank=3"]}, "pilot_arms[0]: rank='3' names no level"),
    ({"pilot_range": [0.8, 0.2]}, "pilot_range: give [low, high]"),
    ({"pilot_range": {"arith": [0.2, 1.5]}}, "pilot_range.arith: give [low, high]"),
    ({"assume": {"seed_sd": -1}}, "assume.seed_sd: must be a number"),
])
def test_bad_study_files_fail_clearly(tmp_path: Path, change: dict, message: str) -> None:
    path = _study(tmp_path, **change)
    problems = check_sweep(path)
    assert any(message in p and str(path) in p for p in problems), problems


def test_validate_lists_every_error_of_a_sweep_file_at_once(tmp_path: Path, capsys) -> None:
    path = _study(tmp_path, hypotheses=[{**CLAIMS[0], "effect": None}, {**CLAIMS[1], "source": ""}],
                  pilot_range=[2, 3], colour="blue")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    for part in ("unknown key(s) colour", "hypotheses[0]: 'effect' is required", "hypotheses[1]: 'source' is required",
                 "pilot_range"):
        assert part in err
    assert main(["validate", str(_study(tmp_path, name="fine"))]) == 0
    assert "ok" in capsys.readouterr().out


def test_budget_below_one_run_without_any_estimate_and_bad_max_runs(tmp_path: Path) -> None:
    path = _study(tmp_path)
    with pytest.raises(ConfigError, match="--max-runs: must be at least 1"):
        run_sweep(path, backend="inline", quiet=True, max_runs=0)
    with pytest.raises(ConfigError, match="not a positive duration"):
        run_sweep(path, backend="inline", quiet=True, budget="0s")


def test_an_ensemble_of_an_arms_seeds_is_scored_from_the_records(tmp_path: Path, capsys) -> None:
    import numpy as np

    from tunelab.report.findings import report

    claims = [{"claim": "rank 4 beats the ensemble of rank 2", "task": "nlp_mc", "arm": "rank=4",
               "versus": "ensemble(rank=2)", "direction": "better", "effect": 0.05, "source": "a test"}]
    overrides = ["train.max_steps=3", "data.sources.0.count=32", "data.heldout=4", "eval.tasks=[nlp_mc]",
                 "eval.limit=12"]
    path = _study(tmp_path, overrides=overrides, hypotheses=claims, seeds=2)
    run_sweep(path, backend="inline", quiet=True)
    study = report(path)
    (claim,) = study["hypotheses"]
    assert claim["versus"] == "ensemble(rank=2)" and claim["items"] == 12 and "test" in claim
    # by hand from the two rank=2 records: mean of the softmaxes over the choices, argmax vs the answer
    sweep = load_sweep(path)
    found, _ = load_records(sweep.records, sweep.name, sweep.digests())
    rows = [{x["id"]: x for x in r["items"]["nlp_mc"]["rows"]} for r in found.values() if r["arm"] == {"rank": "2"}]
    assert len(rows) == 2
    expected = {}
    for i in rows[0]:
        p = [np.exp(np.array(r[i]["logliks"]) - max(r[i]["logliks"])) for r in rows]
        p = np.mean([x / x.sum() for x in p], axis=0)
        expected[i] = [float(int(np.argmax(p)) == rows[0][i]["answer_index"])]
    assert study["_items"]["nlp_mc"]["ensemble(rank=2)"] == dict(sorted(expected.items()))
    assert main(["sweep", "report", str(path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "Ensemble of rank=2's 2 seeds (mean class probabilities" in out
    assert "| rank 4 beats the ensemble of rank 2 | nlp_mc | rank=4 vs ensemble(rank=2) |" in out
    with pytest.raises(ConfigError, match="rank='8' names no level"):
        load_sweep(_study(tmp_path, name="bad", hypotheses=[{**claims[0], "versus": "ensemble(rank=8)"}]))


def test_a_pool_gate_reads_the_generated_pools_make_up_from_the_record(tmp_path: Path, capsys) -> None:
    """``pool_range``: the success rate of a generated pool (from the pilot baseline's record) must lie in its
    range; the findings show the pool's make-up."""
    gold = {"kind": "gold", "env_options": {"oneshot": False}, "limit": 8}
    pool = [f"data.sources=[{{name: pool, format: trajectory, generate: {json.dumps(gold)}}}]"]
    overrides = pool + [o for o in OVERRIDES if not o.startswith("data.sources")]
    path = _study(tmp_path, overrides=overrides, pool_range={"pool": [0.2, 0.6]})
    assert main(["sweep", "pilot", str(path)]) == 3
    err = capsys.readouterr().err
    assert "pool pool: too few failures (1.000 outside [0.2, 0.6])" in err, err[-700:]
    record = next(iter(load_records(load_sweep(path).records, "demo", load_sweep(path).digests())[0].values()))
    assert record["pools"]["pool"]["kind"] == "gold" and record["pools"]["pool"]["summary"]["trajectories"] == 8
    spec = json.loads(path.read_text())
    spec["pool_range"] = {"pool": [0.5, 1.0]}
    path.write_text(json.dumps(spec))
    assert main(["sweep", "pilot", str(path)]) == 0
    assert main(["sweep", "report", str(tmp_path / "studies" / "demo"), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "**Pool `pool`** (gold, key " in out and "8 episodes on 8 tasks, success rate 1.000" in out


def test_differences_from_the_paper_are_stated_and_printed(tmp_path: Path, capsys) -> None:
    path = _study(tmp_path, differences=["a tiny random model, not a 7B one"])
    assert load_sweep(path).differences == ["a tiny random model, not a 7B one"]
    run_sweep(path, backend="inline", quiet=True, max_runs=1)
    assert main(["sweep", "report", str(tmp_path / "studies" / "demo"), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "**Where this design differs from the paper:**" in out and "- a tiny random model, not a 7B one" in out
    bad = _study(tmp_path, name="bad", differences=[3])
    with pytest.raises(ConfigError, match="differences: give a list of sentences"):
        load_sweep(bad)


def test_estimates_leave_out_built_pools_and_scale_training_and_evaluation_apart() -> None:
    """A pilot that built the study's pool is not what later runs cost: the pool's build (its data
    phase) is left out; another arm's estimate scales the training phase by steps and the evaluation
    phase by evaluation passes (extra signals), the rest as recorded."""
    from types import SimpleNamespace as NS

    from tunelab.runner.records import host_kind

    host = {"cpu": "Test CPU", "cuda": None, "precision": "bf16"}
    phases = {"load": 1.0, "data": 1100.0, "train": 80.0, "evaluate": 700.0, "save": 1.0}
    pilot = {"host": host, "arm": {"arm": "positives"}, "seconds": 1900.0,
             "config": {"train": {"max_steps": 20}, "eval": {"signals": []}},
             "pools": {"pool": {"key": "k"}},
             "results": {"run": {"phases": phases, "reused": {"data": False, "generated": []}}}}

    def planned(name: str, arm: str, steps: int, signals: list[str]) -> NS:
        cfg = NS(train=NS(max_steps=steps), eval=NS(signals=signals))
        return NS(name=name, arm=NS(levels={"arm": arm}), cfg=cfg)

    sweep = NS(runs=[planned("p1", "positives", 20, []), planned("n2", "nat_2", 60, ["failure", "none"])])
    est = plan_mod.estimate_seconds(sweep, {"p0": pilot}, host_kind(host))
    assert est["p1"] == (pytest.approx(800.0), "same arm, this host")  # 1900 - 1100 (the pool's build)
    # 800 - 80 - 700 + 80 * 3 (steps) + 700 * 3 (evaluation passes)
    assert est["n2"][0] == pytest.approx(20.0 + 240.0 + 2100.0) and "scaled" in est["n2"][1]
    # a later run that reused the pool keeps its data phase (it is what it cost)
    later = {**pilot, "results": {"run": {"phases": {**phases, "data": 5.0},
                                          "reused": {"data": False, "generated": ["pool"]}}}, "seconds": 805.0}
    assert plan_mod.estimate_seconds(sweep, {"p0": later}, host_kind(host))["p1"][0] == pytest.approx(805.0)


def test_diagnostics_added_after_the_runs_rewrite_their_records(tmp_path: Path, capsys) -> None:
    """``tunelab sweep diagnose FILE --only weight_change``: each recorded run whose folder is here gets the
    diagnostic and its record is written again (same config and digest, the findings show it); a second call
    does nothing; a run trained elsewhere (no folder) is named, and the exit status says so."""
    path = _study(tmp_path, seeds=1)
    run_sweep(path, backend="inline", quiet=True)
    folder = tmp_path / "studies" / "demo" / "records"
    before = {f.name: read_json_gz(f) for f in sorted(folder.glob("*.json.gz"))}
    assert len(before) == 2 and all("weight_change" not in r["diagnostics"] for r in before.values())
    assert main(["sweep", "diagnose", str(path), "--only", "weight_change", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["diagnosed"]) == sorted(r["run"] for r in before.values()) and not out["no_folder"]
    for name, old in before.items():
        new = read_json_gz(folder / name)
        summary = new["diagnostics"]["weight_change"]["summary"]
        assert summary["update_norm"] > 0 and 0 < summary["relative_median"] < 1
        assert new["diagnosed_after"]["weight_change"] > 0  # apart from the run's own seconds
        # nothing else of the record is rebuilt: the run's config, pools, seconds and items stay as recorded
        assert {k: v for k, v in new.items() if k not in ("diagnostics", "diagnosed_after")} == \
            {k: v for k, v in old.items() if k != "diagnostics"}
        assert {k: v for k, v in new["diagnostics"].items() if k != "weight_change"} == old["diagnostics"]
    # the findings' diagnostic table reads the summary, one row per arm
    study = __import__("tunelab.report.findings", fromlist=["report"]).report(path)
    table = study["diagnostics"]["weight_change"]
    assert set(table) == {"rank=2", "rank=4"} and set(next(iter(table.values()))) == {
        "relative_median", "relative_mean", "update_norm", "top_layer_share", "effective_rank_median"}
    # resumable: nothing left to do; a run whose folder is gone (trained on another machine) is named
    assert main(["sweep", "diagnose", str(path), "--only", "weight_change", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["complete"]) == sorted(out["diagnosed"])
    # a diagnostic recorded as an error counts as missing and is run again
    second = folder / f"{out['diagnosed'][1]}.json.gz"
    broken = read_json_gz(second)
    broken["diagnostics"]["weight_change"] = {"error": "RuntimeError: out of memory", "seconds": 1.0}
    write_json_gz(second, broken)
    shutil.rmtree(tmp_path / "runs" / "demo" / "runs" / out["diagnosed"][0])
    assert main(["sweep", "diagnose", str(path), "--only", "weight_change,cka", "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["no_folder"] == [out["diagnosed"][0]] and again["diagnosed"] == [out["diagnosed"][1]]
    fixed = read_json_gz(second)["diagnostics"]
    assert "summary" in fixed["weight_change"] and "cka" in fixed and not again["failed"]
    assert main(["sweep", "diagnose", str(path), "--only", "nope"]) != 0
    assert "unknown diagnostic(s) nope; valid: cka, forgetting" in capsys.readouterr().err


def test_task_limits_give_a_cheap_task_more_items_and_keep_the_others_cache_keys(tmp_path: Path) -> None:
    """``eval.task_limits``: a task named there is evaluated on its own count (base and tuned), the others on
    ``limit``; the plan counts each claim's task's own items; the untrained model's cached evaluation of a task
    not named keeps its key; a task not in ``eval.tasks`` or a bad count fails validation."""
    from tunelab.config import load_recipe
    from tunelab.runner.cache import base_eval_key
    from tunelab.runner.run import run
    from tunelab.runner.validate import validate

    run_dir = run(TINY, OVERRIDES + ["eval.task_limits={arith: 5}"], out=str(tmp_path), quiet=True)
    rows = lambda side, task: (run_dir / "eval" / side / f"{task}.jsonl").read_text().splitlines()  # noqa: E731
    assert len(rows("tuned", "arith")) == 5 and len(rows("tuned", "perplexity")) == 8
    assert len(rows("base", "arith")) == 5
    plain, limited = load_recipe(TINY, OVERRIDES), load_recipe(TINY, OVERRIDES + ["eval.task_limits={arith: 5}"])
    assert base_eval_key(plain, "perplexity", "fp32") == base_eval_key(limited, "perplexity", "fp32")
    assert base_eval_key(plain, "arith", "fp32") != base_eval_key(limited, "arith", "fp32")
    assert limited.eval.items_for("arith") == 5 and limited.eval.items_for("arith@failure") == 5
    assert limited.eval.items_for("perplexity") == 8
    path = _study(tmp_path, overrides=OVERRIDES + ["eval.task_limits={arith: 400}"])
    claims = {c["claim"]: c for c in plan_mod.plan(load_sweep(path))["claims"]}
    assert claims["rank 4 moves accuracy by a hair"]["items"] == 400  # arith: its own count, before any record
    problems = validate(TINY, OVERRIDES + ["eval.task_limits={gsm8k: 5, arith: 0}"])
    assert any("eval.task_limits: 'gsm8k' is not in eval.tasks" in p for p in problems)
    assert any("eval.task_limits.arith: must be a whole number of items >= 1, got 0" in p for p in problems)


def test_decontamination_indexes_every_item_a_task_limit_evaluates() -> None:
    """A family's default set is 200 items; with ``eval.task_limits`` (or ``eval.limit``) above it, the
    decontamination index holds every item the run evaluates, and the data's cache key moves with it."""
    from tunelab.config import load_recipe
    from tunelab.runner.cache import data_key
    from tunelab.runner.data import evaluation_texts

    base = OVERRIDES + ["eval.tasks=[arith]", "data.transforms=[{name: decontaminate}]"]
    _, ids, summary = evaluation_texts(load_recipe(TINY, base))
    wide = load_recipe(TINY, base + ["eval.task_limits={arith: 350}"])
    _, wide_ids, wide_summary = evaluation_texts(wide)
    assert summary["arith"]["items"] == 200 and wide_summary["arith"]["items"] == 350
    assert set(ids) < set(wide_ids) and len(set(wide_ids)) == 350
    assert data_key(load_recipe(TINY, base)) != data_key(wide)
