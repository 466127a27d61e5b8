"""Preference objectives in the one loop: data formats and builders, training runs, resume, caching."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from tunelab.config import ConfigError, TrainConfig
from tunelab.data.formats import to_sample
from tunelab.data.preference import build_pref_rows, pair_samples
from tunelab.data.sources import load_source
from tunelab.io import DataError
from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.registry import RegistryError
from tunelab.runner.run import run
from tunelab.train.loop import TrainJob, train
from tunelab.train.objectives import build_objective, reference_logps, seq_logps
from tunelab.types import Sample


def _traj(task: int, attempt: int, answer: str, success: bool) -> dict:
    return {"id": f"t{task}#{attempt}", "task_id": f"t{task}",
            "messages": [{"role": "user", "content": f"What is {task} + {task}?"},
                         {"role": "assistant", "content": f"Answer: {answer}"}],
            "outcome": {"success": success}, "origin": {"model": "test"}}


def trajectory_pool(n_tasks: int = 24) -> list[dict]:
    """Two successes and two systematic failures (the answer forgets one operand) per task."""
    rows = []
    for t in range(n_tasks):
        rows += [_traj(t, 0, str(2 * t), True), _traj(t, 1, str(2 * t), True),
                 _traj(t, 2, str(t), False), _traj(t, 3, str(t + 1), False)]
    return rows


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------- formats


def test_preference_format_reads_strings_and_shared_prompt_conversations():
    s = to_sample({"prompt": "q?", "chosen": "yes", "rejected": "no"}, "auto", {}, "f.jsonl:1")
    assert s.messages == [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "yes"}]
    assert s.meta["rejected"] == [{"role": "assistant", "content": "no"}]
    conv = {"chosen": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "no"}]}
    s2 = to_sample(conv, "auto", {}, "f.jsonl:2")
    assert s2.messages == s.messages and s2.meta["rejected"] == s.meta["rejected"]


@pytest.mark.parametrize("row, field, problem", [
    ({"prompt": "q", "chosen": "", "rejected": "no"}, "chosen", "empty completion"),
    ({"prompt": "q", "chosen": "yes", "rejected": "  "}, "rejected", "empty completion"),
    ({"chosen": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]},
     "rejected", "prompt mismatch"),
    ({"prompt": "q", "completion": "a"}, "label", "missing"),
    ({"prompt": "q", "completion": "a", "label": "yes"}, "label", "expected bool"),
])
def test_bad_preference_rows_name_the_row_and_field(row, field, problem):
    fmt = "unpaired" if "completion" in row else "preference"
    with pytest.raises(DataError) as e:
        to_sample(row, fmt, {}, "prefs.jsonl:7")
    assert "prefs.jsonl:7" in str(e.value) and repr(field) in str(e.value) and problem in str(e.value)


def test_a_kto_file_without_labels_fails_with_file_line_and_field(tmp_path):
    path = _write(tmp_path / "kto.jsonl", [{"prompt": "q", "completion": "a", "label": True},
                                            {"prompt": "q", "completion": "b"}])
    from tunelab.config import SourceConfig

    with pytest.raises(DataError) as e:
        load_source(SourceConfig(name="k", path=path, format="unpaired"), None, 0, 0)
    assert "kto.jsonl:2" in str(e.value) and "'label'" in str(e.value)


# ----------------------------------------------------------------------------- builders


def test_pairs_all_and_one_per_task_from_a_trajectory_pool():
    samples = [to_sample(r, "trajectory", {}, f"x:{i}") for i, r in enumerate(trajectory_pool(5))]
    for s, r in zip(samples, trajectory_pool(5)):
        s.meta.update(id=r["id"], source="p")
    pairs, counts = pair_samples(samples, "all", 0)
    assert len(pairs) == 5 * 4 and not counts  # 2 successes x 2 failures per task
    assert all(p.response().endswith(str(2 * int(p.meta["task_id"][1:]))) for p in pairs)
    one, _ = pair_samples(samples, "one", 0)
    assert len(one) == 5 and {p.meta["task_id"] for p in one} == {f"t{i}" for i in range(5)}
    assert [p.meta["id"] for p in pair_samples(samples, "one", 0)[0]] == [p.meta["id"] for p in one]  # seeded
    only_wins = [s for s in samples if s.meta["outcome"]["success"]]
    assert pair_samples(only_wins, "all", 0) == ([], {"no_failure": 5})


def test_kto_rows_get_a_mismatched_kl_completion(tiny):
    _, tok = tiny
    samples = [Sample([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
                      {"source": "s", "id": str(i), "label": i % 2 == 0}) for i in range(6)]
    rows, dropped = build_pref_rows(samples, "unpaired", tok, ["s"], 64, "right", seed=0)
    assert dropped == 0 and len(rows) == 6
    for r in rows:
        assert r.kl is not None and r.kl.n_seqs == 1
        own, other = r.kl.id.split("~")
        assert own == r.id and other != r.id
    assert sorted(r.kl.id.split("~")[1] for r in rows) == [r.id for r in rows]  # each completion used once


# ----------------------------------------------------------------------------- objectives


def test_objectives_registry_and_bad_params():
    assert build_objective({"name": "dpo"}).params.beta == 0.1
    assert build_objective(None).kind == "tokens"
    with pytest.raises(RegistryError):
        build_objective({"name": "dpoo"})
    with pytest.raises(ConfigError):
        build_objective({"name": "dpo", "beta": 0})
    with pytest.raises(ConfigError):
        build_objective({"name": "kto", "desirable_weight": -1})


def _pair_job(tmp_path, objective: str, max_steps: int, resume: bool = False, **params):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    samples = [to_sample(r, "trajectory", {}, f"x:{i}") for i, r in enumerate(trajectory_pool(8))]
    for i, s in enumerate(samples):
        s.meta.update(id=f"r{i}", source="arith")
    obj = build_objective({"name": objective, **params})
    if obj.kind == "pairs":
        samples, _ = pair_samples(samples, "all", 0)
    else:
        samples = [Sample(s.messages, {**s.meta, "label": s.meta["outcome"]["success"]}) for s in samples]
    rows, _ = build_pref_rows(samples, obj.kind, tok, ["arith"], 128, "right", 0)
    torch.manual_seed(0)
    base = tiny_model(len(tok), seed=0)
    cfg = TrainConfig(max_steps=max_steps, batch_size=4, lr=1e-2, warmup_ratio=0.0, save_every=3, precision="fp32")
    reference_logps(base, rows, tok.pad_token_id, "fp32", cfg)  # for the objective, and to measure
    method = build_method({"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0})
    model = method.apply(base)
    return TrainJob(model, method, rows, ["arith"], cfg, "fp32", tmp_path, tok.pad_token_id, False,
                    resume=resume, objective=obj)


@pytest.mark.parametrize("objective", ["dpo", "kto", "orpo", "simpo"])
def test_preference_training_separates_chosen_from_rejected(tmp_path, objective):
    """After training, the policy's log-ratio to the base model is higher on successes than on
    failures (over every example), and the logged metrics are there."""
    job = _pair_job(tmp_path, objective, 12, beta=1.0)
    model, _ = train(job)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(k in rows[0] for k in ("loss", "rewards/chosen", "rewards/rejected"))
    assert ("kl" in rows[-1]) == (objective == "kto")
    model.eval()
    with torch.no_grad():
        batch = job.objective.collate(job.rows, 0, False)
        ratios = seq_logps(model, batch, job.cfg, 0)[0] - batch["ref"].float()
    if objective == "kto":
        good = batch["label"].bool()
        margin = ratios[good, 0].mean() - ratios[~good, 0].mean()
    else:
        margin = (ratios[:, 0] - ratios[:, 1]).mean()
    assert margin > 0.2, margin  # from 0 (policy = reference) at the start


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_passes_within_a_token_budget_give_the_gradient_of_the_whole_micro_batch(tmp_path, objective, monkeypatch):
    """train.tokens_per_pass cuts each micro-batch into passes (activations bounded): the step's loss and
    every gradient equal one pass over the micro-batch."""
    grads, orig = [], torch.optim.AdamW.step

    def record(self, *a, **kw):
        grads.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return orig(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    whole = _pair_job(tmp_path / "whole", objective, 2)
    widest = max(r.width for r in whole.rows)
    cut = _pair_job(tmp_path / "cut", objective, 2)
    cut.cfg.tokens_per_pass = widest + 1  # one pair per pass
    seen = []
    collate = type(cut.objective).collate
    monkeypatch.setattr(type(cut.objective), "collate", lambda self, rows, *a: seen.append(len(rows)) or collate(self, rows, *a))
    train(whole)
    n_whole = len(seen)
    train(cut)
    assert seen[:n_whole] == [4, 4] and seen[n_whole:] == [1] * 8  # batch 4, 2 steps
    loss = [[json.loads(x)["loss"] for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("whole", "cut")]
    assert loss[0] == pytest.approx(loss[1], abs=1e-5)
    for a, b in zip(grads[:2], grads[2:]):
        for ga, gb in zip(a, b):
            assert torch.allclose(ga, gb, atol=1e-6)


def test_kto_refuses_passes(tmp_path):
    job = _pair_job(tmp_path, "kto", 1)
    job.cfg.tokens_per_pass = 64
    with pytest.raises(ConfigError, match="tokens_per_pass: objective KTO couples"):
        train(job)


def test_dpo_resume_gives_the_same_weights(tmp_path):
    straight = _pair_job(tmp_path / "a", "dpo", 6)
    model_a, _ = train(straight)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-3", tmp_path / "b" / "checkpoints" / "step-3")
    resumed = _pair_job(tmp_path / "b", "dpo", 6, resume=True)  # as if killed after step 3's checkpoint
    model_b, summary = train(resumed)
    assert summary["resumed_from"] == 3
    wa, wb = straight.method.trainable_state(model_a), resumed.method.trainable_state(model_b)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_a_recipe_runs_dpo_on_a_trajectory_pool_and_caches_reference(tmp_path, tiny_dir):
    pool = _write(tmp_path / "pool.jsonl", trajectory_pool(12))
    recipe = {
        "model": str(tiny_dir),
        "data": {"sources": [{"name": "arith", "path": pool, "format": "trajectory"}],
                 "transforms": [{"name": "pairs", "mode": "one"}], "max_length": 128, "heldout": 2},
        "objective": {"name": "dpo", "beta": 0.2},
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 5e-3, "precision": "fp32", "save_every": 0},
        "eval": {"tasks": []},
    }
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cache = tmp_path / "cache"
    out = run(path, out=str(tmp_path / "runs"), quiet=True, data_cache=cache)
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["reused"]["reference"] is False
    mixture = json.loads((out / "data" / "mixture.json").read_text())
    assert mixture["preference"]["kind"] == "pairs" and mixture["preference"]["examples"] == 12  # one pair per task
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "rewards/margin" in metrics[0]
    speed = json.loads((out / "env.json").read_text())["speed"]  # two sequences per example: in passes
    assert speed["tokens_per_pass"] == 1024 and speed["passes_decision"]["requested"] == "auto"
    assert speed["gradient_checkpointing"] is False and speed["checkpointing_decision"]["requested"] == "auto"
    shutil.rmtree(out)
    again = run(path, out=str(tmp_path / "runs"), quiet=True, data_cache=cache)
    assert json.loads((again / "results.json").read_text())["run"]["reused"]["reference"] is True


def test_a_dpo_recipe_on_plain_sft_data_is_refused(tmp_path, tiny_dir):
    recipe = {"model": str(tiny_dir), "data": {"sources": [{"name": "arith", "task": "arith", "count": 8}]},
              "objective": {"name": "dpo"}, "train": {"max_steps": 1}, "eval": {"tasks": []}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(DataError, match="'rejected' missing"):
        run(path, out=str(tmp_path / "runs"), quiet=True)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dpo_starts_from_a_finished_sft_run(tmp_path, tiny_dir):
    """``model: <run folder>``: the run trains from that run's merged weights, which are also the
    reference; caches keyed by the weights tell it apart from the base model."""
    from tunelab.train.artifacts import load_for_inference

    pool = _write(tmp_path / "pool.jsonl", trajectory_pool(12))
    source = {"name": "arith", "path": pool, "format": "trajectory"}

    def recipe(name, model, objective, transform, lr):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "model": model, "data": {"sources": [source], "transforms": [transform], "max_length": 128,
                                     "heldout": 0},
            "objective": objective, "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"max_steps": 4, "batch_size": 4, "lr": lr, "precision": "fp32", "save_every": 0},
            "eval": {"tasks": []}}))
        return path

    cache = tmp_path / "cache"
    sft = run(recipe("sft", str(tiny_dir), {"name": "sft"}, {"name": "nat", "mode": "positives"}, 5e-2),
              out=str(tmp_path / "runs"), quiet=True, data_cache=cache)
    pairs = {"name": "pairs", "mode": "one"}
    # a learning rate so small that the DPO run's weights stay its starting point's
    dpo = run(recipe("dpo", str(sft), {"name": "dpo"}, pairs, 1e-12), out=str(tmp_path / "runs"), quiet=True,
              data_cache=cache)
    from_base = run(recipe("dpo_base", str(tiny_dir), {"name": "dpo"}, pairs, 1e-12), out=str(tmp_path / "runs"),
                    quiet=True, data_cache=cache)
    info = json.loads((dpo / "env.json").read_text())["model"]
    assert info["kind"] == "run" and info["resolved"] == str((sft / "final").resolve())
    # the reference log-probs were computed from the SFT weights, not served from the base model's cache
    assert not json.loads((dpo / "results.json").read_text())["run"]["reused"]["reference"]
    refs = {p.stem: json.loads(p.read_text()) for p in (cache / "reference").glob("*.json")}
    assert len(refs) == 2 and len({json.dumps(r) for r in refs.values()}) == 2
    ids = torch.arange(3, 40).unsqueeze(0)
    logits = {}
    for name, folder in (("sft", sft), ("dpo", dpo), ("from_base", from_base)):
        model, _, _ = load_for_inference(str(folder), device="cpu")  # a run on a run loads through both
        with torch.no_grad():
            logits[name] = model(input_ids=ids).logits
    assert torch.allclose(logits["dpo"], logits["sft"], atol=1e-4)
    assert not torch.allclose(logits["from_base"], logits["sft"], atol=1e-2)
