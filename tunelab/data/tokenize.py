"""Chat-template rendering, assistant-only loss masks, truncation and packing.

A sample becomes ``input_ids`` and ``targets`` (the next-token label for every position,
``-100`` where no loss is taken), so packing can never leak a label across samples.
Packed rows restart ``position_ids`` at every sample; transformers turns those restarts
into a block-diagonal causal mask (no attention across samples) when no attention mask
is passed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from tunelab.types import Sample

IGNORE = -100


class TemplateError(ValueError):
    """A chat template that does not render conversation prefixes as prefixes."""


@dataclass
class Encoded:
    input_ids: list[int]
    targets: list[int]  # targets[t] = label of input_ids[t + 1], or IGNORE
    source: str
    id: str

    @property
    def n_targets(self) -> int:
        return sum(t != IGNORE for t in self.targets)


def assistant_spans(messages: list[dict], tok) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages``; return the text and the character spans that carry loss.

    A span covers an assistant turn's content and the template's end-of-turn marker, found
    by rendering each prefix of the conversation (templates must be prefix-consistent).
    """
    render = tok.apply_chat_template
    text = render(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("train", True) is False:
            continue
        # a conversation opening with the assistant has no generation prompt to render
        start_text = render(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        end_text = render(messages[: i + 1], tokenize=False)
        if not text.startswith(end_text) or not end_text.startswith(start_text):
            raise TemplateError(
                "the chat template does not render conversation prefixes as prefixes; "
                "set model.chat_template to a prefix-consistent template"
            )
        spans.append((len(start_text), len(end_text)))
    return text, spans


def encode(sample: Sample, tok, max_length: int, truncation: str = "right") -> Encoded | None:
    """Tokenize one sample with loss only on assistant turns. None if dropped (too long)."""
    text, spans = assistant_spans(sample.messages, tok)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    trained = [any(s <= a < e for s, e in spans) for a, _ in offsets]
    if len(ids) > max_length:
        if truncation == "drop":
            return None
        ids, trained = ids[:max_length], trained[:max_length]
    targets = [ids[t + 1] if trained[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    return Encoded(ids, targets, sample.source, str(sample.meta.get("id", "")))


@dataclass
class Row:
    """One training sequence: one sample, or several packed."""

    input_ids: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    source_idx: list[int] = field(default_factory=list)  # per token; -1 = padding
    ids: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens of the row."""
        return len(self.input_ids)

    @property
    def width(self) -> int:
        """Batch positions the row takes once collated (what length-grouped batching sorts by)."""
        return len(self.input_ids)

    def add(self, e: Encoded, source_idx: int) -> None:
        self.input_ids += e.input_ids
        self.targets += e.targets
        self.position_ids += range(len(e.input_ids))
        self.source_idx += [source_idx] * len(e.input_ids)
        self.ids.append(e.id)


def pack(encoded: list[Encoded], sources: list[str], max_length: int, packing: bool) -> list[Row]:
    """First-fit packing into rows of at most ``max_length`` tokens (order otherwise kept)."""
    index = {s: i for i, s in enumerate(sources)}
    rows: list[Row] = []
    open_rows: list[Row] = []
    for e in encoded:
        if not packing:
            rows.append(Row())
            rows[-1].add(e, index[e.source])
            continue
        row = next((r for r in open_rows if len(r.input_ids) + len(e.input_ids) <= max_length), None)
        if row is None:
            row = Row()
            rows.append(row)
            open_rows.append(row)
        row.add(e, index[e.source])
        if max_length - len(row.input_ids) < 16:  # nearly full: stop scanning it
            open_rows.remove(row)
    return rows


def collate(rows: list[Row], pad_id: int, packing: bool) -> dict[str, torch.Tensor]:
    """Right-pad rows to the longest in the batch; no attention mask is needed.

    Causal attention never looks right, so right padding cannot change any real token's
    output, and padding carries no targets: the model runs its fast causal kernel. Packed
    rows restart ``position_ids`` per sample, which transformers turns into a block mask.
    """
    width = max(len(r.input_ids) for r in rows)
    out = {k: [] for k in ("input_ids", "targets", "position_ids", "source_idx")}
    for r in rows:
        pad = width - len(r.input_ids)
        out["input_ids"].append(r.input_ids + [pad_id] * pad)
        out["targets"].append(r.targets + [IGNORE] * pad)
        # packed: padding is one more "sample" (positions restart); unpacked: positions run on
        tail = range(pad) if packing else range(len(r.input_ids), width)
        out["position_ids"].append(r.position_ids + list(tail))
        out["source_idx"].append(r.source_idx + [-1] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


def epoch_order(n_rows: int, epoch: int, seed: int, lengths: list[int] | None = None,
                batch_size: int = 1, window: int = 64) -> list[int]:
    """The row order of one epoch: a pure function of (seed, epoch), so resume is exact.

    With ``lengths`` (unpacked rows), rows are grouped by length: each window of
    ``window * batch_size`` shuffled rows is sorted by length and cut into batches, and the
    batches are shuffled, so a batch pads little while the data order stays random.
    """
    rng = random.Random(f"rows/{seed}/{epoch}")
    order = list(range(n_rows))
    rng.shuffle(order)
    if lengths is None or batch_size <= 1:
        return order
    span = window * batch_size
    batches = []
    for i in range(0, n_rows, span):
        chunk = sorted(order[i : i + span], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [j for b in batches for j in b]
