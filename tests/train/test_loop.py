"""The training loop: exact resume (Ctrl-C and kill -9), per-source losses, gradient accumulation."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import tunelab.train.loop as loop
from tunelab.config import TrainConfig
from tunelab.data.tokenize import encode, pack
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.train.loop import TrainJob, train
from tunelab.types import Sample


def _rows(tok):
    samples = []
    for i in range(40):
        src = "a" if i % 2 else "b"
        samples.append(Sample([{"role": "user", "content": f"{src}: {i} plus {i}?"},
                               {"role": "assistant", "content": str(2 * i)}], {"source": src, "id": str(i)}))
    return pack([encode(s, tok, 64) for s in samples], ["a", "b"], 64, True)


def _job(run_dir, resume=False, method="lora", batch_size=2, grad_accum=1, max_steps=10):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    m = build_method({"name": method, "dropout": 0.1} if method == "lora" else {"name": method})
    model = m.apply(tiny_model(len(tok), seed=0))
    cfg = TrainConfig(max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=5e-3,
                      warmup_ratio=0.1, save_every=5, precision="fp32")
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainJob(model, m, _rows(tok), ["a", "b"], cfg, "fp32", run_dir, tok.pad_token_id, True, resume=resume)


def _weights(job, model):
    return {k: v.clone() for k, v in job.method.trainable_state(model).items()}


def _assert_same(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), k


def test_resume_after_ctrl_c_gives_the_same_weights(tmp_path, monkeypatch):
    straight = _job(tmp_path / "a")
    straight_model, _ = train(straight)
    orig = loop.lr_at

    def interrupt_at_5(step, cfg):  # Ctrl-C arrives during step 6 (after 5 complete steps)
        if step == 5:
            raise KeyboardInterrupt
        return orig(step, cfg)

    monkeypatch.setattr(loop, "lr_at", interrupt_at_5)
    with pytest.raises(KeyboardInterrupt):
        train(_job(tmp_path / "b"))
    monkeypatch.setattr(loop, "lr_at", orig)
    resumed = _job(tmp_path / "b", resume=True)
    resumed_model, summary = train(resumed)
    assert summary["resumed_from"] == 5
    _assert_same(_weights(straight, straight_model), _weights(resumed, resumed_model))


def test_resume_from_periodic_checkpoint_after_kill(tmp_path):
    straight = _job(tmp_path / "a")
    straight_model, _ = train(straight)  # save_every=5 leaves checkpoints/step-5
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-5", killed / "checkpoints" / "step-5")
    (killed / "checkpoints" / ".tmp-step-10").mkdir()  # a half-written checkpoint is ignored
    # the killed run had logged steps 1..7 before dying: steps 6..7 are redone, logged once
    (killed / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)))
    resumed = _job(killed, resume=True)
    resumed_model, summary = train(resumed)
    assert summary["resumed_from"] == 5
    _assert_same(_weights(straight, straight_model), _weights(resumed, resumed_model))
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))


def test_metrics_have_per_source_loss_and_required_fields(tmp_path):
    job = _job(tmp_path, max_steps=3)
    train(job)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb"):
            assert key in r, key
        per = [v for k, v in r.items() if k.startswith("loss/")]
        assert per and min(per) - 1e-9 <= r["loss"] <= max(per) + 1e-9
    assert {k for r in rows for k in r if k.startswith("loss/")} == {"loss/a", "loss/b"}


def test_grad_accumulation_matches_one_big_batch(tmp_path, monkeypatch):
    """2 micro-batches of 2 rows give the gradient of one batch of 4 (token-normalised)."""
    grads = []
    orig = torch.optim.AdamW.step

    def record(self, *a, **kw):
        grads.append({id(p): p.grad.clone() for g in self.param_groups for p in g["params"]})
        return orig(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    big = _job(tmp_path / "big", method="full", batch_size=4, max_steps=1)
    acc = _job(tmp_path / "acc", method="full", batch_size=2, grad_accum=2, max_steps=1)
    big_model, _ = train(big)
    acc_model, _ = train(acc)
    a = [grads[0][id(p)] for p in big_model.parameters()]
    b = [grads[1][id(p)] for p in acc_model.parameters()]
    for ga, gb in zip(a, b):
        assert torch.allclose(ga, gb, atol=1e-6)


def test_initial_loss_is_near_log_vocab(tmp_path):
    job = _job(tmp_path, method="full", max_steps=1)
    train(job)
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["loss"] - torch.log(torch.tensor(102.0)).item()) < 0.5


def test_a_corrupted_checkpoint_is_reported_and_the_previous_one_used(tmp_path, capsys):
    straight = _job(tmp_path / "a", max_steps=15)
    straight_model, _ = train(straight)  # checkpoints at steps 5, 10 and 15
    run = tmp_path / "b"
    for step in (5, 10):
        shutil.copytree(tmp_path / "a" / "checkpoints" / f"step-{step}", run / "checkpoints" / f"step-{step}")
    weights = run / "checkpoints" / "step-10" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated write
    resumed = _job(run, resume=True, max_steps=15)
    resumed_model, summary = train(resumed)
    out = capsys.readouterr().out
    assert "step-10 is unusable: trainable.safetensors does not match its checksum" in out
    assert summary["resumed_from"] == 5
    _assert_same(_weights(straight, straight_model), _weights(resumed, resumed_model))


def test_gradient_checkpointing_gives_the_same_training(tmp_path):
    """``train.gradient_checkpointing`` recomputes activations in backward: same losses and weights."""
    import dataclasses

    results = []
    for gc in (False, True):
        job = _job(tmp_path / str(gc), method="lora", max_steps=3)
        job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, gradient_checkpointing=gc, save_every=0))
        model, _ = train(job)
        losses = [json.loads(x)["loss"] for x in (tmp_path / str(gc) / "metrics.jsonl").read_text().splitlines()]
        results.append((losses, _weights(job, model)))
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules()) is gc
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    _assert_same(results[0][1], results[1][1])
