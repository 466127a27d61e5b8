"""Generation speed: batched greedy decoding vs a per-prompt loop, and GSM8K 5-shot vs lm-eval.

Part A: the same prompts (GSM8K test questions as zero-shot chat, else ``arith`` test items), the
same ``max_new_tokens``, greedy, the same weights (a bf16 copy when bf16, as ``HFGenerator`` makes):
``HFGenerator`` (batched, left-padded, length-sorted) against ``model.generate`` called once per
prompt. tokens/s = generated tokens (up to and including the first end-of-turn token, no padding)
/ wall seconds -> ``tokens_per_s_ratio``.

Part B: tunelab's GSM8K evaluation of the first ``--gsm8k-items`` test items with 5-shot
lm-eval-style prompts, end to end in its own process (start, model load, prompts, generation,
scoring), against lm-evaluation-harness's HF backend on the same items (the peer script in
``shared/peers/lm-eval``, batch 16) -> ``vs_lm_eval_speedup`` = lm-eval seconds / ours. Without
``--lm-eval`` (or without ``lm_eval`` installed) the peer's reference figure is used (228 s of
generation for 100 items, batch 16, bf16 on an AVX-512 BF16 host). When lm-eval runs, both sides'
raw completions go through lm-eval's own regexes (from ``gsm8k_local.yaml.in``) and the extracted
strings (strict, flexible) are compared item by item.

The ``gsm8k`` task's ``fewshot=5`` prompts are lm-eval's (one ``random.Random(1234)`` draws 5
fresh train examples for each test item in turn; checked: identical prompt hashes). With
``--gsm8k-prompts lm-eval`` (default) generation stops at lm-eval's ``until`` strings plus EOS,
within lm-eval's 256-token budget; ``--gsm8k-prompts tunelab`` keeps the task's own stops (which
add ``"\\n\\n\\n"``). ``--gsm8k-only`` skips part A (e.g. for an fp32 agreement run).

    python benchmarks/generate_throughput.py --lm-eval
    python benchmarks/generate_throughput.py --model tiny --n 4 --max-new-tokens 8 --skip-gsm8k
    python benchmarks/generate_throughput.py --decode-profile smollm2-135m-instruct,gemma3-270m --max-new-tokens 96
    python benchmarks/generate_throughput.py --decode-profile runs/my-run,runs/my-run+merged

Part C (``--decode-profile``): where each model's evaluation time goes, on the same ``instruct`` items
(:func:`decode_profile`): decode tokens/s, prefill vs decode seconds, the LM head's share of a decode
step, answer lengths and the share that hits the budget, and the decoding path.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

PEER = Path(os.environ.get("TUNELAB_SHARED", "/work/shared")) / "peers" / "lm-eval"
LM_EVAL_REFERENCE_S = 228.0  # peers/lm-eval/README.md: 100 items, batch 16, bf16, AVX-512 BF16 host
LM_EVAL_UNTIL = ["Question:", "</s>", "<|im_end|>"]
LM_EVAL_MAX_GEN = 256
FEWSHOT_SEED = 1234
MERGED = "+merged"
"""Suffix of a run folder in ``--decode-profile``: its adapters merged into its weights first."""


# ----------------------------------------------------------------------------- part A


def chat_prompts(n: int) -> tuple[list, str]:
    """The first ``n`` GSM8K test questions as zero-shot chat prompts, else ``arith`` test items."""
    path = common.gsm8k_file("test")
    if path is None:
        from tunelab.data.tasks.base import get_family

        return [s.prompt_messages() for s in get_family("arith").samples("test", n, seed=0)], "task:arith"
    from tunelab.eval.tasks.gsm8k import INSTRUCTION

    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(n))]
    return [[{"role": "user", "content": f"{r['question']}\n\n{INSTRUCTION}"}] for r in rows], str(path)


def part_a(model_name: str, n: int, max_new_tokens: int, batch_size: int, precision: str,
           repeats: int) -> dict[str, Any]:
    """Batched ``HFGenerator`` vs a per-prompt ``generate`` loop on the same prompts and weights."""
    import torch

    from tunelab.config import ModelConfig
    from tunelab.generate.base import GenerationConfig, encode_prompt, n_generated
    from tunelab.generate.hf import HFGenerator
    from tunelab.models.load import load_model

    model, tok, _ = load_model(ModelConfig(model_name))
    gen = HFGenerator(model, tok, batch_size=batch_size, precision=precision, progress=False)
    net = gen.model  # the weights both paths decode with (a bf16 copy for bf16)
    eos_ids = gen.eos_ids
    eos = set(eos_ids)
    prompts, origin = chat_prompts(n)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    original = net.generate

    def batched(ps: list, c: GenerationConfig) -> tuple[list[str], int]:
        before = gen.generated_tokens  # counts every generated token, end-of-turn included
        texts = [t[0] for t in gen.generate(ps, c)]
        return texts, gen.generated_tokens - before

    @torch.no_grad()
    def loop(ps: list, c: GenerationConfig) -> tuple[list[str], int]:
        texts, tokens = [], 0
        for p in ps:
            ids = torch.tensor([encode_prompt(tok, p)])
            out = original(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=c.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=eos_ids,
                           use_cache=True, temperature=None, top_p=None, top_k=None)
            new = out[0, ids.shape[1]:].tolist()
            tokens += n_generated(new, eos)
            texts.append(tok.decode(new, skip_special_tokens=True))
        return texts, tokens

    warm = GenerationConfig(max_new_tokens=2)
    batched(prompts[:2], warm)
    loop(prompts[:1], warm)
    best: dict[str, dict[str, Any]] = {}
    texts: dict[str, list[str]] = {}
    for rep in range(repeats):
        order = [("batched", batched), ("loop", loop)]
        for name, fn in order if rep % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            out, tokens = fn(prompts, cfg)
            dt = time.perf_counter() - t0
            run = {"seconds": round(dt, 3), "tokens": tokens, "tokens_per_s": tokens / dt}
            if name not in best or run["tokens_per_s"] > best[name]["tokens_per_s"]:
                best[name], texts[name] = run, out
    same = sum(a == b for a, b in zip(texts["batched"], texts["loop"]))
    return {"prompts": origin, "n": n, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
            "precision": precision, "batched": best["batched"], "loop": best["loop"],
            "tokens_per_s_ratio": best["batched"]["tokens_per_s"] / best["loop"]["tokens_per_s"],
            "same_text_rate": same / max(1, len(prompts))}


# ----------------------------------------------------------------------------- part B


def gsm8k_side(model: str, items: int, batch_size: int, precision: str, prompts: str,
               threads: int | None, max_new_tokens: int = LM_EVAL_MAX_GEN) -> dict[str, Any]:
    """tunelab's GSM8K 5-shot evaluation in this process; per-item completions and timings."""
    from tunelab.config import ModelConfig
    from tunelab.eval.harness import evaluate
    from tunelab.eval.tasks.gsm8k import GSM8K
    from tunelab.generate.hf import HFGenerator
    from tunelab.models.load import load_model

    t0 = time.perf_counter()
    used = common.set_threads(threads)
    net, tok, _ = load_model(ModelConfig(model))
    gen = HFGenerator(net, tok, batch_size=batch_size, precision=precision, progress=False)

    task = GSM8K(fewshot=5)  # lm-eval's prompts: 5 fresh seeded train examples per item
    if prompts == "lm-eval":
        task.stop = LM_EVAL_UNTIL + [s for s in [tok.eos_token] if s not in LM_EVAL_UNTIL]
    t1 = time.perf_counter()
    result = evaluate(task, gen, limit=items, max_new_tokens=max_new_tokens)
    t2 = time.perf_counter()
    item_prompts = [it.prompt for it in task.items(items, FEWSHOT_SEED)]
    return {
        "threads": used, "load_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2),
        "generate_seconds": round(result.seconds, 2), "stop": task.stop,
        "scores": {k: v.get("value") for k, v in result.scores.items()},
        "rows": [{"id": r["id"], "completion": r["completion"], "extracted_strict": r["extracted_strict"],
                  "extracted_flexible": r["extracted_flexible"]} for r in result.rows],
        "prompt_sha256": [hashlib.sha256(p.encode()).hexdigest() for p in item_prompts],
    }


