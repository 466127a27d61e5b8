"""What one study run costs: a 100-step LoRA run of SmolLM2-135M-Instruct with 200 short-answer items
evaluated, timed phase by phase (issue 42: target <= 120 s on a bf16 host, model load included).

Two runs of the same job go in sequence, each in its own Python process, as a sweep runs them:

* ``first``: a fresh data cache and base-evaluation cache (the converted model stays in
  ``TUNELAB_CACHE``): what a study's first run pays;
* ``repeat``: the next seed, reusing the tokenised data and the base model's evaluation from the
  first (what every later run of a sweep pays).

Each prints its breakdown from ``results.json`` (``run.phases``, see ``tunelab.runner.run.Phases``):
interpreter start and imports, model load, data, base evaluation, preparing the method, compile
(the first step's time above the median step), the training steps, held-out evaluations, saving, the
tuned evaluation; and the process's wall time and peak memory.

    python benchmarks/study_run.py                      # SmolLM2, 100 steps, 200 arith items
    python benchmarks/study_run.py --model tiny --steps 5 --items 8   # a smoke run (seconds)
    python benchmarks/study_run.py --profile 5          # and where 5 of the first run's steps go
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def one_run(model: str, steps: int, items: int, task: str, seed: int, out: str, data_cache: str,
            eval_cache: str, compile: str, precision: str, profile: int = 0) -> dict[str, Any]:
    """One run in this process (called in a child by :func:`main`): its phases, summary and peak RSS."""
    t0 = time.perf_counter()
    from tunelab.config import RunConfig, from_dict
    from tunelab.runner.run import load_results, run

    t_imports = time.perf_counter() - t0
    cfg = from_dict(RunConfig, {
        "model": model,
        "data": {"sources": [{"name": "arith", "task": "arith", "count": 2000}], "max_length": 256,
                 "packing": False, "heldout": 32},
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": steps, "batch_size": 8, "lr": 6.0e-4, "warmup_ratio": 0.05, "precision": precision,
                  "seed": seed, "save_every": 0, "compile": compile, "profile_steps": profile},
        "eval": {"tasks": [task], "limit": items, "max_new_tokens": 64, "batch_size": 32},
        "out": out,
    })
    run_dir = run(cfg, quiet=True, data_cache=data_cache, base_eval_cache=eval_cache)
    results = load_results(run_dir)
    return {"imports": round(t_imports, 2), "phases": results["run"]["phases"], "train": results["run"]["train"],
            "seconds": results["run"]["seconds"], "reused": results["run"].get("reused", {}),
            "score": results[task]["tuned"], "base": results[task].get("base"),
            "precision": results["run"]["precision"], "peak_rss_mb": round(common.peak_rss_mb(), 1),
            "profile": results["run"]["train"].get("profile")}


def breakdown(r: dict[str, Any]) -> dict[str, float]:
    """Seconds per part of a run's wall time (the parts add up to it)."""
    ph, tr = dict(r["phases"]), r["train"]
    median, first = tr.get("median_step_seconds") or 0.0, tr.get("first_step_seconds") or 0.0
    compile_s = max(0.0, first - median)
    held = float(tr.get("heldout_seconds") or 0.0)
    parts = {"start + imports": r["_wall_s"] - r["seconds"]}
    parts |= {k: ph.get(k, 0.0) for k in ("load", "data", "base_eval", "prepare")}
    parts |= {"compile (first step above median)": compile_s, "train steps": ph.get("train", 0.0) - compile_s - held,
              "held-out evaluation": held, "save": ph.get("save", 0.0), "evaluate (tuned)": ph.get("evaluate", 0.0)}
    parts["other"] = r["_wall_s"] - sum(parts.values())
    return {k: round(v, 1) for k, v in parts.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--items", type=int, default=200, help="evaluation items (short answers)")
    p.add_argument("--task", default="arith")
    p.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile N training steps of the first run (after its first 3; train.profile_steps): "
                        "where a step's time goes, by category of operator (the first run's train figure then "
                        "includes the profiler's overhead; the repeat's does not)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    compile_ = {"auto": "auto", "true": True, "false": False}[args.compile]
    host = common.host_info()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tunelab-study-run-") as tmp:
        for which, seed in (("first", 0), ("repeat", 1)):
            kw = {"model": args.model, "steps": args.steps, "items": args.items, "task": args.task, "seed": seed,
                  "out": f"{tmp}/runs", "data_cache": f"{tmp}/data", "eval_cache": f"{tmp}/base_eval",
                  "compile": compile_, "precision": args.precision,
                  "profile": args.profile if which == "first" else 0}
            print(f"[bench] {which} run (seed {seed})", flush=True)
            runs[which] = common.run_in_subprocess("study_run:one_run", kw, args.threads, verbose=args.verbose)
    print()
    print(common.host_line(host))
    print(f"{args.model}, LoRA r16, {args.steps} steps of 8, {args.items} {args.task} items evaluated, "
          f"precision {runs['first']['precision']}, compile {args.compile}")
    parts = {w: breakdown(r) for w, r in runs.items()}
    body = [[k, parts["first"][k], parts["repeat"][k]] for k in parts["first"]]
    body.append(["total (process wall)", runs["first"]["_wall_s"], runs["repeat"]["_wall_s"]])
    body.append(["peak RSS MB", runs["first"]["peak_rss_mb"], runs["repeat"]["peak_rss_mb"]])
    body.append([f"{args.task} tuned accuracy", runs["first"]["score"]["value"], runs["repeat"]["score"]["value"]])
    print(common.table(["seconds", "first run", "repeat (caches warm)"], body))
    if runs["first"].get("profile"):
        from tunelab.train.profile import format_summary

        print("\nthe first run's " + format_summary(runs["first"]["profile"]))
    result = {"host": host, "runs": runs, "breakdown": parts, "target_seconds": 120}
    print(common.dumps(result))
    return result


if __name__ == "__main__":
    main()
