"""The one training loop, for every method.

rows (packed token rows) -> micro-batches -> per-token loss (per source) -> AdamW step
-> method.on_step -> metrics.jsonl (and ``train.report_to`` trackers) / checkpoints, with held-out
evaluations every ``train.eval_every`` steps (best weights and early stopping: ``tunelab.train.best``).
Built on ``accelerate``: launched with ``accelerate launch`` the same loop runs DDP/FSDP, each process
taking its share of each step's rows (``train.batch_size`` rows per process and micro-batch); the logged
losses are those of the whole step, over all processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from tunelab.config import TrainConfig
from tunelab.data.tokenize import Row, collate, epoch_order
from tunelab.device import autocast
from tunelab.io import StorageError
from tunelab.methods.base import Method
from tunelab.methods.layers import decoder_layers
from tunelab.models.attention import register as register_cpu_attention
from tunelab.models.load import base_model
from tunelab.train import checkpoint, trackers
from tunelab.train.best import Best
from tunelab.train.loss import per_source, token_losses
from tunelab.train.objectives.base import Objective
from tunelab.train.objectives.sft import SFT
from tunelab.train.optim import build_optimizer, lr_at, set_lr
from tunelab.train.precision import cast_frozen_linears
from tunelab.train.profile import StepProfiler
from tunelab.train.speed import (
    decide_checkpointing,
    decide_compile,
    decide_heap_trim,
    decide_passes,
    return_freed_blocks,
    trim_heap,
)
from tunelab.train.weight_average import WeightAverage


@dataclass
class TrainJob:
    """Everything one training run needs; :func:`train` reads it and never changes it."""

    model: nn.Module
    """The model with the method applied (and regularizers installed)."""
    method: Method
    """Decides what trains and how it is saved (``on_step``, ``trainable_state``)."""
    rows: list[Row]
    """Training rows (packed, or one sample each)."""
    sources: list[str]
    """Source names; a row's ``source_idx`` indexes this list (per-source losses)."""
    cfg: TrainConfig
    """Optimisation settings."""
    precision: str
    """Resolved precision: ``fp32`` | ``bf16``."""
    run_dir: Path
    """Where metrics.jsonl and checkpoints/ go."""
    pad_id: int
    """Padding token id."""
    packing: bool = True
    """Rows are packed (else batches are grouped by length)."""
    heldout: list[Row] = field(default_factory=list)
    """Held-out rows for held-out loss per source."""
    resume: bool = False
    """Continue from the newest checkpoint in ``run_dir/checkpoints``."""
    objective: Objective = field(default_factory=SFT)
    """What each micro-batch's loss is (``tunelab.train.objectives``: SFT, DPO, KTO, ORPO ...);
    preference objectives train on :class:`~tunelab.data.preference.SeqRow` rows."""
    rows_at: Callable[[int], list[Row]] | None = None
    """The training rows of step ``k`` (0-based) when they change as training goes (a per-step
    schedule such as ``promptintern``): the same number of rows as ``rows``, row ``i`` always made
    from the same example, so batches and resume stay exact; None: ``rows`` at every step."""
    rollouts: Callable[[int, nn.Module], list] | None = None
    """Online objectives (``grpo``, ``rloo``): step ``k``'s rows, sampled from the model as it is then
    (``tunelab.envs.rollout.Rollouts``): ``batch_size x grad_accum`` rows, cut into the step's
    micro-batches in order; ``rows`` is then empty."""
    probes: list[Callable[[int, nn.Module], Any]] = field(default_factory=list)
    """Called with (steps done, model) after every optimizer step (e.g. ``GradInterference``); they
    must not change training (their gradients and RNG use are their own)."""


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes the optimizer's state holds now (AdamW: two moments per trained tensor, and its step)."""
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor))


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocations, or the CPU's max resident set."""
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
        """(row indices of micro-batch ``k`` for this process, epoch position where it starts)."""
        start = (k * self.world + self.rank) * self.bs
        return [self._row(p) for p in range(start, start + self.bs)], start / self.n


