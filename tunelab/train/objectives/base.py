"""What the one loop minimises, per micro-batch: the objective registry and its contract.

An objective turns a collated micro-batch into per-unit losses with the source index of each
unit; the loop sums them over the micro-batches of a step and divides by the step's
:meth:`Objective.units` (summed over micro-batches and processes), so gradient accumulation and
data parallelism give the loss of one large batch. SFT's units are target tokens; the preference
objectives' are pairs (DPO, ORPO, SimPO) or examples (KTO).

``kind`` says what data an objective reads: ``tokens`` (packed token rows), ``pairs`` /
``unpaired`` (:mod:`tunelab.data.preference` rows) or ``choices`` (:mod:`tunelab.data.choices` rows). Objectives with ``needs_reference`` read each
sequence's reference log-probability, computed once before training by :func:`reference_logps`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tunelab.config import TrainConfig, parse_params
from tunelab.data.preference import SeqRow, collate_seqs
from tunelab.data.tokenize import IGNORE
from tunelab.device import autocast
from tunelab.registry import Registry
from tunelab.train.loss import token_losses

OBJECTIVES: Registry[type[Any]] = Registry("objective", package="tunelab.train.objectives",
                                           entry_points="tunelab.objectives")
DEFAULT_OBJECTIVE = "sft"


class Objective:
    """Base of every objective: params, batch collation, and metrics averaged over a step.

    Subclasses set ``Params`` (a dataclass of recipe keys), ``kind`` and implement
    :meth:`units` and :meth:`__call__`; :meth:`record` adds a logged metric.
    """

    Params: ClassVar[type]
    kind: ClassVar[str] = "tokens"
    per_example: ClassVar[bool] = True
    """Whether each loss unit depends on its own example only, so a micro-batch may be cut into passes
    (``train.tokens_per_pass``) without changing the loss; KTO's batch KL estimate is not."""

    def __init__(self, params: Any) -> None:
        self.params = params
        self._recorded: dict[str, list[torch.Tensor]] = {}

    @property
    def needs_reference(self) -> bool:
        """Whether batches must carry reference log-probabilities (see :func:`reference_logps`)."""
        return False

    def prepare(self, model: nn.Module) -> None:
        """Add the objective's own trainable modules to ``model`` (after the method is applied, before the
        optimizer is built); most objectives add none (``choice_head`` adds its classifier head)."""

    def heldout(self, model: nn.Module, rows: list, sources: list[str], pad_id: int, precision: str,
                cfg: TrainConfig, virtual_tokens: int) -> dict[str, float] | None:
        """Held-out metrics of the objective's own (``heldout_loss``, ``heldout_loss/<source>`` ...), with
        dropout off; None: the held-out rows are token rows and the loop takes their token loss."""
        return None

    def collate(self, rows: list, pad_id: int, packing: bool) -> dict[str, torch.Tensor]:
        """Rows into a padded micro-batch (preference rows; SFT overrides this)."""
        return collate_seqs(rows, pad_id)

    def pass_positions(self, rows: list) -> int:
        """Positions a pass over ``rows`` computes once collated (``train.tokens_per_pass`` cuts by it):
        the rows times the widest row."""
        return len(rows) * max((r.width for r in rows), default=0)

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """How many loss units the micro-batch holds (the step's loss is their mean): its examples."""
        return int(batch["label"].shape[0])

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses (N,) on the graph, source index (N,)) for the micro-batch's N units."""
        raise NotImplementedError

    def record(self, name: str, values: torch.Tensor) -> None:
        """Add ``values`` (detached) to the mean of metric ``name`` over the current step; kept as
        tensors, so recording never waits on the device (one transfer per step, in :meth:`metrics`)."""
        self._recorded.setdefault(name, []).append(values.detach().double().reshape(-1))

    def metrics(self) -> dict[str, float]:
        """Means of the recorded metrics since the last call (then cleared): the step's, NaNs left out."""
        out = {}
        for name, parts in self._recorded.items():
            v = torch.cat(parts).cpu()
            v = v[~torch.isnan(v)]
            if v.numel():
                out[name] = float(v.mean())
        self._recorded.clear()
        return out


def build_objective(spec: dict[str, Any] | None = None) -> Objective:
    """``{name: dpo, beta: 0.1}`` -> a configured objective (params validated, defaults filled).

    Raises:
        RegistryError: An unknown objective (the message lists the valid ones).
        ConfigError: An unknown or ill-typed key, or a value out of range.
    """
    spec = dict(spec or {"name": DEFAULT_OBJECTIVE})
    name = spec.get("name")
    if not name:
        raise ValueError("objective: missing 'name'; valid choices: " + ", ".join(OBJECTIVES.names()))
    cls = OBJECTIVES.get(name)
    return cls(parse_params(cls.Params, spec, f"objective ({name})"))


def seq_logps(model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig, virtual_tokens: int,
              prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's loss tokens and their count, both (rows, sequences).

    One forward over the batch rows (one per sequence), through the same chunked, fused head as SFT's
    loss (no full-vocabulary logits), then summed per sequence.
    ``prefix`` selects the ``kl_`` rows of a KTO batch.
    """
    b = {k[len(prefix):]: v for k, v in batch.items() if k.startswith(prefix)} if prefix else batch
    inputs = {k: b[k] for k in ("input_ids", "position_ids", "targets", "source_idx")}
    losses, _ = token_losses(model, inputs, cfg.loss_chunk, virtual_tokens, cfg.compile)
    mask = b["targets"] != IGNORE
    n_rows, n_seqs = b["ref"].shape  # batch rows are the examples' sequences, row-major
    row = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
    zeros = torch.zeros(mask.shape[0], dtype=torch.float32, device=mask.device)
    logps = zeros.index_add(0, row, -losses.float())
    count = zeros.index_add(0, row, torch.ones_like(losses, dtype=torch.float32))
    return logps.view(n_rows, n_seqs), count.view(n_rows, n_seqs)


@torch.no_grad()
def reference_logps(model: nn.Module, rows: list[SeqRow], pad_id: int, precision: str, cfg: TrainConfig,
                    virtual_tokens: int = 0, batch_size: int | None = None) -> list[list[float]]:
    """Each row's reference log-probabilities (and its KL row's, appended), from ``model`` with
    dropout off: the untrained model, so the base is the reference of every method. Returns one
    list per row (``ref`` of its sequences, then of its ``kl`` row's), also written into the rows."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    bs = batch_size or cfg.batch_size
    out: list[list[float]] = []
    with autocast(device.type, precision):
        for i in range(0, len(rows), bs):
            chunk = rows[i : i + bs]
            batch = {k: v.to(device) for k, v in collate_seqs(chunk, pad_id).items()}
            main = seq_logps(model, batch, cfg, virtual_tokens)[0].double().cpu()
            kl = seq_logps(model, batch, cfg, virtual_tokens, "kl_")[0].double().cpu() if "kl_ref" in batch else None
            for j, r in enumerate(chunk):
                r.ref = main[j, : r.n_seqs].tolist()
                if r.kl is not None and kl is not None:
                    r.kl.ref = kl[j, : max(1, r.kl.n_seqs)].tolist()
                out.append(r.ref + (r.kl.ref if r.kl is not None else []))
    model.train(was_training)
    return out


def set_reference(rows: list[SeqRow], refs: list[list[float]]) -> None:
    """Put cached :func:`reference_logps` values back into ``rows``."""
    for r, ref in zip(rows, refs, strict=True):
        r.ref = ref[: r.n_seqs]
        if r.kl is not None:
            r.kl.ref = ref[r.n_seqs :]
