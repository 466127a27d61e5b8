"""The perplexity task: loss per answer token, per source, with bootstrap CIs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.eval.harness import evaluate_loglik
from tunelab.eval.stats import ratio_of_sums
from tunelab.eval.tasks.base import get_task


class FakeScorer:
    """Each answer character is one token; arith answers cost 0.5 nats a token, code answers 1.0."""

    fingerprint = "fake"

    def token_counts(self, pairs: list) -> list[int]:
        return [len(c) for _, c in pairs]

    def loglik(self, pairs: list) -> list[float]:
        def rate(prompt: list) -> float:
            return 1.0 if "def " in prompt[-1]["content"] or "Python" in prompt[-1]["content"] else 0.5

        return [-rate(p) * len(c) for p, c in pairs]


def test_ratio_of_sums() -> None:
    s = ratio_of_sums([2.0, 6.0, 1.0], [1, 3, 1])
    assert s["value"] == pytest.approx(9 / 5) and s["n"] == 3
    assert s["ci"][0] <= s["value"] <= s["ci"][1]
    assert ratio_of_sums([1.0, 2.0], [2, 4])["ci"] == pytest.approx([0.5, 0.5])  # same ratio everywhere
    assert math.isnan(ratio_of_sums([], [])["value"])


def test_loss_and_perplexity_per_source(tmp_path: Path) -> None:
    task = get_task("perplexity", sources="arith")
    res = evaluate_loglik(task, FakeScorer(), limit=6, out=tmp_path / "p.jsonl")
    assert res.scores["loss"]["value"] == pytest.approx(0.5)
    assert res.scores["perplexity"]["value"] == pytest.approx(math.exp(0.5))
    assert res.scores["loss"]["n"] == 6
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["id"].startswith("arith/") and r["tokens"] > 0 for r in rows)

    two = evaluate_loglik(get_task("perplexity", sources="arith,code"), FakeScorer(), limit=5)
    assert two.scores["loss/arith"]["value"] == pytest.approx(0.5)
    assert two.scores["loss/code"]["value"] == pytest.approx(1.0)
    nll = sum(r["nll"] for r in two.rows)
    assert two.scores["loss"]["value"] == pytest.approx(nll / sum(r["tokens"] for r in two.rows))
    lo, hi = two.scores["loss"]["ci"]
    assert 0.5 <= lo <= two.scores["loss"]["value"] <= hi <= 1.0


def test_file_sources_and_tiny_model_loss(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    from tunelab.generate.loglik import HFLoglikScorer
    from tunelab.models.tiny import tiny_model, tiny_tokenizer

    data = tmp_path / "held.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"answer {i}"}]}
            for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("perplexity", sources=[{"name": "mine", "path": str(data)}])
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    res = evaluate_loglik(task, HFLoglikScorer(model, tok, batch_size=2))
    assert [r["id"] for r in res.rows] == ["mine/mine-1", "mine/mine-2", "mine/mine-3"]
    # one row by hand: mean cross-entropy of the answer tokens after the rendered prompt
    scorer = HFLoglikScorer(model, tok)
    ids, n = scorer.encode([{"role": "user", "content": "q0"}], "answer 0")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    ce = torch.nn.functional.cross_entropy(logits[len(ids) - n - 1 : -1].float(), torch.tensor(ids[len(ids) - n :]))
    assert res.rows[0]["loss"] == pytest.approx(float(ce), abs=1e-3)
    assert res.rows[0]["tokens"] == n

    assert main(["eval", "tiny", "--tasks", "perplexity", "--task-option", "perplexity.sources=arith,nlp",
                 "--limit", "3", "--out", str(tmp_path / "out"), "--json"]) == 0
    flat = json.loads(capsys.readouterr().out)["perplexity"]
    assert {"loss", "loss_ci", "perplexity", "loss/arith", "loss/nlp"} <= set(flat)
    assert flat["perplexity"] == pytest.approx(math.exp(flat["loss"]))


def test_bad_sources_fail() -> None:
    with pytest.raises(Exception, match="no_such_family|unknown"):
        task = get_task("perplexity", sources="no_such_family")
        task.items(2, 0)


def test_compare_treats_lower_loss_as_better() -> None:
    from tunelab.runner.compare import compare_task

    a = {str(i): {"id": i, "loss": 2.0 + 0.01 * i} for i in range(40)}
    b = {str(i): {"id": i, "loss": 1.5 + 0.01 * i} for i in range(40)}
    r = compare_task(a, b)
    assert r["delta"] == pytest.approx(0.5) and r["verdict"] == "b better"
