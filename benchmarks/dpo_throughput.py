"""A DPO step: tunelab's loop (``objective: dpo``) against TRL ``DPOTrainer`` + peft, side by side.

The job: SmolLM2-135M-Instruct, LoRA r=16 alpha=32 (no dropout) on all linear layers, batch 8
pairs, max length 512, beta 0.1, the same pairs on both sides: a GSM8K train question (from
``$TUNELAB_DATA_DIR/gsm8k``, else the built-in ``arith`` family) with its worked solution as the
chosen completion and the solution of the next question as the rejected one. Both sides compute
the reference log-probabilities once before training (TRL: ``precompute_ref_log_probs=True``,
tunelab: always), outside the timed steps; the first ``--warmup`` steps are not timed. Each side
runs in its own subprocess (peak RSS per side).

* tokens/s: non-padding tokens of the chosen and rejected sequences / step seconds.
* peak memory: the subprocess's peak RSS after training.
* MFU: model FLOP/s (METHODS.md count, both sequences) / the matmul peak measured before and after.
* loss: each side's mean DPO loss over its timed steps (same pairs, same order is not guaranteed:
  the figures agree in size, not step by step; exact agreement is in tests/train/test_trl_parity.py).

    python benchmarks/dpo_throughput.py
    python benchmarks/dpo_throughput.py --model tiny --steps 2 --warmup 1 --max-length 128

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

LR = 5e-5
SEED = 0
BETA = 0.1
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def _pairs(n: int) -> list:
    """``n`` pair Samples: question + its solution (chosen) vs the next question's solution (rejected)."""
    from tunelab.types import Sample

    samples = common.chat_samples(n + 1)
    out = []
    for a, b in zip(samples, samples[1:]):
        out.append(Sample(list(a.messages), {**a.meta, "rejected": [{"role": "assistant", "content": b.response()}]}))
    return out[:n]


def _load(model_name: str, threads: int | None):
    from tunelab.config import ModelConfig
    from tunelab.models.load import load_model

    used = common.set_threads(threads)
    model, tok, _ = load_model(ModelConfig(model_name))
    return model, tok, used


def _flops(model, lengths: list[int]) -> tuple[float, float]:
    seq = sum(lengths) / max(1, len(lengths))
    return common.model_flops_per_token(model, None, seq), seq


def tunelab_side(model: str, steps: int, warmup: int, batch_size: int, max_length: int, precision: str,
                 threads: int | None, compile: bool = False, gradient_checkpointing: bool | str = "auto",
                 tokens_per_pass: int | str | None = "auto") -> dict[str, Any]:
    """DPO with ``tunelab.train.loop.train`` in this process; the figures of one run."""
    import torch

    from tunelab.config import TrainConfig
    from tunelab.data.preference import build_pref_rows
    from tunelab.methods.base import build_method
    from tunelab.train.loop import TrainJob, train
    from tunelab.train.objectives import build_objective, reference_logps

    t_start = time.perf_counter()
    torch.manual_seed(SEED)
    net, tok, used = _load(model, threads)
    total = warmup + steps
    pairs = _pairs(total * batch_size)
    rows, dropped = build_pref_rows(pairs, "pairs", tok, [pairs[0].source], max_length, "right", SEED)
    cfg = TrainConfig(max_steps=total, batch_size=batch_size, lr=LR, warmup_ratio=0.0, schedule="cosine",
                      seed=SEED, save_every=0, eval_every=0, log_every=1, threads=threads, compile=compile,
                      gradient_checkpointing=gradient_checkpointing, tokens_per_pass=tokens_per_pass)
    t_ref = time.perf_counter()
    net = net.to(torch.device("cpu"))
    reference_logps(net, rows, tok.pad_token_id, precision, cfg)
    ref_seconds = time.perf_counter() - t_ref
    method = build_method(LORA)
    torch.manual_seed(SEED)
    net = method.apply(net)
    objective = build_objective({"name": "dpo", "beta": BETA})
    with tempfile.TemporaryDirectory(prefix="tl-dpo-bench-") as tmp:
        job = TrainJob(net, method, rows, [pairs[0].source], cfg, precision, Path(tmp), tok.pad_token_id, False,
                       objective=objective)
        t_train = time.perf_counter()
        model_out, summary = train(job)
        train_seconds = time.perf_counter() - t_train
        peak = common.peak_rss_mb()
        metrics = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed = [r for r in metrics if "step_time_s" in r and r["step"] > warmup]
    tokens, seconds = sum(r["tokens"] for r in timed), sum(r["step_time_s"] for r in timed)
    flops, seq = _flops(model_out, [len(e.input_ids) for r in rows for e in r.seqs])
    return {
        "side": "tunelab", "precision": precision, "threads": used, "compile": compile,
        "gradient_checkpointing": job_cfg_checkpointing(gradient_checkpointing, tokens_per_pass),
        "tokens_per_pass": job_cfg_passes(tokens_per_pass),
        "tokens_per_s": tokens / seconds if seconds else None, "timed_tokens": tokens,
        "timed_seconds": round(seconds, 3), "timed_steps": len(timed), "peak_mem_mb": round(peak, 1),
        "mean_loss": sum(r["loss"] for r in timed) / max(1, len(timed)),
        "reward_accuracy": sum(r.get("rewards/accuracy", 0) for r in timed) / max(1, len(timed)),
        "pairs": len(rows), "dropped": dropped, "flops_per_token": flops, "attn_seq_len": round(seq, 1),
        "reference_seconds": round(ref_seconds, 2), "train_seconds": round(train_seconds, 2),
        "setup_seconds": round(t_train - t_start, 2),
    }


