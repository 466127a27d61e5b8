"""Parity with TRL 1.16: each preference loss and its gradient on the same small batch.

TRL builds and tokenizes the batch with its own collator; the same token ids and completion masks
become tunelab rows, and both sides' loss and parameter gradients are compared (fp32, 1e-5).
DPO and KTO run TRL's trainers end to end (``compute_loss``); ORPO compares against TRL's
``ORPOTrainer.odds_ratio_loss`` and its chosen-NLL formula on the same log-probabilities.
"""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tunelab.config import TrainConfig  # noqa: E402
from tunelab.data.preference import SeqRow  # noqa: E402
from tunelab.data.tokenize import IGNORE, Encoded  # noqa: E402
from tunelab.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402
from tunelab.train.objectives import build_objective, reference_logps, seq_logps  # noqa: E402

TOL = 1e-5
PAIRS = [
    ("2+2?", "4", "five"),
    ("capital of France", "Paris", "Rome, I think"),
    ("say hi", "hi there!", "no"),
]


def _encoded(ids: torch.Tensor, comp: torch.Tensor) -> Encoded:
    """A tunelab sequence from TRL's token ids and completion mask (padding removed)."""
    ids, comp = ids.tolist(), comp.tolist()
    targets = [ids[t + 1] if comp[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    return Encoded(ids, targets, "s", "")


def _trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = mask.bool()
    return ids[keep], keep


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(ours, theirs) -> None:
    g1, g2 = _grads(ours), _grads(theirs)
    assert g1.keys() == g2.keys() and g1
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=TOL, rtol=1e-4, msg=name)


@pytest.fixture
def setup(tmp_path):
    warnings.filterwarnings("ignore")
    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=0).float()
    return tok, base, TrainConfig(batch_size=8, loss_chunk=7)  # a small chunk: several head chunks


def _ours(objective, base, rows) -> tuple[torch.Tensor, torch.nn.Module]:
    """Our loss on ``rows`` (reference from the untrained model) and the model holding its gradients."""
    model = copy.deepcopy(base).train()
    cfg = TrainConfig(batch_size=8, loss_chunk=7)
    if objective.needs_reference:
        reference_logps(model, rows, 0, "fp32", cfg)
    batch = objective.collate(rows, 0, False)
    losses, _ = objective(model, batch, cfg, 0)
    loss = losses.sum() / objective.units(batch)
    loss.backward()
    return loss.detach(), model


