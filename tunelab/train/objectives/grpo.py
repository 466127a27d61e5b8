"""Online learning from a verifier: GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) and RLOO
(Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740), in the one loop.

Each optimizer step samples G episodes for each of ``batch_size x grad_accum / G`` prompts of an
environment (``tunelab ls envs``) from the current weights (:mod:`tunelab.envs.rollout`; LoRA adapters
live), scores them with the environment's verifier and turns the rewards into advantages:

* GRPO: ``A_i = (r_i - mean_group) / (std_group + 1e-4)`` (``scale_rewards: group``, TRL's default;
  ``batch`` divides by the std of the whole step; ``none`` is Dr. GRPO's unscaled ``r_i - mean``);
* RLOO: ``A_i = r_i - mean of the other G - 1 rewards of its group``.

The loss is the clipped token-level objective of PPO/GRPO on the agent's own tokens (observations and
prompts carry none), with the logits divided by the sampling temperature as TRL does:
``-min(rho_t A, clip(rho_t, 1 - eps, 1 + eps_high) A) + beta KL_t``, ``rho_t = pi(a_t) / pi_old(a_t)``
(with ``num_iterations`` = 1, one optimisation step per generation, so ``pi_old`` is the detached current
policy and rho = 1 in value; with mu = ``num_iterations`` > 1, GRPO's mu and TRL's ``num_iterations``, each
batch of episodes is trained on for mu optimizer steps and ``pi_old`` is the sampling policy's
log-probability, computed once when the episodes are sampled), ``KL_t = exp(ref - logp) - (ref - logp) - 1`` (times rho, TRL's bias correction) against the weights
with the adapters disabled (``beta`` > 0; 0 by default, as TRL). Aggregation (``loss_type``, TRL's names): ``dapo`` (TRL's
default: the mean over every completion token of the step), ``grpo`` (each episode's token mean, then
the mean over episodes), ``dr_grpo`` (each episode's token sum over ``max_completion_length``).
Parity with TRL 1.16's ``GRPOTrainer`` is a test (``tests/train/test_grpo.py``).

Zero-advantage episodes (a group whose G rewards are all equal: all failed, or all succeeded) are left
out of the forward and backward pass when ``beta`` is 0 (``skip_zero_advantage``, on by default): their
per-token loss is ``-min(rho 0, clip(rho) 0) = 0`` with a zero gradient, so leaving them out changes
neither the loss, its gradient, the clip fraction nor the ``dapo`` / ``grpo`` denominators (their tokens
and episodes still count, with loss 0). TRL computes them; early in training, when most groups fail
alike, they are most of a step's tokens. A step whose episodes all have zero advantage runs no
backward at all and hands the optimizer zero gradients, as TRL would (AdamW's momentum and weight decay
still apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from tunelab.config import TrainConfig, bound
from tunelab.data.rollouts import collate_rollouts
from tunelab.data.tokenize import IGNORE
from tunelab.train.loss import token_losses
from tunelab.train.objectives.base import OBJECTIVES, Objective
from tunelab.train.shared_prefix import shared_prefix_hidden


@dataclass
class GRPOParams:
    """Recipe keys of ``objective: {name: grpo}`` (and ``rloo``)."""

    env: str = "calculator"
    """The environment whose tasks are the prompts and whose verifier gives the rewards (``tunelab ls envs``)."""
    env_options: dict[str, Any] = field(default_factory=dict)
    """Options of the environment."""
    group_size: int = field(default=4, metadata=bound(ge=2))
    """G: episodes sampled per prompt (at least 2: the advantages compare them)."""
    task_limit: int | None = field(default=None, metadata=bound(ge=1))
    """Training tasks drawn from (the environment's first ``task_limit`` for ``train.seed``); None: all."""
    temperature: float = field(default=1.0, metadata=bound(gt=0))
    """Sampling temperature; the loss divides the logits by it too (the sampling distribution's log-probs)."""
    max_new_tokens: int = field(default=96, metadata=bound(ge=1))
    """Tokens per agent turn."""
    episode_steps: int = field(default=4, metadata=bound(ge=1))
    """Agent turns per episode at most."""
    reward: Literal["success", "score"] = "success"
    """``success`` (0/1) or the verifier's graded ``score``."""
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = "dapo"
    """How per-token losses are averaged (see the module docstring)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """GRPO's advantage scaling: by the group's std (GRPO), the step's std, or none (Dr. GRPO)."""
    epsilon: float = field(default=0.2, metadata=bound(gt=0))
    """Lower clip range of the ratio (1 - epsilon)."""
    epsilon_high: float | None = field(default=None, metadata=bound(gt=0))
    """Upper clip range (1 + epsilon_high); None: ``epsilon`` (DAPO raises it to 0.28)."""
    beta: float = field(default=0.0, metadata=bound(ge=0))
    """KL coefficient to the reference (the weights with adapters disabled); 0: no reference pass."""
    kl_bias_correction: bool = True
    """Multiply the KL term by the ratio, so its gradient is the unbiased reverse-KL gradient (TRL's default,
    after DeepSeek-V3.2); it changes the gradient even on-policy, not the value."""
    max_completion_length: int | None = field(default=None, metadata=bound(ge=1))
    """``dr_grpo``'s constant denominator; None: ``max_new_tokens x episode_steps``."""
    num_iterations: int = field(default=1, metadata=bound(ge=1))
    """mu: optimizer steps on each batch of sampled episodes (GRPO's mu, TRL's ``num_iterations``). Above 1,
    episodes are sampled every mu steps, the sampling policy's log-probabilities are kept with them, and the
    ratio of the later steps is taken against those (so clipping bites); 1: sample every step, on-policy."""
    share_prefix: bool = True
    """Run each group's shared beginning (its prompt) once in the training forward, its KV cache expanded to
    the group's rows (:mod:`tunelab.train.shared_prefix`; the same losses and gradients); off: every episode
    whole, as TRL does."""
    skip_zero_advantage: bool = True
    """Leave zero-advantage episodes out of the forward and backward pass when ``beta`` is 0 (their
    gradient is exactly zero; the loss and its denominators are unchanged). Off: compute them, as TRL does."""


class _Online(Objective):
    """Shared by GRPO and RLOO: rollout rows, the clipped token loss and the step's metrics."""

    Params = GRPOParams
    kind: ClassVar[str] = "online"

    def advantages(self, rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Advantages (N,) of rewards (N,) whose group index is ``groups`` (N,)."""
        raise NotImplementedError

    @staticmethod
    def group_stats(rewards: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-episode (group sum, group size, group std (unbiased)) of its group."""
        n = int(groups.max()) + 1 if groups.numel() else 0
        r = rewards.double()
        sums = torch.zeros(n, dtype=torch.float64).index_add_(0, groups, r)
        sizes = torch.zeros(n, dtype=torch.float64).index_add_(0, groups, torch.ones_like(r))
        means = sums / sizes
        sq = torch.zeros(n, dtype=torch.float64).index_add_(0, groups, (r - means[groups]) ** 2)
        std = (sq / (sizes - 1).clamp(min=1)).sqrt()
        return sums[groups], sizes[groups], std[groups]

    def skips(self) -> bool:
        """Whether zero-advantage episodes are left out of the pass (see the module docstring)."""
        p = self.params
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1  # every process must run its backward (gradient sync)
        return p.skip_zero_advantage and not p.beta and not distributed

    def collate(self, rows: list, pad_id: int, packing: bool) -> dict[str, torch.Tensor]:
        """Right-padded episodes with their advantages; zero-advantage episodes, when skipped, only as
        ``skipped_source`` (the source index of each of their loss units: tokens for ``dapo``, else
        episodes), ``skipped_targets`` (their completion tokens) and ``skipped_tokens`` (their real
        tokens, for the step's token count)."""
        self.record("zero_advantage", torch.tensor([float(r.advantage == 0) for r in rows]))
        skip = self.skips()
        skipped = [r for r in rows if skip and r.advantage == 0]
        batch = collate_rollouts([r for r in rows if not (skip and r.advantage == 0)], pad_id)
        targets = [sum(t != IGNORE for t in r.seq.targets) for r in skipped]
        per_unit = targets if self.params.loss_type == "dapo" else [1] * len(skipped)
        batch["skipped_source"] = torch.tensor([r.source_idx for r, n in zip(skipped, per_unit) for _ in range(n)],
                                               dtype=torch.long)
        batch["skipped_targets"] = torch.tensor(sum(targets))
        batch["skipped_tokens"] = torch.tensor(sum(r.tokens for r in skipped))
        return batch

    def pass_positions(self, rows: list) -> int:
        """Positions the pass computes: with ``share_prefix``, each group's shared beginning
        (:attr:`~tunelab.data.rollouts.RolloutRow.shared`, set when sampled) once and its rows' rests padded to
        the widest row, so a pass keeps whole groups where the budget allows."""
        widest = max((r.width for r in rows), default=0)
        if not self.params.share_prefix:
            return len(rows) * widest
        shared: dict[int, list[int]] = {}
        for r in rows:
            shared.setdefault(r.group, []).append(r.shared)
        total = 0
        for s in shared.values():
            once = min(s) if len(s) > 1 else 0  # one row of a group in this pass shares with nobody
            total += once + len(s) * (widest - once)
        return total

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """Completion tokens (``dapo``) or episodes (``grpo``, ``dr_grpo``), skipped ones included."""
        skipped = int(batch["skipped_source"].numel()) if "skipped_source" in batch else 0
        if self.params.loss_type == "dapo":
            return int((batch["targets"] != IGNORE).sum()) + skipped
        return int(batch["advantages"].shape[0]) + skipped

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-unit losses (tokens or episodes) and their source index; skipped units have loss 0 (no graph)."""
        skipped = batch.get("skipped_source")
        if skipped is None or not skipped.numel():
            return self._losses(model, batch, cfg, virtual_tokens)
        zeros = torch.zeros(skipped.numel(), device=skipped.device)
        self.record("clip_ratio", torch.zeros(int(batch["skipped_targets"])))  # advantage 0: never clipped
        if not batch["input_ids"].numel():
            return zeros, skipped
        losses, src = self._losses(model, batch, cfg, virtual_tokens)
        return torch.cat([losses, zeros.to(losses)]), torch.cat([src, skipped.to(src.device)])

    def _losses(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-unit losses of the batch's (computed) episodes and their source index."""
        p = self.params
        inputs = {k: batch[k] for k in ("input_ids", "position_ids", "targets", "source_idx")}
        hidden = shared_prefix_hidden(model, batch) if p.share_prefix and not virtual_tokens else None
        nll, src = token_losses(model, inputs, cfg.loss_chunk, virtual_tokens, cfg.compile,
                                temperature=p.temperature, hidden=hidden)
        logp = -nll.float()
        mask = batch["targets"] != IGNORE
        row = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
        adv = batch["advantages"].to(logp)[row]
        old = batch.get("old_logps")
        if old is None:  # one step per generation: pi_old is the current policy
            ratio = torch.exp(logp - logp.detach())
        else:  # the sampling policy's, kept with the episodes (num_iterations > 1)
            ratio = torch.exp(logp - old.to(logp.device)[mask].to(logp))
        high = p.epsilon_high if p.epsilon_high is not None else p.epsilon
        clipped = torch.clamp(ratio, 1 - p.epsilon, 1 + high)
        per_token = -torch.min(ratio * adv, clipped * adv)
        if p.beta:
            ref = batch["ref_logps"].to(logp.device)[mask].to(logp)
            kl = torch.exp(ref - logp) - (ref - logp) - 1
            if p.kl_bias_correction:  # the ratio is 1 in value but carries the unbiased reverse-KL gradient
                kl = kl * ratio
            per_token = per_token + p.beta * kl
            self.record("kl", kl.detach())
        self.record("clip_ratio", ((ratio < 1 - p.epsilon) & (adv < 0) | (ratio > 1 + high) & (adv > 0)).float())
        if p.loss_type == "dapo":
            return per_token, src
        n = mask.shape[0]
        sums = torch.zeros(n, dtype=per_token.dtype, device=per_token.device).index_add(0, row, per_token)
        if p.loss_type == "grpo":
            counts = torch.zeros(n, dtype=per_token.dtype, device=per_token.device).index_add(
                0, row, torch.ones_like(per_token))
            return sums / counts.clamp(min=1), batch["example_source"].to(per_token.device)
        denom = p.max_completion_length or p.max_new_tokens * p.episode_steps
        return sums / denom, batch["example_source"].to(per_token.device)


@OBJECTIVES.register("grpo")
class GRPO(_Online):
    """Group Relative Policy Optimization: G episodes per prompt, group-normalised advantages, clipped loss."""

    def advantages(self, rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """``(r - group mean) / (std + 1e-4)`` with the group's, the step's or no std (``scale_rewards``)."""
        sums, sizes, std = self.group_stats(rewards, groups)
        centred = rewards.double() - sums / sizes
        if self.params.scale_rewards == "group":
            centred = centred / (std + 1e-4)
        elif self.params.scale_rewards == "batch":
            centred = centred / (rewards.double().std() + 1e-4)
        return centred.float()


@OBJECTIVES.register("rloo")
class RLOO(_Online):
    """REINFORCE Leave-One-Out: each episode's baseline is the mean reward of the others of its group."""

    def advantages(self, rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """``r_i - (group sum - r_i) / (G - 1)``."""
        sums, sizes, _ = self.group_stats(rewards, groups)
        r = rewards.double()
        return (r - (sums - r) / (sizes - 1).clamp(min=1)).float()
