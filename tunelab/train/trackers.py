"""Experiment trackers (``train.report_to``) through accelerate: the run's config and every metrics row.

TensorBoard writes under ``<run>/trackers/tunelab``. MLflow logs to ``$MLFLOW_TRACKING_URI``, else to a
file store in ``<run>/trackers/mlruns`` (experiment ``tunelab`` unless ``$MLFLOW_EXPERIMENT_NAME``; one
MLflow run per training call, named after the run folder; ``loss.<source>`` for ``loss/<source>``).
wandb and accelerate's other trackers take their own environment variables. With ``train.report_to: []``
(the default) nothing here runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers

from tunelab.config import ConfigError, TrainConfig, to_dict

PROJECT = "tunelab"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb", "comet_ml": "comet-ml",
            "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
"""Tracker name -> the pip package that provides it."""


def problems(names: list[str]) -> list[str]:
    """What is wrong with ``train.report_to``: unknown trackers, and trackers whose package is missing."""
    available = {str(t) for t in get_available_trackers()}
    out = []
    for name in names:
        if name != "all" and name not in PACKAGES:
            out.append(f"train.report_to: {name!r} is not a tracker; valid: all, {', '.join(PACKAGES)}")
        elif name != "all" and name not in available:
            out.append(f"train.report_to: {name!r} needs the Python package {PACKAGES[name]!r}, which is not "
                       f"installed (pip install {PACKAGES[name]})")
    return out


def accelerator_kwargs(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """``Accelerator`` arguments for ``cfg.report_to`` (none when it is empty); fails on :func:`problems`."""
    if not cfg.report_to:
        return {}
    if bad := problems(cfg.report_to):
        raise ConfigError("; ".join(bad))
    return {"log_with": list(cfg.report_to), "project_dir": str(run_dir / "trackers")}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as ``{"a.b": scalar}``; lists and null as JSON text (trackers take scalars only)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str) else json.dumps(value)
    return out


def run_config(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The run's resolved config (its ``config.yaml``, written by the runner), else ``{"train": cfg}``."""
    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {"train": to_dict(cfg)}


def _log(acc: Accelerator, row: dict[str, Any]) -> None:
    """One metrics row to every tracker, at its step. MLflow gets ``loss.<source>`` for ``loss/<source>``:
    its file store keeps a metric in a file named after it, and ``loss`` cannot be a file and a folder."""
    values = {k: v for k, v in row.items() if k != "step"}
    dotted = {k.replace("/", "."): v for k, v in values.items()}
    for tracker in acc.trackers:
        tracker.log(dotted if tracker.name == "mlflow" else values, step=row["step"])


@contextlib.contextmanager
def tracking(acc: Accelerator, cfg: TrainConfig, run_dir: Path) -> Iterator[Callable[[dict], None] | None]:
    """Start the trackers of ``acc`` with the run's flattened config; yields the function that logs one
    metrics row (None without trackers) and finishes them on exit, also on error."""
    if not cfg.report_to:
        yield None
        return
    env = {}
    if "MLFLOW_TRACKING_URI" not in os.environ:  # mlflow-skinny stores runs in files only, opt-in since 3.x
        env = {"MLFLOW_TRACKING_URI": (run_dir / "trackers" / "mlruns").resolve().as_uri(),
               "MLFLOW_ALLOW_FILE_STORE": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        acc.init_trackers(PROJECT, config=flatten(run_config(cfg, run_dir)),
                          init_kwargs={"mlflow": {"run_name": run_dir.name}})
        yield lambda row: _log(acc, row)
    finally:
        for tracker in acc.trackers:  # not acc.end_training(): that also destroys the process group
            tracker.finish()
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
