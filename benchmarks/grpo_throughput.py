"""A GRPO job: tunelab's loop (``objective: grpo``) against TRL ``GRPOTrainer`` + peft, side by side.

The job: SmolLM2-135M-Instruct, LoRA r=16 alpha=32 (no dropout) on all linear layers, the
``calculator`` environment's arithmetic tasks as prompts (its instruction, worked example and
question as the user turn), G = 4 completions per prompt, ``--batch-size`` completions per step
(batch / G prompts), at most ``--max-new-tokens`` tokens each at temperature 1, one optimizer step
per generation, beta 0, TRL's default ``dapo`` loss, the reward 1 when the completion's
``finish[...]`` answer is right and ``--format-credit`` (default 0.5) when it gives a wrong answer in
that format (the environment's graded score, ``format_credit``; a format reward, as GRPO recipes add).
With success alone SmolLM2-135M-Instruct earns 0 on every episode, every group agrees, and a step trains
nothing. Single-turn on both sides (tunelab: ``episode_steps: 1``), so the same work is timed. The first
``--warmup`` steps are not timed; each side runs in its own subprocess (peak RSS per side).

* steps/s and tokens/s: timed steps (generation + training) / their seconds; tokens are the prompt and
  completion tokens of the step's episodes.
* generation share: seconds sampling / step seconds (tunelab logs ``seconds_generation``).
* zero-advantage share: episodes whose group's rewards all agree (tunelab logs ``zero_advantage``).
  tunelab leaves them out of the forward and backward pass by default (their gradient is exactly zero;
  ``--skip-zero-advantage off`` computes them as TRL does, the like-for-like figure). With a model that
  never solves the task (reward 0 everywhere) every episode is skipped and the step is generation only:
  report both figures, and the share, or the comparison says nothing about training.
* peak memory: the subprocess's peak RSS after training. ``--tokens-per-pass`` (the tunelab side's
  ``train.tokens_per_pass``) and ``--return-freed-blocks`` (glibc's mmap threshold held, as checkpointed runs
  do) trade speed for memory; the README gives both figures. ``--memory-phases`` splits the peak:
  sampling and training apart, each with the bytes malloc had handed out at that moment (the rest of the
  RSS is freed memory the allocator keeps).

    python benchmarks/grpo_throughput.py
    python benchmarks/grpo_throughput.py --model tiny --steps 1 --warmup 0 --max-new-tokens 8

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

LR = 1e-5
SEED = 0
GROUP = 4
LORA = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def _load(model_name: str, threads: int | None):
    from tunelab.config import ModelConfig
    from tunelab.models.load import load_model

    used = common.set_threads(threads)
    model, tok, _ = load_model(ModelConfig(model_name))
    return model, tok, used


def _objective(max_new_tokens: int, oneshot: bool, skip_zero_advantage: bool = True,
               format_credit: float = 0.0, share_prefix: bool = True) -> dict[str, Any]:
    return {"name": "grpo", "env": "calculator", "group_size": GROUP, "max_new_tokens": max_new_tokens,
            "episode_steps": 1, "temperature": 1.0, "task_limit": 512, "reward": "score",
            "env_options": {"oneshot": oneshot, "format_credit": format_credit},
            "skip_zero_advantage": skip_zero_advantage, "share_prefix": share_prefix}


def _tokens_per_pass(text: str) -> int | str | None:
    """``--tokens-per-pass``: ``auto``, ``none`` (one pass per micro-batch) or a positive number of positions."""
    word = text.strip().lower()
    if word in ("auto", "none", "null"):
        return None if word != "auto" else "auto"
    if not word.isdigit() or int(word) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, none or a positive number of positions")
    return int(word)


def tunelab_side(model: str, steps: int, warmup: int, batch_size: int, max_new_tokens: int, precision: str,
                 threads: int | None, oneshot: bool = True, skip_zero_advantage: bool = True,
                 format_credit: float = 0.0, tokens_per_pass: int | str | None = "auto",
                 return_freed: bool = False, share_prefix: bool = True, memory_phases: bool = False,
                 trim_heap: str = "auto") -> dict[str, Any]:
    """GRPO with ``tunelab.train.loop.train`` and its rollouts in this process; the figures of one run
    (``memory_phases``: also the peak memory of sampling and of training, by :class:`common.PhaseMemory`)."""
    import torch

    from tunelab.config import TrainConfig
    from tunelab.envs.rollout import Rollouts
    from tunelab.methods.base import build_method
    from tunelab.train.loop import TrainJob, train
    from tunelab.train.objectives import build_objective
    from tunelab.train.speed import return_freed_blocks

    t_start = time.perf_counter()
    if return_freed:  # what checkpointed runs do: glibc's mmap threshold held (less memory, more page faults)
        return_freed_blocks()
    torch.manual_seed(SEED)
    net, tok, used = _load(model, threads)
    total = warmup + steps
    cfg = TrainConfig(max_steps=total, batch_size=batch_size, lr=LR, warmup_ratio=0.0, seed=SEED, save_every=0,
                      eval_every=0, log_every=1, threads=threads, compile=False, tokens_per_pass=tokens_per_pass,
                      trim_heap={"on": True, "off": False}.get(trim_heap, "auto"))
    method = build_method(LORA)
    net = method.apply(net)
    objective = build_objective(_objective(max_new_tokens, oneshot, skip_zero_advantage, format_credit, share_prefix))
    with tempfile.TemporaryDirectory(prefix="tl-grpo-bench-") as tmp:
        job = TrainJob(net, method, [], ["calculator"], cfg, precision, Path(tmp), tok.pad_token_id, False,
                       objective=objective)
        job.rollouts = Rollouts(objective, tok, batch_size, precision, 2048, SEED)
        phases = common.PhaseMemory() if memory_phases else None
        if phases is not None:  # sampling inside the rollouts call, training from its return to the step's end
            sample = job.rollouts

            def sampled(step: int, model: Any) -> Any:
                phases.enter("sampling")
                rows = sample(step, model)
                phases.enter("training")
                return rows

            job.rollouts = sampled
            job.probes = [*job.probes, lambda done, model: phases.enter("between steps")]
        t_train = time.perf_counter()
        train(job)
        train_seconds = time.perf_counter() - t_train
        by_phase = phases.stop() if phases is not None else None
        peak = common.peak_rss_mb()
        metrics = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed = [r for r in metrics if "step_time_s" in r and r["step"] > warmup]
    seconds = sum(r["step_time_s"] for r in timed)
    return {
        "side": "tunelab", "precision": precision, "threads": used,
        "steps_per_s": len(timed) / seconds if seconds else None,
        "tokens_per_s": sum(r["tokens"] for r in timed) / seconds if seconds else None,
        "generation_share": sum(r["seconds_generation"] for r in timed) / seconds if seconds else None,
        "zero_advantage_share": sum(r.get("zero_advantage", 0) for r in timed) / max(1, len(timed)),
        "skip_zero_advantage": skip_zero_advantage, "tokens_per_pass": tokens_per_pass, "return_freed": return_freed,
        "share_prefix": share_prefix, "trim_heap": trim_heap,
        "completion_tokens": sum(r["completion_tokens"] for r in timed) / max(1, len(timed)),
        "reward": sum(r["reward"] for r in timed) / max(1, len(timed)),
        "timed_seconds": round(seconds, 3), "timed_steps": len(timed), "peak_mem_mb": round(peak, 1),
        "train_seconds": round(train_seconds, 2), "setup_seconds": round(t_train - t_start, 2),
        "memory_phases": by_phase,
    }


def trl_side(model: str, steps: int, warmup: int, batch_size: int, max_new_tokens: int, precision: str,
             threads: int | None, oneshot: bool = True, format_credit: float = 0.0) -> dict[str, Any]:
    """GRPO with TRL ``GRPOTrainer`` + peft LoRA in this process; the figures of one run."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from tunelab.envs.base import get_env

    t_start = time.perf_counter()
    torch.manual_seed(SEED)
    net, tok, used = _load(model, threads)
    total = warmup + steps
    env = get_env("calculator", oneshot=oneshot, format_credit=format_credit)
    tasks = env.tasks(512, SEED)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": env.prompt(t)}], "task": i}
                              for i, t in enumerate(tasks)])
    rewards: list[float] = []

    def reward(completions, task, **kw) -> list[float]:
        out = []
        for c, i in zip(completions, task):
            text = c[-1]["content"] if isinstance(c, list) else str(c)
            step = env.act(text.split("\nObservation:")[0])
            out.append(float(env.verify(tasks[i], step.answer)["score"]))
        rewards.extend(out)
        return out

    out_dir = tempfile.mkdtemp(prefix="trl-grpo-bench-")
    args = GRPOConfig(output_dir=out_dir, per_device_train_batch_size=batch_size, num_generations=GROUP,
                      max_completion_length=max_new_tokens, temperature=1.0, beta=0.0, max_steps=total,
                      learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0, logging_steps=1,
                      report_to=[], save_strategy="no", dataloader_num_workers=0, use_cpu=True,
                      bf16=precision == "bf16", seed=SEED, data_seed=SEED, disable_tqdm=True)
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    torch.manual_seed(SEED)
    trainer = GRPOTrainer(model=net, reward_funcs=[reward], args=args, train_dataset=data, processing_class=tok,
                          peft_config=lora)
    timer, begin, end = common.step_timer()
    trainer.add_callback(timer)
    t_train = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t_train
    peak = common.peak_rss_mb()
    shutil.rmtree(out_dir, ignore_errors=True)
    logs = [h for h in trainer.state.log_history if "num_tokens" in h]
    timed = range(warmup, min(total, len(end)))
    seconds = sum(end[k] - begin[k] for k in timed)
    tokens = [logs[k]["num_tokens"] - (logs[k - 1]["num_tokens"] if k else 0) for k in timed] if logs else []
    lengths = [logs[k].get("completions/mean_length", 0.0) for k in timed] if logs else []
    return {
        "side": "trl", "precision": precision, "threads": used,
        "steps_per_s": len(timed) / seconds if seconds else None,
        "tokens_per_s": sum(tokens) / seconds if seconds and tokens else None,
        "generation_share": None, "zero_advantage_share": None, "completion_tokens": sum(lengths) / max(1, len(lengths)),
        "reward": sum(rewards) / max(1, len(rewards)),
        "timed_seconds": round(seconds, 3), "timed_steps": len(timed), "peak_mem_mb": round(peak, 1),
        "train_seconds": round(train_seconds, 2), "setup_seconds": round(t_train - t_start, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="model alias or path (`tiny` for a smoke test)")
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    p.add_argument("--batch-size", type=int, default=8, help="completions per step (a multiple of G = 4)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--no-oneshot", action="store_true", help="the question alone (no instruction or example)")
    p.add_argument("--format-credit", type=float, default=0.5,
                   help="reward of a wrong answer given as finish[...] (0: success only, every reward 0 for SmolLM2)")
    p.add_argument("--skip-zero-advantage", choices=["on", "off"], default="on",
                   help="tunelab side: leave zero-advantage episodes out of the pass (default) or compute them")
    p.add_argument("--tokens-per-pass", type=_tokens_per_pass, default="auto",
                   help="tunelab side: positions per forward/backward pass (train.tokens_per_pass: auto, a number, "
                        "or none for one pass per micro-batch)")
    p.add_argument("--return-freed-blocks", action="store_true",
                   help="tunelab side: hold glibc's mmap threshold at 128 KiB (as checkpointed runs do), so freed "
                        "activations return to the OS: less peak memory, slower steps")
    p.add_argument("--share-prefix", choices=["on", "off"], default="on",
                   help="tunelab side: each group's prompt once in the training forward (on, the default) or every "
                        "episode whole, as TRL (off)")
    p.add_argument("--trim-heap", choices=["auto", "on", "off"], default="auto",
                   help="tunelab side: train.trim_heap, the heap's free pages back to the OS after sampling and "
                        "after each step (glibc malloc_trim; auto: off, measured slower)")
    p.add_argument("--memory-phases", action="store_true",
                   help="tunelab side: the peak memory of sampling and of training apart, with the bytes malloc "
                        "had handed out at each peak (the rest is freed memory the allocator keeps)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--sides", default="tunelab,trl")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    from tunelab.device import decide

    common.set_threads(args.threads)
    precision, why = decide(args.precision, "cpu")
    host = common.host_info()
    runs = []
    for side in [s.strip() for s in args.sides.split(",") if s.strip()]:
        kw = {"model": args.model, "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens, "precision": precision, "threads": args.threads,
              "oneshot": not args.no_oneshot, "format_credit": args.format_credit}
        if side == "tunelab":
            kw["skip_zero_advantage"] = args.skip_zero_advantage == "on"
            kw["tokens_per_pass"] = args.tokens_per_pass
            kw["return_freed"] = args.return_freed_blocks
            kw["share_prefix"] = args.share_prefix == "on"
            kw["trim_heap"] = args.trim_heap
            kw["memory_phases"] = args.memory_phases
        print(f"[bench] {side} GRPO {precision}", flush=True)
        runs.append(common.run_in_subprocess(f"grpo_throughput:{side}_side", kw, args.threads, verbose=args.verbose))
    by = {r["side"]: r for r in runs}
    tl, trl = by.get("tunelab"), by.get("trl")
    print()
    print(common.host_line(host))
    print(f"precision {precision} ({why}) | {args.model}, GRPO G={GROUP}, calculator, {args.steps} timed steps after "
          f"{args.warmup}, {args.batch_size} completions per step, at most {args.max_new_tokens} new tokens, "
          f"format credit {args.format_credit}, tunelab tokens per pass {args.tokens_per_pass or 'one per micro-batch'}"
          f"{', freed blocks returned to the OS' if args.return_freed_blocks else ''}, shared prefix {args.share_prefix}, trim heap {args.trim_heap}")
    headers = ["side", "steps/s", "tokens/s", "generation share", "zero-advantage share", "completion tokens",
               "reward", "peak MB"]
    body = [[r["side"] + (" (skips zero-advantage)" if r.get("skip_zero_advantage") else ""), r["steps_per_s"],
             r["tokens_per_s"], r["generation_share"], r["zero_advantage_share"], r["completion_tokens"],
             r["reward"], r["peak_mem_mb"]] for r in runs]
    print(common.table(headers, body, digits=3))
    if tl and tl.get("memory_phases"):
        print(common.table(["tunelab phase", "peak RSS MB", "malloc live at that peak MB"],
                           [[k, v["peak_rss_mb"], v["malloc_live_mb"]] for k, v in tl["memory_phases"].items()],
                           digits=1))
    result = {
        "steps_per_s_ratio": tl["steps_per_s"] / trl["steps_per_s"] if tl and trl and trl["steps_per_s"] else None,
        "peak_memory_ratio": tl["peak_mem_mb"] / trl["peak_mem_mb"] if tl and trl else None,
        "tunelab": tl, "trl": trl, "host": host, "targets": {"steps_per_s_ratio": 3.0, "peak_memory_ratio": 0.5},
    }
    if result["steps_per_s_ratio"] is not None:
        print(f"steps/s ratio {result['steps_per_s_ratio']:.2f}x, peak memory ratio {result['peak_memory_ratio']:.2f}")
    print(common.dumps(result))
    return result


if __name__ == "__main__":
    main()
