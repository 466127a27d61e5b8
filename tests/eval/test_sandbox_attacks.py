"""Model-written code that attacks the evaluation itself cannot change a score.

Each attack rides on a wrong solution (its tests fail); the sample must still count as failed.
A right solution still passes, with or without noise around it.
"""

from __future__ import annotations

import pytest

from tunelab.eval.tasks.base import EvalItem
from tunelab.eval.tasks.code_exec import HumanEval
from tunelab.sandbox import run_python

pytestmark = pytest.mark.xdist_group("sandbox")

WRONG = "def add(a, b):\n    return a - b\n"
RIGHT = "def add(a, b):\n    return a + b\n"
TESTS = "\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"

ATTACKS = {
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\n",
    "exit() in a __main__ block": "if __name__ == '__main__':\n    exit()\n",
    "monkey-patched exits": "import builtins, sys, os\nsys.exit = lambda *a: None\nbuiltins.exit = builtins.quit = "
                            "lambda *a: None\nos._exit = lambda *a: None\n",
    "atexit forcing status 0": "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook swallowing the failure": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "a fake 'passed' line": "print('passed')\nprint('{\"passed\": true, \"result\": \"passed\"}')\n",
    "writing a result file": "import os\nfor p in ('result.json', '../result', '/tmp/result', 'passed'):\n"
                             "    try:\n        open(p, 'w').write('passed')\n    except OSError:\n        pass\n",
    "writing to inherited descriptors": "import os\nfor fd in range(3, 64):\n    try:\n"
                                        "        os.write(fd, b'LD passed')\n    except OSError:\n        pass\n",
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_an_attack_on_the_harness_does_not_pass_a_wrong_solution(attack: str) -> None:
    result = run_python(ATTACKS[attack] + WRONG + TESTS, allow_unsandboxed=True, timeout=20)
    assert result.status != "passed", (attack, result)
    assert run_python(WRONG + TESTS, allow_unsandboxed=True, timeout=20).status == "failed"


def test_right_solutions_still_pass_with_noise() -> None:
    noisy = "print('hello')\nif __name__ == '__main__':\n    print('main')\n" + RIGHT + TESTS + "print('x' * 20000)"
    for source in (RIGHT + TESTS, noisy):
        result = run_python(source, allow_unsandboxed=True, timeout=20)
        assert result.status == "passed", result
        assert "tunelab-done" not in result.stdout  # the completion check is invisible to callers
    assert run_python("print('a')\nprint('b')", allow_unsandboxed=True).stdout == "a\nb\n"


def test_an_exit_attack_cannot_raise_a_humaneval_score() -> None:
    task = HumanEval(allow_unsandboxed=True)
    problem = {"task_id": "T/0", "prompt": "def add(a, b):\n", "entry_point": "add",
               "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "canonical_solution": "    return a + b\n"}
    item = EvalItem("T/0", problem["prompt"], meta=problem)
    attacks = ["    import os; os._exit(0)\n", "    return a - b\nimport sys; sys.exit(0)\n",
               "    return a - b\nprint('passed')\n"]
    rows = task.score_batch([item] * 4, [[c] for c in attacks + ["    return a + b\n"]])
    assert [r["c"] for r in rows] == [0, 0, 0, 1]
