"""The ``choice_head`` objective: very large dropout's classifier setting (Zhang & Bottou 2024), reachable
from a recipe; its loss against a reference built from transformers' own hidden states."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from tunelab.data.choices import build_choice_rows, choice_ids
from tunelab.data.preference import collate_seqs
from tunelab.io import DataError
from tunelab.methods import build_method
from tunelab.models.heads import HEAD_FILE, attach_choice_head, head_of
from tunelab.runner.run import run
from tunelab.train.objectives import build_objective
from tunelab.types import Sample


def _sample(prompt: str, choices: list[str], answer: str, i: int = 0) -> Sample:
    return Sample([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                  {"source": "nlp", "id": f"x{i}", "choices": choices, "answer": answer})


SAMPLES = [_sample("Is it good? Review: great", ["positive", "negative"], "positive", 0),
           _sample("Topic of: Tom baked bread", ["sports", "food", "music", "weather", "technology"], "food", 1),
           _sample("Does Ann live in Rome?", ["yes", "no"], "no", 2)]


def test_rows_hold_one_sequence_per_choice_and_the_answer_index(tiny):
    _, tok = tiny
    rows, dropped = build_choice_rows(SAMPLES, tok, ["nlp"], 512)
    assert dropped == 0 and [r.n_seqs for r in rows] == [2, 5, 2] and [r.label for r in rows] == [0, 1, 1]
    prompt = [SAMPLES[1].messages[0]]
    assert [e.input_ids for e in rows[1].seqs] == [choice_ids(tok, prompt, c) for c in SAMPLES[1].meta["choices"]]
    # the sequence is the generation prompt followed by the choice's text
    assert tok.decode(rows[1].seqs[1].input_ids).endswith("<|im_start|>assistant\nfood")
    short, dropped = build_choice_rows(SAMPLES, tok, ["nlp"], 40)
    assert dropped == 3 - len(short) and dropped > 0


@pytest.mark.parametrize("meta, field", [({"choices": ["a"], "answer": "a"}, "'choices'"),
                                          ({"choices": ["a", "b"], "answer": "c"}, "'answer'"),
                                          ({"answer": "a"}, "'choices'")])
def test_an_example_that_is_no_multiple_choice_is_refused_by_name(tiny, meta, field):
    _, tok = tiny
    bad = Sample([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                 {"source": "nlp", "id": "row-7", **meta})
    with pytest.raises(DataError, match=rf"source 'nlp', example 'row-7': field {field}"):
        build_choice_rows([bad], tok, ["nlp"], 512)


def test_loss_and_head_gradient_match_a_reference_from_transformers_hidden_states(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    obj = build_objective({"name": "choice_head", "dropout": 0.0})
    obj.prepare(model)
    head = head_of(model)
    rows, _ = build_choice_rows(SAMPLES, tok, ["nlp"], 512)
    batch = collate_seqs(rows, tok.pad_token_id)
    losses, src = obj(model, batch, None, 0)
    losses.mean().backward()
    ours = head.linear.weight.grad.clone()
    head.zero_grad()

    # reference: each sequence alone (no padding), transformers' own last hidden state at its last token
    ref = []
    for r in rows:
        feats = torch.stack([model(input_ids=torch.tensor([e.input_ids]), output_hidden_states=True)
                             .hidden_states[-1][0, -1] for e in r.seqs])
        ref.append(F.cross_entropy((feats @ head.linear.weight.T + head.linear.bias).squeeze(-1)[None],
                                   torch.tensor([r.label])))
    ref = torch.stack(ref)
    ref.mean().backward()
    assert torch.allclose(losses, ref, atol=1e-5)
    assert torch.allclose(ours, head.linear.weight.grad, atol=1e-5)
    assert src.tolist() == [0, 0, 0]


def test_dropout_acts_in_training_only(tiny):
    model, tok = tiny
    obj = build_objective({"name": "choice_head", "dropout": 0.9})
    obj.prepare(model)
    batch = collate_seqs(build_choice_rows(SAMPLES, tok, ["nlp"], 512)[0], tok.pad_token_id)
    model.train()
    a, b = obj(model, batch, None, 0)[0], obj(model, batch, None, 0)[0]
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(obj(model, batch, None, 0)[0], obj(model, batch, None, 0)[0])


@pytest.mark.parametrize("spec", [{"name": "lora", "r": 2, "alpha": 4}, {"name": "lisa", "gamma": 1, "interval": 1},
                                  {"name": "full"}])
def test_the_head_is_part_of_every_methods_trainable_state(tiny, spec):
    m = build_method(spec)
    model = m.apply(tiny[0])
    attach_choice_head(model, 0.5)
    state = m.trainable_state(model)
    assert len([k for k in state if "tunelab_head" in k]) == 2
    m.on_step(1, model)  # LISA re-draws its layers: the head stays trainable
    assert all(p.requires_grad for p in head_of(model).parameters())
    m.load_trainable_state(model, {k: torch.full_like(v, 0.5) for k, v in state.items() if "tunelab_head" in k})
    assert torch.all(head_of(model).linear.weight == 0.5)


def test_a_recipe_trains_selects_saves_and_reloads_the_head(tmp_path, tiny_dir):
    from tunelab.generate.loglik import ChoiceHeadScorer
    from tunelab.train.artifacts import load_for_inference

    recipe = {
        "model": str(tiny_dir),
        "data": {"sources": [{"name": "nlp", "task": "nlp", "count": 48,
                              "options": {"subtasks": ["sentiment", "topic", "yesno"]}}],
                 "heldout": 8, "max_length": 512},
        "objective": {"name": "choice_head", "dropout": 0.5},
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 1e-2, "precision": "fp32", "save_every": 0,
                  "eval_every": 3, "select_best": True},
        "eval": {"tasks": ["nlp_mc_ood"], "limit": 12, "baseline": False},
    }
    path = tmp_path / "head.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = run(path, out=str(tmp_path / "runs"), quiet=True)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "accuracy" in metrics[0] and "heldout_accuracy" in metrics[2]
    assert json.loads((out / "data" / "mixture.json").read_text())["choices"]["examples"] == 48
    assert (out / "final" / HEAD_FILE).is_file()
    rows = [json.loads(x) for x in (out / "eval" / "tuned" / "nlp_mc_ood.jsonl").read_text().splitlines()]
    # reloaded from final/: the same head scores, item by item
    model, tok, _ = load_for_inference(str(out), device="cpu")
    assert head_of(model) is not None
    scorer = ChoiceHeadScorer(model, tok, batch_size=5)
    pairs = [(r_prompt, c) for r_prompt, c in _prompts(rows, recipe)]
    again = scorer.loglik(pairs)
    assert again == pytest.approx([v for r in rows for v in r["logliks"]], abs=2e-4)


def _prompts(rows, recipe):
    """(prompt, choice) pairs of the evaluated items, in the order of their rows."""
    from tunelab.eval.tasks.base import get_task

    task = get_task("nlp_mc_ood")
    items = {it.id: it for it in task.items(recipe["eval"]["limit"], 1234)}
    return [(items[r["id"]].prompt, c) for r in rows for c in r["choices"]]


def test_the_cached_scorer_equals_one_sequence_per_choice(tiny):
    """Choices scored on their prompt's KV cache (left-padded prompts, right-padded choices) give the
    scores of whole sequences, each alone in its batch row."""
    from tunelab.generate.loglik import ChoiceHeadScorer

    model, tok = tiny
    torch.manual_seed(1)
    attach_choice_head(model, 0.9)
    scorer = ChoiceHeadScorer(model, tok, batch_size=2)
    pairs = [([s.messages[0]], c) for s in SAMPLES for c in s.meta["choices"]] + [([SAMPLES[0].messages[0]], "not sure")]
    cached = scorer.loglik(pairs)
    alone = [ChoiceHeadScorer(model, tok, batch_size=1).score_each([p])[0] for p in pairs]
    assert cached == pytest.approx(alone, abs=1e-4)
    assert len(set(round(v, 4) for v in cached)) > 3  # the head is not constant
