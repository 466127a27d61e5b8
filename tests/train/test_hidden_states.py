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
    handle = head.register_forward_hook(lambda *a: calls.append(1))
    ids = torch.tensor([tok("1 plus 2 is 3")["input_ids"]])
    hidden = final_hidden_states(model, input_ids=ids)
    assert calls == []
    full = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    handle.remove()
    assert calls == [1]  # the hook does count a whole forward's head
    assert torch.equal(hidden, full.hidden_states[-1])
    hidden.sum().backward()  # the graph of the stopped forward is whole
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
