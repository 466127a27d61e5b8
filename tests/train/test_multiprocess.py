"""Data parallelism: the loop in 2 CPU processes (gloo) trains exactly as 1 process on the same global batch.

This file is also the 2-process script: the test runs it under ``torch.distributed.run`` with
``ACCELERATE_USE_CPU=1`` (accelerate's ``launch --cpu`` needs MPI for more than one process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunelab.config import TrainConfig
from tunelab.data.tokenize import encode, pack
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.train.loop import TrainJob, train
from tunelab.types import Sample

STEPS = 4


def _job(run_dir: Path, batch_size: int) -> TrainJob:
    """LoRA without dropout (no per-process randomness), 2 micro-batches per step, held-out every 2 steps."""
    tok = tiny_tokenizer()
    samples = [Sample([{"role": "user", "content": f"{'ab'[i % 2]}: {i} plus {i}?"},
                       {"role": "assistant", "content": str(2 * i)}], {"source": "ab"[i % 2], "id": str(i)})
               for i in range(40)]
    rows = pack([encode(s, tok, 64) for s in samples], ["a", "b"], 64, True)
    torch.manual_seed(0)
    method = build_method({"name": "lora", "dropout": 0.0})
    cfg = TrainConfig(max_steps=STEPS, batch_size=batch_size, grad_accum=2, lr=5e-3, warmup_ratio=0.0,
                      precision="fp32", save_every=0, eval_every=2)
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainJob(method.apply(tiny_model(len(tok), seed=0)), method, rows[4:], ["a", "b"], cfg, "fp32", run_dir,
                    tok.pad_token_id, True, heldout=rows[:4])


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_give_the_losses_of_one(tmp_path):
    """2 processes x 1 row x 2 micro-batches = 1 process x 2 rows x 2 micro-batches = 4 rows a step, the
    same rows; losses, per-source losses, token counts and held-out losses equal to fp32 rounding (rel 1e-5)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    one = _job(tmp_path / "one", batch_size=2)
    model, _ = train(one)
    two, ref = _rows(tmp_path / "two"), _rows(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in ref] == [1, 2, 3, 4, 4]
    for a, b in zip(two, ref):
        keys = ["loss", "loss/a", "loss/b", "tokens", "target_tokens", "lr", "heldout_loss"]
        keys = [k for k in keys if k in b]
        assert keys == [k for k in keys if k in a]
        assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys], rel=1e-5), (b["step"], keys)
    # weights: Adam's first steps move every weight by about lr = 5e-3, near-zero gradients included,
    # so their rounding shows: equal to 5e-5 (1% of one step; 7e-6 measured)
    weights = torch.load(tmp_path / "two" / "weights.pt")
    for name, t in one.method.trainable_state(model).items():
        assert torch.allclose(weights[name], t, rtol=0, atol=5e-5), name


if __name__ == "__main__":  # one of the 2 processes of the test above
    torch.set_num_threads(1)
    job = _job(Path(sys.argv[1]), batch_size=1)
    model, _ = train(job)
    if int(os.environ["RANK"]) == 0:
        torch.save(job.method.trainable_state(model), Path(sys.argv[1]) / "weights.pt")
