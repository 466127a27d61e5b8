"""Rollout rows: episodes sampled online from the current weights, for the ``grpo`` and ``rloo`` objectives.

An episode is a chat (the task's prompt, then the agent's turns and the environment's observations,
which are user turns); it is tokenized as every training sample is (:func:`~tunelab.data.tokenize.encode`),
so the loss falls on the agent's own tokens and never on an observation. Each row carries its
episode's reward, its group (the G episodes of one prompt) and the advantage the objective gave it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tunelab.data.tokenize import IGNORE, Encoded, encode
from tunelab.types import Sample


@dataclass
class RolloutRow:
    """One sampled episode, tokenized, with its reward and advantage."""

    seq: Encoded
    """Token ids; targets on the agent's turns only (IGNORE on the prompt and observations)."""
    reward: float
    """The verifier's reward (success as 0/1, or the graded score)."""
    group: int
    """Index of the prompt whose G episodes form its group."""
    advantage: float = 0.0
    """Set by the objective from the group's rewards."""
    source_idx: int = 0
    """Source index (per-source losses); rollouts have one source, the environment."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Outcome details (success, failure kind, steps) for the step's metrics."""
    ref_logps: list[float] | None = None
    """The reference's log-probability of each target token, in order (a KL term, ``beta`` > 0)."""
    shared: int = 0
    """Positions every episode of its group begins with, up to the first that carries a loss (the prompt):
    what the shared-prefix forward runs once per group (:func:`mark_shared`; 0: none planned)."""
    old_logps: list[float] | None = None
    """The sampling policy's log-probability of each target token, in order, computed once when the episode
    was sampled (``num_iterations`` > 1: the later optimizer steps on the same episodes take their ratio
    against it); None: the ratio is taken against the current weights (1 in value, on-policy)."""

    @property
    def tokens(self) -> int:
        """Real tokens of the episode."""
        return len(self.seq.input_ids)

    @property
    def width(self) -> int:
        """Batch positions the row takes once collated."""
        return len(self.seq.input_ids)


def shared_tokens(ids: list[list[int]], targets: list[list[int]]) -> int:
    """Positions all of ``ids`` begin with alike, cut at the first position of any of them that carries a loss
    (``targets`` not IGNORE) and leaving at least one position of the longest to run."""
    common = min(len(x) for x in ids)
    for k in range(common):
        if any(x[k] != ids[0][k] for x in ids[1:]):
            common = k
            break
    first = min((next((k for k, t in enumerate(ts) if t != IGNORE), len(ts)) for ts in targets), default=0)
    return max(0, min(common, first, max(map(len, ids)) - 1))


def mark_shared(rows: list[RolloutRow]) -> None:
    """Set each row's :attr:`RolloutRow.shared` from its whole group (once per step, when sampled; a pass
    holding part of a group shares at least as much, so plans made from it are conservative)."""
    by_group: dict[int, list[RolloutRow]] = {}
    for r in rows:
        by_group.setdefault(r.group, []).append(r)
    for members in by_group.values():
        s = shared_tokens([m.seq.input_ids for m in members], [m.seq.targets for m in members]) \
            if len(members) > 1 else 0
        for m in members:
            m.shared = s


def encode_episode(messages: list[dict[str, Any]], tok, max_length: int, source: str, episode_id: str) -> Encoded:
    """The episode's tokens with loss on the agent's turns, truncated on the right to ``max_length``."""
    e = encode(Sample(messages, {"source": source, "id": episode_id}), tok, max_length, "right")
    assert e is not None  # right truncation never drops
    return e


def collate_rollouts(rows: list[RolloutRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded causal rows (no attention mask needed) with ``advantages`` (B,), ``rewards`` (B,),
    ``example_source`` (B,), ``group`` (B,: the prompt whose episodes share a beginning) and, per token,
    ``source_idx`` (-1 on padding) and, when the rows have them, ``ref_logps`` and ``old_logps`` (B, T; at
    the target positions, NaN elsewhere)."""
    width = max((len(r.seq.input_ids) for r in rows), default=0)
    out: dict[str, list] = {k: [] for k in ("input_ids", "targets", "position_ids", "source_idx")}
    for r in rows:
        n = len(r.seq.input_ids)
        out["input_ids"].append(r.seq.input_ids + [pad_id] * (width - n))
        out["targets"].append(r.seq.targets + [IGNORE] * (width - n))
        out["position_ids"].append(list(range(width)))
        out["source_idx"].append([r.source_idx] * n + [-1] * (width - n))
    batch = {k: torch.tensor(v, dtype=torch.long).reshape(len(rows), width) for k, v in out.items()}  # (0, 0) if none
    batch["advantages"] = torch.tensor([r.advantage for r in rows], dtype=torch.float32)
    batch["rewards"] = torch.tensor([r.reward for r in rows], dtype=torch.float32)
    batch["example_source"] = torch.tensor([r.source_idx for r in rows], dtype=torch.long)
    batch["group"] = torch.tensor([r.group for r in rows], dtype=torch.long)
    for key in ("ref_logps", "old_logps"):
        if any(getattr(r, key) is not None for r in rows):
            per_token = torch.full(batch["targets"].shape, float("nan"), dtype=torch.float32)
            for i, r in enumerate(rows):
                at = (batch["targets"][i] != IGNORE).nonzero().squeeze(-1)
                per_token[i, at] = torch.tensor(getattr(r, key) or [float("nan")] * len(at), dtype=torch.float32)
            batch[key] = per_token
    return batch
