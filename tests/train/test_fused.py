"""The training-speed kernels compute what they replace: the fused linear cross-entropy against
the checkpointed head, and compiled training's ``tunelab_cpu`` attention against SDPA (losses
and gradients; fp32 tight, bf16 to bf16 rounding)."""

from __future__ import annotations

import pytest
import torch

from tunelab.data.tokenize import collate, encode, pack
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.train import loss as loss_mod
from tunelab.train.loss import LinearCrossEntropy, head_and_ce, token_losses
from tunelab.types import Sample


def _samples(n):
    return [Sample([{"role": "user", "content": f"add {i} and {i + 1}"},
                    {"role": "assistant", "content": str(2 * i + 1)}], {"source": "s", "id": str(i)})
            for i in range(n)]


def _batch(tok, n=5):
    return collate(pack([encode(s, tok, 256) for s in _samples(n)], ["s"], 256, True), tok.pad_token_id, True)


def _lora_model(tok):
    model = build_method({"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0}).apply(
        tiny_model(len(tok), seed=3))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the update path carry signal
            p.data.normal_(0, 0.2)
    return model


def _loss_and_grads(model, batch, bf16: bool):
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        losses, _ = token_losses(model, batch)
    losses.mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses.detach(), grads


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flash_matmul_attention_matches_sdpa(packed, dtype):
    """Forward and the hand-written backward against SDPA with repeated KV heads; causal and a
    block-diagonal (packed rows) mask; GQA with 3 query heads per KV head."""
    from tunelab.models.attention import FlashMatmulAttention

    torch.manual_seed(0)
    b, h, kv, t, d = 2, 6, 2, 37, 16
    q, k, v = (torch.randn(b, n, t, d, dtype=torch.float64) for n in (h, kv, kv))
    allowed = None
    if packed:
        seg = torch.tensor([0] * 20 + [1] * 17)
        allowed = ((seg[:, None] == seg[None, :]) & torch.ones(t, t, dtype=torch.bool).tril())[None, None]
        allowed = allowed.expand(b, 1, t, t)
    grad_out = torch.randn(b, h, t, d, dtype=torch.float64)
    ins = [x.to(dtype).requires_grad_() for x in (q, k, v)]
    out = FlashMatmulAttention.apply(*ins, allowed, 0.25)
    out.backward(grad_out.to(dtype))
    ref_ins = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(
        ref_ins[0], ref_ins[1].repeat_interleave(3, 1), ref_ins[2].repeat_interleave(3, 1),
        attn_mask=allowed, is_causal=not packed, scale=0.25)
    ref.backward(grad_out)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5  # relative, in norm
    assert (out.double() - ref).norm() / ref.norm() < tol
    for mine, theirs in zip(ins, ref_ins):
        assert (mine.grad.double() - theirs.grad).norm() / theirs.grad.norm() < tol


@pytest.mark.parametrize("softcap", [None, 30.0])
@pytest.mark.parametrize("compiled", [False, True])
def test_linear_cross_entropy(softcap, compiled):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    h = torch.randn(9, 16, requires_grad=True)
    y = torch.randint(0, 50, (9,))
    g = torch.rand(9)  # a per-row upstream gradient, as the loop's per-token weighting gives
    ref = head_and_ce(head, softcap, h, y)
    (g_ref,) = torch.autograd.grad((ref * g).sum(), h)
    out = LinearCrossEntropy.apply(h, head.weight, y, softcap, 4, torch.float32, compiled)  # 3 chunks
    (g_out,) = torch.autograd.grad((out * g).sum(), h)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-5, atol=1e-6)


def test_token_losses_takes_the_fused_head_only_when_frozen(monkeypatch):
    """Frozen tied head (LoRA): fused path, same losses and LoRA gradients as the checkpointed one.
    Trainable head (full fine-tuning): the generic path."""
    tok = tiny_tokenizer()
    batch = _batch(tok)
    lora = _lora_model(tok)
    assert loss_mod._fused_ok(lora.get_output_embeddings())
    fused, fused_grads = _loss_and_grads(lora, batch, False)
    monkeypatch.setattr(loss_mod, "_fused_ok", lambda head: False)
    ref, ref_grads = _loss_and_grads(_lora_model(tok), batch, False)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)
    for name in ref_grads:
        torch.testing.assert_close(fused_grads[name], ref_grads[name], rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    full = tiny_model(len(tok), seed=3)
    assert not loss_mod._fused_ok(full.get_output_embeddings())


def test_compiled_training_uses_tunelab_attention_and_restores():
    """``train.compile`` on CPU trains with ``tunelab_cpu`` attention (same losses and gradients
    as SDPA) and gives the model back uncompiled, with SDPA, for evaluation."""
    from tunelab.methods.layers import decoder_layers
    from tunelab.train.loop import compile_layers

    tok = tiny_tokenizer()
    batch = _batch(tok)
    model = _lora_model(tok)
    assert model.config._attn_implementation == "sdpa"
    sdpa, sdpa_grads = _loss_and_grads(model, batch, False)
    model.zero_grad()
    restore = compile_layers(model, torch.device("cpu"))
    assert model.config._attn_implementation == "tunelab_cpu"
    ours, grads = _loss_and_grads(model, batch, False)
    torch.testing.assert_close(ours, sdpa, rtol=1e-5, atol=1e-5)
    for name in sdpa_grads:
        torch.testing.assert_close(grads[name], sdpa_grads[name], rtol=1e-4, atol=1e-6)
    restore()
    assert model.config._attn_implementation == "sdpa"
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(model)[1])


