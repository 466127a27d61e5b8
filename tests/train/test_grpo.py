"""GRPO and RLOO: advantages, and the loss and every gradient against TRL 1.16's GRPOTrainer."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tunelab.config import TrainConfig  # noqa: E402
from tunelab.data.rollouts import RolloutRow, collate_rollouts  # noqa: E402
from tunelab.data.tokenize import IGNORE, Encoded  # noqa: E402
from tunelab.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402
from tunelab.train.objectives import build_objective  # noqa: E402

TOL = 1e-5
PROMPTS = ["2+2 is ", "3*3 is "]  # equal lengths: no left padding in TRL's batch (its positions would shift)
COMPLETIONS = [["4", "four!", "5 I think"], ["9", "nine", "6"]]
REWARDS = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_grpo_advantages_are_group_normalised_and_rloo_leaves_one_out():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    g = rewards.view(3, 3)
    want = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).flatten()  # TRL's formula
    got = build_objective({"name": "grpo"}).advantages(rewards, groups)
    torch.testing.assert_close(got, want)
    assert torch.all(got[6:] == 0)  # a group of equal rewards teaches nothing
    dr = build_objective({"name": "grpo", "scale_rewards": "none"}).advantages(rewards, groups)
    torch.testing.assert_close(dr, (g - g.mean(1, keepdim=True)).flatten())
    loo = build_objective({"name": "rloo"}).advantages(rewards, groups)
    torch.testing.assert_close(loo, torch.tensor([0.5, 0.5, -1.0, 1.0, -0.5, -0.5, 0.0, 0.0, 0.0]))


def test_a_group_of_one_is_refused():
    with pytest.raises(Exception, match="group_size"):
        build_objective({"name": "grpo", "group_size": 1})


def _trl_inputs(tok):
    prompt = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert len({len(p) for p in prompt}) == 1
    comps = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for cs in COMPLETIONS for c in cs]
    width = max(len(c) for c in comps)
    prompt_ids = torch.tensor([prompt[i // 3] for i in range(6)])
    completion_ids = torch.tensor([c + [tok.pad_token_id] * (width - len(c)) for c in comps])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in comps])
    return prompt_ids, completion_ids, completion_mask, comps, width


@pytest.mark.parametrize("loss_type, beta, temperature", [("dapo", 0.0, 0.7), ("grpo", 0.0, 1.0),
                                                          ("dr_grpo", 0.0, 1.0), ("dapo", 0.04, 1.0)])
def test_grpo_loss_and_gradients_equal_trl(tmp_path, loss_type, beta, temperature):
    warnings.filterwarnings("ignore")
    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=0).float()
    with torch.no_grad():  # away from the initialisation, so the log-probs are not uniform
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    objective = build_objective({"name": "grpo", "loss_type": loss_type, "beta": beta, "temperature": temperature,
                                 "group_size": 3, "max_completion_length": 16})
    rewards = torch.tensor([r for rs in REWARDS for r in rs])
    advantages = objective.advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1]))
    prompt_ids, completion_ids, completion_mask, comps, width = _trl_inputs(tok)
    gen = torch.Generator().manual_seed(3)
    ref = -torch.rand(completion_ids.shape, generator=gen) * 3  # a reference's per-token log-probs

    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=3,
                          max_completion_length=16, temperature=temperature, loss_type=loss_type, beta=0.0,
                          report_to=[], use_cpu=True, bf16=False)
    theirs = copy.deepcopy(base).train()
    data = datasets.Dataset.from_list([{"prompt": p} for p in PROMPTS * 3])
    trainer = trl.GRPOTrainer(model=theirs, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                              args=args, train_dataset=data, processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1
    trainer.beta = beta  # set after construction: TRL would load its reference model by hub id for beta > 0
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
              "completion_ids": completion_ids, "completion_mask": completion_mask, "advantages": advantages,
              "num_items_in_batch": completion_mask.sum()}
    if beta:
        inputs["ref_per_token_logps"] = ref
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    trl_loss.backward()

    rows = []
    for i, c in enumerate(comps):
        ids = prompt_ids[i].tolist() + c
        targets = [IGNORE] * (len(prompt_ids[i]) - 1) + c + [IGNORE]
        rows.append(RolloutRow(Encoded(ids, targets, "env", str(i)), float(rewards[i]), i // 3, float(advantages[i]),
                               ref_logps=ref[i, : len(c)].tolist() if beta else None))
    ours = copy.deepcopy(base).train()
    batch = collate_rollouts(rows, tok.pad_token_id)
    losses, _ = objective(ours, batch, TrainConfig(loss_chunk=7), 0)
    loss = losses.sum() / objective.units(batch)
    loss.backward()
    assert abs(loss.item() - trl_loss.item()) < TOL, (loss.item(), trl_loss.item())
    g1 = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    g2 = {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
    assert g1.keys() == g2.keys() and g1
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=TOL, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_skipping_zero_advantage_episodes_changes_no_loss_gradient_or_metric(loss_type):
    """A group whose rewards all agree, left out of the pass, still counts in the denominators with loss 0:
    the loss, every gradient and the clip fraction equal those of the full pass."""
    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=0).float()
    comps = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
             for c in ("4", "four!", "5 I think", "9", "nine", "6", "10", "ten", "11 or 12")]
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # group 1 agrees: zero advantage
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    results = []
    for skip in (False, True):
        objective = build_objective({"name": "grpo", "loss_type": loss_type, "group_size": 3,
                                     "skip_zero_advantage": skip})
        advantages = objective.advantages(rewards, groups)
        assert torch.all(advantages[3:6] == 0)
        prompt = tok("2+2 is ", add_special_tokens=False)["input_ids"]
        rows = [RolloutRow(Encoded(prompt + c, [IGNORE] * (len(prompt) - 1) + c + [IGNORE], "env", str(i)),
                           float(rewards[i]), int(groups[i]), float(advantages[i])) for i, c in enumerate(comps)]
        model = copy.deepcopy(base).train()
        batch = objective.collate(rows, tok.pad_token_id, False)
        assert batch["input_ids"].shape[0] == (6 if skip else 9)
        losses, src = objective(model, batch, TrainConfig(loss_chunk=7), 0)
        loss = losses.sum() / objective.units(batch)
        loss.backward()
        results.append((loss.item(), sorted(losses.tolist()), src.tolist(), objective.units(batch),
                        {n: p.grad for n, p in model.named_parameters()}, objective.metrics()["clip_ratio"]))
    (l1, ls1, s1, u1, g1, c1), (l2, ls2, s2, u2, g2, c2) = results
    # on-policy the ratio is 1, so the clip fraction is 0 both ways: its check only guards that it is logged
    assert u1 == u2 and abs(l1 - l2) < TOL and c1 == pytest.approx(c2) and s1 == s2 and len(ls1) == len(ls2)
    assert sum(abs(x) for x in ls1) > 0
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=TOL, rtol=1e-4)


@pytest.mark.parametrize("name, adapter", [("grpo", False), ("rloo", True)])
def test_the_shared_prefix_forward_gives_the_plain_forwards_losses_and_gradients(name, adapter):
    """Each group's prompt runs once, its KV cache expanded to the group's rows (share_prefix, the default):
    the losses and every gradient equal those of every episode run whole, with episodes of unequal
    lengths, a multi-turn one (an observation without loss between two agent turns), a group whose
    first agent tokens agree and a group of one."""
    from tunelab.data.rollouts import mark_shared
    from tunelab.train.shared_prefix import shared_length, shared_prefix_hidden

    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=0).float()
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if adapter:  # LoRA through peft (the cache keyword passes through its wrapper), B away from 0
        from tunelab.methods import build_method

        base = build_method({"name": "lora", "dropout": 0.0}).apply(base)
        with torch.no_grad():
            for n, p in base.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [enc("what is 2+2? answer: "), enc("and 3*3, please: ")]
    turns = [[("4", None)], [("four", " obs: ok "), ("4!", None)], [("5 I think so", None)],  # group 0
             [("9", None)], [("9 or 8", None)],  # group 1: both start with "9"
             [("lone", None)]]  # group 2: one episode
    groups = [0, 0, 0, 1, 1, 2]
    prompt_of = [0, 0, 0, 1, 1, 0]
    rows = []
    for i, (episode, g) in enumerate(zip(turns, groups)):
        ids, targets = list(prompts[prompt_of[i]]), [IGNORE] * (len(prompts[prompt_of[i]]) - 1)
        for said, observation in episode:
            agent = enc(said) + [tok.eos_token_id]
            ids += agent
            targets += agent
            if observation:
                seen = enc(observation)
                ids += seen
                targets += [IGNORE] * len(seen)
        targets += [IGNORE]
        targets = targets[: len(ids)]
        rows.append(RolloutRow(Encoded(ids, targets, "env", str(i)), float(i % 2), g, 0.5 - (i % 3) * 0.4))
    results = []
    for share in (False, True):
        objective = build_objective({"name": name, "group_size": 2, "share_prefix": share,
                                     "skip_zero_advantage": False})
        model = copy.deepcopy(base).train()
        batch = objective.collate(rows, tok.pad_token_id, False)
        if share:
            assert shared_prefix_hidden(model, batch) is not None  # the path applies to this model
            at = [shared_length(batch["input_ids"][r], batch["targets"][r]) for r in ([0, 1, 2], [3, 4])]
            assert at == [len(prompts[0]) - 1, len(prompts[1]) - 1]  # cut at the first position with a loss
        widest = max(r.width for r in rows)
        mark_shared(rows)  # what the rollouts do when they sample a step
        assert [r.shared for r in rows] == [len(prompts[0]) - 1] * 3 + [len(prompts[1]) - 1] * 2 + [0]
        if share:  # a pass is planned at what it computes: each group's shared beginning once
            shared = [len(prompts[0]) - 1] * 3 + [len(prompts[1]) - 1] * 2
            lone = widest  # group 2, one episode: nothing shared
            assert objective.pass_positions(rows) == sum(widest - s for s in shared) + shared[0] + shared[3] + lone
        else:
            assert objective.pass_positions(rows) == len(rows) * widest
        losses, src = objective(model, batch, TrainConfig(loss_chunk=5), 0)
        loss = losses.sum() / objective.units(batch)
        loss.backward()
        results.append((losses.detach(), src, {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None}))
    (l1, s1, g1), (l2, s2, g2) = results
    torch.testing.assert_close(l2, l1, atol=TOL, rtol=1e-5)
    assert torch.equal(s1, s2) and g1.keys() == g2.keys() and g1
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], atol=TOL, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


# -- the objective in the one loop, on an environment ---------------------------------------------------

def _recipe(tmp_path, tiny_dir, **objective):
    import yaml

    spec = {"name": "grpo", "env": "calculator", "group_size": 2, "max_new_tokens": 12, "episode_steps": 2,
            "task_limit": 16, "env_options": {"oneshot": False, "source": "pairs"}, **objective}
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump({
        "model": str(tiny_dir), "data": {"sources": [], "max_length": 512}, "objective": spec,
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 5e-2, "precision": "fp32", "save_every": 0},
        "eval": {"tasks": []}}))
    return path


def _longer_is_better(self, task, answer):
    """A stand-in verifier the random tiny model can please: a longer final answer scores more."""
    score = min(1.0, len(answer or "") / 8)
    return {"success": score >= 0.5, "score": score}


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_an_online_recipe_samples_scores_and_learns_in_the_loop(tmp_path, tiny_dir, monkeypatch, name):
    import json

    from tunelab.envs.calculator import Calculator
    from tunelab.runner.run import run

    monkeypatch.setattr(Calculator, "verify", _longer_is_better)
    monkeypatch.setattr(Calculator, "act", lambda self, text: __import__("tunelab.envs.base", fromlist=["Step"]).Step(
        done=True, answer=text.strip()))  # every turn is a final answer
    from tunelab.train import loop

    calls = []
    monkeypatch.setattr(loop, "trim_heap", lambda: calls.append(1))
    out = run(_recipe(tmp_path, tiny_dir, name=name, reward="score", beta=0.05), out=str(tmp_path / "runs"),
              quiet=True)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    for m in metrics:
        for key in ("reward", "reward_std", "success", "completion_tokens", "seconds_generation", "clip_ratio", "kl"):
            assert key in m, key
    assert any(m["reward_std"] > 0 and m["grad_norm"] > 0 for m in metrics)  # groups that disagree teach
    env = json.loads((out / "env.json").read_text())
    assert env["speed"]["compile"] is False
    assert env["speed"]["trim_heap"] is False  # auto: off (measured slower), said in env.json
    assert env["speed"]["trim_heap_decision"]["why"]
    assert not calls  # off: the loop never trims
    assert json.loads((out / "data" / "mixture.json").read_text())["online"]["episodes_per_step"] == 4


def test_trim_heap_on_trims_after_sampling_and_after_each_step(tmp_path, tiny_dir, monkeypatch):
    import json

    import yaml

    from tunelab.envs.rollout import Rollouts
    from tunelab.runner.run import run
    from tunelab.train import loop

    events = []
    monkeypatch.setattr(loop, "trim_heap", lambda: events.append("trim"))
    path = _recipe(tmp_path, tiny_dir)
    spec = yaml.safe_load(path.read_text())
    spec["train"]["trim_heap"] = True
    path.write_text(yaml.safe_dump(spec))
    sample = Rollouts.__call__
    monkeypatch.setattr(Rollouts, "__call__", lambda self, *a: (events.append("sample"), sample(self, *a))[1])
    out = run(path, out=str(tmp_path / "runs"), quiet=True)
    env = json.loads((out / "env.json").read_text())
    assert env["speed"]["trim_heap"] is True and env["speed"]["trim_heap_decision"] == {"requested": True}
    assert events == ["sample", "trim", "trim"] * 3  # sampling, its trim, the step's trim


def test_a_step_whose_groups_all_agree_runs_no_backward_and_steps_on_zero_gradients(tmp_path, tiny_dir, monkeypatch):
    import json

    from tunelab.envs.calculator import Calculator
    from tunelab.runner.run import run

    monkeypatch.setattr(Calculator, "verify", lambda self, task, answer: {"success": False, "score": 0.0})
    out = run(_recipe(tmp_path, tiny_dir), out=str(tmp_path / "runs"), quiet=True)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    for m in metrics:
        assert m["grad_norm"] == 0 and m["loss"] == 0 and m["clip_ratio"] == 0 and m["zero_advantage"] == 1
        assert m["tokens"] > 0 and m["completion_tokens"] > 0  # the skipped episodes' tokens still count


def test_observations_carry_no_loss(tiny):
    from tunelab.data.rollouts import encode_episode

    _, tok = tiny
    messages = [{"role": "user", "content": "Q: 2+3?"}, {"role": "assistant", "content": "calculate[2+3]"},
                {"role": "user", "content": "Observation: 5"}, {"role": "assistant", "content": "finish[5]"}]
    e = encode_episode(messages, tok, 512, "env", "x")
    trained = tok.decode([t for t in e.targets if t != IGNORE])
    assert "calculate[2+3]" in trained and "finish[5]" in trained and "Observation" not in trained


def test_bad_online_recipes_fail_before_any_work(tmp_path, tiny_dir, monkeypatch):
    import yaml

    from tunelab.config import ConfigError
    from tunelab.envs.calculator import Calculator
    from tunelab.runner.run import run

    path = _recipe(tmp_path, tiny_dir, env="no_such_env")
    with pytest.raises(ConfigError, match="objective.env"):
        run(path, out=str(tmp_path / "runs"), quiet=True)
    path = _recipe(tmp_path, tiny_dir, group_size=3)
    with pytest.raises(ConfigError, match="group_size: 3 must divide"):
        run(path, out=str(tmp_path / "runs"), quiet=True)
    recipe = yaml.safe_load(_recipe(tmp_path, tiny_dir).read_text())
    recipe["data"]["sources"] = [{"name": "arith", "task": "arith", "count": 4}]
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="samples its own episodes"):
        run(path, out=str(tmp_path / "runs"), quiet=True)
    monkeypatch.setattr(Calculator, "verify", lambda self, task, answer: {"success": False, "score": float("nan")})
    with pytest.raises(ValueError, match="NaN reward"):
        run(_recipe(tmp_path, tiny_dir, reward="score"), out=str(tmp_path / "runs"), quiet=True)


def test_reference_logprobs_are_the_adapter_free_models_at_the_sampling_temperature(tiny):
    """One batched pass through the loss's head equals each episode scored alone by transformers, with the
    adapters disabled and the logits divided by the temperature."""
    from types import SimpleNamespace

    from tunelab.data.rollouts import encode_episode
    from tunelab.envs.rollout import Rollouts
    from tunelab.methods import build_method

    model, tok = tiny
    model = build_method({"name": "lora", "r": 2, "alpha": 4, "dropout": 0.0}).apply(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)  # the adapter changes the outputs, so disabling it matters
    episodes = [[{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "calculate[2+3]"},
                 {"role": "user", "content": "Observation: 5"}, {"role": "assistant", "content": "finish[5]"}],
                [{"role": "user", "content": "7?"}, {"role": "assistant", "content": "finish[7]"}]]
    rows = [RolloutRow(encode_episode(m, tok, 512, "env", str(i)), 0.0, 0) for i, m in enumerate(episodes)]
    fake = SimpleNamespace(objective=build_objective({"name": "grpo", "temperature": 0.7, "beta": 0.1}), tok=tok,
                           precision="fp32")
    fake._logps = lambda *a: Rollouts._logps(fake, *a)
    Rollouts._reference(fake, model, rows)
    with model.disable_adapter(), torch.no_grad():
        for r in rows:
            logits = model(input_ids=torch.tensor([r.seq.input_ids])).logits[0].float() / 0.7
            t = torch.tensor(r.seq.targets)
            want = torch.log_softmax(logits[t != IGNORE], -1).gather(-1, t[t != IGNORE][:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(r.ref_logps), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_off_policy_ratio_against_kept_logprobs_equals_trl(tmp_path, loss_type):
    """num_iterations > 1: the ratio is taken against the sampling policy's log-probs kept with the episodes
    (TRL's ``old_per_token_logps``); far enough from the current ones that clipping bites on both sides."""
    warnings.filterwarnings("ignore")
    tok = tiny_tokenizer()
    base = tiny_model(len(tok), seed=0).float()
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    objective = build_objective({"name": "grpo", "loss_type": loss_type, "group_size": 3, "num_iterations": 2,
                                 "epsilon": 0.2, "epsilon_high": 0.28})
    rewards = torch.tensor([r for rs in REWARDS for r in rs])
    advantages = objective.advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 1]))
    prompt_ids, completion_ids, completion_mask, comps, width = _trl_inputs(tok)
    rows = []
    for i, c in enumerate(comps):
        ids = prompt_ids[i].tolist() + c
        targets = [IGNORE] * (len(prompt_ids[i]) - 1) + c + [IGNORE]
        rows.append(RolloutRow(Encoded(ids, targets, "env", str(i)), float(rewards[i]), i // 3, float(advantages[i])))
    from tunelab.train.loss import token_losses

    b = collate_rollouts(rows, tok.pad_token_id)
    with torch.no_grad():  # the current log-probs, moved by up to +-0.5 nats: ratios from 0.6 to 1.6
        nll, _ = token_losses(base, {k: b[k] for k in ("input_ids", "position_ids", "targets", "source_idx")})
    shift = torch.rand(nll.shape[0], generator=torch.Generator().manual_seed(1)) - 0.5
    old = (-nll.float() + shift).split([len(c) for c in comps])
    for r, lp in zip(rows, old):
        r.old_logps = lp.tolist()
    old_padded = torch.zeros(completion_ids.shape)
    for i, lp in enumerate(old):
        old_padded[i, : len(lp)] = lp

    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=3,
                          max_completion_length=16, loss_type=loss_type, beta=0.0, epsilon=0.2, epsilon_high=0.28,
                          num_iterations=2, report_to=[], use_cpu=True, bf16=False)
    data = datasets.Dataset.from_list([{"prompt": p} for p in PROMPTS * 3])
    trainer = trl.GRPOTrainer(model=copy.deepcopy(base).train(), args=args, train_dataset=data, processing_class=tok,
                              reward_funcs=[lambda completions, **kw: [0.0] * len(completions)])
    trainer.current_gradient_accumulation_steps = 1
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": advantages, "num_items_in_batch": completion_mask.sum(),
              "old_per_token_logps": old_padded}
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    trl_loss.backward()

    ours = copy.deepcopy(base).train()
    batch = collate_rollouts(rows, tok.pad_token_id)
    losses, _ = objective(ours, batch, TrainConfig(loss_chunk=7), 0)
    loss = losses.sum() / objective.units(batch)
    loss.backward()
    clip = objective.metrics()["clip_ratio"]
    assert 0 < clip < 1  # the kept log-probs are off-policy enough for some tokens to clip
    assert abs(loss.item() - trl_loss.item()) < TOL, (loss.item(), trl_loss.item())
    g1 = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    g2 = {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
    assert g1.keys() == g2.keys() and g1
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=TOL, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_num_iterations_reuses_each_sample_and_resumes_exactly_between_its_steps(tmp_path, tiny_dir, monkeypatch):
    """mu = 2: episodes are sampled at steps 1 and 3 (1-based) and trained on again at steps 2 and 4, against the
    log-probs kept from sampling; a run resumed from the step-3 checkpoint, whose next step reuses the batch
    sampled at step 3, ends with the uninterrupted run's weights."""
    import json
    import shutil

    from safetensors.torch import load_file

    from tunelab.envs.calculator import Calculator
    from tunelab.runner.run import run

    monkeypatch.setattr(Calculator, "verify", _longer_is_better)
    monkeypatch.setattr(Calculator, "act", lambda self, text: __import__("tunelab.envs.base", fromlist=["Step"]).Step(
        done=True, answer=text.strip()))
    recipe = _recipe(tmp_path, tiny_dir, reward="score", num_iterations=2)
    over = ["train.max_steps=4", "train.save_every=1", "train.keep_checkpoints=0"]
    ref = run(recipe, over, out=str(tmp_path / "a"), quiet=True)
    metrics = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [m["seconds_generation"] > 0 for m in metrics] == [True, False, True, False]
    assert metrics[0]["reward"] == metrics[1]["reward"] and metrics[2]["reward"] == metrics[3]["reward"]
    assert json.loads((ref / "data" / "mixture.json").read_text())["online"]["steps_per_sampling"] == 2
    b = run(recipe, over, out=str(tmp_path / "b"), quiet=True)
    for step in (4, 2):  # as if killed after step 3: the next step reuses the batch sampled at step 3 (0-based 2)
        shutil.rmtree(b / "checkpoints" / f"step-{step}", ignore_errors=True)
    for name in ("final", "results.json"):
        target = b / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run(recipe, over, out=str(tmp_path / "b"), resume=True, quiet=True)
    assert json.loads((b / "results.json").read_text())["run"]["train"]["resumed_from"] == 3
    wa, wb = (load_file(d / "final" / "adapter_model.safetensors") for d in (ref, b))
    assert wa.keys() == wb.keys() and all((wa[k] - wb[k]).abs().max() <= 1e-6 for k in wa)
