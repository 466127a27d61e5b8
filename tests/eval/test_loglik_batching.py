"""Batched log-likelihoods equal one-pair-at-a-time ones (left padding, position ids, logits_to_keep)."""

from __future__ import annotations

import pytest
import torch

from tunelab.generate.loglik import HFLoglikScorer

PAIRS = [("What is 2 + 2?", " 4"), ("What is 2 + 2?", " four or five"), ("What is 2 + 2?", ""), ("Say yes or no: is the sky green? Answer in one word please.", " no"),
         ("Topic of: Tom watched the race.", " sports and games"), ("x", " a much longer continuation here")]


def _alone(model, scorer: HFLoglikScorer, prompt: str, cont: str) -> float:
    ids, n = scorer.encode([{"role": "user", "content": prompt}], cont)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -(len(ids)):]
    logp = torch.log_softmax(logits[len(ids) - n - 1 : len(ids) - 1].float(), dim=-1)
    return float(logp.gather(-1, torch.tensor(ids[len(ids) - n :])[:, None]).sum())


@pytest.mark.parametrize("wrap", ["none", "lora", "prompt_tuning"])
def test_batched_logliks_match_single_pairs(tiny, wrap: str) -> None:
    model, tok = tiny
    if wrap != "none":
        from peft import LoraConfig, PromptTuningConfig, get_peft_model

        config = (LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False) if wrap == "lora"
                  else PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
        model = get_peft_model(model, config)
    scorer = HFLoglikScorer(model, tok, batch_size=3)
    pairs = [([{"role": "user", "content": p}], c) for p, c in PAIRS]
    batched = scorer.loglik(pairs)
    alone = [_alone(model, scorer, p, c) for p, c in PAIRS]
    assert batched == pytest.approx(alone, rel=1e-4, abs=1e-3)  # prompt tuning ignores position ids: RoPE is shift-invariant
    assert len({round(v, 3) for v in batched}) == len(PAIRS) and batched[2] == 0.0  # real values; empty: 0
