"""GPU smoke + throughput check (run where CUDA is available; never in CI).

Builds a randomly initialised model with SmolLM2-135M's shape (no download), applies LoRA
r=16 to all linear layers, and trains through tunelab's one loop on synthetic chat rows
(packed and unpacked) with ``precision: auto``. Prints tokens/s, peak memory and the
precision chosen, then one JSON line.

    python benchmarks/gpu_check.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunelab.config import TrainConfig
from tunelab.data.tokenize import IGNORE, Encoded, pack
from tunelab.device import decide
from tunelab.methods import build_method
from tunelab.train.loop import TrainJob, train


def smollm2_shaped() -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True, rope_theta=100000.0)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def synthetic(n: int, vocab: int, seed: int = 0) -> list[Encoded]:
    """Samples of 150-400 tokens; the last third carries targets (like a chat answer)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(150, 400)
        ids = [rng.randrange(vocab) for _ in range(length)]
        cut = 2 * length // 3
        targets = [ids[t + 1] if t + 1 >= cut else IGNORE for t in range(length - 1)] + [IGNORE]
        out.append(Encoded(ids, targets, "synthetic", str(i)))
    return out


def measure(packing: bool, steps: int, batch: int, max_len: int) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision, why = decide("auto", device)
    method = build_method({"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0})
    model = method.apply(smollm2_shaped())
    rows = pack(synthetic(600, 49152), ["synthetic"], max_len, packing)
    cfg = TrainConfig(max_steps=steps, batch_size=batch, lr=3e-4, precision=precision, save_every=0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as d:
        train(TrainJob(model, method, rows, ["synthetic"], cfg, precision, Path(d), 0, packing))
        metrics = [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    timed = [m for m in metrics if "tokens_per_s" in m][3:]  # after warm-up
    tok_s = sum(m["tokens"] for m in timed) / sum(m["step_time_s"] for m in timed)
    return {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "precision": precision,
            "precision_decision": why, "packing": packing, "tokens_per_s": round(tok_s, 1),
            "peak_mem_mb": round(max(m["peak_mem_mb"] for m in timed), 1), "final_loss": timed[-1]["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    a = ap.parse_args()
    rows = [measure(p, a.steps, a.batch_size, a.max_length) for p in (True, False)]
    for r in rows:
        print(f"{r['device']:24s} {r['precision']:5s} packing={r['packing']!s:5s} "
              f"{r['tokens_per_s']:10.1f} tok/s  peak {r['peak_mem_mb']:8.1f} MB  loss {r['final_loss']:.3f}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
