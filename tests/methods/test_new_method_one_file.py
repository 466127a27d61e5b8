"""A new method is one file: dropped into a copy of the package, it is listed by ``tunelab ls``,
validates in a recipe and passes the method contract, with nothing else edited."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tunelab

CONTRACT = Path(__file__).resolve().parent / "test_contract.py"

NEW_METHOD = '''"""LayerNorm tuning (Zhao et al. 2023, "Tuning LayerNorm in Attention: Towards Efficient
Multi-Modal LLM Finetuning", arXiv 2312.11420): only the normalisation gains train.

RMSNorm / LayerNorm computes g * norm(x) (+ b); only g (and b) train, every other weight stays
frozen. ``final/`` is a full HF checkpoint (like ``full``).
"""

from __future__ import annotations

from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.full import Full


@METHODS.register("norm_tuning")
class NormTuning(Full):
    """Train only the normalisation layers (LayerNorm tuning, Zhao et al. 2023)."""

    trains = ("norm",)

    def apply(self, model: nn.Module) -> nn.Module:
        """Unfreeze the norm weights; freeze the rest."""
        for name, p in model.named_parameters():
            p.requires_grad_(self.may_change(name, model))
        return model
'''

RECIPE = """
model: tiny
data:
  sources:
    - {name: arith, task: arith, count: 16}
  max_length: 64
method: {name: norm_tuning}
train: {max_steps: 2, batch_size: 4, precision: fp32}
eval: {tasks: [arith], limit: 4, max_new_tokens: 8}
"""

# Runs in the copy: ls, validate, then the contract tests that concern the new method.
CHECK = """
import contextlib, io, json, re, sys
import pytest
import tunelab
from tunelab.cli import main

root, recipe, contract = sys.argv[1:]
assert tunelab.__file__.startswith(root), tunelab.__file__
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["ls", "methods"]) == 0
assert re.search(r"^ +norm_tuning +Train only the normalisation layers", out.getvalue(), re.M), out.getvalue()
assert tunelab.validate(recipe) == []

class Outcomes:
    passed, failed = [], []
    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome == "failed":
            (self.passed if report.passed else self.failed).append(report.nodeid.split("::")[-1])

seen = Outcomes()
pytest.main([contract, "-q", "-p", "no:cacheprovider", "-n", "0",
             "-k", "norm_tuning or every_registered_method_has_a_contract"], plugins=[seen])
print(json.dumps({"passed": seen.passed, "failed": seen.failed}))
"""


def test_a_new_method_is_one_file(tmp_path):
    shutil.copytree(Path(tunelab.__file__).parent, tmp_path / "tunelab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tunelab" / "methods" / "norm_tuning.py").write_text(NEW_METHOD)  # the one new file
    recipe = tmp_path / "norm_tuning.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1", "TUNELAB_TEST_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path), str(recipe), str(CONTRACT)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["failed"], proc.stdout[-4000:]
    for test in ("test_every_registered_method_has_a_contract", "test_only_intended_parameters_change",
                 "test_save_load_gives_identical_logits", "test_packed_rows_give_the_losses_of_samples_alone",
                 "test_every_method_runs_through_the_loop"):
        assert any(t.startswith(test) for t in result["passed"]), (test, result)
