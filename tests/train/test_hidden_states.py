"""The forward every training loss reads its hidden states from (tunelab.models.load.final_hidden_states)."""

from __future__ import annotations

import torch

from tunelab.methods import build_method
from tunelab.models.load import final_hidden_states
from tunelab.models.tiny import tiny_model, tiny_tokenizer


def test_final_hidden_states_stop_before_the_lm_head_and_match_a_full_forward():
    """The hidden states a training forward reads are the decoder's own; the head never runs (under
    peft too), and a whole forward's last hidden state is the same tensor."""
    tok = tiny_tokenizer()
    model = build_method({"name": "lora"}).apply(tiny_model(len(tok), seed=0))
    calls = []
    head = model.get_output_embeddings()
    forward = head.forward  # counted without a hook (a hooked head runs: see below)
    head.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    ids = torch.tensor([tok("1 plus 2 is 3")["input_ids"]])
    hidden = final_hidden_states(model, input_ids=ids)
    assert calls == []
    full = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    assert calls == [1]  # the counter does count a whole forward's head
    assert torch.equal(hidden, full.hidden_states[-1])
    hidden.sum().backward()  # the graph of the stopped forward is whole
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_a_head_with_a_hook_still_runs_so_a_seed_draws_the_same_random_numbers():
    """Very large dropout is a pre-hook on the head that draws dropout masks in training: the forward must
    keep running it (on the last position, as before), or every later random draw of the run would shift."""
    from tunelab.regularizers import build_regularizers

    tok = tiny_tokenizer()
    model = build_method({"name": "lora"}).apply(tiny_model(len(tok), seed=0))
    for reg in build_regularizers([{"name": "very_large_dropout", "p": 0.9}]):
        reg.apply(model)
    model.train()
    calls = []
    model.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
    ids = torch.tensor([tok("1 plus 2 is 3")["input_ids"]])
    torch.manual_seed(0)
    final_hidden_states(model, input_ids=ids)
    after = torch.get_rng_state()
    torch.manual_seed(0)
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    assert calls == [1, 1] and torch.equal(after, torch.get_rng_state())