def lm_eval_filters() -> dict[str, tuple[re.Pattern, int]]:
    """lm-eval's gsm8k filters (name -> (regex, group_select)) read from the peer's task YAML."""
    import yaml

    spec = yaml.safe_load((PEER / "gsm8k_local.yaml.in").read_text())
    out = {}
    for f in spec["filter_list"]:
        step = next(s for s in f["filter"] if s["function"] == "regex")
        out[f["name"]] = (re.compile(step["regex_pattern"]), int(step.get("group_select", 0)))
    return out


def lm_eval_extract(text: str, regex: re.Pattern, group: int, fallback: str = "[invalid]") -> str:
    """lm-eval's regex filter semantics: all matches, pick one, first non-empty group, strip."""
    found = regex.findall(text)
    if not found:
        return fallback
    pick = found[group]
    if isinstance(pick, tuple):
        pick = next((g for g in pick if g), fallback)
    return pick.strip()


def run_lm_eval(model_dir: str, items: int, dtype: str, threads: int | None) -> dict[str, Any]:
    """Run the peer's lm-eval script; per-doc raw responses and filtered answers, wall seconds."""
    import subprocess

    out = tempfile.mkdtemp(prefix="lm-eval-")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = ["bash", str(PEER / "run_gsm8k.sh"), model_dir, str(items), dtype, "--log_samples", "--output_path", out]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"lm-eval failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    docs: dict[int, dict[str, Any]] = {}
    for path in glob.glob(f"{out}/**/samples_gsm8k_local_*.jsonl", recursive=True):
        for line in Path(path).read_text().splitlines():
            s = json.loads(line)
            d = docs.setdefault(int(s["doc_id"]), {"raw": s["resps"][0][0], "prompt_sha256": s.get("prompt_hash")})
            d[s["filter"]] = s["filtered_resps"][0]
    results: dict[str, Any] = {}
    for path in glob.glob(f"{out}/**/results_*.json", recursive=True):
        results = json.loads(Path(path).read_text())
    metrics = results.get("results", {}).get("gsm8k_local", {})
    return {"wall_seconds": round(wall, 2), "docs": docs, "output_path": out,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "total_evaluation_time_seconds": results.get("total_evaluation_time_seconds")}


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Item-by-item agreement of extracted strings (lm-eval's regexes on both sides' raw text)."""
    filters = lm_eval_filters()
    agree = {name: 0 for name in filters}
    both, self_check, prompts_same, n, diffs = 0, 0, 0, 0, []
    for i, row in enumerate(ours["rows"]):
        doc = theirs["docs"].get(i)
        if doc is None:
            continue
        n += 1
        ok_all = True
        for name, (regex, group) in filters.items():
            mine = lm_eval_extract(row["completion"], regex, group)
            ok = mine == doc.get(name)
            agree[name] += ok
            ok_all &= ok
            self_check += lm_eval_extract(doc["raw"], regex, group) == doc.get(name)
            if not ok and len(diffs) < 5:
                diffs.append({"id": i, "filter": name, "tunelab": mine, "lm_eval": doc.get(name)})
        both += ok_all
        prompts_same += doc.get("prompt_sha256") == ours["prompt_sha256"][i]
    rate = (lambda k: k / n) if n else (lambda k: None)
    return {"items_compared": n, "agreement": rate(both), "prompt_match_rate": rate(prompts_same),
            **{f"agreement_{name.replace('-', '_')}": rate(v) for name, v in agree.items()},
            "regex_self_check": self_check / (n * len(filters)) if n else None, "first_differences": diffs}


def part_b(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """tunelab's GSM8K run (own process) against lm-eval (run, or its reference figure)."""
    from tunelab.models.load import resolve

    kw = {"model": args.model, "items": args.gsm8k_items, "batch_size": args.batch_size,
          "precision": precision, "prompts": args.gsm8k_prompts, "threads": args.threads}
    print(f"[bench] tunelab gsm8k: {args.gsm8k_items} items, 5-shot, {precision}", flush=True)
    ours = common.run_in_subprocess("generate_throughput:gsm8k_side", kw, args.threads, verbose=args.verbose)
    out: dict[str, Any] = {"items": args.gsm8k_items, "prompts": args.gsm8k_prompts,
                           "tunelab": {k: v for k, v in ours.items() if k not in ("rows", "prompt_sha256")}}
    out["tunelab"]["wall_seconds"] = ours["_wall_s"]
    have = importlib.util.find_spec("lm_eval") is not None
    if args.lm_eval and have:
        dtype = "bfloat16" if precision == "bf16" else "float32"
        print(f"[bench] lm-eval gsm8k: {args.gsm8k_items} items, 5-shot, {dtype}", flush=True)
        theirs = run_lm_eval(resolve(args.model)[0], args.gsm8k_items, dtype, args.threads)
        out["lm_eval"] = {k: v for k, v in theirs.items() if k != "docs"}
        out["lm_eval"]["source"] = "measured (process wall, end to end)"
        out["comparison"] = compare(ours, theirs)
        out["vs_lm_eval_speedup"] = theirs["wall_seconds"] / ours["_wall_s"]
        out["basis"] = "process wall time of both, end to end, same host"
    else:
        why = "--lm-eval not given" if have else "lm_eval is not installed"
        ref = LM_EVAL_REFERENCE_S * args.gsm8k_items / 100
        out["lm_eval"] = {"wall_seconds": ref, "source": f"reference figure from the peer README ({why}): "
                          "228 s of generation per 100 items, batch 16, bf16, AVX-512 BF16 host"}
        out["vs_lm_eval_speedup"] = ref / ours["_wall_s"]
        out["vs_lm_eval_speedup_generation"] = ref / ours["generate_seconds"] if ours["generate_seconds"] else None
        out["basis"] = "reference generation seconds / our process wall (end to end; conservative)"
    return out


