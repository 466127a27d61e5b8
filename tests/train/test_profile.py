"""train.profile_steps: torch.profiler over a window of a real training loop's steps, categorised."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from tunelab.config import ConfigError, RunConfig, TrainConfig, from_dict
from tunelab.data.tokenize import encode, pack
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.runner.validate import validate
from tunelab.train.loop import TrainJob, train
from tunelab.train.profile import StepProfiler, category, format_summary, summarize
from tunelab.types import Sample


def _job(run_dir, max_steps, **train_kw):
    """A tiny LoRA job on packed rows of two sources."""
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    samples = [Sample([{"role": "user", "content": f"{i} plus {i}?"}, {"role": "assistant", "content": str(2 * i)}],
                      {"source": "a", "id": str(i)}) for i in range(24)]
    rows = pack([encode(s, tok, 64) for s in samples], ["a"], 64, True)
    m = build_method({"name": "lora"})
    cfg = TrainConfig(max_steps=max_steps, batch_size=2, lr=5e-3, save_every=0, precision="fp32", **train_kw)
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainJob(m.apply(tiny_model(len(tok), seed=0)), m, rows, ["a"], cfg, "fp32", run_dir, tok.pad_token_id, True)


@pytest.mark.parametrize("name, expected", [
    ("aten::mm", "matmul"), ("aten::addmm", "matmul"), ("aten::linear", "matmul"),
    ("aten::bmm", "attention"), ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_fused_adamw_", "optimizer"), ("aten::_foreach_mul_", "optimizer"),
    ("Optimizer.step#AdamW.step", "optimizer"), ("Torch-Compiled Region: 0/0", "compiled fused kernels"),
    ("CompiledFunctionBackward", "compiled fused kernels"), ("aten::copy_", "copies and casts"),
    ("aten::_to_copy", "copies and casts"), ("aten::empty", "allocation"), ("aten::mul", "other operators"),
    ("aten::nll_loss_forward", "other operators")])
def test_operators_fall_in_their_category(name, expected):
    assert category(name) == expected


def test_summary_adds_self_times_per_category_and_rates_the_matmuls():
    ops = [("aten::mm", 0.6, 40, 3e9), ("aten::addmm", 0.2, 10, 1e9), ("aten::bmm", 0.2, 8, 5e8),
           ("aten::mul", 0.3, 100, 0.0), ("aten::_fused_adamw_", 0.1, 2, 0.0)]
    s = summarize(ops, steps=2, step_seconds=2.0, window=2.5)
    assert s["step_seconds"] == 1.0 and s["between_steps_seconds"] == 0.5
    assert s["categories"]["matmul"] == {"seconds_per_step": 0.4, "share": 0.32, "calls_per_step": 25.0}
    assert s["categories"]["attention"]["seconds_per_step"] == 0.1
    assert s["categories"]["other operators"]["share"] == 0.12
    assert list(s["categories"])[0] == "matmul"  # largest first
    assert s["matmul_gflop_per_step"] == 2.0  # (3 + 1) GFLOP over 2 steps; bmm is attention's
    assert s["matmul_gflops"] == 5.0  # 4 GFLOP in 0.8 s
    assert s["outside_operators"]["seconds_per_step"] == pytest.approx((2.5 - 1.4) / 2, abs=1e-4)
    assert "matmul" in format_summary(s) and "5.0 GFLOP/s" in format_summary(s)


def test_a_window_of_real_steps_is_profiled_and_written(tmp_path):
    _, summary = train(_job(tmp_path / "run", max_steps=6, profile_steps=2, profile_after=3))
    prof = summary["profile"]
    assert prof["steps"] == 2  # steps 4 and 5 of 6
    folder = tmp_path / "run" / "profile"
    assert json.loads((folder / "summary.json").read_text()) == prof
    assert prof["categories"]["matmul"]["calls_per_step"] > 0 and prof["matmul_gflops"] > 0
    assert "optimizer" in prof["categories"]
    shares = sum(c["share"] for c in prof["categories"].values())
    assert 0.3 < shares < 1.2  # self times of the profiled ops against the steps' wall time
    assert "aten::mm" in (folder / "ops.txt").read_text()
    trace = json.loads(gzip.open(folder / "trace.json.gz", "rt").read())
    assert any(e.get("name") == "aten::mm" for e in trace["traceEvents"])


def test_no_profile_by_default_and_the_window_a_resumed_run_profiles(tmp_path):
    _, summary = train(_job(tmp_path / "run", max_steps=3))
    assert "profile" not in summary and not (tmp_path / "run" / "profile").exists()
    assert StepProfiler.of(2, 3, tmp_path, start=5) is None
    inside = StepProfiler.of(4, 3, tmp_path, start=5)
    assert (inside.first, inside.last) == (5, 6)


def test_a_window_past_the_last_step_is_refused_before_any_work():
    cfg = from_dict(RunConfig, {"model": "tiny", "data": {"sources": [{"name": "arith", "task": "arith"}]},
                                "train": {"max_steps": 10, "profile_steps": 8}})
    problems = validate(cfg)
    assert any("train.profile_steps" in p and "steps 4-11" in p and "max_steps = 10" in p for p in problems)
    with pytest.raises(ConfigError):
        validate(cfg, raise_errors=True)


def test_a_window_whose_first_step_never_ended_writes_nothing(tmp_path):
    prof = StepProfiler(tmp_path / "profile", after=0, steps=2)
    prof.before(0)
    assert prof.close() is None and not (tmp_path / "profile").exists()
