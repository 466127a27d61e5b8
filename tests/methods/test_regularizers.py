"""Very large dropout in the paper's own setting: a pooled sequence classifier."""

from __future__ import annotations

import pytest
import torch

from tunelab.methods import build_method
from tunelab.models.tiny import tiny_model
from tunelab.regularizers.dropout import PooledClassifier, classification_loss


def _inputs():
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])  # row 0 right-padded
    return ids, (ids != 0).long()


def test_pooled_classifier_dropout_off_in_eval_on_in_train():
    torch.manual_seed(0)
    clf = PooledClassifier(tiny_model(102, seed=0), num_labels=3, p=0.9)
    ids, mask = _inputs()
    clf.eval()
    with torch.no_grad():
        a, b = clf(ids, mask), clf(ids, mask)
        clf.dropout.p = 0.0
        no_dropout = clf(ids, mask)
        clf.dropout.p = 0.9
        clf.train()
        c, d = clf(ids, mask), clf(ids, mask)
    assert a.shape == (2, 3)
    assert torch.equal(a, b) and torch.equal(a, no_dropout)
    assert not torch.allclose(c, d)
    loss = classification_loss(clf(ids, mask), torch.tensor([0, 2]))
    loss.backward()
    assert loss.ndim == 0 and clf.head.weight.grad is not None


def test_pooled_classifier_pools_the_last_real_token_either_padding_side():
    clf = PooledClassifier(tiny_model(102, seed=0), num_labels=2, p=0.5).eval()
    with torch.no_grad():
        alone = clf(torch.tensor([[5, 6, 7, 8]]))
        right = clf(torch.tensor([[5, 6, 7, 8, 0]]), torch.tensor([[1, 1, 1, 1, 0]]))
        left = clf(torch.tensor([[0, 5, 6, 7, 8]]), torch.tensor([[0, 1, 1, 1, 1]]))
    assert torch.allclose(alone, right, atol=1e-5) and torch.allclose(alone, left, atol=1e-5)


def test_pooled_classifier_on_a_prompt_tuned_model():
    model = build_method({"name": "prompt", "num_virtual_tokens": 3}).apply(tiny_model(102, seed=0))
    ids, mask = _inputs()
    assert PooledClassifier(model, num_labels=4).eval()(ids, mask).shape == (2, 4)
    with pytest.raises(ValueError):
        PooledClassifier(tiny_model(102), num_labels=2, p=1.0)