# ----------------------------------------------------------------------------- part C


def decode_profile(model: str, task: str, n: int, max_new_tokens: int, batch_size: int,
                   precision: str) -> dict[str, Any]:
    """Where a model's evaluation time goes (issue 42: gemma's tuned evaluation 3.6x its base's): the
    ``task``'s first ``n`` items generated as its evaluation does, timed by hooks: prefill forwards
    (more than one input token) vs decode steps, and within decode the LM head (its vocabulary is 5x
    SmolLM2's on gemma); how long the answers are and how many hit ``max_new_tokens``; the decoding
    path (continuous batching, or fixed left-padded batches for sliding-window caches). ``model``: an
    alias, a path or a run folder (its tuned weights, adapters live as its evaluation decodes them);
    ``RUN+merged``: the run's adapters merged into its weights first (what merging before evaluation
    would save)."""
    import torch

    from tunelab.eval.tasks.base import get_task
    from tunelab.generate.base import encode_prompt
    from tunelab.generate.hf import HFGenerator
    from tunelab.train.artifacts import load_for_inference

    merged = model.endswith(MERGED)
    net, tok, _ = load_for_inference(model[: -len(MERGED)] if merged else model, "cpu", merge=merged)
    gen = HFGenerator(net, tok, batch_size=batch_size, precision=precision, progress=False)
    t = get_task(task)
    items = t.items(n, 0)
    cfg = t.generation_config(max_new_tokens)
    clock: dict[str, float] = {"prefill": 0.0, "decode": 0.0, "head": 0.0, "decode_steps": 0, "decode_rows": 0}
    started: dict[str, float] = {}
    body = gen.model
    head = getattr(body, "get_base_model", lambda: body)().get_output_embeddings()

    def before(mod, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        started["call"], started["kind"] = time.perf_counter(), "decode" if ids.shape[1] == 1 else "prefill"
        if ids.shape[1] == 1:
            clock["decode_steps"] += 1
            clock["decode_rows"] += ids.shape[0]

    def after(mod, args, kwargs, out):
        clock[started["kind"]] += time.perf_counter() - started["call"]

    def head_before(mod, args):
        started["head"] = time.perf_counter()

    def head_after(mod, args, out):
        if started.get("kind") == "decode":
            clock["head"] += time.perf_counter() - started["head"]

    hooks = [body.register_forward_pre_hook(before, with_kwargs=True),
             body.register_forward_hook(after, with_kwargs=True),
             head.register_forward_pre_hook(head_before), head.register_forward_hook(head_after)]
    t0, tokens0 = time.perf_counter(), gen.generated_tokens
    texts = [c[0] for c in gen.generate([it.prompt for it in items], cfg)]
    wall = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    tokens = gen.generated_tokens - tokens0
    lengths = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in texts]
    return {
        "model": model, "task": task, "items": len(items), "max_new_tokens": cfg.max_new_tokens,
        "path": ("continuous batching" if gen.batches_continuously([encode_prompt(tok, it.prompt) for it in items], cfg)
                 else "fixed batches (sliding-window cache)"),
        "vocab": int(head.weight.shape[0]), "hidden": int(head.weight.shape[1]),
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
        "wall_seconds": round(wall, 2), "generated_tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
        "mean_answer_tokens": round(sum(lengths) / max(1, len(lengths)), 1),
        "at_max_share": round(sum(x >= cfg.max_new_tokens - 1 for x in lengths) / max(1, len(lengths)), 3),
        "prefill_seconds": round(clock["prefill"], 2), "decode_seconds": round(clock["decode"], 2),
        "decode_steps": clock["decode_steps"],
        "mean_decode_batch": round(clock["decode_rows"] / max(1, clock["decode_steps"]), 1),
        "ms_per_decode_step": round(1000 * clock["decode"] / max(1, clock["decode_steps"]), 2),
        "head_share_of_decode": round(clock["head"] / clock["decode"], 3) if clock["decode"] else None,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="model alias or path (`tiny` for a smoke test)")
    p.add_argument("--n", type=int, default=32, help="prompts for part A")
    p.add_argument("--max-new-tokens", type=int, default=128, help="part A's generation budget")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--repeats", type=int, default=1, help="alternate batched/loop this many times; best of each")
    p.add_argument("--gsm8k-items", type=int, default=100)
    p.add_argument("--gsm8k-prompts", choices=["lm-eval", "tunelab"], default="lm-eval",
                   help="stop strings: lm-eval's `until` + EOS, or the task's own")
    p.add_argument("--gsm8k-only", action="store_true", help="part B only")
    p.add_argument("--skip-gsm8k", action="store_true", help="part A only")
    p.add_argument("--lm-eval", action="store_true", help="run lm-eval's HF backend too (else its reference figure)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every process")
    p.add_argument("--verbose", action="store_true", help="show the GSM8K side's progress and warnings")
    p.add_argument("--decode-profile", default="", metavar="MODELS",
                   help="part C only: comma-separated models or run folders, each profiled in its own process; "
                        "RUN+merged: the run with its adapters merged into its weights")
    p.add_argument("--profile-task", default="instruct", help="part C's evaluation task")
    p.add_argument("--profile-items", type=int, default=64, help="part C's items")
    args = p.parse_args(argv)
    if args.decode_profile:
        return profile_main(args)

    from tunelab.device import decide

    common.set_threads(args.threads)
    precision, why = decide(args.precision, "cpu")
    host = common.host_info()
    a = None
    if not args.gsm8k_only:
        print(f"[bench] part A: {args.n} prompts, {args.max_new_tokens} new tokens, {precision}", flush=True)
        a = part_a(args.model, args.n, args.max_new_tokens, args.batch_size, precision, args.repeats)
    b = None
    if not args.skip_gsm8k:
        if common.gsm8k_file("test") is None:
            print("[bench] part B skipped: no $TUNELAB_DATA_DIR/gsm8k/test.jsonl", flush=True)
        else:
            b = part_b(args, precision)

    print()
    print(common.host_line(host))
    print(f"precision {precision} | {args.model} | part A prompts: {a['prompts'] if a else '-'}")
    rows = []
    if a:
        rows += [[f"A: batched (HFGenerator, batch {args.batch_size})", a["batched"]["tokens"],
                  a["batched"]["seconds"], a["batched"]["tokens_per_s"]],
                 ["A: per-prompt generate loop", a["loop"]["tokens"], a["loop"]["seconds"], a["loop"]["tokens_per_s"]]]
    if b:
        tl = b["tunelab"]
        rows.append([f"B: tunelab gsm8k {b['items']} items (process wall)", None, tl["wall_seconds"], None])
        rows.append(["B:   of which generation", None, tl["generate_seconds"], None])
        rows.append([f"B: lm-eval gsm8k ({'measured' if 'comparison' in b else 'reference'})", None,
                     b["lm_eval"]["wall_seconds"], None])
    print(common.table(["what", "tokens", "seconds", "tokens/s"], rows, digits=2))
    if a:
        print(f"part A: batched/loop tokens/s {a['tokens_per_s_ratio']:.2f}x "
              f"(same text {100 * a['same_text_rate']:.0f}%)")
    if b:
        print(f"part B: lm-eval seconds / ours {b['vs_lm_eval_speedup']:.2f}x ({b['basis']}); "
              f"tunelab scores {b['tunelab']['scores']}")
        if "comparison" in b:
            c = b["comparison"]
            print(f"part B: extracted-answer agreement {c['agreement']} over {c['items_compared']} items "
                  f"(strict {c['agreement_strict_match']}, flexible {c['agreement_flexible_extract']}); "
                  f"identical prompts {c['prompt_match_rate']}")
    result = {"tokens_per_s_ratio": a["tokens_per_s_ratio"] if a else None,
              "vs_lm_eval_speedup": b["vs_lm_eval_speedup"] if b else None,
              "agreement": b["comparison"]["agreement"] if b and "comparison" in b else None,
              "generate": a, "gsm8k": b, "precision": precision, "precision_evidence": why, "host": host,
              "targets": {"tokens_per_s_ratio": 3.0, "vs_lm_eval_speedup": 2.0, "agreement": 0.95}}
    print(common.dumps(result))
    return result


