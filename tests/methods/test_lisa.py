"""LISA: layers re-drawn every K steps (deterministically), optimizer state only for active and
always-on parameters (so its memory stays flat), exact resume across a switch."""

from __future__ import annotations

import shutil

import pytest
import torch

import tunelab.train.loop as loop
from tunelab.config import TrainConfig
from tunelab.data.tokenize import collate, encode, pack
from tunelab.methods import build_method
from tunelab.methods.layers import params_by_layer
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.train.loop import TrainJob, train
from tunelab.train.loss import token_losses
from tunelab.train.optim import build_optimizer
from tunelab.types import Sample

LAYERS = 4


def _rows(tok, n=40):
    samples = [Sample([{"role": "user", "content": f"{i} plus {i}?"}, {"role": "assistant", "content": str(2 * i)}],
                      {"source": "s", "id": str(i)}) for i in range(n)]
    return pack([encode(s, tok, 64) for s in samples], ["s"], 64, True)


def _lisa(**kw):
    tok = tiny_tokenizer()
    method = build_method({"name": "lisa", "gamma": 1, "interval": 3, **kw})
    return method, method.apply(tiny_model(len(tok), seed=0, layers=LAYERS)), tok


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_active_layers_change_only_every_k_steps_and_are_reproducible():
    method, model, _ = _lisa(seed=3)
    history, switched = [], []
    for step in range(30):
        switched.append(method.on_step(step, model))
        history.append(tuple(method.active))
        per_layer, always = params_by_layer(model)
        assert _trainable(model) == set(always) | set(per_layer[method.active[0]])
    for step in range(30):
        if step % 3:
            assert history[step] == history[step - 1] and not switched[step]
        elif step:
            assert switched[step] == (history[step] != history[step - 1])
    assert len(set(history)) > 1
    again, model2, _ = _lisa(seed=3)
    assert [tuple(again.draw(s // 3)) for s in range(30)] == history
    other, _, _ = _lisa(seed=4)
    assert [other.draw(p) for p in range(10)] != [again.draw(p) for p in range(10)]


def test_unset_seed_follows_the_runs_train_seed():
    # the runner seeds torch with train.seed just before building the method: a sweep's seeds draw apart
    def built(seed):
        tok = tiny_tokenizer()
        model = tiny_model(len(tok), seed=0, layers=LAYERS)
        torch.manual_seed(seed)
        method = build_method({"name": "lisa", "gamma": 1, "interval": 3})
        method.apply(model)
        return method

    follows, other = built(4), built(5)
    explicit, _, _ = _lisa(seed=4)
    assert [follows.draw(p) for p in range(10)] == [explicit.draw(p) for p in range(10)]
    assert [other.draw(p) for p in range(10)] != [follows.draw(p) for p in range(10)]


def test_embeddings_norm_and_head_always_train():
    method, model, _ = _lisa()
    names = _trainable(model)
    assert {"model.embed_tokens.weight", "model.norm.weight"} <= names  # the head is tied to the embedding
    assert sum(".layers." in n for n in names) == len(params_by_layer(model)[0][0])


def test_optimizer_state_holds_only_active_and_always_on_parameters():
    method, model, tok = _lisa(interval=2)
    cfg = TrainConfig(lr=1e-2)
    batch = collate(_rows(tok, 8), tok.pad_token_id, True)
    opt = build_optimizer(model, method, cfg)
    emb = model.get_input_embeddings().weight
    switches = 0
    for step in range(12):
        if method.on_step(step, model):
            switches += 1
            opt = build_optimizer(model, method, cfg, previous=opt)
        token_losses(model, batch)[0].mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        active = {p for p in model.parameters() if p.requires_grad}
        assert set(opt.state) == active
        assert int(opt.state[emb]["step"]) == step + 1  # always-on state survives every rebuild
    assert switches >= 2


def test_only_active_layers_and_always_on_change():
    method, model, tok = _lisa(interval=100)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, method, TrainConfig(lr=1e-2))
    batch = collate(_rows(tok, 8), tok.pad_token_id, True)
    for step in range(3):
        method.on_step(step, model)
        token_losses(model, batch)[0].mean().backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    per_layer, always = params_by_layer(model)
    assert changed <= set(always) | set(per_layer[method.active[0]])
    assert any(".layers." in n for n in changed)


def _job(run_dir, resume=False, max_steps=10):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    method = build_method({"name": "lisa", "gamma": 1, "interval": 3, "seed": 1})
    model = method.apply(tiny_model(len(tok), seed=0, layers=LAYERS))
    cfg = TrainConfig(max_steps=max_steps, batch_size=2, lr=5e-3, warmup_ratio=0.1, save_every=5, precision="fp32")
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrainJob(model, method, _rows(tok), ["s"], cfg, "fp32", run_dir, tok.pad_token_id, True, resume=resume)


def _assert_same_model(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), k


def test_resume_from_a_checkpoint_inside_a_period_is_exact(tmp_path):
    straight = _job(tmp_path / "a")
    train(straight)  # switches at steps 3, 6, 9; checkpoint at 5
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step-5", killed / "checkpoints" / "step-5")
    resumed = _job(killed, resume=True)
    assert train(resumed)[1]["resumed_from"] == 5
    _assert_same_model(straight, resumed)


def test_ctrl_c_right_after_a_switch_resumes_exactly(tmp_path, monkeypatch):
    straight = _job(tmp_path / "a")
    train(straight)
    orig = loop.lr_at

    def interrupt_at_6(step, cfg):  # after on_step(6) switched layers and the optimizer was rebuilt
        if step == 6:
            raise KeyboardInterrupt
        return orig(step, cfg)

    monkeypatch.setattr(loop, "lr_at", interrupt_at_6)
    with pytest.raises(KeyboardInterrupt):
        train(_job(tmp_path / "b"))
    monkeypatch.setattr(loop, "lr_at", orig)
    resumed = _job(tmp_path / "b", resume=True)
    assert train(resumed)[1]["resumed_from"] == 6
    _assert_same_model(straight, resumed)


def test_optimizer_memory_stays_flat_over_a_run(tmp_path, monkeypatch):
    """AdamW state bytes after every step of a real run: constant, and those of gamma layers only."""
    sizes = []
    orig = torch.optim.AdamW.step

    def record(self, *a, **kw):
        out = orig(self, *a, **kw)
        sizes.append(sum(t.numel() * t.element_size() for s in self.state.values() for t in s.values()
                         if torch.is_tensor(t) and t.ndim > 0))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    job = _job(tmp_path, max_steps=12)
    train(job)
    per_layer, always = params_by_layer(job.model)
    params = dict(job.model.named_parameters())
    expected = 2 * 4 * sum(params[n].numel() for n in list(always) + per_layer[0])  # exp_avg + exp_avg_sq, fp32
    assert len(sizes) == 12 and set(sizes) == {expected}
    assert len(job.method.ever_active) > 1  # layers did switch during the run
