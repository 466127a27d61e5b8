"""Does compiling part of the model speed up decoding? Eager against ``torch.compile`` (dynamic shapes) on
the generator's own decode copy, region by region (issue 42: evaluation is most of a study run).

Each region runs in its own Python process: the model (LoRA r 16 on every linear layer, ``lora_B`` drawn
from a seeded normal so the adapter changes the answers), ``--prompts`` prompts of three lengths, greedy,
``--max-new-tokens`` new tokens, decoded by :class:`tunelab.generate.hf.HFGenerator` eagerly ``--eager``
times, then with the region compiled: a first compiled pass (it pays the compile), then ``--compiled``
timed passes. Reported per region: seconds of each pass, whether the compiled answers are the eager ones
(how many prompts differ), dynamo's graph breaks, graphs and recompilations.

Regions: ``layer`` (every decoder layer; dynamo specialises on each layer's cache index), ``mlp`` (each
layer's MLP), ``proj`` (the MLP and the attention's q/k/v/o projections), ``layer_unspec`` (every layer with
``torch._dynamo.config.allow_unspec_int_on_nn_module``, so integer attributes stop specialising the graph).

    python benchmarks/decode_compile.py                                  # SmolLM2, every region
    python benchmarks/decode_compile.py --model tiny --regions mlp --prompts 2 --max-new-tokens 4

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

REGIONS = ("layer", "mlp", "proj", "layer_unspec")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def modules_to_compile(layers: list, region: str) -> list:
    """The modules ``region`` compiles, in order (each compiled on its own)."""
    if region in ("layer", "layer_unspec"):
        return list(layers)
    if region == "mlp":
        return [layer.mlp for layer in layers]
    if region == "proj":
        return [m for layer in layers for m in (layer.mlp, *(getattr(layer.self_attn, n) for n in PROJECTIONS))]
    raise ValueError(f"unknown region {region!r}; valid choices: {', '.join(REGIONS)}")


def probe(model: str, region: str, prompts: int, max_new_tokens: int, eager: int, compiled: int, precision: str,
          seed: int = 0) -> dict[str, Any]:
    """One region in this process (called in a child by :func:`main`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch._dynamo.utils import counters

    from tunelab.config import ModelConfig
    from tunelab.device import decide
    from tunelab.generate.base import GenerationConfig
    from tunelab.generate.hf import HFGenerator
    from tunelab.models.load import load_model
    from tunelab.train.loop import decoder_layers

    torch.manual_seed(seed)
    net, tok, _ = load_model(ModelConfig(model))
    net = get_peft_model(net, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    resolved, _ = decide(precision, "cpu")
    texts = [f"Question {i}: what is {i} plus {i * 7}? Answer step by step. " * (1 + i % 3) for i in range(prompts)]
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    gen = HFGenerator(net, tok, batch_size=16, precision=resolved, progress=False)

    def timed() -> tuple[float, list[list[str]]]:
        t = time.perf_counter()
        out = gen.generate(texts, cfg)
        return round(time.perf_counter() - t, 3), out

    eager_runs = [timed() for _ in range(eager)]
    if region == "layer_unspec":
        torch._dynamo.config.allow_unspec_int_on_nn_module = True
    for module in modules_to_compile(decoder_layers(gen.model)[1], region):
        module.compile(dynamic=True)
    first = timed()
    compiled_runs = [timed() for _ in range(compiled)]
    reference = eager_runs[0][1]
    return {
        "model": model, "region": region, "precision": resolved, "prompts": prompts,
        "max_new_tokens": max_new_tokens, "threads": torch.get_num_threads(),
        "eager_s": [s for s, _ in eager_runs], "compile_run_s": first[0], "compiled_s": [s for s, _ in compiled_runs],
        "eager_repeatable": all(out == reference for _, out in eager_runs),
        "prompts_differing": max((sum(a != b for a, b in zip(reference, out)) for _, out in compiled_runs), default=0),
        "graph_breaks": sum(counters["graph_break"].values()),
        "graphs": counters["stats"].get("unique_graphs", 0),
        "frames_compiled": counters["frames"].get("ok", 0), "frames_total": counters["frames"].get("total", 0),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--regions", default=",".join(REGIONS), help=f"comma-separated: {', '.join(REGIONS)}")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--eager", type=int, default=2, help="timed eager passes")
    p.add_argument("--compiled", type=int, default=2, help="timed compiled passes after the compiling one")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    regions = [r for r in args.regions.split(",") if r]
    for r in regions:
        if r not in REGIONS:
            p.error(f"unknown region {r!r}; valid choices: {', '.join(REGIONS)}")
    host = common.host_info()
    results = []
    for region in regions:
        print(f"[bench] region {region}", flush=True)
        kw = {"model": args.model, "region": region, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
              "eager": args.eager, "compiled": args.compiled, "precision": args.precision}
        results.append(common.run_in_subprocess("decode_compile:probe", kw, args.threads, verbose=args.verbose))
    print()
    print(common.host_line(host))
    print(f"{args.model}, LoRA r16, {args.prompts} prompts x {args.max_new_tokens} greedy tokens, "
          f"precision {results[0]['precision'] if results else '-'}")
    body = [[r["region"], ", ".join(map(str, r["eager_s"])), r["compile_run_s"], ", ".join(map(str, r["compiled_s"])),
             f"{r['prompts_differing']} of {r['prompts']}", r["graph_breaks"],
             f"{r['frames_compiled']}/{r['frames_total']}"] for r in results]
    print(common.table(["region", "eager s", "compile run s", "compiled s", "prompts differing", "graph breaks",
                        "frames compiled/total"], body, digits=2))
    result = {"host": host, "regions": results}
    print(common.dumps(result))
    return result


if __name__ == "__main__":
    main()
