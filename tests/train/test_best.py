"""Best checkpoint and early stopping (``train.select_best``, ``train.early_stopping_patience``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tunelab.train.loop as loop
from tunelab.config import ConfigError, TrainConfig, load_recipe
from tunelab.data.tokenize import encode, pack
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.runner.validate import validate
from tunelab.train.loop import TrainJob, train
from tunelab.types import Sample

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"


def _rows(tok, n, answer):
    samples = [Sample([{"role": "user", "content": f"{i} plus {i}?"}, {"role": "assistant", "content": answer(i)}],
                      {"source": "s", "id": str(i)}) for i in range(n)]
    return pack([encode(s, tok, 64) for s in samples], ["s"], 64, True)


def _job(run_dir, resume=False, select_best=True, patience=3):
    """Full fine-tuning on answers "xxxxxxxx", held out on the true sums: the held-out loss falls for a
    few steps (the chat format), then rises as the model learns to answer x's (minimum at step 8 here)."""
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    method = build_method({"name": "full"})
    model = method.apply(tiny_model(len(tok), seed=0))
    cfg = TrainConfig(max_steps=30, batch_size=2, lr=3e-3, warmup_ratio=0.0, schedule="constant", precision="fp32",
                      save_every=5, eval_every=2, select_best=select_best, early_stopping_patience=patience)
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainJob(model, method, _rows(tok, 40, lambda i: "x" * 8), ["s"], cfg, "fp32", run_dir, tok.pad_token_id,
                    True, heldout=_rows(tok, 8, lambda i: str(2 * i)), resume=resume)


def _evals(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["heldout_loss"] for r in rows if "heldout_loss" in r and "loss" in r}


def _heldout(job, model):
    return loop._heldout(job, model)["heldout_loss"]


def test_early_stopping_returns_the_best_weights(tmp_path):
    job = _job(tmp_path / "best")
    model, summary = train(job)
    evals = _evals(tmp_path / "best")
    best_step = min(evals, key=evals.get)
    assert summary["best_step"] == best_step and summary["best_value"] == evals[best_step]
    assert summary["stopped_early"] and summary["stopped_at"] == best_step + 3 * 2 == summary["steps"] < 30
    assert max(evals) == summary["stopped_at"]  # no step after the stop
    assert evals[summary["stopped_at"]] > evals[best_step]  # the last weights are worse ...
    assert _heldout(job, model) == pytest.approx(evals[best_step], abs=1e-6)  # ... the model returned is the best
    assert summary["heldout_loss"] == pytest.approx(evals[best_step], abs=1e-6)

    last = _job(tmp_path / "last", select_best=False)  # early stopping alone keeps the last weights
    model, summary = train(last)
    assert summary["stopped_at"] == best_step + 6 and not summary["selected_best"]
    assert _heldout(last, model) == pytest.approx(evals[best_step + 6], abs=1e-6)


def test_resume_keeps_the_best_so_far_and_the_patience(tmp_path, monkeypatch):
    straight = _job(tmp_path / "a")
    straight_model, straight_summary = train(straight)
    best_step = straight_summary["best_step"]
    orig = loop.lr_at

    def interrupt(step, cfg):  # Ctrl-C after best_step + 3 steps: one evaluation without improvement counted
        if step == best_step + 3:
            raise KeyboardInterrupt
        return orig(step, cfg)

    monkeypatch.setattr(loop, "lr_at", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(_job(tmp_path / "b"))
    monkeypatch.setattr(loop, "lr_at", orig)
    saved = json.loads((tmp_path / "b" / "checkpoints" / f"step-{best_step + 3}" / "meta.json").read_text())
    assert saved["best"]["step"] == best_step and saved["best"]["bad_evals"] == 1
    resumed = _job(tmp_path / "b", resume=True)
    resumed_model, summary = train(resumed)
    assert summary["resumed_from"] == best_step + 3
    for key in ("best_step", "best_value", "stopped_at", "steps", "heldout_loss"):
        assert summary[key] == pytest.approx(straight_summary[key], abs=1e-6), key
    for name, p in straight_model.state_dict().items():
        assert torch.allclose(p, resumed_model.state_dict()[name], atol=1e-5), name
    assert _evals(tmp_path / "b") == pytest.approx(_evals(tmp_path / "a"), abs=1e-5)


def test_selection_needs_heldout_evaluations(tmp_path):
    def problems(*overrides):
        return [p for p in validate(load_recipe(RECIPE, list(overrides))) if p.startswith("train.")]

    assert problems("train.select_best=true", "train.early_stopping_patience=2") == []
    assert problems("train.select_best=true", "train.eval_every=0")[0].startswith("train.select_best: needs held-out")
    assert problems("train.early_stopping_patience=2", "data.heldout=0")[0].startswith(
        "train.early_stopping_patience: needs held-out")
    assert "valid: heldout_loss, heldout_loss/arith" in problems("train.best_metric=loss")[0]
    job = _job(tmp_path, select_best=True)
    job.heldout = []
    with pytest.raises(ConfigError, match="train.select_best"):
        train(job)
