"""tunelab's training loop against TRL ``SFTTrainer`` + peft on the same LoRA job, side by side.

The job: SmolLM2-135M-Instruct, LoRA r=16 alpha=32 (no dropout) on all linear layers, max length
512, batch 8, the same chat data (GSM8K train from ``$TUNELAB_DATA_DIR/gsm8k``, else the built-in
``arith`` family), the same seed, learning rate and cosine schedule (no LR warm-up, so both
schedules are identical), ``warmup + steps`` optimizer steps (default 10 + 110 = 120, the
quickstart's length; ``--short``: the old 3 + 12) of which the first ``warmup`` are not timed. tunelab
compiles or not as a run of that length would (``compile: auto``: on for 120 steps of SmolLM2, off for 15). Each side runs in its own subprocess (peak RSS per side); sides alternate, ``--repeats``
times, and the best run of each side (by tokens/s) is reported.

* tokens/s: trained (non-padding input) tokens / step seconds over the timed steps. tunelab:
  its ``metrics.jsonl`` (``tokens``, ``step_time_s``). TRL: a wrapped data collator counts the
  tokens of each batch; a ``TrainerCallback`` times ``on_step_begin`` -> ``on_step_end``
  (``tokens_per_s_wall`` also counts the time between steps: batch fetch and logging).
* end to end: process start (interpreter launch) to the saved adapter, model load, data, compile
  and every step included (the held-out scoring after it is not).
* peak memory: the subprocess's peak RSS after training (before the held-out evaluation).
* loss: both final adapters scored on the same 32 held-out samples with the same code
  (tunelab's ``token_losses``, completion-only); also each side's last training loss.
* MFU: model FLOP/s (METHODS.md count) / the matmul peak, for the precision used (``mfu``) and
  against each peak (``mfu_bf16``, ``mfu_fp32``). The peak is measured just before and just after
  each run and averaged: on shared hosts it drifts by 2-3x within minutes. ``mfu_shape``: against the
  shape-matched peak, the step's own GEMMs (every frozen projection forward and its input gradient at
  the run's tokens per step, the LM head's chunks on the target tokens) timed alone in the run's
  precision (``common.shape_matched_peak``): a limit a training step could actually reach.

    python benchmarks/train_throughput.py                       # the real comparison
    python benchmarks/train_throughput.py --short                # the 15-step job
    python benchmarks/train_throughput.py --model tiny --steps 2 --warmup 1 --max-length 128

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import common

LR = 3e-4
SEED = 0
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def _samples(steps: int, batch_size: int, max_length: int) -> tuple[list, list]:
    """(train, heldout) Samples: enough training samples for one epoch of packed rows."""
    n_train = steps * batch_size * max(1, max_length // 96)
    return common.chat_samples(n_train, skip=common.HELDOUT), common.chat_samples(common.HELDOUT)


def _load(model_name: str, threads: int | None) -> tuple[Any, Any, int]:
    from tunelab.config import ModelConfig
    from tunelab.models.load import load_model

    used = common.set_threads(threads)
    model, tok, _ = load_model(ModelConfig(model_name))
    return model, tok, used


def _flops(model, encoded: list) -> tuple[float, float]:
    """(FLOPs per trained token, the attended length used): the mean sample length."""
    seq = sum(len(e.input_ids) for e in encoded) / max(1, len(encoded))
    return common.model_flops_per_token(model, None, seq), seq


def tunelab_side(model: str, steps: int, warmup: int, batch_size: int, max_length: int, precision: str,
                 packing: bool, threads: int | None, compile: bool | str = "auto",
                 cast_frozen: bool = True) -> dict[str, Any]:
    """Train with ``tunelab.train.loop.train`` in this process; the figures of one run."""
    import torch

    from tunelab.config import TrainConfig
    from tunelab.methods.base import build_method
    from tunelab.train.loop import Batches, TrainJob, train
    from tunelab.train.speed import decide_compile

    t_start = time.perf_counter()
    torch.manual_seed(SEED)
    net, tok, used = _load(model, threads)
    train_samples, held_samples = _samples(warmup + steps, batch_size, max_length)
    rows, encoded = common.encode_rows(train_samples, tok, max_length, packing)
    held_rows, _ = common.encode_rows(held_samples, tok, max_length, False)
    method = build_method(LORA)
    method.frozen_cast_ok = cast_frozen  # frozen base weights stored in bf16 (bf16 runs)
    torch.manual_seed(SEED)
    net = method.apply(net)
    total = warmup + steps
    if not isinstance(compile, bool):  # "auto": what a user's run of this length gets (the runner's decision)
        compile, _ = decide_compile(compile, net, "lora", total, "cpu")
    cfg = TrainConfig(max_steps=total, batch_size=batch_size, lr=LR, warmup_ratio=0.0, schedule="cosine",
                      seed=SEED, save_every=0, eval_every=0, log_every=1, threads=threads,
                      compile=compile)
    sources = sorted({s.source for s in train_samples})
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        job = TrainJob(net, method, rows, sources, cfg, precision, Path(tmp), tok.pad_token_id, packing)
        t_train = time.perf_counter()
        model, summary = train(job)
        train_seconds = time.perf_counter() - t_train
        method.save_final(model, tok, Path(tmp) / "final")
        saved_at = time.time()
        peak = common.peak_rss_mb()
        metrics = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps_rows = [r for r in metrics if "step_time_s" in r]
    timed = [r for r in steps_rows if r["step"] > warmup]
    tokens, seconds = sum(r["tokens"] for r in timed), sum(r["step_time_s"] for r in timed)
    lengths = None if packing else [len(r.input_ids) for r in rows]
    batches = Batches(len(rows), batch_size, SEED, lengths=lengths)
    samples_seen = sum(len(rows[j].ids) for k in range(total) for j in batches.micro(k)[0])
    flops, seq = _flops(model, encoded)
    return {
        "side": "tunelab", "packing": packing, "compile": compile, "cast_frozen": cast_frozen, "precision": precision, "threads": used,
        "tokens_per_s": tokens / seconds if seconds else None, "timed_tokens": tokens,
        "timed_seconds": round(seconds, 3), "timed_steps": len(timed), "peak_mem_mb": round(peak, 1),
        "last_train_loss": summary["final_loss"],
        "heldout_loss": common.heldout_loss(model, held_rows, tok.pad_token_id, precision, batch_size),
        "samples_seen": samples_seen, "target_tokens_timed": sum(r["target_tokens"] for r in timed),
        "flops_per_token": flops, "attn_seq_len": round(seq, 1),
        "matmul_params": common.matmul_params(model)[0],
        "trainable_matmul_params": common.matmul_params(model)[1],
        "train_seconds": round(train_seconds, 2), "setup_seconds": round(t_train - t_start, 2),
        "saved_at": saved_at, "first_step_seconds": summary.get("first_step_seconds"),
        "tokens_per_step": tokens / max(1, len(timed)),
        "target_tokens_per_step": sum(r["target_tokens"] for r in timed) / max(1, len(timed)),
    }


def trl_side(model: str, steps: int, warmup: int, batch_size: int, max_length: int, precision: str,
             packing: bool, threads: int | None, gradient_checkpointing: bool = False) -> dict[str, Any]:
    """Train with TRL ``SFTTrainer`` + peft LoRA in this process; the figures of one run."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    t_start = time.perf_counter()
    torch.manual_seed(SEED)
    net, tok, used = _load(model, threads)
    train_samples, held_samples = _samples(warmup + steps, batch_size, max_length)
    held_rows, _ = common.encode_rows(held_samples, tok, max_length, False)
    _, encoded = common.encode_rows(train_samples, tok, max_length, True)

    def prompt(s) -> str:
        return tok.apply_chat_template(s.prompt_messages(), tokenize=False, add_generation_prompt=True)

    data = Dataset.from_list([{"prompt": prompt(s), "completion": s.response() + tok.eos_token}
                              for s in train_samples])
    total = warmup + steps
    out_dir = tempfile.mkdtemp(prefix="trl-bench-")
    args = SFTConfig(
        output_dir=out_dir, max_length=max_length, packing=packing, bf16=precision == "bf16",
        per_device_train_batch_size=batch_size, max_steps=total, learning_rate=LR,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=1, report_to=[], save_strategy="no", dataloader_num_workers=0, use_cpu=True,
        seed=SEED, data_seed=SEED, completion_only_loss=True, gradient_checkpointing=gradient_checkpointing,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    torch.manual_seed(SEED)
    trainer = SFTTrainer(model=net, args=args, train_dataset=data, processing_class=tok, peft_config=lora)

    counts: list[tuple[int, int]] = []  # (non-padding tokens, sequences) per batch, in batch order
    inner = trainer.data_collator

    def counting_collator(examples: list[dict]) -> dict:
        batch = inner(examples)
        if "attention_mask" in batch:
            counts.append((int(batch["attention_mask"].sum()), int(batch["attention_mask"].shape[0])))
        else:  # padding-free: one flat row, sequences start where positions restart
            counts.append((int(batch["input_ids"].numel()), int((batch["position_ids"] == 0).sum())))
        return batch

    trainer.data_collator = counting_collator
    timer, begin, end = common.step_timer()
    trainer.add_callback(timer)
    t_train = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t_train
    trainer.save_model(str(Path(out_dir) / "final"))
    saved_at = time.time()
    peak = common.peak_rss_mb()
    shutil.rmtree(out_dir, ignore_errors=True)
    timed = range(warmup, min(total, len(end)))
    tokens = sum(counts[k][0] for k in timed)
    seconds = sum(end[k] - begin[k] for k in timed)
    wall = sum(end[k] - end[k - 1] for k in timed if k > 0)
    wall_tokens = sum(counts[k][0] for k in timed if k > 0)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    logged_tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    flops, seq = _flops(peft_model, encoded)
    n, n_tr = common.matmul_params(peft_model)
    return {
        "side": "trl", "packing": packing, "precision": precision, "threads": used,
        "gradient_checkpointing": gradient_checkpointing,
        "tokens_per_s": tokens / seconds if seconds else None, "timed_tokens": tokens,
        "timed_seconds": round(seconds, 3), "timed_steps": len(timed),
        "tokens_per_s_wall": wall_tokens / wall if wall else None,
        "peak_mem_mb": round(peak, 1), "last_train_loss": losses[-1] if losses else None,
        "heldout_loss": common.heldout_loss(peft_model, held_rows, tok.pad_token_id, precision, batch_size),
        "samples_seen": sum(c[1] for c in counts[:total]),
        "trl_logged_tokens": logged_tokens[-1] if logged_tokens else None,
        "counted_tokens": sum(c[0] for c in counts[:total]),
        "flops_per_token": flops, "attn_seq_len": round(seq, 1), "matmul_params": n,
        "trainable_matmul_params": n_tr,
        "train_seconds": round(train_seconds, 2), "setup_seconds": round(t_train - t_start, 2),
        "saved_at": saved_at, "tokens_per_step": tokens / max(1, len(timed)),
    }


# ----------------------------------------------------------------------------- driver


def _variants(args: argparse.Namespace, precision: str) -> list[tuple[str, bool]]:
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    choice = {"true": [True], "false": [False], "both": [True, False], "auto": [True, False]}
    trl_auto = [precision == "bf16"]  # TRL's best: packing+bf16 on bf16 hosts, padding+fp32 on AVX2
    out = []
    for side in sides:
        if side == "tunelab":
            out += [("tunelab", p) for p in choice[args.tunelab_packing]]
        elif side == "trl":
            out += [("trl", p) for p in (trl_auto if args.trl_packing == "auto" else choice[args.trl_packing])]
        else:
            raise SystemExit(f"unknown side {side!r}; valid: tunelab, trl")
    return out


def _with_mfu(run: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any]:
    achieved = run["flops_per_token"] * (run["tokens_per_s"] or 0.0) / 1e9  # GFLOP/s
    run["achieved_gflops"] = round(achieved, 2)
    run["end_to_end_seconds"] = round(run["saved_at"] - run["_started_at"], 2)
    run["mfu_bf16"] = achieved / peaks["bf16"] if peaks["bf16"] else None
    run["mfu_fp32"] = achieved / peaks["fp32"] if peaks["fp32"] else None
    run["mfu"] = run["mfu_bf16"] if run["precision"] == "bf16" else run["mfu_fp32"]
    return run


def _shape_peak(args: argparse.Namespace, precision: str, run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The shape-matched peak (``common.shape_matched_peak``) of ``run``'s step: the model's GEMMs at its
    mean tokens (and target tokens) per step, in ``precision``; None without a run."""
    if run is None:
        return None
    import torch

    model, _, _ = _load(args.model, args.threads)
    tokens = int(round(run["tokens_per_step"]))
    targets = int(round(run.get("target_tokens_per_step") or tokens / 2))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    out = common.shape_matched_peak(common.gemm_shapes(model, tokens, targets), dtype)
    return {**out, "tokens_per_step": tokens, "target_tokens_per_step": targets}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="model alias or path (`tiny` for a smoke test)")
    p.add_argument("--steps", type=int, default=110, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=10,
                   help="untimed steps before them (compile happens here); steps + warmup = 120, the quickstart's")
    p.add_argument("--short", action="store_true", help="the old 15-step job (3 untimed + 12 timed): "
                   "compile auto then stays off, as it would for a run that short")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--sides", default="tunelab,trl", help="comma-separated: tunelab, trl")
    p.add_argument("--repeats", type=int, default=1, help="alternate the sides this many times; best of each")
    p.add_argument("--tunelab-packing", choices=["auto", "true", "false"], default="auto",
                   help="auto: try packed and unpacked rows, report the faster")
    p.add_argument("--trl-packing", choices=["auto", "both", "true", "false"], default="auto",
                   help="auto: packing on bf16 hosts, padding on fp32 hosts (TRL's best per METHODS.md)")
    p.add_argument("--trl-gradient-checkpointing", action="store_true",
                   help="keep SFTConfig's default gradient checkpointing (off here: faster)")
    p.add_argument("--tunelab-compile", choices=["auto", "true", "false"], default="auto",
                   help="torch.compile tunelab's decoder layers (auto: as a run of this length decides)")
    p.add_argument("--no-cast-frozen", action="store_true",
                   help="keep tunelab's frozen base weights in fp32 (before/after figure of that optimisation)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every process")
    p.add_argument("--verbose", action="store_true", help="show the sides' progress and warnings (stderr)")
    args = p.parse_args(argv)
    if args.short:
        args.steps, args.warmup = 12, 3

    from tunelab.device import decide

    common.set_threads(args.threads)
    precision, why = decide(args.precision, "cpu")
    host = common.host_info()
    peaks = common.matmul_peaks()
    job = {"model": args.model, "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
           "max_length": args.max_length, "precision": precision, "precision_evidence": why, "lr": LR,
           "seed": SEED, "lora": LORA, "data": common.data_origin(), "threads": args.threads}
    variants = _variants(args, precision)
    runs: list[dict[str, Any]] = []
    before = peaks  # a run's "after" probe is the next run's "before"
    for rep in range(args.repeats):
        for side, packing in (variants if rep % 2 == 0 else variants[::-1]):
            kw = {"model": args.model, "steps": args.steps, "warmup": args.warmup,
                  "batch_size": args.batch_size, "max_length": args.max_length, "precision": precision,
                  "packing": packing, "threads": args.threads}
            if side == "trl":
                kw["gradient_checkpointing"] = args.trl_gradient_checkpointing
            else:
                kw["compile"] = {"auto": "auto", "true": True, "false": False}[args.tunelab_compile]
                kw["cast_frozen"] = not args.no_cast_frozen
            print(f"[bench] repeat {rep + 1}/{args.repeats}: {side} packing={packing} {precision}", flush=True)
            run = common.run_in_subprocess(f"train_throughput:{side}_side", kw, args.threads, verbose=args.verbose)
            after = common.matmul_peaks()
            run["repeat"] = rep + 1
            # this host's matmul peak drifts between minutes (measured 678..2030 bf16 GFLOP/s in one
            # session): each run's MFU is against the mean of the peaks measured just before and after it
            run["peaks"] = {k: round((before[k] + after[k]) / 2, 1) for k in ("fp32", "bf16")}
            run["peaks_before_after"] = {"before": before, "after": after}
            runs.append(_with_mfu(run, run["peaks"]))
            before = after

    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        cur = best.get(run["side"])
        if cur is None or (run["tokens_per_s"] or 0) > (cur["tokens_per_s"] or 0):
            best[run["side"]] = run
    tl, trl = best.get("tunelab"), best.get("trl")
    shape_peak = _shape_peak(args, precision, tl or trl)
    for run in runs:
        gf = shape_peak and shape_peak["gflops"]
        run["mfu_shape"] = run["achieved_gflops"] / gf if gf else None

    print()
    print(common.host_line(host))
    print(f"matmul peak at start: fp32 {peaks['fp32']} GFLOP/s, bf16 {peaks['bf16']} GFLOP/s (each run: the mean "
          f"of its before/after peaks) | precision {precision} | "
          f"data {job['data']} | {args.model}, {args.steps} timed steps after {args.warmup}, "
          f"batch {args.batch_size}, max length {args.max_length}")
    if shape_peak:
        print(f"shape-matched peak: {shape_peak['gflops']} GFLOP/s ({precision}; this step's own GEMMs alone at "
              f"{shape_peak['tokens_per_step']:.0f} tokens, {shape_peak['target_tokens_per_step']:.0f} of them "
              f"targets; {len(shape_peak['shapes'])} shapes)")
    headers = ["side", "precision", "packing", "compile", "repeat", "tokens/s", "end to end s", "peak MB",
               "held-out loss", "last train loss", "samples", "bf16 peak", "MFU", "MFU bf16", "MFU fp32",
               "MFU shape-matched"]
    body = [[r["side"] + (" *" if r is best.get(r["side"]) else ""), r["precision"], r["packing"],
             r.get("compile", "-"), r["repeat"], r["tokens_per_s"], r["end_to_end_seconds"], r["peak_mem_mb"],
             f"{r['heldout_loss']:.4f}",
             None if r["last_train_loss"] is None else f"{r['last_train_loss']:.4f}", r["samples_seen"],
             r["peaks"]["bf16"],
             None if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
             None if r["mfu_bf16"] is None else f"{100 * r['mfu_bf16']:.1f}%",
             None if r["mfu_fp32"] is None else f"{100 * r['mfu_fp32']:.1f}%",
             None if r["mfu_shape"] is None else f"{100 * r['mfu_shape']:.1f}%"] for r in runs]
    print(common.table(headers, body))
    print("* = the side's best run (by tokens/s), used for the ratios below")

    result = {
        "tokens_per_s_ratio": _ratio(tl and tl["tokens_per_s"], trl and trl["tokens_per_s"]),
        "end_to_end_ratio": _ratio(trl and trl["end_to_end_seconds"], tl and tl["end_to_end_seconds"]),
        "mfu_shape_matched": tl["mfu_shape"] if tl else None, "shape_matched_peak": shape_peak,
        "peak_memory_ratio": _ratio(tl and tl["peak_mem_mb"], trl and trl["peak_mem_mb"]),
        "loss_rel_diff": (abs(tl["heldout_loss"] - trl["heldout_loss"]) / trl["heldout_loss"]
                          if tl and trl and trl["heldout_loss"] else None),
        "mfu_bf16": tl["mfu_bf16"] if tl else None,
        "mfu": tl["mfu"] if tl else None,
        "tunelab": tl, "trl": trl, "runs": runs, "job": job, "peaks": peaks, "host": host,
        "targets": {"tokens_per_s_ratio": 5.0 if precision == "bf16" else 3.0, "end_to_end_ratio": 3.0,
                    "peak_memory_ratio": 0.5, "loss_rel_diff": 0.02, "mfu_shape_matched": 0.65},
    }
    if result["tokens_per_s_ratio"] is not None:
        print(f"steady-state tokens/s ratio {result['tokens_per_s_ratio']:.2f}x, end-to-end ratio "
              f"{result['end_to_end_ratio']:.2f}x (TRL {trl['end_to_end_seconds']:.0f} s / tunelab "
              f"{tl['end_to_end_seconds']:.0f} s, process start to saved adapter), peak memory ratio "
              f"{result['peak_memory_ratio']:.2f}, held-out loss rel. diff {100 * result['loss_rel_diff']:.2f}%")
    if tl and tl["mfu_shape"] is not None:
        print(f"tunelab MFU: {100 * tl['mfu_shape']:.1f}% of the shape-matched peak, {100 * (tl['mfu'] or 0):.1f}% of "
              f"the 2048-cubed {precision} peak")
    print(common.dumps(result))
    return result


if __name__ == "__main__":
    main()
