"""Online rollouts for ``grpo`` / ``rloo``: each optimizer step's episodes, sampled from the current weights.

The loop asks for step ``k``'s rows (:class:`Rollouts` is ``TrainJob.rollouts``). Its prompts are the
environment's training tasks in a seeded order per pass (a pure function of (seed, k), so a resumed run
samples the prompts it would have); each prompt gets G episodes, run with the environment exactly as
``tunelab sample`` runs them (:func:`tunelab.envs.sample.run_episodes`) by a generator over the live
model (LoRA adapters as they are now, nothing merged), in eval mode, then training mode again. The
verifier's rewards become advantages (the objective's :meth:`advantages`), and each episode becomes a
:class:`~tunelab.data.rollouts.RolloutRow` with loss on the agent's turns only. The step's reward mean
and spread, success rate, episode tokens and the seconds spent generating are recorded as metrics (the
objective adds the share of zero-advantage episodes, ``zero_advantage``).

With ``num_iterations`` = mu > 1 (GRPO's mu), episodes are sampled at steps 0, mu, 2 mu ... (generation
``g`` = step // mu takes the prompts a run with mu = 1 takes at step ``g``) and reused, unchanged, for the
next mu - 1 steps; when sampled they also get the sampling policy's per-token log-probabilities
(``old_logps``), the ratio's denominator on every step that reuses them. The batch in use is part of a
checkpoint (:meth:`Rollouts.state`), so a run resumed between two of its steps trains on the same episodes.
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import torch
from torch import nn

from tunelab.config import ConfigError
from tunelab.data.rollouts import RolloutRow, collate_rollouts, encode_episode, mark_shared
from tunelab.data.tokenize import IGNORE
from tunelab.device import autocast
from tunelab.envs.base import Environment, Step, failure_kind, get_env
from tunelab.envs.sample import Attempt, run_episodes
from tunelab.generate.hf import HFGenerator
from tunelab.train.loss import token_losses
from tunelab.train.shared_prefix import shared_prefix_hidden


class Rollouts:
    """Step ``k``'s rollout rows: ``prompts`` prompts x G episodes (``batch_size x grad_accum`` rows).

    Args:
        objective: a ``grpo`` / ``rloo`` objective (its params name the environment and sampling).
        tok: the run's tokenizer.
        rows_per_step: ``train.batch_size x train.grad_accum``, a multiple of the group size.
        precision: decoding precision (the run's).
        max_length: episodes are truncated on the right to this many tokens.
        seed: the run's seed (task order and sampling).

    Raises:
        ConfigError: rows per step not a multiple of the group size; an unknown environment or option.
    """

    def __init__(self, objective: Any, tok, rows_per_step: int, precision: str, max_length: int, seed: int) -> None:
        p = objective.params
        if rows_per_step % p.group_size:
            raise ConfigError(f"objective.group_size ({p.group_size}) must divide train.batch_size x "
                              f"train.grad_accum ({rows_per_step}): each step samples whole groups")
        self.objective, self.tok, self.precision = objective, tok, precision
        self.max_length, self.seed = max_length, seed
        self.prompts = rows_per_step // p.group_size
        self.env: Environment = get_env(p.env, **p.env_options)
        self.tasks = self.env.tasks(p.task_limit, seed)
        if not self.tasks:
            raise ConfigError(f"objective.env {p.env!r} has no tasks")
        self.batch: tuple[int, list[RolloutRow]] | None = None
        """(the step it was sampled at, its rows): the episodes in use while ``num_iterations`` > 1."""

    def task_order(self, epoch: int) -> list[int]:
        """The task indices of one pass over the training tasks (seeded)."""
        order = list(range(len(self.tasks)))
        random.Random(f"rollouts/{self.seed}/{epoch}").shuffle(order)
        return order

    def step_tasks(self, step: int) -> list[int]:
        """Indices of step ``step``'s prompts."""
        n = len(self.tasks)
        out = []
        for i in range(step * self.prompts, (step + 1) * self.prompts):
            out.append(self.task_order(i // n)[i % n])
        return out

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the batch of episodes in use (``num_iterations`` > 1), else nothing."""
        return {"batch": self.batch} if self.batch is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (a resumed run reuses the episodes it was training on)."""
        self.batch = state.get("batch")

    def __call__(self, step: int, model: nn.Module) -> list[RolloutRow]:
        """Step ``step``'s episodes: sampled, verified and tokenized with ``model``'s current weights, or,
        with ``num_iterations`` = mu > 1 and ``step`` not a multiple of mu, those sampled at the last one."""
        p = self.objective.params
        mu = p.num_iterations
        if step % mu and self.batch is not None and self.batch[0] == step - step % mu:
            rows = self.batch[1]
            self._record(rows, torch.tensor([r.reward for r in rows]), torch.tensor([r.group for r in rows]), 0.0)
            return rows
        if step % mu:  # only a checkpoint from before this batch was kept: its episodes are not known
            raise RuntimeError(f"step {step} reuses the episodes sampled at step {step - step % mu} "
                               "(objective.num_iterations), which this run no longer holds")
        rows = self._sample(step // mu, step, model)
        self.batch = (step, rows) if mu > 1 else None
        return rows

    def _sample(self, generation: int, step: int, model: nn.Module) -> list[RolloutRow]:
        """Generation ``generation``'s episodes (step ``step``'s prompts with ``num_iterations`` = 1)."""
        p = self.objective.params
        t0 = time.perf_counter()
        was_training = model.training
        generator = HFGenerator(model, self.tok, batch_size=self.prompts * p.group_size, precision=self.precision,
                                progress=False)
        attempts = [Attempt(self.tasks[t], a, [{"role": "user", "content": self.env.prompt(self.tasks[t])}])
                    for t in self.step_tasks(generation) for a in range(p.group_size)]
        group_of = {id(a): i // p.group_size for i, a in enumerate(attempts)}
        finished: list[tuple[Attempt, Step | None]] = []
        try:
            run_episodes(self.env, generator, list(reversed(attempts)), lambda a, s: finished.append((a, s)),
                         temperature=p.temperature, max_steps=p.episode_steps, max_new_tokens=p.max_new_tokens,
                         seed=self.seed * 1_000_003 + step)
        finally:
            model.train(was_training)
        finished.sort(key=lambda x: (group_of[id(x[0])], x[0].attempt))
        rows, outcomes = [], []
        for a, step_end in finished:
            verdict = self.env.verify(a.task, step_end.answer if step_end is not None else None)
            reward = float(verdict["success"]) if p.reward == "success" else float(verdict.get("score", verdict["success"]))
            if reward != reward:  # NaN
                raise ValueError(f"objective.env {p.env!r}: the verifier gave a NaN reward for task {a.task.id!r}")
            seq = encode_episode(a.messages, self.tok, self.max_length, p.env, f"{a.task.id}#{a.attempt}")
            rows.append(RolloutRow(seq, reward, group_of[id(a)], meta={
                "success": bool(verdict["success"]), "failure": failure_kind(step_end, verdict, a.errors),
                "turns": a.steps}))
            outcomes.append(verdict)
        mark_shared(rows)
        rewards = torch.tensor([r.reward for r in rows])
        groups = torch.tensor([r.group for r in rows])
        for r, adv in zip(rows, self.objective.advantages(rewards, groups).tolist()):
            r.advantage = adv
        if p.beta:
            self._reference(model, rows)
        if p.num_iterations > 1:  # the ratio's denominator on every step that reuses these episodes
            used = [r for r in rows if not (self.objective.skips() and r.advantage == 0)]  # skipped: no loss
            for r, lp in zip(used, self._logps(model, used, contextlib.nullcontext)):
                r.old_logps = lp
        self._record(rows, rewards, groups, time.perf_counter() - t0)
        return rows

    def _reference(self, model: nn.Module, rows: list[RolloutRow]) -> None:
        """Each row's per-token reference log-probabilities: the model with its adapters disabled."""
        disable = getattr(model, "disable_adapter", None)
        if disable is None:
            raise ConfigError("objective.beta > 0 needs a reference: the run's method must be an adapter "
                              "(lora, ia3, prefix ...) whose weights can be disabled; use beta: 0 with this method")
        for r, lp in zip(rows, self._logps(model, rows, disable)):
            r.ref_logps = lp

    @torch.no_grad()
    def _logps(self, model: nn.Module, rows: list[RolloutRow], context) -> list[list[float]]:
        """Each row's per-token log-probabilities of its targets under ``model`` in eval mode inside
        ``context()`` (the adapters disabled for the reference), in one pass through the loss's chunked
        head at the sampling temperature (each group's shared prompt run once with ``share_prefix``)."""
        if not rows:
            return []
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in collate_rollouts(rows, self.tok.pad_token_id or 0).items()
                 if k in ("input_ids", "position_ids", "targets", "source_idx", "group")}
        share = self.objective.params.share_prefix
        try:
            with context(), autocast(device.type, self.precision):
                hidden = shared_prefix_hidden(model, batch) if share else None  # each group's prompt once
                nll, _ = token_losses(model, batch, temperature=self.objective.params.temperature, hidden=hidden)
        finally:
            model.train(was_training)
        logps = (-nll.float()).cpu().split([sum(t != IGNORE for t in r.seq.targets) for r in rows])
        return [lp.tolist() for lp in logps]

    def _record(self, rows: list[RolloutRow], rewards: torch.Tensor, groups: torch.Tensor, seconds: float) -> None:
        """The step's rollout metrics, into the objective's metrics row."""
        rec = self.objective.record
        rec("reward", rewards)
        rec("reward_std", self.objective.group_stats(rewards, groups)[2])
        rec("success", torch.tensor([float(r.meta["success"]) for r in rows]))
        rec("completion_tokens", torch.tensor([float(sum(t != IGNORE for t in r.seq.targets)) for r in rows]))
        rec("turns", torch.tensor([float(r.meta["turns"]) for r in rows]))
        rec("seconds_generation", torch.tensor([seconds]))
