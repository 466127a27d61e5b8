"""Prefix / prompt tuning and IA3 specifics: generation with a KV cache and left padding matches
step-by-step decoding, prompt tuning's virtual tokens, text initialisation, IA3's default targets."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from tunelab.methods import build_method
from tunelab.methods.prompt_learning import packed_segments, virtual_token_mask
from tunelab.models.tiny import tiny_model, tiny_tokenizer


def _random_model(spec):
    """A tiny model with large random weights (varied greedy tokens) and a random adapter."""
    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(0, 0.5)
    method = build_method(spec)
    model = method.apply(base).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    return model


def _stepwise(model, ids, n):
    """Greedy decoding by full forward passes, no cache, no padding: the reference."""
    x = torch.tensor([ids])
    for _ in range(n):
        x = torch.cat([x, model(input_ids=x).logits[:, -1:].argmax(-1)], dim=1)
    return x[0, len(ids):].tolist()


@pytest.mark.parametrize("spec", [{"name": "prefix", "num_virtual_tokens": 4},
                                  {"name": "prompt", "num_virtual_tokens": 4}, {"name": "ia3"}])
def test_cached_left_padded_generation_matches_stepwise_decoding(spec):
    """As tunelab.generate.hf does it: left padding, attention mask, KV cache, greedy."""
    model = _random_model(spec)
    prompts = [[5 + (7 * j + i) % 90 for j in range(3 + 2 * i)] for i in range(4)]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             pad_token_id=0, eos_token_id=None, use_cache=True)
        ref = [_stepwise(model, p, 6) for p in prompts]
        uncached = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                  pad_token_id=0, eos_token_id=None, use_cache=False)
    assert out[:, width:].tolist() == ref
    assert uncached[:, width:].tolist() == ref


@pytest.mark.parametrize("spec", [{"name": "prefix", "num_virtual_tokens": 4},
                                  {"name": "prompt", "num_virtual_tokens": 4}])
def test_a_deep_copy_generates_with_its_own_weights(spec):
    """tunelab.generate.hf decodes with a (bf16) deep copy: generation must follow the copy."""
    model = _random_model(spec)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            if p.requires_grad:
                p.normal_()
        ids = [5, 9, 13, 17, 21]
        out = twin.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, 5, dtype=torch.long),
                            max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert out[0, 5:].tolist() == _stepwise(twin, ids, 6) != _stepwise(model, ids, 6)
        half = copy.deepcopy(model).to(torch.bfloat16)
        assert half.generate(input_ids=torch.tensor([ids]), max_new_tokens=3, pad_token_id=0).shape == (1, 8)


def test_prompt_tuning_declares_its_virtual_tokens():
    method = build_method({"name": "prompt", "num_virtual_tokens": 7})
    assert method.virtual_tokens == 7
    assert build_method({"name": "prefix", "num_virtual_tokens": 7}).virtual_tokens == 0  # keys only, no positions
    tok = tiny_tokenizer()
    model = method.apply(tiny_model(len(tok)))
    out = model(input_ids=torch.tensor([[5, 6, 7]]), position_ids=torch.tensor([[0, 1, 2]]), output_hidden_states=True)
    assert out.hidden_states[-1].shape[1] == 3 + 7


def test_prefix_training_forward_is_quiet():
    model = build_method({"name": "prefix", "num_virtual_tokens": 4}).apply(tiny_model(len(tiny_tokenizer())))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(input_ids=torch.tensor([[5, 6, 7, 8]]), position_ids=torch.tensor([[0, 1, 0, 1]]), use_cache=False)


def test_prompt_init_text_uses_the_token_embeddings(tiny_dir):
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    emb = base.get_input_embeddings().weight.detach().clone()
    model = build_method({"name": "prompt", "num_virtual_tokens": 4, "init_text": "abcd"}).apply(base)
    prompt = model.prompt_encoder["default"].embedding.weight
    assert torch.equal(prompt, emb[tok("abcd", add_special_tokens=False)["input_ids"]])


def test_ia3_default_targets_are_the_papers():
    model = build_method({"name": "ia3"}).apply(tiny_model(len(tiny_tokenizer())))
    scaled = {n.split(".")[-3] for n, p in model.named_parameters() if p.requires_grad}
    assert scaled == {"k_proj", "v_proj", "down_proj"}


def test_virtual_token_mask_keeps_samples_apart():
    seg = packed_segments(torch.tensor([[0, 1, 0, 1, 2]]))
    assert seg.tolist() == [[0, 0, 1, 1, 1]]
    assert packed_segments(torch.tensor([[0, 1, 2]])) is None
    m = virtual_token_mask(seg, 2, virtual_queries=False, eager=False, dtype=torch.float32)[0, 0]
    assert m.shape == (5, 7)
    assert m[:, :2].all()  # every token sees the virtual tokens
    assert m[2, 2:].tolist() == [False, False, True, False, False]  # sample 2 starts fresh
    eager = virtual_token_mask(seg, 2, virtual_queries=True, eager=True, dtype=torch.float32)[0, 0]
    assert eager.shape == (7, 7) and eager[0, 1] < 0 and eager[1, 0] == 0
