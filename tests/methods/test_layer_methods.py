"""Partial fine-tuning and bottleneck adapters: which layers train, per-layer learning rates,
adapters start as the identity, placements, saved artefacts."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.config import TrainConfig
from tunelab.methods import build_method, count_parameters
from tunelab.methods.layers import decoder_layers, params_by_layer
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.train.optim import build_optimizer, set_lr

LAYERS = 4


def _model():
    return tiny_model(len(tiny_tokenizer()), seed=0, layers=LAYERS)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _layers_of(names):
    return {int(n.split(".")[2]) for n in names if ".layers." in n}


def test_decoder_layers_are_found_generically():
    prefix, layers = decoder_layers(_model())
    assert prefix == "model.layers" and len(layers) == LAYERS
    per_layer, outside = params_by_layer(_model())
    assert sorted(outside) == ["model.embed_tokens.weight", "model.norm.weight"]  # tied head: one tensor


@pytest.mark.parametrize("spec, layers", [
    ({"top_k": 1}, {3}), ({"top_k": None, "bottom_k": 2}, {0, 1}), ({"top_k": 1, "bottom_k": 1}, {0, 3}),
    ({"top_k": 0, "patterns": [r"layers\.2\.mlp\."]}, {2}),
])
def test_partial_trains_the_chosen_layers_only(spec, layers):
    model = build_method({"name": "partial", **spec}).apply(_model())
    names = _trainable(model)
    assert _layers_of(names) == layers
    assert not any("embed_tokens" in n or n == "model.norm.weight" for n in names)
    if "patterns" in spec:
        assert all(".mlp." in n for n in names)


def test_partial_head_and_embedding_switches():
    head = _trainable(build_method({"name": "partial", "top_k": 0, "include_head": True}).apply(_model()))
    assert head == {"model.embed_tokens.weight", "model.norm.weight"}  # tied: the head is the embedding
    emb = _trainable(build_method({"name": "partial", "top_k": 0, "include_embeddings": True}).apply(_model()))
    assert emb == {"model.embed_tokens.weight"}
    with pytest.raises(ValueError, match="selects no parameters"):
        build_method({"name": "partial", "top_k": 0}).apply(_model())


def test_partial_learning_rates_per_layer():
    method = build_method({"name": "partial", "top_k": 3, "layer_lr_decay": 0.5,
                           "lr_multipliers": {r"layers\.1\.self_attn\.": 0.1}})
    model = method.apply(_model())
    names = {id(p): n for n, p in model.named_parameters()}
    mult = {names[id(p)]: g["lr_mult"] for g in method.param_groups(model) for p in g["params"]}
    assert mult["model.layers.3.mlp.up_proj.weight"] == 1.0
    assert mult["model.layers.2.mlp.up_proj.weight"] == 0.5
    assert mult["model.layers.1.mlp.up_proj.weight"] == 0.25
    assert mult["model.layers.1.self_attn.q_proj.weight"] == pytest.approx(0.025)
    opt = build_optimizer(model, method, TrainConfig(lr=1.0))
    set_lr(opt, 2.0)
    lrs = {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs["model.layers.1.self_attn.q_proj.weight"] == pytest.approx(0.05)
    assert lrs["model.layers.3.mlp.up_proj.weight"] == 2.0


@pytest.mark.parametrize("placement, sites", [("houlsby", {"self_attn", "mlp"}), ("pfeiffer", {"mlp"})])
def test_adapters_start_as_the_base_model(placement, sites):
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        ref = _model().eval()(input_ids=x).logits
        model = build_method({"name": "adapters", "placement": placement, "reduction_factor": 8}).apply(_model()).eval()
        assert torch.equal(model(input_ids=x).logits, ref)
    names = _trainable(model)
    assert {n.split(".")[3] for n in names} == sites and all(".bottleneck_adapter." in n for n in names)
    hidden, bottleneck = 64, 8
    per_adapter = 2 * hidden * bottleneck + bottleneck + hidden
    assert count_parameters(model)[0] == LAYERS * len(sites) * per_adapter


def test_adapters_save_standard_files_and_reload(tmp_path):
    tok = tiny_tokenizer()
    method = build_method({"name": "adapters", "placement": "pfeiffer", "nonlinearity": "tanh"})
    model = method.apply(_model())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    method.save_final(model, tok, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    config = json.loads((tmp_path / "adapters_config.json").read_text())
    assert config["placement"] == "pfeiffer" and config["nonlinearity"] == "tanh"
    loaded = type(method).load_final(_model(), tmp_path).eval()
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model.eval()(input_ids=x).logits)
    with pytest.raises(NotImplementedError):
        method.merge(model)
