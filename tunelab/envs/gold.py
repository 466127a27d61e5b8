"""Gold demonstrations: the calculator agent's ReAct format, played from each task's reference solution.

The ``arith`` family's solutions are equations (``6 * 4 = 24. 31 - 24 = 7.``). :class:`GoldAgent` turns
them into the environment's format, one ``calculate[6 * 4]`` per equation and then ``finish[<the last
observation>]``, and runs through :func:`tunelab.envs.sample.sample` like any agent: the environment
executes every action and its verifier labels the outcome, so a demonstration is only as gold as the
calculator says. A short LoRA run on them teaches a model the action format
(``recipes/calculator_format.yaml``); sampling that model at a temperature then gives the natural
failures learning-from-failure needs (Wang et al. 2024, arXiv 2402.11651), not scripted ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tunelab.envs.base import get_env
from tunelab.envs.sample import sample
from tunelab.generate.base import GenerationConfig, Prompt

_EQUATION = re.compile(r"([^=.\n]+?)\s*=\s*-?[\d.,]+")


def equations(solution: str) -> list[str]:
    """The left-hand sides of a reference solution's equations, in order (``6 * 4`` of ``6 * 4 = 24.``)."""
    body = solution.split("####")[0]
    return [m.group(1).strip() for m in _EQUATION.finditer(body)]


class GoldAgent:
    """A generator that plays each question's reference equations, then finishes with the last result.

    Args:
        solutions: ``{question: reference solution}`` of the tasks it will be asked.
    """

    fingerprint = "scripted:gold"

    def __init__(self, solutions: dict[str, str]) -> None:
        self.steps = {q: equations(s) for q, s in solutions.items()}

    def _question(self, messages: list[dict[str, Any]]) -> str:
        text = messages[0]["content"]
        return text.rsplit("Question: ", 1)[-1].strip()

    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        """``cfg.n`` copies of the next turn of each conversation."""
        out = []
        for messages in prompts:
            assert isinstance(messages, list)
            steps = self.steps.get(self._question(messages), [])
            done = sum(m["role"] == "assistant" for m in messages)
            if done < len(steps):
                lead = "First" if done == 0 else "Next"
                text = f"Thought: {lead}, {steps[done]}.\nAction: calculate[{steps[done]}]"
            else:
                last = messages[-1]["content"].split(":", 1)[1].strip() if done else ""
                text = f"Thought: The answer is {last}.\nAction: finish[{last}]"
            out.append([text] * cfg.n)
        return out


def gold_traces(out: str | Path, *, env_options: dict[str, Any] | None = None, limit: int = 400,
                seed: int = 0) -> dict[str, Any]:
    """Write one gold trajectory per calculator task (``limit`` tasks of ``seed``) to ``out``; returns the
    sampling summary (its success rate is the share the calculator confirms: 1.0 on ``arith``)."""
    env = get_env("calculator", **(env_options or {}))
    tasks = env.tasks(limit, seed)
    agent = GoldAgent({t.question: str(t.meta.get("solution", "")) for t in tasks})
    longest = max((len(v) for v in agent.steps.values()), default=0)
    return sample(env, "calculator", agent, out, attempts=1, limit=limit, seed=seed, temperature=0.0,
                  max_steps=longest + 1, progress=False)
