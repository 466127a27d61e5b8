"""The test-sized NAT regime: 320 careful + 320 systematically failing calculator trajectories; a tiny
model trained with the signal (NAT) avoids the error when asked for success, one trained on the
unlabelled mix (NUT) does not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunelab.data.formats import to_sample
from tunelab.data.transforms.nat import conditioned, signal_for
from tunelab.envs import get_env
from tunelab.envs.drill import ScriptedAgent, error_rate, first_action, systematic_set

ROOT = Path(__file__).resolve().parents[1]


def test_the_drill_set_fails_systematically_and_is_verified_by_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "drill.jsonl"
    summary = systematic_set(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["positives"] == summary["negatives"] == 320 and summary["failures"] == {"wrong_answer": 320}
    assert len({r["task_id"] for r in rows}) == 640  # distinct problems
    for r in rows:
        a, b = re.search(r"has (\d) \w+ and finds (\d) more", r["messages"][0]["content"]).groups()
        action = r["messages"][1]["content"]
        if r["outcome"]["success"]:
            assert action.endswith(f"calculate[{a} + {b}]") and r["outcome"]["answer"] == str(int(a) + int(b))
        else:  # the first quantity forgotten, the environment's verifier says wrong
            assert action.endswith(f"calculate[{b}]") and r["outcome"]["answer"] == b != r["outcome"]["gold"]
        assert r["origin"]["sampler"] == f"scripted:{'careful' if r['outcome']['success'] else 'forget_first'}"
        assert to_sample(r, "trajectory", {}, "drill.jsonl").meta["outcome"]["success"] == r["outcome"]["success"]
    assert systematic_set(out)["written_now"] == 0  # a rerun resumes: nothing sampled twice
    with pytest.raises(ValueError, match="not a pairs question"):
        first_action("What is 2 + 2?", "careful")
    with pytest.raises(ValueError, match="policy"):
        ScriptedAgent("lazy")


@pytest.mark.slow
def test_nat_learns_to_avoid_the_systematic_error_when_asked_for_success_and_nut_does_not(tmp_path: Path) -> None:
    """Two tiny models (in code), full fine-tuning, 150 steps each (about 20-40 s each on one core).

    Measured: the probability of the forgetful error at its decisive token on 64 held-out problems.
    In development (train seeds 1, 2): NAT asked for success 0.003 / 0.013, asked for failure > 0.999;
    NUT 0.50 / 0.55, the 50/50 mix of its data (greedy, NUT still made the error on up to 56%).
    """
    from tunelab.generate.build import build_generator
    from tunelab.generate.loglik import scorer_for
    from tunelab.runner.run import run

    data = tmp_path / "drill.jsonl"
    systematic_set(data)
    held = get_env("calculator", source="pairs", oneshot=False).tasks(64, seed=99)  # not among the trained problems
    base = [f"data.sources=[{{name: drill, path: {data}, format: trajectory}}]", "data.heldout=0",
            "data.max_length=320", "method={name: full}", "train.max_steps=150", "train.batch_size=16",
            "train.lr=1.0e-2", "train.warmup_ratio=0.0", "train.save_every=1000", "eval.tasks=[]"]
    rates = {}
    for mode in ("nat", "nut"):
        run_dir = run(ROOT / "recipes" / "tiny.yaml", [*base, f"data.transforms=[{{name: nat, mode: {mode}}}]",
                                                       f"name={mode}"], out=str(tmp_path / "runs"), quiet=True)
        scorer = scorer_for(build_generator(str(run_dir)))
        spec = {"name": "nat", "mode": mode}
        for which in ("success", "failure") if mode == "nat" else ("none",):
            rates[mode, which] = error_rate(scorer, held, signal_for(spec if mode == "nat" else None, which))
    assert conditioned({"name": "nat"}) == "Please solve the problem correctly."
    nat_ok, nat_bad, nut = rates["nat", "success"], rates["nat", "failure"], rates["nut", "none"]
    assert nat_ok < 0.3 and nat_bad > 0.7 and 0.3 < nut < 0.7, rates
    assert nut - nat_ok > 0.25, rates  # asked for success, NAT avoids the error far more than NUT
