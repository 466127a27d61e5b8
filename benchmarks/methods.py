"""Every fine-tuning method on the same data, steps and seed: trainable parameters, peak memory,
trained tokens/s and final held-out loss, side by side.

Each method runs its own recipe (``recipes/<method>.yaml``: the method's own learning rate)
through ``tunelab.run`` with the model, steps and seed overridden and generation eval off,
in its own subprocess, because a process's peak memory only grows. Figures come from the
run folders (``results.json``, ``metrics.jsonl``); peak memory is the process's peak RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU.

    python benchmarks/methods.py                               # SmolLM2-135M-Instruct, 60 steps
    python benchmarks/methods.py --model tiny --steps 3        # a smoke test in seconds
    python benchmarks/methods.py --methods lora,lisa,full --steps 120

The last line printed is one JSON object with the rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["full", "lora", "dora", "ia3", "prefix", "prompt", "adapters", "lisa", "partial",
           "very_large_dropout", "neftune"]


def run_one(method: str, model: str, steps: int, seed: int, out: Path) -> Path:
    """Train one method (in this process) and return its run folder."""
    import tunelab

    overrides = [f"model={model}", f"train.max_steps={steps}", f"train.seed={seed}", "train.save_every=0",
                 "eval.tasks=[]", "eval.baseline=false", f"name={method}"]
    return Path(tunelab.run(ROOT / "recipes" / f"{method}.yaml", overrides, out=str(out), force=True, quiet=True))


def summarize(method: str, run_dir: Path) -> dict[str, Any]:
    """One table row from a finished run folder."""
    results = json.loads((run_dir / "results.json").read_text())
    train = results["run"]["train"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "tokens_per_s" in r]
    timed = steps[1:] or steps  # the first step pays for warm-up
    tokens = sum(r["tokens"] for r in timed)
    seconds = sum(r["step_time_s"] for r in timed)
    return {
        "method": method,
        "trainable_params": train["trainable_parameters"],
        "trainable_pct": round(100 * train["trainable_parameters"] / train["total_parameters"], 3),
        "peak_mem_mb": round(max(r["peak_mem_mb"] for r in steps), 1),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "heldout_loss": round(train.get("heldout_loss", float("nan")), 4),
        "final_train_loss": round(train["final_loss"], 4),
        "precision": results["run"].get("precision"),
        "run_dir": str(run_dir),
    }


def in_subprocess(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one method in a fresh Python process; its peak memory is its own."""
    cmd = [sys.executable, __file__, "--one", method, "--model", args.model, "--steps", str(args.steps),
           "--seed", str(args.seed), "--out", str(args.out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"method": method, "error": f"exit {proc.returncode}"}
    return summarize(method, Path(proc.stdout.strip().splitlines()[-1]))


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'method':<20}{'trainable':>12}{'%':>8}{'peak MB':>10}{'tok/s':>9}{'heldout':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['method']:<20}  failed ({r['error']})")
            continue
        lines.append(f"{r['method']:<20}{r['trainable_params']:>12,}{r['trainable_pct']:>8.2f}{r['peak_mem_mb']:>10.0f}"
                     f"{r['tokens_per_s'] or 0:>9.0f}{r['heldout_loss']:>9.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated recipe names")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="alias, hub id, local dir or 'tiny'")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "tunelab-bench-methods")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method, print its run folder
    args = ap.parse_args(argv)
    if args.one:
        print(run_one(args.one, args.model, args.steps, args.seed, args.out / args.model.replace("/", "_")))
        return 0
    unknown = [m for m in args.methods.split(",") if not (ROOT / "recipes" / f"{m}.yaml").is_file()]
    if unknown:
        ap.error(f"no recipe for {', '.join(unknown)}; choices: {', '.join(METHODS)}")
    rows = []
    for method in args.methods.split(","):
        rows.append(in_subprocess(method, args))
        print(f"[bench] {method}: done", file=sys.stderr, flush=True)
    print(table(rows))
    print(json.dumps({"model": args.model, "steps": args.steps, "seed": args.seed, "rows": rows}))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