def test_tunelab_attention_on_gemma3_sliding_window():
    """Gemma3 (sliding-window layers: a boolean mask reaches the attention; its own query scaling):
    ``tunelab_cpu`` gives SDPA's losses and gradients."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from tunelab.models.attention import FlashMatmulAttention, register

    tok = tiny_tokenizer()
    batch = _batch(tok)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"], pad_token_id=0)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg)
    model.config._attn_implementation = "sdpa"
    sdpa, sdpa_grads = _loss_and_grads(model, batch, False)
    model.zero_grad()
    model.set_attn_implementation(register())
    masks = []
    orig = FlashMatmulAttention.apply
    FlashMatmulAttention.apply = lambda q, k, v, allowed, scale: masks.append(allowed) or orig(q, k, v, allowed, scale)
    try:
        ours, grads = _loss_and_grads(model, batch, False)
    finally:
        FlashMatmulAttention.apply = orig
    assert len(masks) == 2 and all(m is not None and m.dtype == torch.bool for m in masks)  # packed + windows
    assert not torch.equal(masks[0], masks[1])  # the sliding layer's mask differs from the full one
    torch.testing.assert_close(ours, sdpa, rtol=1e-5, atol=1e-5)
    for name in sdpa_grads:
        torch.testing.assert_close(grads[name], sdpa_grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("packing", [True, False])
def test_compiled_loop_matches_eager_loop(tmp_path, packing):
    """``train.compile`` through the one loop (fp32): the same per-step losses and held-out loss as
    the uncompiled loop, and the model comes back with SDPA, uncompiled."""
    import json

    from tunelab.config import TrainConfig
    from tunelab.methods.layers import decoder_layers
    from tunelab.train.loop import TrainJob, train

    tok = tiny_tokenizer()
    enc = [encode(s, tok, 64) for s in _samples(16)]
    results = {}
    for compile_ in (False, True):
        method = build_method({"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0})
        model = method.apply(tiny_model(len(tok), seed=0))
        cfg = TrainConfig(max_steps=3, batch_size=4, lr=1e-2, warmup_ratio=0.0, save_every=0, precision="fp32",
                          compile=compile_)
        out = tmp_path / str(compile_)
        out.mkdir()
        job = TrainJob(model, method, pack(enc[4:], ["s"], 64, packing), ["s"], cfg, "fp32", out,
                       tok.pad_token_id, packing, heldout=pack(enc[:4], ["s"], 64, packing))
        trained, summary = train(job)
        losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
        results[compile_] = (losses, summary["heldout_loss"])
        assert trained.config._attn_implementation == "sdpa"
        assert all(layer._compiled_call_impl is None for layer in decoder_layers(trained)[1])
    torch.testing.assert_close(torch.tensor(results[True][0]), torch.tensor(results[False][0]), rtol=1e-4, atol=1e-5)
    assert abs(results[True][1] - results[False][1]) < 1e-4


def test_batch_without_targets_gives_empty_losses_that_backpropagate():
    tok = tiny_tokenizer()
    batch = _batch(tok)
    batch["targets"] = torch.full_like(batch["targets"], -100)
    losses, src = token_losses(_lora_model(tok), batch)
    assert losses.shape == (0,) and src.shape == (0,)
    losses.sum().backward()  # a step over such a batch must not crash


def test_auto_head_chunk_holds_the_logits_memory_whatever_the_vocabulary():
    """train.loss_chunk auto: SmolLM2's 49,152 words keep 2048 positions a chunk, Gemma 3's 262,144 get 384
    (the same logit elements), smaller vocabularies keep 2048, a number is kept, and a chunk never falls
    below 64 positions."""
    from tunelab.config import ConfigError, RunConfig, from_dict
    from tunelab.train.loss import AUTO_CHUNK_LOGITS, head_chunk

    assert head_chunk("auto", 49152) == 2048 and head_chunk("auto", 262144) == 384
    assert 384 * 262144 <= AUTO_CHUNK_LOGITS < 385 * 262144
    assert head_chunk(7, 262144) == 7 and head_chunk("auto", 10**8) == 64
    assert head_chunk("auto", 32000) == 2048 and head_chunk("auto", 300) == 2048  # smaller vocabularies: as before
    assert from_dict(RunConfig, {"model": "tiny"}).train.loss_chunk == "auto"
    with pytest.raises(ConfigError):
        from_dict(RunConfig, {"model": "tiny", "train": {"loss_chunk": 0}})