def test_dpo_loss_and_gradient_equal_trl(setup, tmp_path):
    tok, base, _ = setup
    data = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS])
    theirs = copy.deepcopy(base).train()
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, beta=0.1, report_to=[],
                         use_cpu=True, bf16=False, max_length=256)
    trainer = trl.DPOTrainer(model=theirs, ref_model=copy.deepcopy(base), args=args, train_dataset=data,
                             processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    n = len(PAIRS)
    rows = []
    for i in range(n):
        row = SeqRow()
        for j in (i, n + i):  # TRL's batch is [chosen..., rejected...]
            ids, keep = _trim(batch["input_ids"][j], batch["attention_mask"][j])
            row.add(_encoded(ids, batch["completion_mask"][j][keep]), 0)
        rows.append(row)
    loss, ours = _ours(build_objective({"name": "dpo", "beta": 0.1}), base, rows)
    assert abs(loss.item() - trl_loss.item()) < TOL
    assert abs(loss.item() - 0.6931) < 0.01  # the reference is the model itself: log 2 at the start
    _assert_same_grads(ours, trainer.model)


def test_dpo_loss_moves_with_the_policy(setup, tmp_path):
    """Away from the reference the loss is not log 2, and still equals TRL's."""
    tok, base, _ = setup
    policy = copy.deepcopy(base)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05, alpha=1.0)
    data = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
         "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS])
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, beta=0.5, report_to=[],
                         use_cpu=True, bf16=False, max_length=256)
    theirs = copy.deepcopy(policy).train()
    trainer = trl.DPOTrainer(model=theirs, ref_model=copy.deepcopy(base), args=args, train_dataset=data,
                             processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    n, rows = len(PAIRS), []
    for i in range(n):
        row = SeqRow()
        for j in (i, n + i):
            ids, keep = _trim(batch["input_ids"][j], batch["attention_mask"][j])
            row.add(_encoded(ids, batch["completion_mask"][j][keep]), 0)
        rows.append(row)
    cfg = TrainConfig(batch_size=8, loss_chunk=7)
    reference_logps(copy.deepcopy(base), rows, 0, "fp32", cfg)  # the reference: the base model
    ours = copy.deepcopy(policy).train()
    objective = build_objective({"name": "dpo", "beta": 0.5})
    b = objective.collate(rows, 0, False)
    losses, _ = objective(ours, b, cfg, 0)
    loss = losses.sum() / objective.units(b)
    loss.backward()
    assert abs(loss.item() - 0.6931) > 1e-3
    assert abs(loss.item() - trl_loss.item()) < TOL
    _assert_same_grads(ours, trainer.model)
    m = objective.metrics()
    assert {"rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"} <= m.keys()
    assert m["rewards/margin"] == pytest.approx(m["rewards/chosen"] - m["rewards/rejected"])


def test_kto_loss_and_gradient_equal_trl(setup, tmp_path):
    tok, base, _ = setup
    policy = copy.deepcopy(base)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    examples = [(p, c, True) for p, c, _ in PAIRS] + [(p, r, False) for p, _, r in PAIRS]
    data = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}],
         "label": lab} for p, c, lab in examples])
    args = trl.KTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(examples), beta=0.3,
                         report_to=[], use_cpu=True, bf16=False, max_length=256,
                         desirable_weight=1.0, undesirable_weight=1.5)
    theirs = copy.deepcopy(policy).train()
    trainer = trl.KTOTrainer(model=theirs, ref_model=copy.deepcopy(base), args=args, train_dataset=data,
                             processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(examples))])
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    rows = []
    for i in range(len(examples)):
        row = SeqRow(label=int(batch["label"][i]))
        ids, keep = _trim(batch["input_ids"][i], batch["attention_mask"][i])
        row.add(_encoded(ids, batch["completion_mask"][i][keep]), 0)
        row.kl = SeqRow()
        ids, keep = _trim(batch["KL_input_ids"][i], batch["KL_attention_mask"][i])
        row.kl.add(_encoded(ids, batch["KL_completion_mask"][i][keep]), 0)
        rows.append(row)
    cfg = TrainConfig(batch_size=8, loss_chunk=7)
    reference_logps(copy.deepcopy(base), rows, 0, "fp32", cfg)
    ours = copy.deepcopy(policy).train()
    objective = build_objective({"name": "kto", "beta": 0.3, "undesirable_weight": 1.5})
    b = objective.collate(rows, 0, False)
    losses, _ = objective(ours, b, cfg, 0)
    loss = losses.sum() / objective.units(b)
    loss.backward()
    assert abs(loss.item() - trl_loss.item()) < TOL
    _assert_same_grads(ours, trainer.model)
    assert objective.metrics()["kl"] >= 0


def test_orpo_loss_and_gradient_equal_trl_formula(setup):
    """ORPO on the same log-probabilities as TRL's ``odds_ratio_loss`` and chosen NLL (TRL's ORPO
    trainer takes the NLL over prompt and completion; tunelab, like the paper, over the completion)."""
    from trl.experimental.orpo import ORPOTrainer

    tok, base, cfg = setup
    n, rows = len(PAIRS), []
    for p, c, r in PAIRS:
        row = SeqRow()
        prompt = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for completion in (c, r):
            ids = tok(prompt + completion + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
            n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
            row.add(_encoded(torch.tensor(ids), torch.tensor([0] * n_prompt + [1] * (len(ids) - n_prompt))), 0)
        rows.append(row)
    beta = 0.25
    objective = build_objective({"name": "orpo", "beta": beta})
    ours = copy.deepcopy(base).train()
    b = objective.collate(rows, 0, False)
    losses, _ = objective(ours, b, cfg, 0)
    loss = losses.sum() / objective.units(b)
    loss.backward()

    theirs = copy.deepcopy(base).train()
    logps, count = seq_logps(theirs, b, cfg, 0)
    stub = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=torch.device("cpu")))
    avg = logps / count
    or_losses, *_ = ORPOTrainer.odds_ratio_loss(stub, avg[:, 0], avg[:, 1])
    nll = -logps[:, 0].sum() / count[:, 0].sum()  # TRL's CrossEntropyLoss mean over the chosen tokens
    trl_loss = nll - or_losses.mean()
    trl_loss.backward()
    assert abs(loss.item() - trl_loss.item()) < TOL
    _assert_same_grads(ours, theirs)
    assert b["input_ids"].shape[0] == 2 * n  # one batch row per sequence
