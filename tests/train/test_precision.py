"""Frozen linear weights stored in bf16 under bf16 autocast: same loss and gradients, fewer casts."""

from __future__ import annotations

import copy

import pytest
import torch

from tunelab.device import autocast
from tunelab.methods.base import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.train.precision import cast_frozen_linears


def _loss_and_grads(
    model: torch.nn.Module, ids: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    with autocast("cpu", "bf16"):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["lora", "ia3", "adapters"])
def test_cast_frozen_linears_changes_nothing_but_storage(name: str) -> None:
    tok = tiny_tokenizer()
    method = build_method({"name": name, **({"dropout": 0.0} if name == "lora" else {})})  # deterministic
    assert method.frozen_cast_ok
    model = method.apply(tiny_model(len(tok), seed=1))
    if name == "lora":  # B = 0 at init would hide the adapter's gradient path
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    cast = copy.deepcopy(model)
    n = cast_frozen_linears(cast)
    assert n > 0
    frozen = {k: p.dtype for k, p in cast.named_parameters() if not p.requires_grad}
    assert torch.bfloat16 in frozen.values()
    assert all(p.dtype == torch.float32 for p in cast.parameters() if p.requires_grad)
    inner = cast.get_base_model() if hasattr(cast, "get_base_model") else cast
    assert inner.get_output_embeddings().weight.dtype == torch.float32  # tied to the input embedding
    ids = torch.randint(3, len(tok), (2, 12), generator=torch.Generator().manual_seed(0))
    loss_a, grads_a = _loss_and_grads(model, ids)
    loss_b, grads_b = _loss_and_grads(cast, ids)
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], rtol=0, atol=0)


def test_methods_that_save_or_unfreeze_weights_keep_fp32() -> None:
    assert not build_method({"name": "full"}).frozen_cast_ok
    assert not build_method({"name": "lisa"}).frozen_cast_ok
    assert not build_method({"name": "partial"}).frozen_cast_ok
    assert not build_method({"name": "lora", "use_dora": True}).frozen_cast_ok
    assert build_method({"name": "lora"}).frozen_cast_ok


def test_tied_head_in_modules_to_save_stays_fp32_and_decodes() -> None:
    """LoRA with ``modules_to_save=[lm_head]`` on a tied model: peft keeps the tied original under
    a wrapper; neither it nor the input embedding may be cast, and bf16 decoding still works."""
    from tunelab.generate.base import GenerationConfig
    from tunelab.generate.hf import HFGenerator

    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=1)
    base.config.tie_word_embeddings = True
    base.tie_weights()
    assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()
    model = build_method({"name": "lora", "dropout": 0.0, "modules_to_save": ["lm_head"]}).apply(base)
    ref = copy.deepcopy(model)
    assert cast_frozen_linears(model) > 0
    inner = model.get_base_model()
    assert inner.get_input_embeddings().weight.dtype == torch.float32
    ids = torch.randint(3, len(tok), (2, 10), generator=torch.Generator().manual_seed(0))
    loss_a, _ = _loss_and_grads(ref, ids)
    loss_b, _ = _loss_and_grads(model, ids)
    assert torch.equal(loss_a, loss_b)
    out = HFGenerator(model, tok, precision="bf16", progress=False).generate(
        ["hi"], GenerationConfig(max_new_tokens=3)
    )
    assert len(out) == 1 and isinstance(out[0][0], str)


def test_compiled_head_and_ce_matches() -> None:
    """``train.compile``'s fused LM-head cross-entropy gives the eager losses and gradients."""
    from tunelab.train.loss import compiled_head_and_ce, head_and_ce

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    h = torch.randn(7, 16, requires_grad=True)
    y = torch.randint(0, 50, (7,))
    eager = head_and_ce(head, None, h, y)
    (g_eager,) = torch.autograd.grad(eager.sum(), h)
    fused = compiled_head_and_ce()(head, None, h, y)
    (g_fused,) = torch.autograd.grad(fused.sum(), h)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fused, g_eager, rtol=1e-5, atol=1e-5)


def test_the_bf16_decode_copy_shares_frozen_bf16_weights_and_decodes_alike() -> None:
    """An online objective builds a generator every step: the frozen linear weights training already
    stores in bf16 are shared with the decode copy (not copied), the adapters are copied and cast, the
    trained model is untouched, and the tokens are those of a full copy's."""
    from tunelab.generate.base import GenerationConfig
    from tunelab.generate.hf import HFGenerator

    tok = tiny_tokenizer()
    model = build_method({"name": "lora", "dropout": 0.0}).apply(tiny_model(len(tok), seed=1))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    assert cast_frozen_linears(model) > 0
    full = copy.deepcopy(model).to(torch.bfloat16)  # what the generator used to make every time
    gen = HFGenerator(model, tok, precision="bf16", progress=False)
    live = dict(model.named_parameters())
    copied = dict(gen.model.named_parameters())
    frozen_bf16 = [n for n, p in live.items() if p.dtype == torch.bfloat16 and not p.requires_grad]
    assert frozen_bf16 and all(copied[n] is live[n] for n in frozen_bf16)
    lora = [n for n in live if "lora_" in n]
    assert lora and all(copied[n] is not live[n] and copied[n].dtype == torch.bfloat16 for n in lora)
    assert all(live[n].dtype == torch.float32 for n in lora) and model.training  # the trained model untouched
    assert all(p.dtype == torch.bfloat16 for p in gen.model.parameters())
    cfg = GenerationConfig(max_new_tokens=6)
    prompts = ["hi", "what is 2+2?", "a longer prompt about nothing"]
    assert gen.generate(prompts, cfg) == HFGenerator(full, tok, precision="bf16", progress=False).generate(prompts, cfg)


def test_the_decode_copy_takes_the_tied_heads_cached_cast_and_decodes_alike() -> None:
    """A frozen fp32 tied head whose bf16 cast the loss keeps (cast_once) is shared with the decode copy
    as that cast, not cloned and cast again; a changed weight is cast anew; the tokens are a full copy's."""
    from tunelab.generate.base import GenerationConfig
    from tunelab.generate.hf import HFGenerator
    from tunelab.train.precision import cached_cast, cast_once

    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=1)
    base.config.tie_word_embeddings = True
    base.tie_weights()
    model = build_method({"name": "lora", "dropout": 0.0}).apply(base)
    cast_frozen_linears(model)
    head = model.get_base_model().lm_head.weight
    assert head.dtype == torch.float32 and cached_cast(head, torch.bfloat16) is None
    cast = cast_once(head, torch.bfloat16)
    assert cast_once(head, torch.bfloat16) is cast and cached_cast(head, torch.bfloat16) is cast
    full = copy.deepcopy(model).to(torch.bfloat16)
    gen = HFGenerator(model, tok, precision="bf16", progress=False)
    copy_head = gen.model.get_base_model()
    assert copy_head.lm_head.weight.data_ptr() == cast.data_ptr() == copy_head.model.embed_tokens.weight.data_ptr()
    assert head.dtype == torch.float32  # the trained model untouched
    cfg = GenerationConfig(max_new_tokens=6)
    prompts = ["hi", "what is 2+2?"]
    assert gen.generate(prompts, cfg) == HFGenerator(full, tok, precision="bf16", progress=False).generate(prompts, cfg)
    with torch.no_grad():
        head.mul_(1.0)  # an in-place change bumps the version: the old cast no longer stands for it
    assert cached_cast(head, torch.bfloat16) is None and cast_once(head, torch.bfloat16) is not cast