def trl_side(model: str, steps: int, warmup: int, batch_size: int, max_length: int, precision: str,
             threads: int | None, gradient_checkpointing: bool = True) -> dict[str, Any]:
    """DPO with TRL ``DPOTrainer`` + peft LoRA in this process (DPOConfig's default gradient
    checkpointing unless told otherwise); the figures of one run."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    t_start = time.perf_counter()
    torch.manual_seed(SEED)
    net, tok, used = _load(model, threads)
    total = warmup + steps
    pairs = _pairs(total * batch_size)
    data = Dataset.from_list([{"prompt": s.prompt_messages(), "chosen": [s.messages[-1]],
                               "rejected": s.meta["rejected"]} for s in pairs])
    out_dir = tempfile.mkdtemp(prefix="trl-dpo-bench-")
    args = DPOConfig(output_dir=out_dir, max_length=max_length, bf16=precision == "bf16", beta=BETA,
                     per_device_train_batch_size=batch_size, max_steps=total, learning_rate=LR,
                     lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                     logging_steps=1, report_to=[], save_strategy="no", dataloader_num_workers=0, use_cpu=True,
                     seed=SEED, data_seed=SEED, precompute_ref_log_probs=True, disable_tqdm=True,
                     gradient_checkpointing=gradient_checkpointing)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    torch.manual_seed(SEED)
    trainer = DPOTrainer(model=net, args=args, train_dataset=data, processing_class=tok, peft_config=lora)
    counts: list[int] = []
    inner = trainer.data_collator

    def counting_collator(examples: list[dict]) -> dict:
        batch = inner(examples)
        counts.append(int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting_collator
    timer, begin, end = common.step_timer()
    trainer.add_callback(timer)
    t_train = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t_train
    peak = common.peak_rss_mb()
    shutil.rmtree(out_dir, ignore_errors=True)
    n_batches = len(counts)
    offset = n_batches - total  # batches the precompute pass drew through the same collator come first
    timed = range(warmup, min(total, len(end)))
    tokens = sum(counts[offset + k] for k in timed)
    seconds = sum(end[k] - begin[k] for k in timed)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    timed_logs = logs[warmup:]
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    lengths = [len(tok(tok.apply_chat_template(m, tokenize=False), add_special_tokens=False)["input_ids"])
               for s in pairs for m in (s.messages, s.prompt_messages() + s.meta["rejected"])]
    flops, seq = _flops(peft_model, lengths)
    return {
        "side": "trl", "precision": precision, "threads": used, "gradient_checkpointing": gradient_checkpointing,
        "tokens_per_s": tokens / seconds if seconds else None, "timed_tokens": tokens,
        "timed_seconds": round(seconds, 3), "timed_steps": len(timed), "peak_mem_mb": round(peak, 1),
        "mean_loss": sum(h["loss"] for h in timed_logs) / max(1, len(timed_logs)),
        "reward_accuracy": sum(h.get("rewards/accuracies", 0) for h in timed_logs) / max(1, len(timed_logs)),
        "pairs": len(pairs), "flops_per_token": flops, "attn_seq_len": round(seq, 1),
        "train_seconds": round(train_seconds, 2), "setup_seconds": round(t_train - t_start, 2),
    }


def job_cfg_checkpointing(requested: bool | str, tokens_per_pass: int | str | None = "auto") -> str:
    """What tunelab's loop chose for a DPO job: ``auto`` checkpoints pairs only when the step is not cut
    into passes."""
    from tunelab.train.speed import decide_checkpointing, decide_passes

    passes, _ = decide_passes(tokens_per_pass, "pairs", True)
    on, _ = decide_checkpointing(requested, "pairs", False, passes)
    return f"{'on' if on else 'off'}{' (auto)' if requested == 'auto' else ''}"


def job_cfg_passes(requested: int | str | None) -> str:
    """Positions per pass the loop chose for a DPO job."""
    from tunelab.train.speed import decide_passes

    n, _ = decide_passes(requested, "pairs", True)
    return f"{n or '-'}{' (auto)' if requested == 'auto' else ''}"


def _with_mfu(run: dict[str, Any], peaks: dict[str, Any]) -> dict[str, Any]:
    achieved = run["flops_per_token"] * (run["tokens_per_s"] or 0.0) / 1e9
    run["achieved_gflops"] = round(achieved, 2)
    run["mfu"] = achieved / peaks[run["precision"]] if peaks.get(run["precision"]) else None
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="model alias or path (`tiny` for a smoke test)")
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--sides", default="tunelab,trl")
    p.add_argument("--tunelab-compile", action="store_true")
    p.add_argument("--tunelab-gradient-checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="tunelab's train.gradient_checkpointing (default auto: on for DPO, as TRL's DPOConfig)")
    p.add_argument("--trl-no-gradient-checkpointing", action="store_true",
                   help="turn off DPOConfig's default gradient checkpointing")
    p.add_argument("--tunelab-tokens-per-pass", default="auto",
                   help="tunelab's train.tokens_per_pass: auto (the default: passes of 1024 positions for DPO), "
                        "none (one pass per step), or a number of positions")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    from tunelab.device import decide

    common.set_threads(args.threads)
    precision, why = decide(args.precision, "cpu")
    host = common.host_info()
    before = common.matmul_peaks()
    runs = []
    for side in [s.strip() for s in args.sides.split(",") if s.strip()]:
        kw = {"model": args.model, "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
              "max_length": args.max_length, "precision": precision, "threads": args.threads}
        if side == "tunelab":
            kw["compile"] = args.tunelab_compile
            kw["gradient_checkpointing"] = {"on": True, "off": False}.get(args.tunelab_gradient_checkpointing, "auto")
            n = args.tunelab_tokens_per_pass
            kw["tokens_per_pass"] = None if n == "none" else n if n == "auto" else int(n)
        else:
            kw["gradient_checkpointing"] = not args.trl_no_gradient_checkpointing
        print(f"[bench] {side} DPO {precision}", flush=True)
        run = common.run_in_subprocess(f"dpo_throughput:{side}_side", kw, args.threads, verbose=args.verbose)
        after = common.matmul_peaks()
        run["peaks"] = {k: round((before[k] + after[k]) / 2, 1) for k in ("fp32", "bf16")}
        runs.append(_with_mfu(run, run["peaks"]))
        before = after
    by = {r["side"]: r for r in runs}
    tl, trl = by.get("tunelab"), by.get("trl")
    print()
    print(common.host_line(host))
    print(f"precision {precision} ({why}) | data {common.data_origin()} | {args.model}, DPO beta {BETA}, "
          f"{args.steps} timed steps after {args.warmup}, batch {args.batch_size} pairs, max length {args.max_length}")
    headers = ["side", "grad. ckpt", "tokens/pass", "precision", "tokens/s", "peak MB", "mean DPO loss", "reward acc.", "peak GFLOP/s", "MFU"]
    body = [[r["side"], r["gradient_checkpointing"], r.get("tokens_per_pass"), r["precision"], r["tokens_per_s"], r["peak_mem_mb"], f"{r['mean_loss']:.4f}",
             f"{r['reward_accuracy']:.2f}", r["peaks"][r["precision"]],
             None if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"] for r in runs]
    print(common.table(headers, body))
    result = {
        "tokens_per_s_ratio": tl["tokens_per_s"] / trl["tokens_per_s"] if tl and trl and trl["tokens_per_s"] else None,
        "peak_memory_ratio": tl["peak_mem_mb"] / trl["peak_mem_mb"] if tl and trl else None,
        "tunelab": tl, "trl": trl, "host": host, "targets": {"tokens_per_s_ratio": 3.0, "peak_memory_ratio": 0.5},
    }
    if result["tokens_per_s_ratio"] is not None:
        print(f"tokens/s ratio {result['tokens_per_s_ratio']:.2f}x, peak memory ratio {result['peak_memory_ratio']:.2f}")
    print(common.dumps(result))
    return result


if __name__ == "__main__":
    main()