@torch.no_grad()
def heldout_loss(model: nn.Module, rows: list[Row], sources: list[str], pad_id: int, precision: str, *,
                 packing: bool = True, batch_size: int = 8, loss_chunk: int | str = "auto",
                 virtual_tokens: int = 0) -> dict[str, float]:
    """Mean loss per target token on ``rows``, overall (``heldout_loss``) and per source
    (``heldout_loss/<source>``); dropout off, no gradients. Benchmarks score every side with it."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(len(sources), dtype=torch.float64)
    counts = torch.zeros_like(sums)
    with autocast(device.type, precision):
        for i in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[i : i + batch_size], pad_id, packing).items()}
            losses, src = token_losses(model, batch, loss_chunk, virtual_tokens)
            s, c = per_source(losses.cpu(), src.cpu(), len(sources))
            sums, counts = sums + s, counts + c
    model.train(was_training)
    out = {f"heldout_loss/{n}": (sums[i] / counts[i]).item() for i, n in enumerate(sources) if counts[i] > 0}
    out["heldout_loss"] = (sums.sum() / counts.sum().clamp(min=1)).item()
    return out


def _heldout(job: TrainJob, model: nn.Module) -> dict[str, float]:
    """The objective's own held-out metrics, else :func:`heldout_loss` of the job's held-out rows with
    the job's settings."""
    own = job.objective.heldout(model, job.heldout, job.sources, job.pad_id, job.precision, job.cfg,
                                job.method.virtual_tokens)
    if own is not None:
        return own
    return heldout_loss(model, job.heldout, job.sources, job.pad_id, job.precision, packing=job.packing,
                        batch_size=job.cfg.batch_size, loss_chunk=job.cfg.loss_chunk,
                        virtual_tokens=job.method.virtual_tokens)


def compile_layers(model: nn.Module, device: torch.device):
    """``train.compile``: compile each decoder layer (one graph serves them all: same code, the
    weights are inputs). On CPU, SDPA layers also switch to ``tunelab_cpu`` attention (SDPA's
    flash forward, a matmul backward that inductor fuses; see ``tunelab.models.attention``).
    Returns a function that undoes both, for evaluation."""
    layers = decoder_layers(model)[1]
    attn = getattr(model.config, "_attn_implementation", None)
    if device.type == "cpu" and attn == "sdpa":
        model.set_attn_implementation(register_cpu_attention())
    for layer in layers:
        layer.compile(dynamic=True)

    def restore() -> None:
        for layer in layers:
            layer._compiled_call_impl = None
        if getattr(model.config, "_attn_implementation", None) != attn:
            model.set_attn_implementation(attn)

    return restore


