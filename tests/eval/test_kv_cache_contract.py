"""What the continuous-batching decoder (``tunelab.generate.engine``; its cache, ``tunelab.generate.kv_cache``)
relies on from transformers' KV cache.

The decoder builds caches layer by layer, swaps in its own ``GrowingLayer``, merges and drops batch
rows; a transformers upgrade that changes any of this must fail here, loudly, not as wrong text.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import Gemma3TextConfig
from transformers.cache_utils import DynamicCache, DynamicLayer

from tunelab.generate.kv_cache import GrowingLayer
from tunelab.models.load import cache_kwarg
from tunelab.models.tiny import tiny_model

B, H, T, D = 3, 2, 5, 16  # rows, KV heads, columns, head size


def contract(ok: bool, what: str) -> None:
    assert ok, f"transformers changed the cache contract the decoder relies on: {what}"


@pytest.fixture(scope="module")
def model():
    return tiny_model(100, seed=0, layers=2).eval()


def kv(b: int = B, t: int = T, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, H, t, D, generator=g), torch.randn(b, H, t, D, generator=g)


def test_a_plain_config_gives_one_dynamic_layer_per_model_layer(model) -> None:
    cache = DynamicCache(config=model.config)
    layers = getattr(cache, "layers", None)
    contract(isinstance(layers, list), "DynamicCache(config=...) has no list `.layers`")
    contract(len(layers) == model.config.num_hidden_layers, "DynamicCache(config=...) does not make one layer per model layer")
    contract(all(type(x) is DynamicLayer for x in layers),
             f"a plain Llama config's cache layers are {[type(x).__name__ for x in layers]}, not DynamicLayer")


def test_a_sliding_window_config_is_told_apart() -> None:
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8)
    layers = DynamicCache(config=cfg).layers
    contract(any(type(x) is not DynamicLayer for x in layers),
             "a sliding-window config's cache layers are plain DynamicLayer (the decoder routes those to "
             "continuous batching, which cannot merge sliding windows)")


def test_dynamic_layer_interface() -> None:
    for name in ("keys", "values", "is_initialized"):
        contract(hasattr(DynamicLayer(), name), f"DynamicLayer() has no `{name}`")
    for name in ("update", "batch_select_indices", "batch_repeat_interleave", "get_seq_length", "get_mask_sizes"):
        contract(callable(getattr(DynamicLayer, name, None)), f"DynamicLayer has no method `{name}`")
    params = list(inspect.signature(DynamicLayer.update).parameters)
    contract(params[:3] == ["self", "key_states", "value_states"],
             f"DynamicLayer.update takes {params}, not (key_states, value_states, ...)")
    layer = DynamicLayer()
    k, v = kv()
    keys, values = layer.update(k, v)
    contract(torch.equal(keys, k) and torch.equal(layer.keys, k) and torch.equal(layer.values, v),
             "DynamicLayer.update does not store and return (B, H, T, D) keys/values")
    contract(layer.get_seq_length() == T, "DynamicLayer.get_seq_length is not keys.shape[-2]")
    contract(tuple(layer.get_mask_sizes(1)) == (T + 1, 0), "DynamicLayer.get_mask_sizes(q) is not (T + q, 0)")


def test_growing_layer_stands_in_for_a_dynamic_layer() -> None:
    k, v = kv()
    layer = GrowingLayer().hold(k, v)
    contract(layer.get_seq_length() == T, "get_seq_length does not read the layer's `keys` view")
    contract(tuple(layer.get_mask_sizes(1)) == (T + 1, 0), "get_mask_sizes does not follow `keys`")
    k2, v2 = kv(t=1, seed=1)
    keys, _ = layer.update(k2, v2)
    assert torch.equal(keys, torch.cat([k, k2], dim=2)) and layer.get_seq_length() == T + 1
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys, torch.cat([k, k2], dim=2)[[2, 0]])


def test_cache_batch_operations_act_on_every_layer() -> None:
    cache = DynamicCache(config=tiny_model(100, layers=2).config)
    for name in ("batch_repeat_interleave", "batch_select_indices", "update"):
        contract(callable(getattr(cache, name, None)), f"DynamicCache has no method `{name}`")
    k, v = kv()
    for i in range(len(cache.layers)):
        cache.update(k, v, i)
    contract(all(torch.equal(x.keys, k) for x in cache.layers), "DynamicCache.update(k, v, layer_idx) does not fill that layer")
    cache.batch_repeat_interleave(2)
    contract(all(torch.equal(x.keys, k.repeat_interleave(2, dim=0)) for x in cache.layers),
             "DynamicCache.batch_repeat_interleave(n) does not repeat every layer's rows in place")
    cache.batch_select_indices(torch.tensor([1, 4]))
    contract(all(torch.equal(x.values, v[[0, 2]]) for x in cache.layers),
             "DynamicCache.batch_select_indices does not keep the given rows of every layer")


def test_the_model_reads_and_writes_the_cache_through_its_layers(model) -> None:
    kw = cache_kwarg(model)
    params = inspect.signature(model.forward).parameters
    contract(kw in params, f"the model's forward has no `{kw}` keyword (tunelab.models.load.cache_kwarg)")
    for name in ("input_ids", "attention_mask", "position_ids", "use_cache", "logits_to_keep"):
        contract(name in params, f"the model's forward has no `{name}` keyword")
    ids = torch.tensor([[5, 9, 11, 42, 7, 13]])
    plain = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{kw: plain})
    contract(out.logits.shape[1] == 1, "logits_to_keep=1 does not keep only the last position")
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    shape = (1, model.config.num_key_value_heads, ids.shape[1], head_dim)
    contract(all(tuple(x.keys.shape) == shape for x in plain.layers),
             f"a prefill does not leave (B, H, T, D) = {shape} keys in `cache.layers[i].keys`")
    grown = DynamicCache(config=model.config)
    for i, x in enumerate(plain.layers):
        grown.layers[i] = GrowingLayer().hold(x.keys, x.values)
    step = dict(input_ids=torch.tensor([[17]]), attention_mask=torch.ones(1, 7, dtype=torch.long),
                position_ids=torch.tensor([[6]]), use_cache=True)
    with torch.no_grad():
        a = model(**step, **{kw: plain}).logits
        b = model(**step, **{kw: grown}).logits
    contract(torch.allclose(a, b, atol=1e-5),
             "a cache whose layers were replaced (cache.layers[i] = GrowingLayer) decodes differently")
    contract(all(x.get_seq_length() == 7 for x in grown.layers), "the model does not append through layer.update")
