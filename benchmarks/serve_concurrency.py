"""Serving concurrency: one request alone vs 8 concurrent requests through the OpenAI API.

Starts ``tunelab.serve`` (in this process, on 127.0.0.1) over SmolLM2-135M-Instruct (``--model
tiny``: the built-in tiny model), then, through the official ``openai`` client: one warm-up request,
then ``--repeats`` times: one timed request, then ``--concurrency`` requests at once from as many
threads (same settings: greedy, ``max_tokens`` 64; different prompts). speed-up = concurrency x
single / concurrent wall time (medians over the repeats): what the server's continuous batching
gains over answering the requests one after another. Prompts ask for long answers, so requests
generate about the same number of tokens (printed). ``same_text_as_alone``: whether the first
prompt's greedy text in the batch equals its text alone (exact in fp32; bf16 CPU kernels round
batched rows differently, so long completions can drift).

    python benchmarks/serve_concurrency.py
    python benchmarks/serve_concurrency.py --model tiny

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import torch

from tunelab.device import cpu_name
from tunelab.generate.build import build_generator
from tunelab.generate.hf import HFGenerator
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.serve import running_server

PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market in a big city, with all the sounds and smells.",
    "Write a detailed recipe for bread, with every step explained.",
    "Tell me everything you know about the history of the printing press.",
    "Write a long letter to a friend about your summer holidays by the sea.",
    "Explain how rain forms, from the ocean to the clouds and back.",
    "Describe your ideal house, room by room, in detail.",
]


def build(model: str, batch_size: int, precision: str) -> Any:
    """The generator to serve: the tiny model built in code, or ``build_generator(model)``."""
    if model == "tiny":
        tok = tiny_tokenizer()
        return HFGenerator(tiny_model(len(tok)), tok, batch_size=batch_size, progress=False)
    return build_generator(model, batch_size=batch_size, precision=precision, progress=False)


def ask(client: openai.OpenAI, name: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One greedy chat completion: its text, completion tokens and wall seconds."""
    start = time.perf_counter()
    r = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0
    )
    seconds = time.perf_counter() - start
    return {"text": r.choices[0].message.content, "tokens": r.usage.completion_tokens, "seconds": seconds}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the model; ``repeats`` times, time one request, then ``concurrency`` requests sent together."""
    gen = build(args.model, args.batch_size, args.precision)
    name = args.model.rsplit("/", 1)[-1]
    n, max_tokens = args.concurrency, args.max_tokens
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    singles, walls = [], []
    with running_server(gen, model_name=name) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=900)
        ask(client, name, prompts[0], 8)  # warm-up (first-call allocations)
        with ThreadPoolExecutor(n) as pool:
            for _ in range(args.repeats):
                singles.append(ask(client, name, prompts[0], max_tokens))
                start = time.perf_counter()
                together = list(pool.map(lambda p: ask(client, name, p, max_tokens), prompts))
                walls.append(time.perf_counter() - start)
        max_rows, batching = server.loop.max_rows, server.loop.batching
    single = statistics.median(s["seconds"] for s in singles)
    wall = statistics.median(walls)
    return {
        "model": args.model,
        "precision": getattr(gen, "precision", None),
        "batching": batching,
        "max_rows_decoded_together": max_rows,
        "repeats": args.repeats,
        "single_seconds": single,
        "single_seconds_all": [s["seconds"] for s in singles],
        "single_tokens": singles[-1]["tokens"],
        "concurrent_seconds": wall,
        "concurrent_seconds_all": walls,
        "concurrent_tokens": [r["tokens"] for r in together],
        "concurrency": n,
        "speedup": n * single / wall,
        "same_text_as_alone": together[0]["text"] == singles[-1]["text"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="a model alias / hub id / folder, or 'tiny'")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16, help="rows the server decodes together at most")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (medians are reported)")
    args = p.parse_args(argv)

    res = measure(args)
    res["host"] = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
                   "torch": torch.__version__, "python": platform.python_version()}
    n = res["concurrency"]
    print(f"host: {res['host']['cpu']} | torch threads {res['host']['torch_threads']} | "
          f"{res['model']} ({res['precision']}) | greedy, max_tokens {args.max_tokens}")
    print(f"medians of {res['repeats']} rounds")
    print(f"1 request:            {res['single_seconds']:7.2f} s  ({res['single_tokens']} tokens)")
    print(f"{n} concurrent requests: {res['concurrent_seconds']:7.2f} s  (tokens {res['concurrent_tokens']}; "
          f"at most {res['max_rows_decoded_together']} rows decoded together)")
    print(f"speed-up ({n} x single / concurrent): {res['speedup']:.2f}x; "
          f"greedy text same as alone: {res['same_text_as_alone']}")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
