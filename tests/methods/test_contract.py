"""Method contract, over the registry (plus named switches such as DoRA): only the parameters a
method declares (``trains`` / ``may_change``) change; save -> load gives the same logits; merge equals
unmerged where merging applies; packed rows give the losses of their samples run alone; every method
runs through the one loop; regularizers do nothing in eval mode.

A new method needs no entry here: its module registers it, and the registry lists it."""

from __future__ import annotations

import pytest
import torch

from tunelab.config import TrainConfig
from tunelab.data.tokenize import collate, encode, pack
from tunelab.methods import METHODS, build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.registry import first_doc_line
from tunelab.regularizers import REGULARIZERS, build_regularizers
from tunelab.train.loop import TrainJob, train
from tunelab.train.loss import token_losses
from tunelab.train.optim import build_optimizer
from tunelab.types import Sample

# Switches worth their own contract run; what each may change comes from the method itself.
SWITCHES = {
    "dora": {"name": "lora", "use_dora": True},
    "rslora": {"name": "lora", "use_rslora": True},
    "prefix-projection": {"name": "prefix", "prefix_projection": True, "num_virtual_tokens": 4},
    "ia3-all-linear": {"name": "ia3", "target_modules": "all-linear", "feedforward_modules": ["down_proj"]},
    "adapters-pfeiffer": {"name": "adapters", "placement": "pfeiffer", "nonlinearity": "gelu"},
    "partial-top1": {"name": "partial", "top_k": 1},
    "lisa-gamma1": {"name": "lisa", "gamma": 1, "interval": 1},
}
# Every registered method with its defaults, plus the switches.
VARIANTS = {name: {"name": name} for name in METHODS.names()} | SWITCHES
MERGEABLE = [v for v, spec in VARIANTS.items() if METHODS.get(spec["name"]).mergeable]


def _samples(n=6):
    return [Sample([{"role": "user", "content": f"add {i} and {i+1}"}, {"role": "assistant", "content": str(2 * i + 1)}],
                   {"source": "s", "id": str(i)}) for i in range(n)]


def _batch(tok):
    return collate(pack([encode(s, tok, 256) for s in _samples()], ["s"], 256, True), tok.pad_token_id, True)


def _train(model, method, tok, steps=3):
    opt = build_optimizer(model, method, TrainConfig(lr=1e-2))
    batch = _batch(tok)
    model.train()
    for step in range(steps):
        if method.on_step(step, model):
            opt = build_optimizer(model, method, TrainConfig(lr=1e-2), previous=opt)
        losses, _ = token_losses(model, batch, virtual_tokens=method.virtual_tokens)
        losses.mean().backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_every_registered_method_has_a_contract():
    assert set(METHODS.names()) <= set(VARIANTS)
    assert {spec["name"] for spec in VARIANTS.values()} <= set(METHODS.names())
    for name, cls in METHODS.items():
        assert cls.name == name  # set by the register decorator
        assert first_doc_line(cls), f"method {name!r} needs a docstring (tunelab ls shows its first line)"
        assert cls.trains is None or (isinstance(cls.trains, tuple) and all(k and isinstance(k, str) for k in cls.trains))


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_intended_parameters_change(variant):
    tok = tiny_tokenizer()
    method = build_method(VARIANTS[variant])
    model = method.apply(tiny_model(len(tok), seed=0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, method, tok)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    intended = {n for n, _ in model.named_parameters() if method.may_change(n, model)}
    assert changed <= intended, sorted(changed - intended)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= intended, sorted(trainable - intended)


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_gives_identical_logits(variant, tmp_path):
    tok = tiny_tokenizer()
    method = build_method(VARIANTS[variant])
    model = _train(method.apply(tiny_model(len(tok), seed=0)), method, tok)
    method.save_final(model, tok, tmp_path / "final")
    loaded = type(method).load_final(tiny_model(len(tok), seed=0), tmp_path / "final").eval()
    x = _batch(tok)["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(input_ids=x).logits, loaded(input_ids=x).logits, atol=1e-6)


@pytest.mark.parametrize("variant", MERGEABLE)
def test_merge_equals_unmerged(variant):
    tok = tiny_tokenizer()
    method = build_method(VARIANTS[variant])
    model = _train(method.apply(tiny_model(len(tok), seed=0)), method, tok)
    x = _batch(tok)["input_ids"]
    with torch.no_grad():
        unmerged = model(input_ids=x).logits
        plain = method.merge(model)
        merged = plain(input_ids=x).logits
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert torch.allclose(unmerged, merged, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_packed_rows_give_the_losses_of_samples_alone(variant):
    """Packing must not leak attention across samples, also with prefix/prompt virtual tokens."""
    tok = tiny_tokenizer()
    method = build_method(VARIANTS[variant])
    model = method.apply(tiny_model(len(tok), seed=0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # move away from the identity init so the method matters
                p.add_(torch.randn_like(p) * 0.5)
    enc = [encode(s, tok, 256) for s in _samples(5)]
    vt = method.virtual_tokens
    with torch.no_grad():
        packed, _ = token_losses(model, collate(pack(enc, ["s"], 256, True), tok.pad_token_id, True), virtual_tokens=vt)
        padded, _ = token_losses(model, collate(pack(enc, ["s"], 256, False), tok.pad_token_id, False), virtual_tokens=vt)
        alone = torch.cat([token_losses(model, collate(pack([e], ["s"], 256, False), tok.pad_token_id, False),
                                        virtual_tokens=vt)[0] for e in enc])
    assert torch.allclose(packed, alone, atol=1e-4)
    assert torch.allclose(padded, alone, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_method_runs_through_the_loop(variant, tmp_path):
    tok = tiny_tokenizer()
    method = build_method(VARIANTS[variant])
    model = method.apply(tiny_model(len(tok), seed=0))
    enc = [encode(s, tok, 64) for s in _samples(16)]
    held = pack(enc[:4], ["s"], 64, True)
    cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-3, warmup_ratio=0.0, save_every=0, precision="fp32")
    job = TrainJob(model, method, pack(enc[4:], ["s"], 64, True), ["s"], cfg, "fp32", tmp_path, tok.pad_token_id,
                   True, heldout=held)
    _, summary = train(job)
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["heldout_loss"]))


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_regularizers_do_nothing_in_eval_mode(name):
    tok = tiny_tokenizer()
    x = _batch(tok)
    plain = tiny_model(len(tok), seed=0).eval()
    model = tiny_model(len(tok), seed=0)
    build_regularizers([{"name": name}])[0].apply(model)
    with torch.no_grad():
        ref, _ = token_losses(plain, x)
        model.eval()
        off, _ = token_losses(model, x)
        model.train()
        on, _ = token_losses(model, x)
    assert torch.equal(ref, off)
    assert not torch.allclose(ref, on)


def test_unknown_method_and_param_errors_list_choices():
    with pytest.raises(Exception, match="valid choices: .*lora"):
        build_method({"name": "lorax"})
    with pytest.raises(Exception, match="unknown key 'method.rank'; valid keys: r, alpha"):
        build_method({"name": "lora", "rank": 8})
