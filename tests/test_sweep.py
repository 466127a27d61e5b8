"""tunelab sweep: planning and validation, shared work, aggregation, interruption and resume, backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.config import ConfigError
from tunelab.runner.sweep import run_sweep
from tunelab.runner.sweep_file import load_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"
OVERRIDES = ["train.max_steps=4", "train.save_every=2", "data.sources.0.count=64", "data.heldout=4",
             "eval.tasks=[arith, perplexity]", "eval.task_options.perplexity.sources=arith", "eval.limit=8",
             "eval.max_new_tokens=8"]


def _sweep_file(tmp_path: Path, **extra) -> Path:
    spec = {"recipe": str(TINY), "overrides": OVERRIDES, "factors": {"rank": {"method.r": [2, 4]}},
            "seeds": 2, "out": str(tmp_path / "out"), **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_plan_names_levels_and_baseline(tmp_path: Path) -> None:
    path = _sweep_file(tmp_path, factors={
        "rank": {"method.r": [2, 4]},
        "lr": {"train.lr": [1e-3, 3e-3], "train.warmup_ratio": [0.0, 0.1]},  # paired keys
        "vld": {"off": {"regularizers": []}, "on": {"regularizers": [{"name": "very_large_dropout", "p": 0.9}]}},
    }, baseline={"vld": "off"})
    sweep = load_sweep(path)
    assert len(sweep.runs) == 2 * 2 * 2 * 2 and sweep.baseline == {"rank": "2", "lr": "0.001,0.0", "vld": "off"}
    run = next(p for p in sweep.runs if p.arm.levels == {"rank": "4", "lr": "0.003,0.1", "vld": "on"} and p.seed == 1)
    cfg = run.cfg
    assert (cfg.method["r"], cfg.train.lr, cfg.train.warmup_ratio, cfg.train.seed) == (4, 3e-3, 0.1, 1)
    assert cfg.regularizers == [{"name": "very_large_dropout", "p": 0.9}] and cfg.train.max_steps == 4
    assert load_sweep(path).runs[5].name == sweep.runs[5].name  # names are deterministic
    assert len({p.name for p in sweep.runs}) == len(sweep.runs)


@pytest.mark.parametrize(("change", "message"), [
    ({"factor": {"rank": {"method.r": [2]}}}, "unknown key(s) factor"),
    ({"factors": {"rank": {"method.r": []}}}, "factor 'rank' is empty"),
    ({"factors": {"rank": {}}}, "factor 'rank' is empty"),
    ({"factors": {"lr": {"train.lrr": [1e-3, 1e-4]}}}, "unknown key 'train.lrr'"),
    ({"factors": {"m": {"method.rank": [2, 4]}}}, "rank"),
    ({"factors": {"p": {"train.lr": [1e-3, 1e-4], "train.seed": [1]}}}, "paired keys need as many values"),
    ({"baseline": {"rank": 8}}, "baseline: rank='8' is not a level"),
])
def test_bad_sweep_files_fail_before_any_run(tmp_path: Path, change: dict, message: str, capsys) -> None:
    spec = {"recipe": str(TINY), "factors": {"rank": {"method.r": [2, 4]}}, "out": str(tmp_path / "out"), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_sweep(path)
    assert main(["sweep", str(path)]) == 2
    assert str(path) in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_inline_sweep_shares_work_aggregates_and_skips_finished_runs(tmp_path: Path, capsys) -> None:
    path = _sweep_file(tmp_path)
    result = run_sweep(path, backend="inline")
    assert [r["status"] for r in result["runs"].values()] == ["done"] * 4
    # one data build and one base evaluation, reused by the three other runs
    assert result["reused"] == {"runs_finished": 4, "data_from_cache": 3, "base_eval_from_cache": 3}
    ppl = result["tasks"]["perplexity"]
    assert ppl["baseline_arm"] == "rank=2" and set(ppl["arms"]) == {"rank=2", "rank=4"}
    arm = ppl["arms"]["rank=4"]
    assert arm["seeds"] == 2 and len(arm["seed_scores"]) == 2 and arm["ci_seeds"][0] <= arm["mean"] <= arm["ci_seeds"][1]
    vs = arm["vs_baseline"]
    assert vs["method"] == "sign_flip_test" and vs["n"] == 8 and 0 <= vs["p_holm"] <= 1
    assert [row["term"] for row in ppl["anova"]["table"]] == ["rank", "residual"]
    assert "arith" in result["tasks"] and "ANOVA" in capsys.readouterr().out
    folder = Path(result["folder"])
    assert json.loads((folder / "sweep.json").read_text())["reused"] == result["reused"]
    # a recorded run is finished on any machine; one whose record and results vanish is the only one redone
    runs = sorted((folder / "runs").iterdir())
    stamps = {r.name: (r / "results.json").stat().st_mtime_ns for r in runs}
    (runs[0] / "results.json").unlink()
    (Path(result["records"]) / f"{runs[0].name}.json.gz").unlink()
    again = run_sweep(path, backend="inline", resume=True)
    statuses = {n: r["status"] for n, r in again["runs"].items()}
    assert statuses.pop(runs[0].name) == "done" and set(statuses.values()) == {"skipped (recorded)"}
    assert all((r / "results.json").stat().st_mtime_ns == stamps[r.name] for r in runs[1:])


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path: Path, monkeypatch) -> None:
    from tunelab.runner import sweep_runs

    real = sweep_runs._run_inline

    def flaky(planned, folder, resume):
        if planned.arm.levels["rank"] == "2":
            raise RuntimeError("out of memory (simulated)")
        real(planned, folder, resume)

    monkeypatch.setattr(sweep_runs, "_run_inline", flaky)
    result = run_sweep(_sweep_file(tmp_path, seeds=1), backend="inline", quiet=True)
    runs = sorted(result["runs"].values(), key=lambda r: r["arm"])
    assert [r["status"] for r in runs] == ["failed", "done"]
    assert "out of memory (simulated)" in runs[0]["error"]
    assert set(result["tasks"]["perplexity"]["arms"]) == {"rank=4"}


@pytest.mark.parametrize("how", [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
                         ids=["ctrl-c", "kill-9"])
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path: Path, how: signal.Signals) -> None:
    path = _sweep_file(tmp_path, seeds=4)  # 8 short runs: the signal lands part-way even on a loaded host
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tunelab.cli", "sweep", str(path), "--backend", "inline"]
    # a shell's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the sweep the default disposition whatever this test inherited
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs = tmp_path / "out" / "sweep" / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(runs.glob("*/results.json"))) < 1:
        time.sleep(0.2)
    proc.send_signal(how)  # SIGKILL: the run in progress and both locks are left behind
    proc.wait(timeout=120)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/results.json")}
    assert 1 <= len(finished) < 8, "the sweep should have been interrupted part-way"
    done = subprocess.run(cmd + ["--resume", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert all(result["runs"][n]["status"] == "skipped (recorded)" for n in finished)
    assert sum(r["status"] == "done" for r in result["runs"].values()) == 8 - len(finished)
    assert all((runs / n / "results.json").stat().st_mtime_ns == t for n, t in finished.items())


def test_local_backend_runs_each_run_as_a_process(tmp_path: Path) -> None:
    path = _sweep_file(tmp_path, seeds=1, factors={"rank": {"method.r": [2]}})
    result = run_sweep(path, backend="local", jobs=1, quiet=True)
    (name, entry), = result["runs"].items()
    assert entry["status"] == "done"
    log = (Path(result["folder"]) / "logs" / f"{name}.txt").read_text()
    assert "run folder" in log


def test_ray_backend_on_a_local_cluster(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    path = _sweep_file(tmp_path, seeds=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **{k: v for k, v in os.environ.items()
                                                                  if k.startswith(("TUNELAB_", "HF_"))}}})
    try:
        result = run_sweep(path, backend="ray", quiet=True)
    finally:
        ray.shutdown()
    assert [r["status"] for r in result["runs"].values()] == ["done", "done"], result["runs"]
    assert set(result["tasks"]["perplexity"]["arms"]) == {"rank=2", "rank=4"}
