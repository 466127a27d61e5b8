"""The one training loop, for every method.

rows (packed token rows) -> micro-batches -> per-token loss (per source) -> AdamW step
-> method.on_step -> metrics.jsonl / checkpoints. Built on ``accelerate``: launched with
``accelerate launch`` the same loop runs DDP/FSDP, each process taking its share of rows.
"""

from __future__ import annotations

import contextlib
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from tunelab.config import TrainConfig
from tunelab.data.tokenize import IGNORE, Row, collate, epoch_order
from tunelab.methods.base import Method
from tunelab.train import checkpoint
from tunelab.train.loss import per_source, token_losses
from tunelab.train.optim import build_optimizer, lr_at, set_lr
from tunelab.train.precision import autocast, cast_frozen_linears


@dataclass
class TrainJob:
    model: nn.Module
    method: Method
    rows: list[Row]
    sources: list[str]
    cfg: TrainConfig
    precision: str
    run_dir: Path
    pad_id: int
    packing: bool = True
    heldout: list[Row] = field(default_factory=list)
    resume: bool = False


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class Batches:
    """Row indices for micro-batch k: a pure function of (k, seed), sharded over processes."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 lengths: list[int] | None = None):
        self.n, self.bs, self.seed, self.rank, self.world = n_rows, batch_size, seed, rank, world
        self.lengths = lengths
        self._orders: dict[int, list[int]] = {}

    def _row(self, p: int) -> int:
        epoch = p // self.n
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.n, epoch, self.seed, self.lengths, self.bs * self.world)}
        return self._orders[epoch][p % self.n]

    def micro(self, k: int) -> tuple[list[int], float]:
        start = (k * self.world + self.rank) * self.bs
        return [self._row(p) for p in range(start, start + self.bs)], start / self.n


def heldout_loss(model: nn.Module, rows: list[Row], job: TrainJob, device: torch.device) -> dict[str, float]:
    """Mean held-out loss overall and per source (no dropout, no gradients)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(job.sources), dtype=torch.float64)
    counts = torch.zeros_like(sums)
    with torch.no_grad(), autocast(device.type, job.precision):
        for i in range(0, len(rows), job.cfg.batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[i : i + job.cfg.batch_size], job.pad_id, job.packing).items()}
            losses, src = token_losses(model, batch, job.cfg.loss_chunk, job.method.virtual_tokens)
            s, c = per_source(losses.cpu(), src.cpu(), len(job.sources))
            sums, counts = sums + s, counts + c
    model.train(was_training)
    out = {f"heldout_loss/{n}": (sums[i] / counts[i]).item() for i, n in enumerate(job.sources) if counts[i] > 0}
    out["heldout_loss"] = (sums.sum() / counts.sum().clamp(min=1)).item()
    return out


def compile_layers(model: nn.Module, device: torch.device):
    """``train.compile``: compile each decoder layer (one graph serves them all: same code, the
    weights are inputs). On CPU, SDPA layers also switch to ``tunelab_cpu`` attention (SDPA's
    flash forward, a matmul backward that inductor fuses; see ``tunelab.models.attention``).
    Returns a function that undoes both, for evaluation."""
    from tunelab.methods.layers import decoder_layers
    from tunelab.models.attention import register

    layers = decoder_layers(model)[1]
    attn = getattr(model.config, "_attn_implementation", None)
    if device.type == "cpu" and attn == "sdpa":
        model.set_attn_implementation(register())
    for layer in layers:
        layer.compile(dynamic=True)

    def restore() -> None:
        for layer in layers:
            layer._compiled_call_impl = None
        if getattr(model.config, "_attn_implementation", None) != attn:
            model.set_attn_implementation(attn)

    return restore


