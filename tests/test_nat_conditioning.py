"""``eval.signals``: a NAT run is also evaluated asking for failure and for nothing (the conditioning check)."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.runner.run import run

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, mode: str) -> Path:
    return run(ROOT / "recipes" / "failures.yaml", [
        "model.name=tiny", "train.max_steps=2", "train.batch_size=4", "train.precision=fp32", "train.save_every=0",
        f"data.transforms=[{{name: nat, mode: {mode}}}]", "data.heldout=0", "eval.limit=4", "eval.max_new_tokens=8",
        "eval.baseline=false", "eval.signals=[failure, none]"], out=str(tmp_path / mode), quiet=True)


def test_a_nat_run_is_also_asked_for_failure_and_for_nothing(tmp_path: Path) -> None:
    out = _run(tmp_path, "nat")
    results = json.loads((out / "results.json").read_text())
    assert {"agent_calculator", "agent_calculator@failure", "agent_calculator@none"} <= set(results)
    for name in ("agent_calculator@failure", "agent_calculator@none"):
        rows = (out / "eval" / "tuned" / f"{name}.jsonl").read_text().splitlines()
        assert len(rows) == 4 and results[name]["metric"] == results["agent_calculator"]["metric"]
    # same items under each signal
    ids = {n: [json.loads(x)["id"] for x in (out / "eval" / "tuned" / f"{n}.jsonl").read_text().splitlines()]
           for n in ("agent_calculator", "agent_calculator@failure")}
    assert ids["agent_calculator"] == ids["agent_calculator@failure"]


def test_runs_without_a_nat_signal_ignore_the_signals(tmp_path: Path) -> None:
    out = _run(tmp_path, "nut")
    assert not any("@" in k for k in json.loads((out / "results.json").read_text()))
