"""``train.report_to``: TensorBoard and MLflow receive the run's config and every metrics row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

import tunelab.train.trackers as trackers
from tunelab.config import ConfigError, TrainConfig, dump_yaml, load_recipe
from tunelab.data.tokenize import encode, pack
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.runner.validate import validate
from tunelab.train.loop import TrainJob, train
from tunelab.types import Sample

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"


def _job(run_dir, report_to, max_steps=4):
    """A tiny LoRA run with held-out rows, and the runner's config.yaml in its folder."""
    tok = tiny_tokenizer()
    samples = [Sample([{"role": "user", "content": f"{i} plus {i}?"}, {"role": "assistant", "content": str(2 * i)}],
                      {"source": "s", "id": str(i)}) for i in range(24)]
    rows = pack([encode(s, tok, 64) for s in samples], ["s"], 64, True)
    torch.manual_seed(0)
    method = build_method({"name": "lora", "dropout": 0.0})
    cfg = TrainConfig(max_steps=max_steps, batch_size=2, lr=5e-3, precision="fp32", save_every=0, eval_every=2,
                      report_to=report_to)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(load_recipe(RECIPE, [f"train.report_to={report_to}"])))
    return TrainJob(method.apply(tiny_model(len(tok), seed=0)), method, rows[4:], ["s"], cfg, "fp32", run_dir,
                    tok.pad_token_id, True, heldout=rows[:4])


def _metrics(run_dir, key):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


def _assert_same(logged, expected):
    """(step, value) pairs equal: steps exactly, values to float32 precision (TensorBoard stores float32)."""
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_tensorboard_gets_every_metrics_row_and_the_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_job(tmp_path, ["tensorboard"]))
    events = EventAccumulator(str(tmp_path / "trackers" / "tunelab"))
    events.Reload()
    for key in ("loss", "lr", "heldout_loss", "loss/s"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        _assert_same(logged, _metrics(tmp_path, key))
    assert len(_metrics(tmp_path, "loss")) == 4 and len(_metrics(tmp_path, "heldout_loss")) == 3  # steps 2, 4, final
    (hparams,) = (tmp_path / "trackers" / "tunelab").glob("*/hparams.yml")
    config = yaml.safe_load(hparams.read_text())
    assert config["train.lr"] == 3e-3 and config["model.name"] == "tiny"  # config.yaml, flattened
    assert json.loads(config["data.sources"])[0]["task"] == "arith"  # lists as JSON text


def test_mlflow_logs_params_and_metric_history_to_a_local_store(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path / "run-a"
    train(_job(run_dir, ["mlflow"]))
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the default store was set for the run only
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading a file store is opt-in too
    client = MlflowClient(tracking_uri=(run_dir / "trackers" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tunelab").experiment_id])
    assert run.info.run_name == "run-a" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.003" and run.data.params["train.report_to"] == '["mlflow"]'
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    _assert_same(sorted(history), _metrics(run_dir, "loss"))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "heldout_loss.s")] == [2, 4, 4]

    store = (tmp_path / "store").as_uri()  # $MLFLOW_TRACKING_URI wins over the run folder
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    train(_job(tmp_path / "run-b", ["mlflow"], max_steps=2))
    assert not (tmp_path / "run-b" / "trackers" / "mlruns").exists()
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("tunelab").experiment_id])
    assert run.info.run_name == "run-b" and len(client.get_metric_history(run.info.run_id, "loss")) == 2


def test_a_missing_tracker_package_fails_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(trackers, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r"'tensorboard' needs the Python package 'tensorboard'.*pip install"):
        train(_job(tmp_path, ["tensorboard"], max_steps=1))
    assert not (tmp_path / "metrics.jsonl").exists()
    problems = validate(load_recipe(RECIPE, ["train.report_to=[mlflow, nope]"]))
    assert problems == ["train.report_to: 'mlflow' needs the Python package 'mlflow-skinny', which is not installed "
                        "(pip install mlflow-skinny)",
                        "train.report_to: 'nope' is not a tracker; valid: all, " + ", ".join(trackers.PACKAGES)]
