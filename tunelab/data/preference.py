"""Preference data for the DPO, KTO and ORPO objectives: tokenized sequences and their batches.

A *pair* is a :class:`~tunelab.types.Sample` whose messages are the prompt and the chosen
completion, with the rejected completion's turns in ``meta["rejected"]`` (the ``preference``
format, or the ``pairs`` transform over sampled trajectories). An *unpaired* example (KTO) is a
Sample holding the prompt and one completion, with ``meta["label"]`` (True: desirable).

Each example becomes one :class:`SeqRow` holding its sequences (pair: chosen then rejected; KTO:
the completion), whose loss tokens are the completion's assistant turns; a micro-batch gives each
sequence its own causal row (:func:`collate_seqs`), so one forward scores them all with the fast
unmasked attention kernel. KTO rows carry a second row, ``kl``: the prompt with the
completion of another example (the mismatched pair of its KL estimate), scored without gradients.
``ref`` holds each sequence's summed log-probability under the reference model, filled once before
training (:mod:`tunelab.train.objectives`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from tunelab.data.tokenize import IGNORE, Encoded, encode
from tunelab.types import Sample

KINDS = ("pairs", "unpaired")
"""The data kinds a preference objective trains on (``tokens`` is SFT's)."""


@dataclass
class SeqRow:
    """One preference example: its sequences, each one causal batch row once collated."""

    seqs: list[Encoded] = field(default_factory=list)
    """The sequences (0: chosen or the KTO completion, 1: rejected)."""
    source_idx: int = 0
    """The example's source index."""
    label: int = -1
    """KTO: 1 desirable, 0 undesirable; -1 for pairs."""
    ref: list[float] = field(default_factory=list)
    """Reference log-probability of each sequence (summed over its loss tokens); [] until computed."""
    kl: SeqRow | None = None
    """KTO: the mismatched (prompt, another completion) row of the KL estimate."""
    id: str = ""

    @property
    def n_seqs(self) -> int:
        """How many sequences the row holds."""
        return len(self.seqs)

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens of all its sequences."""
        return sum(len(e.input_ids) for e in self.seqs)

    @property
    def width(self) -> int:
        """Batch positions the row takes once collated: its longest sequence times its sequences
        (what length-grouped batching sorts by, so a batch pads little)."""
        return max((len(e.input_ids) for e in self.seqs), default=0) * max(1, self.n_seqs)

    def add(self, e: Encoded, source_idx: int) -> None:
        """Append one sequence."""
        self.seqs.append(e)
        self.source_idx = source_idx


def split_prompt(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """(prompt turns, completion turns): the completion starts at the first assistant turn."""
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    return list(messages[:first]), list(messages[first:])


def _seq(prompt: list[dict], completion: list[dict], sample: Sample, tok, max_length: int,
         truncation: str) -> Encoded | None:
    """One sequence: loss on the completion's assistant turns only (prompt turns never train)."""
    turns = [{**m, "train": False} if m["role"] == "assistant" else m for m in prompt] + completion
    e = encode(Sample(turns, sample.meta), tok, max_length, truncation)
    return e if e is not None and e.n_targets else None


def encode_pref(sample: Sample, kind: str, tok, max_length: int, truncation: str, source_idx: int) -> SeqRow | None:
    """The :class:`SeqRow` of one example (None when a sequence is dropped as too long or has no
    loss token left after truncation)."""
    prompt, chosen = split_prompt(sample.messages)
    row = SeqRow(id=str(sample.meta.get("id", "")))
    seqs = [chosen, sample.meta["rejected"]] if kind == "pairs" else [chosen]
    for completion in seqs:
        e = _seq(prompt, completion, sample, tok, max_length, truncation)
        if e is None:
            return None
        row.add(e, source_idx)
    if kind == "unpaired":
        row.label = int(bool(sample.meta["label"]))
    return row


def build_pref_rows(samples: list[Sample], kind: str, tok, sources: list[str], max_length: int,
                    truncation: str, seed: int) -> tuple[list[SeqRow], int]:
    """Rows of every example (in order) and how many were dropped as too long.

    KTO rows get their ``kl`` row: the example's prompt with the completion of the example before
    it in a seeded shuffle (a fixed rotation, so each completion is used once as a mismatch and the
    KL reference log-probs can be computed once, like the rest).
    """
    index = {s: i for i, s in enumerate(sources)}
    rows, kept, dropped = [], [], 0
    for s in samples:
        row = encode_pref(s, kind, tok, max_length, truncation, index[s.source])
        if row is None:
            dropped += 1
            continue
        rows.append(row)
        kept.append(s)
    if kind == "unpaired" and len(rows) > 1:
        order = list(range(len(rows)))
        random.Random(f"kto-kl/{seed}").shuffle(order)
        for pos, i in enumerate(order):
            j = order[pos - 1]  # the previous example in the shuffle (the first takes the last's)
            prompt, _ = split_prompt(kept[i].messages)
            _, completion = split_prompt(kept[j].messages)
            kl = SeqRow(id=f"{rows[i].id}~{rows[j].id}")
            e = _seq(prompt, completion, kept[i], tok, max_length, "right")
            if e is not None:
                kl.add(e, rows[i].source_idx)
            rows[i].kl = kl
    return rows, dropped


def collate_seqs(rows: list[SeqRow], pad_id: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """A micro-batch of ``rows``: one right-padded batch row per sequence (row-major: an example's
    chosen, then its rejected), causal and without an attention mask, so attention runs its fast
    kernel and never looks across sequences. Tensors: ``input_ids``, ``targets``, ``position_ids``,
    ``source_idx`` (-1 on padding), ``ref`` (examples x sequences; NaN when not computed), ``label``
    and ``example_source``; KTO rows add their ``kl`` rows under the ``kl_`` prefix."""
    n = max(1, max(r.n_seqs for r in rows))
    pad_seq = Encoded([pad_id], [IGNORE], "", "")  # a row short of sequences (an empty KL row)
    seqs = [(e, r.source_idx) for r in rows for e in r.seqs + [pad_seq] * (n - r.n_seqs)]
    width = max(len(e.input_ids) for e, _ in seqs)
    out: dict[str, list] = {k: [] for k in ("input_ids", "targets", "position_ids", "source_idx")}
    for e, src in seqs:
        pad = width - len(e.input_ids)
        out["input_ids"].append(e.input_ids + [pad_id] * pad)
        out["targets"].append(e.targets + [IGNORE] * pad)
        out["position_ids"].append(list(range(width)))
        out["source_idx"].append([src if e is not pad_seq else -1] * len(e.input_ids) + [-1] * pad)
    batch = {prefix + k: torch.tensor(v) for k, v in out.items()}
    ref = [(r.ref + [float("nan")] * n)[:n] if r.ref else [float("nan")] * n for r in rows]
    batch[prefix + "ref"] = torch.tensor(ref, dtype=torch.float64)
    batch[prefix + "label"] = torch.tensor([r.label for r in rows])
    batch[prefix + "example_source"] = torch.tensor([r.source_idx for r in rows])
    if not prefix and any(r.kl is not None for r in rows):
        empty = SeqRow()
        batch.update(collate_seqs([r.kl if r.kl is not None else empty for r in rows], pad_id, "kl_"))
    return batch


def pair_samples(samples: list[Sample], mode: str, seed: int, max_per_task: int = 0) -> tuple[list[Sample], dict[str, int]]:
    """Preference pairs from a pool of trajectories: a success (chosen) against a failure (rejected)
    of the same task (``meta["task_id"]``, else the id before ``#``).

    ``mode``: ``all`` (every success x failure, at most ``max_per_task`` per task when > 0, picked
    with ``seed``) or ``one`` (one seeded pair per task). Returns (pairs, {reason: count}) where the
    reasons count tasks without a success or without a failure and trajectories whose prompt differs
    from their task's (those are skipped, not paired).
    """
    tasks: dict[str, list[Sample]] = {}
    for s in samples:
        tid = str(s.meta.get("task_id") or str(s.meta.get("id", "")).split("#")[0])
        tasks.setdefault(tid, []).append(s)
    rng = random.Random(f"pairs/{seed}")
    out: list[Sample] = []
    counts = {"no_success": 0, "no_failure": 0, "prompt_mismatch": 0}
    for tid, group in tasks.items():
        prompt = split_prompt(group[0].messages)[0]
        same = [s for s in group if split_prompt(s.messages)[0] == prompt]
        counts["prompt_mismatch"] += len(group) - len(same)
        wins = [s for s in same if s.meta.get("outcome", {}).get("success") is True]
        losses = [s for s in same if s.meta.get("outcome", {}).get("success") is False]
        if not wins:
            counts["no_success"] += 1
            continue
        if not losses:
            counts["no_failure"] += 1
            continue
        combos = [(w, lo) for w in wins for lo in losses]
        if mode == "one":
            combos = [rng.choice(combos)]
        elif max_per_task and len(combos) > max_per_task:
            combos = rng.sample(combos, max_per_task)
        for k, (w, lo) in enumerate(combos):
            meta = {**w.meta, "id": f"{tid}/pair{k}", "rejected": split_prompt(lo.messages)[1],
                    "chosen_id": w.meta.get("id"), "rejected_id": lo.meta.get("id")}
            out.append(Sample(list(w.messages), meta))
    return out, {k: v for k, v in counts.items() if v}