def _drop_metrics_after(path: Path, step: int) -> None:
    """Keep only metrics rows up to ``step`` (a resumed run logs the later steps again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    tmp.replace(path)


def train(job: TrainJob) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. Ctrl-C writes a checkpoint first."""
    cfg, method = job.cfg, job.method
    acc = Accelerator(mixed_precision="no", step_scheduler_with_optimizer=False)
    device = acc.device
    model = job.model.to(device)
    model.train()
    if job.precision == "bf16" and method.frozen_cast_ok:
        cast_frozen_linears(model)
    restore = compile_layers(model, device) if cfg.compile else (lambda: None)
    ckpt_dir = job.run_dir / "checkpoints"
    start = 0
    state = None
    if job.resume and (last := checkpoint.latest(ckpt_dir)) is not None:
        weights, state, meta = checkpoint.load(last)
        method.load_state(meta.get("method", {}))
        method.load_trainable_state(model, weights)
        start = meta["step"]
    optimizer = build_optimizer(model, method, cfg)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
    model, optimizer = acc.prepare(model, optimizer)
    lengths = None if job.packing else [len(r.input_ids) for r in job.rows]  # group unpacked rows by length
    plan = Batches(len(job.rows), cfg.batch_size, cfg.seed, acc.process_index, acc.num_processes, lengths)
    _drop_metrics_after(job.run_dir / "metrics.jsonl", start)  # rows of steps redone after a resume
    metrics = (job.run_dir / "metrics.jsonl").open("a")
    bar = tqdm(total=cfg.max_steps, initial=start, desc="train", disable=not acc.is_main_process, dynamic_ncols=True)
    step, completed, last_loss = start, start, float("nan")
    step_rng = checkpoint.rng_state()

    def save(step: int, rng: dict | None = None) -> None:
        if acc.is_main_process:
            weights = method.trainable_state(acc.unwrap_model(model))
            checkpoint.save(ckpt_dir, step, weights, optimizer, {"method": method.state()},
                            cfg.keep_checkpoints, rng)

    try:
        for step in range(start, cfg.max_steps):
            t0 = time.perf_counter()
            step_rng = checkpoint.rng_state()  # an interrupted step restarts from here
            if method.on_step(step, acc.unwrap_model(model)):
                optimizer = build_optimizer(acc.unwrap_model(model), method, cfg, previous=optimizer)
            set_lr(optimizer, lr_at(step, cfg))
            micro = [plan.micro(step * cfg.grad_accum + i) for i in range(cfg.grad_accum)]
            micro_batches = [collate([job.rows[j] for j in idx], job.pad_id, job.packing) for idx, _ in micro]
            n_tgt = torch.tensor(float(sum(int((b["targets"] != IGNORE).sum()) for b in micro_batches)), device=device)
            n_tgt = acc.reduce(n_tgt, reduction="sum")  # loss is normalised by target tokens of the whole step
            sums = torch.zeros(len(job.sources), dtype=torch.float64)
            counts = torch.zeros_like(sums)
            tokens = 0
            for i, cpu_batch in enumerate(micro_batches):
                batch = {k: v.to(device) for k, v in cpu_batch.items()}
                tokens += int((batch["source_idx"] >= 0).sum())
                sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else acc.no_sync(model)
                with sync, autocast(device.type, job.precision):
                    losses, src = token_losses(model, batch, cfg.loss_chunk, method.virtual_tokens, cfg.compile)
                    loss = losses.sum() * acc.num_processes / n_tgt.clamp(min=1)
                acc.backward(loss)
                s, c = per_source(losses.cpu(), src.cpu(), len(job.sources))
                sums, counts = sums + s, counts + c
            grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            completed = step + 1
            dt = time.perf_counter() - t0
            last_loss = (sums.sum() / counts.sum().clamp(min=1)).item()
            row = {"step": step + 1, "loss": last_loss, "lr": optimizer.param_groups[0]["lr"],
                   "grad_norm": float(grad_norm), "tokens": tokens, "target_tokens": int(counts.sum()),
                   "tokens_per_s": tokens * acc.num_processes / dt, "step_time_s": dt,
                   "epoch": micro[-1][1], "peak_mem_mb": peak_mem_mb(device)}
            row.update({f"loss/{n}": (sums[i] / counts[i]).item() for i, n in enumerate(job.sources) if counts[i] > 0})
            done = completed
            if job.heldout and cfg.eval_every and done % cfg.eval_every == 0:
                row.update(heldout_loss(model, job.heldout, job, device))
            if acc.is_main_process and (done % cfg.log_every == 0 or done == cfg.max_steps):
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if cfg.save_every and done % cfg.save_every == 0 and done < cfg.max_steps:
                save(done)
    except KeyboardInterrupt:
        save(completed, rng=None if completed > step else step_rng)
        bar.close()
        print(f"\n[tunelab] interrupted: checkpoint at step {completed} in {ckpt_dir}; continue with --resume")
        raise
    finally:
        metrics.close()
        restore()
    bar.close()
    model = acc.unwrap_model(model)
    summary = {"steps": cfg.max_steps, "final_loss": last_loss, "resumed_from": start}
    if job.heldout:
        final = heldout_loss(model, job.heldout, job, device)
        summary.update(final)
        if acc.is_main_process:
            with (job.run_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({"step": cfg.max_steps, **final}) + "\n")
    job.model = model
    return summary
