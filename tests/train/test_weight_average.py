"""Weight averaging (``train.weight_average``): an EMA of the trainable weights, used for held-out
evaluations, ``select_best`` and the final model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_best import RECIPE, _job  # noqa: E402 - tests/train is on sys.path (rootdir-relative import)

import tunelab.train.loop as loop
from tunelab.config import ConfigError, TrainConfig, load_recipe
from tunelab.methods import build_method
from tunelab.train.loop import train
from tunelab.train.weight_average import WeightAverage


def test_the_average_is_the_exponential_moving_average_of_the_steps() -> None:
    method = build_method({"name": "full"})
    model = torch.nn.Linear(2, 1, bias=False)
    avg = WeightAverage(method, 0.5)
    seen = []
    for value in (1.0, 3.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        seen.append(value)
        avg.update(model)
    # avg = w1, then 0.5 * avg + 0.5 * w: 1 -> 2 -> 3.5
    assert avg.avg["weight"].flatten().tolist() == [3.5, 3.5] and avg.updates == 3
    with avg.applied(model):
        assert model.weight.flatten().tolist() == [3.5, 3.5]
    assert model.weight.flatten().tolist() == [5.0, 5.0]  # its own weights back after the block
    avg.apply(model)
    assert model.weight.flatten().tolist() == [3.5, 3.5]
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(method, 1.0)
    assert WeightAverage.of(0.0, method) is None


def test_training_returns_the_averaged_weights_and_evaluates_them(tmp_path) -> None:
    plain = _job(tmp_path / "plain", select_best=False, patience=0)
    plain = dataclasses.replace(plain, cfg=dataclasses.replace(plain.cfg, max_steps=8))
    last, _ = train(plain)
    job = _job(tmp_path / "avg", select_best=False, patience=0)
    job = dataclasses.replace(job, cfg=dataclasses.replace(job.cfg, max_steps=8, weight_average=0.5))
    seen: list[dict[str, torch.Tensor]] = []
    real = WeightAverage.update

    def spy(self, model):
        seen.append({n: t.clone() for n, t in self.method.trainable_state(model).items()})
        real(self, model)

    WeightAverage.update = spy
    try:
        model, summary = train(job)
    finally:
        WeightAverage.update = real
    assert summary["weight_average"] == 0.5 and summary["weight_average_steps"] == 8 == len(seen)
    # the same training without averaging ends on the last step's weights: the averaged model differs
    name = next(iter(seen[0]))
    expected = seen[0][name].float()
    for state in seen[1:]:
        expected = 0.5 * expected + 0.5 * state[name].float()
    got = dict(model.named_parameters())[name].detach()
    assert torch.allclose(got, expected.to(got.dtype), atol=1e-6)
    assert not torch.allclose(got, seen[-1][name])
    assert torch.allclose(dict(last.named_parameters())[name].detach(), seen[-1][name], atol=1e-6)
    # the summary's held-out loss is the averaged model's
    assert summary["heldout_loss"] == pytest.approx(loop._heldout(job, model)["heldout_loss"], rel=1e-5)


def test_weight_average_is_checked_by_the_recipe() -> None:
    assert load_recipe(RECIPE, ["train.weight_average=0.99"]).train.weight_average == 0.99
    with pytest.raises(ConfigError, match="weight_average"):
        load_recipe(RECIPE, ["train.weight_average=1.0"])
    assert TrainConfig().weight_average == 0.0
