"""Shared fixtures: one torch thread per test worker, a private cache, the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("TUNELAB_TEST_THREADS", "1")))
os.environ.setdefault("TUNELAB_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["TUNELAB_CACHE"] = str(tmp_path_factory.mktemp("tunelab-cache"))
    # study records of test sweeps go to temporary folders, never into studies/: this one serves module
    # fixtures; every test gets its own (below), so two tests' sweeps of one name never share records
    os.environ["TUNELAB_STUDIES_DIR"] = str(tmp_path_factory.mktemp("studies"))


@pytest.fixture(autouse=True)
def _private_studies(tmp_path_factory, monkeypatch):
    """A fresh study-records root per test (sweeps named alike in two tests must not see each other)."""
    monkeypatch.setenv("TUNELAB_STUDIES_DIR", str(tmp_path_factory.mktemp("studies")))


@pytest.fixture
def tiny():
    """(model, tokenizer) of the tiny random Llama built in code."""
    from tunelab.models.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    return tiny_model(len(tok), seed=0), tok


@pytest.fixture
def tiny_dir(tmp_path):
    from tunelab.models.tiny import build_tiny

    return build_tiny(tmp_path / "tiny-model")


@pytest.fixture
def data_dir(monkeypatch):
    """The shared data folder (GSM8K present), set as $TUNELAB_DATA_DIR; skips when absent."""
    data = Path(os.environ["TUNELAB_DATA_DIR"])
    if not (data / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {data}")
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(data))
    return data


def skip_without_shared_data(problems) -> None:
    """Skip (saying why) when every problem is a file of the shared datasets that $TUNELAB_DATA_DIR
    does not hold (a machine without ../shared/data); otherwise return and let the test judge."""
    lines = [problems] if isinstance(problems, str) else [str(p) for p in problems]
    lines = [line for text in lines for line in str(text).splitlines() if line.strip()]
    data = Path(os.environ.get("TUNELAB_DATA_DIR", ""))
    if lines and not (data / "gsm8k").is_dir() and all(
            ("data file" in line and "not found" in line) or "no data file matches" in line for line in lines):
        pytest.skip(f"needs the shared datasets ($TUNELAB_DATA_DIR={data} is absent): {lines[0][:120]}")
