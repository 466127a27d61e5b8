"""The local generator's own decoding loop against ``model.generate`` (tiny model, fp32)."""

from __future__ import annotations

import pytest
import torch

from tunelab.generate.base import GenerationConfig, cut_at_stop, encode_prompt
from tunelab.generate.hf import HFGenerator, pick_tokens
from tunelab.models.tiny import tiny_model, tiny_tokenizer

PROMPTS = [
    "a short one",
    [{"role": "user", "content": "a chat prompt that is a good deal longer than the others"}],
    "x",
    "numbers 1 2 3 4 5 6 7",
    [{"role": "user", "content": "hi"}],
]


@pytest.fixture(scope="module", params=["continuous", "per-batch"])
def gen(request) -> HFGenerator:
    """Continuous batching (plain KV caches) and the per-batch loop (other caches, e.g. sliding window)."""
    tok = tiny_tokenizer()
    g = HFGenerator(tiny_model(len(tok), seed=3), tok, batch_size=3, progress=False)
    g._plain = request.param == "continuous"
    return g


def reference(gen: HFGenerator, cfg: GenerationConfig) -> list[list[str]]:
    """The same prompts one at a time through ``model.generate`` (no padding at all)."""
    out = []
    for p in PROMPTS:
        ids = encode_prompt(gen.tok, p)
        out.append(gen._hf_generate([ids], cfg)[0])
    return out


def test_greedy_matches_generate_per_prompt(gen: HFGenerator) -> None:
    cfg = GenerationConfig(max_new_tokens=12)
    ours = gen.generate(PROMPTS, cfg)
    assert ours == reference(gen, cfg)
    assert all(len(o) == 1 and o[0] for o in ours)


def test_stop_strings_cut_and_drop_rows(gen: HFGenerator) -> None:
    free = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=16))
    stop = free[1][0][4:7]  # a piece of one completion: that row must stop early
    assert len(stop) == 3
    cfg = GenerationConfig(max_new_tokens=16, stop=[stop])
    batch_sizes: list[int] = []
    handle = gen.model.register_forward_pre_hook(
        lambda m, a, kw: batch_sizes.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        ours = gen.generate(PROMPTS, cfg)
    finally:
        handle.remove()
    # the text up to the first stop string (generate's own stop_strings check ends some rows one
    # token early on repeated characters, so the reference is the unstopped text, cut)
    expected = [
        [cut_at_stop(t, [stop]) for t in texts]
        for texts in reference(gen, GenerationConfig(max_new_tokens=16))
    ]
    assert ours == expected
    assert ours[1][0] == free[1][0][: free[1][0].find(stop)]
    assert stop not in "".join(o[0] for o in ours)
    # the stopped row left its batch: some decoding step ran with fewer rows than the batch began with
    assert any(b < a for a, b in zip(batch_sizes, batch_sizes[1:]))


def test_eos_ends_a_row(gen: HFGenerator) -> None:
    cfg = GenerationConfig(max_new_tokens=10)
    ids = encode_prompt(gen.tok, PROMPTS[0])
    tokens = gen.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=0,
    )[0, len(ids) :].tolist()
    eos = tokens[3]
    first = tokens.index(eos)
    old = gen.model.generation_config.eos_token_id
    gen.model.generation_config.eos_token_id = [eos]
    try:
        ours = gen.generate([PROMPTS[0]], cfg)[0][0]
    finally:
        gen.model.generation_config.eos_token_id = old
    assert ours == gen.tok.decode(tokens[:first], skip_special_tokens=True)


def test_sampling_n_is_seeded(gen: HFGenerator) -> None:
    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=7)
    a = gen.generate(PROMPTS[:2], cfg)
    assert a == gen.generate(PROMPTS[:2], cfg)
    assert [len(x) for x in a] == [3, 3]
    assert len(set(a[0])) > 1  # three samples of a random model differ
    other = gen.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=8))
    assert other != a


def test_pick_tokens_top_p() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    assert pick_tokens(logits, GenerationConfig(), None).tolist() == [1, 0]
    tiny_p = GenerationConfig(temperature=1.0, top_p=1e-6)
    assert pick_tokens(logits, tiny_p, g).tolist() == [1, 0]  # only the most likely token survives
    two = GenerationConfig(temperature=1.0, top_p=0.9)
    drawn = {pick_tokens(logits, two, g)[0].item() for _ in range(200)}
    assert drawn == {1, 3}  # tokens 1 and 3 hold > 90% of the mass; 0 and 2 are cut


