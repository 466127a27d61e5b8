"""Loss masks, truncation and packing."""

from __future__ import annotations

import torch

from tunelab.data.tokenize import IGNORE, collate, encode, pack
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.train.loss import token_losses
from tunelab.types import Sample


def _trained_text(tok, e):
    """Decode the tokens that carry a label (targets are next-token labels)."""
    return tok.decode([e.input_ids[t + 1] for t in range(len(e.targets)) if e.targets[t] != IGNORE])


def test_loss_only_on_assistant_single_turn():
    tok = tiny_tokenizer()
    s = Sample([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"},
                {"role": "assistant", "content": "5"}], {"source": "a", "id": "1"})
    e = encode(s, tok, 512)
    assert _trained_text(tok, e) == "5<|im_end|>\n"
    assert e.targets[-1] == IGNORE and len(e.targets) == len(e.input_ids)


def test_loss_on_every_assistant_turn_multi_turn():
    tok = tiny_tokenizer()
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "more"}, {"role": "assistant", "content": "B2"},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "C3", "train": False}]
    e = encode(Sample(msgs, {"source": "a"}), tok, 512)
    assert _trained_text(tok, e) == "A1<|im_end|>\nB2<|im_end|>\n"  # user text and the untrained turn excluded


def test_truncation_right_and_drop():
    tok = tiny_tokenizer()
    s = Sample([{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y" * 50}], {"source": "a"})
    assert len(encode(s, tok, 40, "right").input_ids) == 40
    assert encode(s, tok, 40, "drop") is None


def test_packed_batch_gives_same_per_sample_losses_as_unpacked():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=1).eval()
    samples = [Sample([{"role": "user", "content": f"q{i} " * (i + 1)}, {"role": "assistant", "content": f"answer {i}"}],
                      {"source": "s", "id": str(i)}) for i in range(5)]
    enc = [encode(s, tok, 512) for s in samples]
    packed = pack(enc, ["s"], 512, packing=True)
    assert len(packed) == 1 and packed[0].position_ids.count(0) == 5  # positions restart per sample
    with torch.no_grad():
        lp, _ = token_losses(model, collate(packed, tok.pad_token_id, True))
        lu, _ = token_losses(model, collate(pack(enc, ["s"], 512, packing=False), tok.pad_token_id, False))
    sizes = [e.n_targets for e in enc]
    per_packed = [c.sum().item() for c in torch.split(lp, sizes)]
    per_unpacked = [c.sum().item() for c in torch.split(lu, sizes)]
    assert torch.allclose(torch.tensor(per_packed), torch.tensor(per_unpacked), atol=1e-4)


def test_chunked_loss_equals_full_logits_cross_entropy():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=2).eval()
    s = Sample([{"role": "user", "content": "abc"}, {"role": "assistant", "content": "defgh"}], {"source": "s"})
    batch = collate(pack([encode(s, tok, 512)], ["s"], 512, True), tok.pad_token_id, True)
    with torch.no_grad():
        ours, _ = token_losses(model, batch, chunk=2)
        logits = model(input_ids=batch["input_ids"]).logits[0]
        ref = torch.nn.functional.cross_entropy(logits, batch["targets"][0], ignore_index=IGNORE, reduction="sum")
    assert abs(ours.sum().item() - ref.item()) < 1e-4


def test_right_padded_batch_gives_each_sample_its_own_loss():
    """No attention mask is needed for right padding: causal attention never looks right."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok), seed=3).eval()
    samples = [Sample([{"role": "user", "content": "x" * n}, {"role": "assistant", "content": "y" * (n // 2 + 1)}],
                      {"source": "s"}) for n in (3, 17, 40)]
    enc = [encode(s, tok, 512) for s in samples]
    with torch.no_grad():
        batched, _ = token_losses(model, collate(pack(enc, ["s"], 512, False), tok.pad_token_id, False))
        alone = torch.cat([token_losses(model, collate(pack([e], ["s"], 512, False), tok.pad_token_id, False))[0]
                           for e in enc])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_length_grouped_order_is_a_seeded_permutation_with_similar_lengths():
    from tunelab.data.tokenize import epoch_order

    lengths = [(i * 37) % 101 for i in range(400)]
    order = epoch_order(400, 0, seed=1, lengths=lengths, batch_size=8)
    assert sorted(order) == list(range(400)) and order == epoch_order(400, 0, 1, lengths, 8)
    assert order != epoch_order(400, 1, 1, lengths, 8)
    spread = [max(lengths[j] for j in order[i:i + 8]) - min(lengths[j] for j in order[i:i + 8]) for i in range(0, 400, 8)]
    assert sum(spread) / len(spread) < 10  # vs ~80 for random batches
