"""The speed benchmarks' own arithmetic: the shape-matched peak's GEMM list, the study-run breakdown, and smoke runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402
import study_run  # noqa: E402

from tunelab.config import ModelConfig  # noqa: E402
from tunelab.methods import build_method  # noqa: E402
from tunelab.models.load import load_model  # noqa: E402


def test_gemm_shapes_cover_every_frozen_projection_and_the_head_chunks():
    model, _, _ = load_model(ModelConfig("tiny"))
    model = build_method({"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"}).apply(model)
    base = model.get_base_model()
    head = base.get_output_embeddings()
    tokens, targets, chunk = 300, 70, 32
    shapes = common.gemm_shapes(model, tokens, targets, chunk=chunk)
    flops = {}
    for s in shapes:
        flops[s["kind"]] = flops.get(s["kind"], 0) + 2 * s["m"] * s["k"] * s["n"] * s["count"]
    projections = sum(m.weight.numel() for n, m in base.named_modules()
                      if isinstance(m, torch.nn.Linear) and m is not head and "lora_" not in n)
    assert projections > 0
    assert flops["forward"] == flops["input grad"] == 2 * tokens * projections
    assert flops["head forward"] == flops["head input grad"] == 2 * targets * head.weight.numel()
    head_rows = sorted((s["m"], s["count"]) for s in shapes if s["kind"] == "head forward")
    assert head_rows == [(targets % chunk, 1), (chunk, targets // chunk)]  # 2 full chunks of 32 and 6 rows
    assert not any(s["m"] == 0 for s in shapes)
    peak = common.shape_matched_peak(shapes[:2], torch.float32, seconds=0.01)
    assert peak["gflops"] > 0 and len(peak["shapes"]) == 2


def test_study_run_breakdown_adds_up_to_the_process_wall_time():
    run = {"_wall_s": 100.0, "seconds": 90.0,
           "phases": {"load": 5.0, "data": 2.0, "base_eval": 20.0, "prepare": 1.0, "train": 50.0, "save": 0.5,
                      "evaluate": 11.0},
           "train": {"median_step_seconds": 0.4, "first_step_seconds": 10.4, "heldout_seconds": 3.0}}
    parts = study_run.breakdown(run)
    assert parts["start + imports"] == 10.0 and parts["compile (first step above median)"] == 10.0
    assert parts["train steps"] == 37.0 and parts["held-out evaluation"] == 3.0
    assert abs(sum(parts.values()) - 100.0) < 0.2 and parts["other"] == 0.5


def test_decode_profile_of_a_run_with_its_adapters_merged(tmp_path):
    import generate_throughput
    import pytest

    from tunelab.cli import main
    from tunelab.train.artifacts import load_for_inference

    assert main(["run", "recipes/tiny.yaml", "--out", str(tmp_path), "train.max_steps=2", "eval.tasks=[]",
                 "train.lr=0.05"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    live, tok, _ = load_for_inference(str(run_dir), device="cpu")
    merged, _, info = load_for_inference(str(run_dir), device="cpu", merge=True)
    assert info["merged"] and not any("lora" in n for n, _ in merged.named_parameters())
    ids = tok("2+2=", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = live(ids).logits, merged(ids).logits
    assert torch.allclose(a, b, atol=1e-4) and not torch.equal(a, load_for_inference("tiny", "cpu")[0](ids).logits)
    with pytest.raises(ValueError, match="no adapters to merge"):
        load_for_inference("tiny", "cpu", merge=True)
    profiles = [generate_throughput.decode_profile(m, "arith", n=2, max_new_tokens=3, batch_size=2, precision="fp32")
                for m in (str(run_dir), f"{run_dir}+merged")]
    assert profiles[1]["model"].endswith("+merged") and profiles[1]["parameters_m"] <= profiles[0]["parameters_m"]
    assert all(p["items"] == 2 and p["generated_tokens"] > 0 for p in profiles)


def test_grpo_benchmark_tunelab_side_runs_a_step_in_passes():
    import grpo_throughput

    r = grpo_throughput.tunelab_side("tiny", steps=1, warmup=0, batch_size=8, max_new_tokens=6, precision="fp32",
                                     threads=None, skip_zero_advantage=False, format_credit=0.5, tokens_per_pass=64,
                                     memory_phases=True)
    assert r["timed_steps"] == 1 and r["steps_per_s"] > 0 and r["tokens_per_pass"] == 64
    phases = r["memory_phases"]  # sampled by a thread: sampling and training apart, each under the run's peak
    assert {"sampling", "training"} <= set(phases)
    assert all(0 < v["peak_rss_mb"] <= r["peak_mem_mb"] + 1 for v in phases.values())
    assert all(v["malloc_live_mb"] is None or 0 < v["malloc_live_mb"] <= v["peak_rss_mb"] for v in phases.values())
    assert 0 < r["completion_tokens"] <= 6 + 3 and 0.0 <= r["zero_advantage_share"] <= 1.0  # + the end-of-turn markup
    assert 0.0 < r["generation_share"] < 1.0 and r["return_freed"] is False


def test_grpo_benchmark_rejects_a_bad_tokens_per_pass_before_any_work():
    import grpo_throughput

    assert [grpo_throughput._tokens_per_pass(t) for t in ("auto", "None", "512")] == ["auto", None, 512]
    for bad in ("0", "-5", "lots"):
        with pytest.raises(SystemExit):
            grpo_throughput.main(["--tokens-per-pass", bad, "--sides", "tunelab"])


def test_decode_compile_regions_name_the_modules_they_compile():
    import decode_compile

    from tunelab.train.loop import decoder_layers

    model, _, _ = load_model(ModelConfig("tiny"))
    layers = decoder_layers(model)[1]
    n = len(layers)
    assert n >= 2
    assert decode_compile.modules_to_compile(layers, "layer") == list(layers)
    assert decode_compile.modules_to_compile(layers, "mlp") == [layer.mlp for layer in layers]
    proj = decode_compile.modules_to_compile(layers, "proj")
    assert len(proj) == 5 * n and proj[1] is layers[0].self_attn.q_proj and proj[5] is layers[1].mlp
    with pytest.raises(ValueError, match="unknown region"):
        decode_compile.modules_to_compile(layers, "head")


@pytest.mark.slow
def test_decode_compile_probe_decodes_the_same_tokens_compiled_on_the_tiny_model():
    import decode_compile

    r = decode_compile.probe("tiny", "mlp", prompts=2, max_new_tokens=4, eager=1, compiled=1, precision="fp32")
    assert r["eager_repeatable"] and r["prompts_differing"] == 0 and r["graph_breaks"] == 0
    assert r["frames_compiled"] >= 1 and len(r["compiled_s"]) == 1 and r["compile_run_s"] > 0