def test_bos_for_base_tokenizers(tmp_path) -> None:
    """A tokenizer that puts BOS before plain text (Gemma, Llama) gets it before chat text too, once."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from tunelab.config import ModelConfig
    from tunelab.models.load import load_tokenizer

    backend = tiny_tokenizer().backend_tokenizer
    bos = "<|im_start|>"
    bos_id = backend.token_to_id(bos)
    backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    base = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>", bos_token=bos
    )
    base.save_pretrained(tmp_path)  # no chat template: a base model's tokenizer
    tok = load_tokenizer(ModelConfig(str(tmp_path)), str(tmp_path))
    chat = encode_prompt(tok, [{"role": "user", "content": "hi"}])
    assert chat[0] == bos_id and chat.count(bos_id) == 1
    assert encode_prompt(tok, "abc") == [bos_id, *tok("abc", add_special_tokens=False)["input_ids"]]
    plain = tiny_tokenizer()  # adds nothing: no BOS anywhere
    assert encode_prompt(plain, "abc") == plain("abc", add_special_tokens=False)["input_ids"]


def test_a_sliding_window_model_batches_continuously_inside_its_window() -> None:
    """Gemma3 (sliding-window layers): prompts that fit the window with their budget take continuous
    batching (its plain merged caches see what the sliding layers see) and give generate's tokens;
    longer ones take the per-batch loop, also equal to generate."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = tiny_tokenizer()
    widest = max(len(encode_prompt(tok, p)) for p in PROMPTS)
    window = widest + 12
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=window,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    g = HFGenerator(Gemma3ForCausalLM(cfg).eval(), tok, batch_size=3, progress=False)
    assert not g._plain_cache() and g.decode_engine() is None  # a server still decodes per batch
    paths: list[str] = []
    for name in ("_continuous", "_decode"):
        original = getattr(g, name)
        setattr(g, name, lambda *a, _f=original, _n=name: paths.append(_n) or _f(*a))
    inside = GenerationConfig(max_new_tokens=window - widest)
    assert g.generate(PROMPTS, inside) == reference(g, inside) and paths == ["_continuous"]
    beyond = GenerationConfig(max_new_tokens=window - widest + 1)  # the widest prompt would outgrow the window
    paths.clear()
    assert g.generate(PROMPTS, beyond) == reference(g, beyond) and set(paths) == {"_decode"}


def test_prompts_that_begin_alike_share_their_prefill() -> None:
    """Prompts prefilled together compute their shared beginning once and keep it for the next group;
    each row's logits (fp32) are those of its prompt prefilled alone, with or without a shared
    beginning, and the engine's greedy tokens are generate()'s."""
    from tunelab.generate.kv_cache import PrefixReuse, prefill, prefill_group

    tok = tiny_tokenizer()
    g = HFGenerator(tiny_model(len(tok), seed=3), tok, batch_size=4, progress=False)
    g._plain = True
    head = "Solve step by step. Thought, then Action: calculate[x] or finish[y]. Example: 2 + 3 is 5. "
    first = [head + q for q in ("Question: 7 * 8?", "Question: 12 - 5?", "Question: 1 + 1 + 1?")]
    later = [head + q for q in ("Question: 9 / 3?", "Question: 100 - 1 - 1 - 1?")]
    others = ["something else entirely", "x", "numbers 1 2 3 4 5 6 7"]
    reuse = PrefixReuse(min_tokens=8)
    for group, reused in ((first, False), (later, True), (others, False)):
        ids = [encode_prompt(tok, p) for p in group]
        before = reuse.reused_tokens
        cache, mask, next_pos, logits = prefill_group(g.model, ids, g._cache_kw, reuse)
        assert (reuse.reused_tokens > before) == reused
        assert next_pos.tolist() == [len(x) for x in ids] and mask.shape[0] == len(ids)
        assert mask.sum(1).tolist() == [len(x) for x in ids]  # padding masked, every own token kept
        for row, x in enumerate(ids):
            _, alone = prefill(g.model, x, g._cache_kw)
            torch.testing.assert_close(logits[row : row + 1], alone, rtol=1e-4, atol=1e-4)
    assert len(reuse.ids) >= 8 and encode_prompt(tok, head)[:8] == reuse.ids[:8]
    prompts = first + others + later
    cfg = GenerationConfig(max_new_tokens=10)
    assert g.generate(prompts, cfg) == [g._hf_generate([encode_prompt(tok, p)], cfg)[0] for p in prompts]
