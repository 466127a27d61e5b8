"""A recipe mixing the four built-in families trains and logs per-source losses."""

from __future__ import annotations

import json

from tunelab import run


def test_mixture_recipe_trains_with_per_source_losses(tmp_path):
    run_dir = run("recipes/mix.yaml", ["model.name=tiny", "train.max_steps=4", "train.batch_size=16",
                                       "train.eval_every=2", "train.precision=fp32", "eval.tasks=[]",
                                       "data.sources.0.count=64", "data.sources.1.count=64",
                                       "data.sources.2.count=64", "data.sources.3.count=64", "data.heldout=4"],
                  out=str(tmp_path), quiet=True)
    mixture = json.loads((run_dir / "data" / "mixture.json").read_text())
    assert [s["name"] for s in mixture["sources"]] == ["arith", "code", "nlp", "instruct"]
    for s in mixture["sources"]:
        assert abs(s["realized_fraction"] - 0.25) < 0.02 and s["examples"] > 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seen = {k for r in rows for k in r}
    for name in ("arith", "code", "nlp", "instruct"):
        assert f"loss/{name}" in seen and f"heldout_loss/{name}" in seen