def profile_main(args: argparse.Namespace) -> dict[str, Any]:
    """Part C for each model of ``--decode-profile``, each in its own process; one table."""
    from tunelab.device import decide

    precision, _ = decide(args.precision, "cpu")
    host = common.host_info()
    runs = []
    for model in [m.strip() for m in args.decode_profile.split(",") if m.strip()]:
        print(f"[bench] part C: {model} on {args.profile_items} {args.profile_task} items", flush=True)
        runs.append(common.run_in_subprocess(
            "generate_throughput:decode_profile",
            {"model": model, "task": args.profile_task, "n": args.profile_items,
             "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "precision": precision},
            args.threads, verbose=args.verbose))
    print()
    print(common.host_line(host))
    keys = ["path", "vocab", "parameters_m", "wall_seconds", "generated_tokens", "tokens_per_s",
            "mean_answer_tokens", "at_max_share", "prefill_seconds", "decode_seconds", "decode_steps",
            "mean_decode_batch", "ms_per_decode_step", "head_share_of_decode"]
    print(common.table(["figure"] + [r["model"] for r in runs], [[k] + [r[k] for r in runs] for k in keys], digits=2))
    result = {"decode_profile": runs, "precision": precision, "host": host}
    print(common.dumps(result))
    return result


if __name__ == "__main__":
    main()
