"""Diagnostics against hand-computed values, and on a real (tiny) run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tunelab.cli import main
from tunelab.config import TrainConfig
from tunelab.data.tokenize import encode, pack
from tunelab.diagnostics.cka import linear_cka
from tunelab.diagnostics.linearity import compare, linearised_logits
from tunelab.diagnostics.weights import effective_rank
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.runner.run import run
from tunelab.train.interference import GradInterference
from tunelab.train.loop import TrainJob, train
from tunelab.types import Sample

ROOT = Path(__file__).resolve().parents[1]


def test_cka_self_rotation_and_independence() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-9)  # rotation and scale
    assert linear_cka(x, x @ q, unbiased=False) == pytest.approx(1.0, abs=1e-9)
    unbiased, biased = [], []
    for seed in range(20):  # independent representations, n = 32
        gg = torch.Generator().manual_seed(seed + 1)
        a, b = torch.randn(32, 64, generator=gg), torch.randn(32, 64, generator=gg)
        unbiased.append(linear_cka(a, b))
        biased.append(linear_cka(a, b, unbiased=False))
    assert abs(sum(unbiased) / 20) < 0.05 and sum(biased) / 20 > 0.15  # the bias the unbiased estimator removes
    with pytest.raises(ValueError):
        linear_cka(x[:3], x[:3])


def test_effective_rank_and_linear_prediction_of_a_linear_model() -> None:
    g = torch.Generator().manual_seed(0)
    low = torch.randn(32, 3, generator=g) @ torch.randn(3, 24, generator=g)
    assert 1.0 < effective_rank(low) <= 3.0 + 1e-6 and effective_rank(torch.zeros(4, 4)) == 0.0
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0)

    class Linear(torch.nn.Module):  # logits linear in the weight W
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Parameter(torch.randn(10, 6, generator=g), requires_grad=False)
            self.w = torch.nn.Parameter(torch.randn(6, 10, generator=g))

        def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=self.emb[input_ids] @ self.w)

    model, ids = Linear(), torch.tensor([[1, 2, 3, 4]])
    delta = {"w": torch.randn(6, 10, generator=g)}
    _, linear = linearised_logits(model, delta, {"input_ids": ids})
    with torch.no_grad():
        model.w += delta["w"]
        tuned = model(ids).logits
    assert torch.allclose(linear, tuned, atol=1e-5)
    assert compare(tuned[0], linear[0].detach()) == pytest.approx({"agreement": 1.0, "kl": 0.0}, abs=1e-6)


def _job(tmp: Path, identical_sources: bool) -> TrainJob:
    tok = tiny_tokenizer()
    samples = []
    for i in range(24):
        src = "a" if i % 2 else "b"
        text = f"{i // 2} plus {i // 2}?" if identical_sources else f"{src}: {i} plus {i}?"
        samples.append(Sample([{"role": "user", "content": text}, {"role": "assistant", "content": str(i)}],
                              {"source": src, "id": str(i)}))
    rows = pack([encode(s, tok, 64) for s in samples], ["a", "b"], 64, False)
    torch.manual_seed(0)
    method = build_method({"name": "lora", "r": 4, "dropout": 0.1})
    model = method.apply(tiny_model(len(tok), seed=0))
    cfg = TrainConfig(max_steps=6, batch_size=4, lr=5e-3, warmup_ratio=0.0, precision="fp32", save_every=0)
    tmp.mkdir(parents=True, exist_ok=True)
    return TrainJob(model, method, rows, ["a", "b"], cfg, "fp32", tmp, tok.pad_token_id, False)


def test_identical_sources_have_gradient_cosine_one(tmp_path: Path) -> None:
    job = _job(tmp_path, identical_sources=True)
    probe = GradInterference(job, every=1, rows=6)
    # the same rows under both names: their gradients coincide
    probe.batches[1] = {**probe.batches[0], "source_idx": torch.where(probe.batches[0]["source_idx"] >= 0, 1, -1)}
    result = probe.measure(job.model.eval())  # (the probe itself runs in eval mode: no dropout)
    assert result["cosine"][0][1] == pytest.approx(1.0, abs=1e-5) and result["conflict_rate"] == 0.0
    assert result["grad_norm"]["a"] == pytest.approx(result["grad_norm"]["b"], rel=1e-5)


def test_the_probe_does_not_change_training(tmp_path: Path) -> None:
    plain = _job(tmp_path / "plain", identical_sources=False)
    model_a, _ = train(plain)
    probed = _job(tmp_path / "probed", identical_sources=False)
    probed.probes = [GradInterference(probed, every=1)]
    model_b, _ = train(probed)
    a, b = plain.method.trainable_state(model_a), probed.method.trainable_state(model_b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical with dropout on
    rows = [json.loads(line) for line in (tmp_path / "probed" / "diagnostics" / "grad_interference.jsonl")
            .read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[0]["sources"] == ["a", "b"]
    assert all(-1 <= r["cosine"][0][1] <= 1 and r["seconds"] > 0 for r in rows)


def test_diagnostics_on_a_run_and_in_its_report(tmp_path: Path, capsys) -> None:
    run_dir = run(ROOT / "recipes" / "tiny.yaml", [
        "data.sources=[{name: arith, task: arith, count: 96}, {name: code, task: code, count: 96}]",
        "train.max_steps=6", "eval.limit=6", "eval.max_new_tokens=8",
        "diagnostics=[{name: grad_interference, every: 3}, {name: cka}, {name: weight_change}, "
        "{name: linearity, rows: 2}, {name: forgetting}]"], out=str(tmp_path), quiet=True)
    d = run_dir / "diagnostics"
    cka = json.loads((d / "cka.json").read_text())["sources"]
    assert set(cka) == {"arith", "code"} and cka["arith"]["cka"][0] == pytest.approx(1.0, abs=1e-6)
    weights = json.loads((d / "weight_change.json").read_text())
    assert weights["changed"] > 0 and sum(weights["layers"].values()) == pytest.approx(1.0)
    assert all(m["effective_rank"] <= 8 + 1e-6 for m in weights["matrices"].values())  # LoRA r = 8
    rel = sorted(m["relative"] for m in weights["matrices"].values())
    summary = weights["summary"]  # what a study's findings compare across arms
    assert summary["relative_median"] == rel[len(rel) // 2] and summary["relative_mean"] == pytest.approx(np.mean(rel))
    assert summary["top_layer_share"] == max(weights["layers"].values()) and 0 < summary["effective_rank_median"] <= 8 + 1e-6
    assert summary["update_norm"] > 0
    lin = json.loads((d / "linearity.json").read_text())["sources"]
    assert all(0 <= v["agreement"] <= 1 and v["kl"] >= 0 for v in lin.values())
    grad = json.loads((d / "grad_interference.json").read_text())
    assert grad["steps"] == [3, 6] and len(grad["mean_cosine"]) == 2 and grad["share_of_training"] > 0
    rows = [json.loads(line) for line in (d / "grad_interference.jsonl").read_text().splitlines()]
    assert grad["cosine"] == {"arith~code": pytest.approx(sum(r["cosine"][0][1] for r in rows) / 2)}
    assert grad["conflict"]["arith~code"] == sum(r["cosine"][0][1] < 0 for r in rows) / 2
    assert grad["mean_conflict_rate"] == pytest.approx(sum(r["conflict_rate"] for r in rows) / 2)
    page = (run_dir / "report.html").read_text()
    for panel in ('data-plot="grad_interference"', 'data-plot="cka"', 'data-plot="weight_change"', "Linearity",
                  "Forgetting"):
        assert panel in page, panel
    (d / "cka.json").unlink()
    assert main(["diagnose", str(run_dir), "--only", "cka"]) == 0 and (d / "cka.json").is_file()
    assert main(["validate", "recipes/tiny.yaml", "diagnostics=[{name: nope}]"]) == 1


def test_a_diagnostic_without_a_panel_of_its_own_still_shows_in_the_report(tmp_path: Path) -> None:
    from tunelab.diagnostics import DIAGNOSTICS, Diagnostic
    from tunelab.report.run_report import run_report

    @DIAGNOSTICS.register("toy_probe")
    class ToyProbe(Diagnostic):
        """A diagnostic that draws no panel: the report shows its values as a table."""

        def run(self, ctx) -> dict:
            return {}

    try:
        folder = tmp_path / "run" / "diagnostics"
        folder.mkdir(parents=True)
        (folder / "toy_probe.json").write_text(json.dumps({"score": 0.625, "layers": {"3": [1, 2]}, "seconds": 2.0}))
        (folder / "not_installed.json").write_text(json.dumps({"drift": 0.5}))  # a plugin missing here
        page = run_report(tmp_path / "run").read_text()
    finally:
        DIAGNOSTICS._items.pop("toy_probe", None)
    assert "<h3>toy_probe (2.0s)</h3>" in page and "<td>score</td><td>0.625</td>" in page
    assert "<td>layers.3</td><td>[1, 2]</td>" in page
    assert "<h3>not_installed (0.0s)</h3>" in page and "<td>drift</td><td>0.5</td>" in page