class MetricsLog:
    """``metrics.jsonl``: one JSON row per logged step, appended and flushed as training goes.

    On resume the rows of steps after the checkpoint are dropped first (they are logged again).
    ``also`` receives every row written (the ``train.report_to`` trackers).
    """

    def __init__(self, path: Path, resume_step: int, enabled: bool = True,
                 also: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path, self.enabled, self.also = path, enabled, also
        if enabled and path.is_file():
            keep = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            tmp.replace(path)
        self._f = None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (a no-op off the main process); opens the file again after :meth:`close`."""
        if not self.enabled:
            return
        try:
            if self._f is None:
                self._f = self.path.open("a")
            self._f.write(json.dumps(row) + "\n")
            self._f.flush()
        except OSError as e:  # disk full: the rows already written stay; say which file
            raise StorageError(e.errno, f"could not write {self.path}: {e.strerror or e}") from e
        if self.also is not None:
            self.also(row)

    def close(self) -> None:
        """Close the file."""
        if self._f is not None:
            self._f.close()
            self._f = None


def _resume(job: TrainJob, model: nn.Module, ckpt_dir: Path, best: Best | None) -> tuple[int, dict | None]:
    """Load the newest checkpoint into ``model``, the method and ``best``: (step it ends, optimizer/RNG state)."""
    last = checkpoint.latest_good(ckpt_dir) if job.resume else None
    if last is None:
        return 0, None
    weights, state, meta = checkpoint.load(last)
    job.method.load_state(meta.get("method", {}))
    job.method.load_trainable_state(model, weights)
    if best is not None:
        best.load_state(meta.get("best", {}), checkpoint.load_best(last))
    return meta["step"], state


def passes(rows: list, idx: list[int], budget: int,
           size: Callable[[list], int] = lambda rs: len(rs) * max(r.width for r in rs)) -> list[list[int]]:
    """``idx`` cut, in order, into runs whose collated ``size`` (default: rows x the widest row's ``width``;
    the objective's :meth:`~tunelab.train.objectives.base.Objective.pass_positions`) stays within ``budget``
    positions; a row wider than the budget passes alone (``train.tokens_per_pass``)."""
    out: list[list[int]] = []
    cur: list[int] = []
    for j in idx:
        if cur and size([rows[k] for k in cur + [j]]) > budget:
            out.append(cur)
            cur = []
        cur.append(j)
    return out + [cur] if cur else out


def _step(job: TrainJob, acc: Accelerator, model: nn.Module, micro_batches: list[dict]) -> tuple:
    """Forward and backward over one optimizer step's micro-batches (gradients accumulated).

    Returns (per-source loss sums, per-source unit counts, input tokens seen), each summed over all
    micro-batches and processes: the loss is the objective's summed losses over the whole step's units.
    """
    device = acc.device
    units = torch.tensor(float(sum(job.objective.units(b) for b in micro_batches)), device=device)
    units = acc.reduce(units, reduction="sum")
    sums = torch.zeros(len(job.sources), dtype=torch.float64)
    counts = torch.zeros_like(sums)
    tokens, backward = 0, False
    for i, cpu_batch in enumerate(micro_batches):
        batch = {k: v.to(device) for k, v in cpu_batch.items()}
        # skipped_tokens: tokens an objective left out of the pass because their gradient is exactly zero
        tokens += int((batch["source_idx"] >= 0).sum()) + int(batch.get("skipped_tokens", 0))
        sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else acc.no_sync(model)
        with sync, autocast(device.type, job.precision):
            losses, src = job.objective(model, batch, job.cfg, job.method.virtual_tokens)
            loss = losses.sum() * acc.num_processes / units.clamp(min=1)
        if loss.requires_grad:  # not when every unit of the micro-batch was skipped
            acc.backward(loss)
            backward = True
        s, c = per_source(losses.cpu(), src.cpu(), len(job.sources))
        sums, counts = sums + s, counts + c
    if not backward:  # the optimizer steps on zero gradients, as if they had been computed
        for p in model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
    if acc.num_processes > 1:  # this process saw its share of the step: add the others'
        n = len(job.sources)
        total = acc.reduce(torch.cat([sums, counts, sums.new_tensor([tokens])]).to(device), reduction="sum").cpu()
        sums, counts, tokens = total[:n], total[n : 2 * n], int(total[-1])
    return sums, counts, tokens


def _metrics_row(job: TrainJob, step: int, sums: torch.Tensor, counts: torch.Tensor, tokens: int,
                 seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The metrics.jsonl row of a finished step (``step`` counts steps done)."""
    row = {"step": step, "loss": (sums.sum() / counts.sum().clamp(min=1)).item(), **extra,
           "tokens": tokens, "target_tokens": int(counts.sum()), "step_time_s": seconds}
    row.update({f"loss/{n}": (sums[i] / counts[i]).item() for i, n in enumerate(job.sources) if counts[i] > 0})
    return row


def _prepare(job: TrainJob, acc: Accelerator,
             best: Best | None) -> tuple[nn.Module, torch.optim.Optimizer, int, Callable[[], None]]:
    """Device, bf16 storage of frozen weights, compilation, resume (``best`` included) and the optimizer.

    Returns (model, optimizer, steps already done, a function undoing the compilation).
    """
    model = job.model.to(acc.device).train()
    if job.precision == "bf16" and job.method.frozen_cast_ok:
        cast_frozen_linears(model)
    if job.cfg.gradient_checkpointing:  # recompute each layer's activations in backward (non-reentrant)
        inner, kw = base_model(model), {"use_reentrant": False}
        if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5.25's name
            inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
        return_freed_blocks()  # and give freed activations back to the OS (once per process)
    restore = compile_layers(model, acc.device) if job.cfg.compile else (lambda: None)
    start, state = _resume(job, model, job.run_dir / "checkpoints", best)
    optimizer = build_optimizer(model, job.method, job.cfg)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        if job.rollouts is not None and hasattr(job.rollouts, "load_state"):
            job.rollouts.load_state(state.get("rollouts", {}))  # the episodes in use (num_iterations > 1)
    model, optimizer = acc.prepare(model, optimizer)
    return model, optimizer, start, restore


def _save(job: TrainJob, acc: Accelerator, model: nn.Module, optimizer, step: int, best: Best | None,
          rng: dict | None = None) -> None:
    """Checkpoint the trainable state, optimizer, RNG, method state and ``best`` after ``step`` steps."""
    if acc.is_main_process:
        weights = job.method.trainable_state(acc.unwrap_model(model))
        meta = {"method": job.method.state()} | ({"best": best.state()} if best is not None else {})
        extra = {"rollouts": job.rollouts.state()} if hasattr(job.rollouts, "state") else None
        checkpoint.save(job.run_dir / "checkpoints", step, weights, optimizer, meta, job.cfg.keep_checkpoints,
                        rng, best.weights if best is not None else None, extra)


def _evaluate(job: TrainJob, acc: Accelerator, model: nn.Module, row: dict[str, Any], best: Best | None,
              avg: WeightAverage | None) -> bool:
    """Held-out losses into ``row`` when an evaluation is due after its step (every ``eval_every`` steps;
    with ``best``, also after the last step), of the averaged weights with ``avg``; True when early
    stopping ends training there."""
    cfg, done = job.cfg, row["step"]
    last = best is not None and done == cfg.max_steps  # the last weights are candidates too
    if not (job.heldout and cfg.eval_every and (done % cfg.eval_every == 0 or last)):
        return False
    model = acc.unwrap_model(model)  # not through DDP, whose forward would sync buffers across processes
    with avg.applied(model) if avg is not None else contextlib.nullcontext():
        row.update(_heldout(job, model))
        return best is not None and best.update(done, row, lambda: job.method.trainable_state(model))


def _finish(job: TrainJob, model: nn.Module, metrics: MetricsLog, best: Best | None, done: int,
            avg: WeightAverage | None) -> dict[str, Any]:
    """After the loop: the averaged weights (``weight_average``) or the best ones (``select_best``, among
    averaged snapshots with both) into ``model``, and the held-out losses of the model returned (metrics
    row of step ``done``); returns those summary entries."""
    if avg is not None:
        avg.apply(model)
    summary = best.finish(job.method, model) if best is not None else {}
    if avg is not None:
        summary.update(weight_average=avg.decay, weight_average_steps=avg.updates)
    if job.heldout:
        summary.update(final := _heldout(job, model))
        metrics.write({"step": done, **final})
        metrics.close()
    return summary


def train(job: TrainJob) -> tuple[nn.Module, dict[str, Any]]:
    """Run (or resume) training; returns (the trained model, a summary). Ctrl-C writes a checkpoint first.

    With ``train.select_best`` the model returned holds the best held-out evaluation's trainable weights;
    with ``train.early_stopping_patience`` training may end before ``max_steps`` (see ``tunelab.train.best``).
    """
    acc = Accelerator(mixed_precision="no", step_scheduler_with_optimizer=False,
                      **trackers.accelerator_kwargs(job.cfg, job.run_dir))
    if not isinstance(job.cfg.compile, bool):  # "auto" (a runner has decided it already, and recorded why)
        on, _ = decide_compile(job.cfg.compile, job.model, job.method.name, job.cfg.max_steps, acc.device.type)
        job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, compile=on))
    n, _ = decide_passes(job.cfg.tokens_per_pass, job.objective.kind, job.objective.per_example,
                         type(job.objective).__name__)  # "auto" where no runner decided it; a number checked
    job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, tokens_per_pass=n))
    if not isinstance(job.cfg.gradient_checkpointing, bool):  # "auto", where no runner decided it
        on, _ = decide_checkpointing(job.cfg.gradient_checkpointing, job.objective.kind, bool(job.cfg.compile),
                                     job.cfg.tokens_per_pass)
        job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, gradient_checkpointing=on))
    if not isinstance(job.cfg.trim_heap, bool):  # "auto", where no runner decided it
        on, _ = decide_heap_trim(job.cfg.trim_heap, job.objective.kind)
        job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, trim_heap=on))
    cfg, method, best = job.cfg, job.method, Best.of(job.cfg, bool(job.heldout))
    model, optimizer, start, restore = _prepare(job, acc, best)
    avg = WeightAverage.of(cfg.weight_average, method)  # a resumed run starts the average anew
    lengths = None if job.packing else [r.width for r in job.rows]  # unpacked rows: grouped by collated width
    plan = Batches(len(job.rows), cfg.batch_size, cfg.seed, acc.process_index, acc.num_processes, lengths)
    bar = tqdm(total=cfg.max_steps, initial=start, desc="train", disable=not acc.is_main_process, dynamic_ncols=True)
    step, done, last_loss, step_rng = start, start, float("nan"), checkpoint.rng_state()
    opt_bytes = 0  # the most the optimizer's state held after any step (LISA's changes with its layers)
    step_seconds: list[float] = []
    heldout_seconds = 0.0  # held-out evaluations between steps (not in the step times)
    profiler = StepProfiler.of(cfg.profile_steps, cfg.profile_after, job.run_dir / "profile", start,
                               acc.device.type) if acc.is_main_process else None
    with trackers.tracking(acc, cfg, job.run_dir) as track:
        metrics = MetricsLog(job.run_dir / "metrics.jsonl", start, acc.is_main_process, also=track)
        try:
            for step in range(start, cfg.max_steps):
                if profiler is not None:
                    profiler.before(step)
                t0, step_rng = time.perf_counter(), checkpoint.rng_state()  # an interrupted step restarts here
                if method.on_step(step, acc.unwrap_model(model)):
                    optimizer = build_optimizer(acc.unwrap_model(model), method, cfg, previous=optimizer)
                set_lr(optimizer, lr_at(step, cfg))
                if job.rollouts is not None:  # sampled now, from the current weights
                    rows = job.rollouts(step, acc.unwrap_model(model))
                    if cfg.trim_heap:  # sampling's freed blocks back to the OS before training
                        trim_heap()
                    bs = -(-len(rows) // cfg.grad_accum)
                    micro = [(list(range(i * bs, min(len(rows), (i + 1) * bs))), float(step))
                             for i in range(cfg.grad_accum)]
                else:
                    micro = [plan.micro(step * cfg.grad_accum + i) for i in range(cfg.grad_accum)]
                    rows = job.rows_at(step) if job.rows_at is not None else job.rows
                groups = [idx for idx, _ in micro]
                if cfg.tokens_per_pass:  # bounded activations: each micro-batch in passes within the budget
                    groups = [part for idx in groups
                              for part in passes(rows, idx, cfg.tokens_per_pass, job.objective.pass_positions)]
                batches = [job.objective.collate([rows[j] for j in idx], job.pad_id, job.packing) for idx in groups]
                sums, counts, tokens = _step(job, acc, model, batches)
                grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if cfg.trim_heap:  # training's freed activations back to the OS before the next sampling
                    trim_heap()
                opt_bytes = max(opt_bytes, optimizer_state_bytes(optimizer))
                if avg is not None:
                    avg.update(acc.unwrap_model(model))
                done, dt = step + 1, time.perf_counter() - t0
                step_seconds.append(dt)
                if profiler is not None:
                    profiler.after_step(step, dt)
                for probe in job.probes:
                    probe(done, acc.unwrap_model(model))
                row = _metrics_row(job, done, sums, counts, tokens, dt, {
                    "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                    "tokens_per_s": tokens / dt, "epoch": micro[-1][1], "peak_mem_mb": peak_mem_mb(acc.device),
                    **job.objective.metrics()})
                t_eval = time.perf_counter()
                last_loss, stop = row["loss"], _evaluate(job, acc, model, row, best, avg)
                heldout_seconds += time.perf_counter() - t_eval
                if done % cfg.log_every == 0 or done == cfg.max_steps or stop:
                    metrics.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
                if stop:
                    break
                if cfg.save_every and done % cfg.save_every == 0 and done < cfg.max_steps:
                    _save(job, acc, model, optimizer, done, best)
        except KeyboardInterrupt:
            _save(job, acc, model, optimizer, done, best, rng=None if done > step else step_rng)
            print(f"\n[tunelab] interrupted: checkpoint at step {done} in {job.run_dir / 'checkpoints'}; continue with --resume")
            raise
        finally:
            bar.close()
            metrics.close()
            restore()
            try:
                profiled = profiler.close() if profiler is not None else None
            except Exception as e:  # noqa: BLE001 - a failed profile must not hide the run's own outcome
                profiled = None
                print(f"[tunelab] train.profile_steps: the profile could not be written ({e})")
        model = acc.unwrap_model(model)
        summary = {"steps": done, "final_loss": last_loss, "resumed_from": start, "optimizer_state_bytes": opt_bytes,
                   "median_step_seconds": float(sorted(step_seconds)[len(step_seconds) // 2]) if step_seconds else None,
                   "first_step_seconds": round(step_seconds[0], 3) if step_seconds else None,
                   "step_seconds": round(sum(step_seconds), 2), "heldout_seconds": round(heldout_seconds, 2),
                   **_finish(job, model, metrics, best, done, avg)}
        if profiled is not None:
            summary["profile"] = profiled
    return model, summary
