"""The calculator agent: arithmetic word problems (arith, GSM8K, one-step pairs) with a ``calculate`` tool.

``calculate[expr]`` is evaluated by :func:`tunelab.envs.safe_math.calculate` (never ``eval``);
``finish[answer]`` is checked with the GSM8K numeric normaliser against the gold answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from tunelab.config import bound
from tunelab.data.tasks.arith import NAMES, THINGS
from tunelab.data.tasks.base import get_family
from tunelab.envs.base import ENVS, Environment, EnvTask
from tunelab.envs.safe_math import CalcError, calculate, format_number
from tunelab.eval.tasks.gsm8k import GSM8K, gold_answer, normalize_number

EXAMPLE = """Question: A shop sells 12 apples a day for 5 days, then 7 more. How many apples did it sell?
Thought: First the apples over 5 days.
Action: calculate[12 * 5]
Observation: 60
Thought: Then 7 more.
Action: calculate[60 + 7]
Observation: 67
Thought: The answer is 67.
Action: finish[67]"""


def _pair(rng: random.Random, task_id: str) -> EnvTask:
    """``{name} has {a} {things} and finds {b} more...``: the answer is ``a + b``."""
    name, things, a, b = rng.choice(NAMES), rng.choice(THINGS), rng.randint(2, 9), rng.randint(2, 9)
    question = f"{name} has {a} {things} and finds {b} more. How many {things} does {name} have now?"
    return EnvTask(task_id, question, {"quantities": [a, b], "answer": str(a + b)})


@ENVS.register("calculator")
class Calculator(Environment):
    """Arithmetic word problems with a safe calculator tool; success = the exact numeric answer."""

    tools = ("calculate",)
    example = EXAMPLE
    instruction = ("Solve the problem step by step. Each step: a Thought, then an Action, either "
                   "calculate[expression] or finish[answer]. After each calculate you get an Observation.")

    @dataclass
    class Params:
        source: Literal["arith", "arith_ood", "gsm8k", "pairs"] = "arith"
        """Where the problems come from: the built-in family (in or out of distribution), GSM8K test,
        or ``pairs``: one-step sums of two one-digit quantities (the test-sized NAT drill)."""
        oneshot: bool = True
        """Show the instruction and worked example before the question (off: the question alone)."""
        format_credit: float = field(default=0.0, metadata=bound(ge=0, le=1))
        """The graded ``score`` of a final answer given in the format (``finish[...]``) but wrong: a format
        reward, as GRPO recipes add to correctness (DeepSeek-R1's). Success stays the exact answer; an
        online objective reads it with ``reward: score``. 0: the score is success alone."""

    def tasks(self, limit: int | None, seed: int) -> list[EnvTask]:
        """Problems with their gold answers."""
        if self.params.source == "gsm8k":
            rows = GSM8K().rows()
            order = list(range(len(rows)))
            random.Random(seed).shuffle(order)
            return [EnvTask(f"gsm8k/{i}", rows[i]["question"], {"answer": gold_answer(rows[i]["answer"])})
                    for i in order[:limit]]
        if self.params.source == "pairs":
            return [_pair(random.Random(f"pairs/{seed}/{k}"), f"pairs/{seed}/{k}") for k in range(limit or 100)]
        family, rng = get_family("arith"), random.Random(seed)
        out = []
        for k in range(limit or 100):
            question, answer, meta = family.make_item(rng, self.params.source == "arith_ood")
            out.append(EnvTask(f"{self.params.source}/{seed}/{k}", question,
                               {**meta, "solution": answer, "answer": gold_answer(answer)}))
        return out

    def tool(self, name: str, argument: str) -> str:
        """The calculator's result, or its error message."""
        try:
            return format_number(calculate(argument))
        except CalcError as e:
            return f"Error: {e}"

    def verify(self, task: EnvTask, answer: str | None) -> dict[str, Any]:
        """Exact numeric match after GSM8K normalisation; the score gives ``format_credit`` to a final
        answer that is wrong."""
        got = normalize_number(answer) if answer is not None else None
        gold = normalize_number(str(task.meta["answer"]))
        success = got is not None and got == gold
        score = 1.0 if success else self.params.format_credit if answer is not None else 0.0
        return {"success": success, "score": score, "answer": answer, "gold": gold}
