"""Issue 24: `tunelab data inspect` reports the data that `tunelab run` trains on.

200 GSM8K train items plus 20 GSM8K test questions (half lower-cased) in one messages file,
``decontaminate``, ``eval.tasks: [gsm8k]``: the inspection and the run's ``data/mixture.json``
are the same JSON, and every leaked question is removed (from training or held-out data) or
reported as too short to check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.data.transforms.base import words

DATA = Path(os.environ.get("TUNELAB_DATA_DIR", "/work/shared/data")) / "gsm8k"


def _leaky_file(tmp_path: Path) -> tuple[Path, list[str]]:
    if not (DATA / "train.jsonl").is_file() or not (DATA / "test.jsonl").is_file():
        pytest.skip(f"GSM8K not found under {DATA}")
    train = [json.loads(line) for line in (DATA / "train.jsonl").read_text().splitlines()[:200]]
    test = [json.loads(line) for line in (DATA / "test.jsonl").read_text().splitlines()[:20]]
    rows, leaked = [], []
    for i, r in enumerate(train):
        rows.append({"id": f"train-{i}", "messages": [{"role": "user", "content": r["question"]},
                                                      {"role": "assistant", "content": r["answer"]}]})
    for i, r in enumerate(test):
        question = r["question"].lower() if i % 2 else r["question"]
        rows.append({"id": f"leak-{i}", "messages": [{"role": "user", "content": question},
                                                     {"role": "assistant", "content": r["answer"]}]})
        leaked.append(f"leak-{i}")
    path = tmp_path / "leaky.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, leaked


def test_data_inspect_is_the_run_data_and_accounts_for_every_leak(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(DATA.parent))
    path, leaked = _leaky_file(tmp_path)
    overrides = [f"data.sources=[{{name: leaky, path: {path}}}]", "data.transforms=[{name: decontaminate}]",
                 "data.heldout=16", "eval.tasks=[gsm8k]", "eval.limit=2", "eval.max_new_tokens=4",
                 "train.max_steps=1", "train.save_every=0", "train.eval_every=0"]
    capsys.readouterr()
    assert main(["data", "inspect", "recipes/tiny.yaml", "--json", *overrides]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert main(["run", "recipes/tiny.yaml", "--out", str(tmp_path / "runs"), *overrides]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    mixture = json.loads((run_dir / "data" / "mixture.json").read_text())
    assert inspected == mixture

    # every test item was indexed (not only eval.limit of them), and every leak is accounted for
    dec = mixture["decontamination"]
    assert dec["tasks"] == {"gsm8k": {"items": 1319}} and dec["texts_indexed"] >= 1319
    hits = mixture["transform_stats"]["contaminated"]
    removed_ids = {h["id"] for h in hits}
    assert all(h["eval_item"].startswith("gsm8k/") and len(h["ngram"].split()) == dec["n"] for h in hits)
    short = set(dec["items_too_short_to_check"])
    leaked_items = {f"gsm8k/{i}" for i in range(20)}  # GSM8K test ids are their row numbers
    unaccounted = [lid for lid, item in zip(leaked, sorted(leaked_items, key=lambda s: int(s.split("/")[1])))
                   if lid not in removed_ids and item not in short]
    assert unaccounted == [], (unaccounted, removed_ids)
    # any other hit is a real overlap (GSM8K has templated near-duplicates across splits): its n-gram
    # is in both the training example and the evaluation text it names
    rows = {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
    eval_text = {f"gsm8k/{i}": q for i, q in enumerate(json.loads(line)["question"]
                                                      for line in (DATA / "test.jsonl").read_text().splitlines())}
    for h in hits:
        sample = " ".join(words(" ".join(m["content"] for m in rows[h["id"]]["messages"])))
        assert h["ngram"] in sample and h["ngram"] in " ".join(words(eval_text[h["eval_item"]])), h
    source = mixture["sources"][0]
    counted = source["removed"].get("contaminated", 0) + source.get("heldout_removed", {}).get("contaminated", 0)
    assert counted == len(hits) == len(removed_ids)
