"""Environments with verifiers for agent trajectories (``tunelab ls envs``).

An environment gives tasks (a question with what its verifier needs), answers an agent's action
with an observation (or ends the episode), and verifies the final answer. Agents act in the ReAct
style: ``Thought: ...`` then ``Action: tool[argument]``; the episode ends with ``finish[answer]``,
after ``max_steps`` actions, or on an action the environment cannot parse (counted as malformed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tunelab.config import parse_params
from tunelab.data.agent_formats import ACTION
from tunelab.registry import Registry

OBSERVATION_STOP = "\nObservation:"
FAILURE_KINDS = ("wrong_answer", "no_answer", "malformed_action", "step_limit", "env_error")
"""How an episode can fail (``outcome.failure``; None on success), the same in sampling and evaluation."""


@dataclass
class EnvTask:
    """One task: its stable id, the question the agent sees, and what the verifier needs."""

    id: str
    question: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    """The environment's answer to one action: an observation, or the end of the episode."""

    observation: str | None = None
    done: bool = False
    answer: str | None = None
    """The agent's final answer (``finish[...]``)."""
    malformed: bool = False


class Environment:
    """Base: ``tasks``, ``act`` (one action), ``verify`` (the final answer); ``Params`` are its options."""

    tools: ClassVar[tuple[str, ...]] = ()
    """Tool names besides ``finish``."""
    example: ClassVar[str] = ""
    """A one-shot demonstration shown before the question."""
    instruction: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    """Per-item numbers of :meth:`verify` (besides success and score) that evaluation averages."""

    @dataclass
    class Params:
        """No options."""

    def __init__(self, params: Any) -> None:
        self.params = params

    def tasks(self, limit: int | None, seed: int) -> list[EnvTask]:
        """The tasks (at most ``limit``), in a fixed order for ``seed``."""
        raise NotImplementedError

    def tool(self, name: str, argument: str) -> str:
        """The observation of one tool call (a message, also for errors: the agent may recover)."""
        raise NotImplementedError

    def verify(self, task: EnvTask, answer: str | None) -> dict[str, Any]:
        """``{"success": bool, "score": float, ...}`` for the final answer (None: no answer given)."""
        raise NotImplementedError

    def act(self, completion: str) -> Step:
        """Parse the agent's turn (text up to the observation stop) and run its action."""
        m = ACTION.search(completion.strip())
        if m is None:
            return Step(done=True, malformed=True)
        name, argument = m.group(1).lower(), m.group(2).strip()
        if name == "finish":
            return Step(done=True, answer=argument)
        if name not in self.tools:
            return Step(observation=f"Unknown action {name!r}; use {', '.join(self.tools)} or finish.")
        return Step(observation=self.tool(name, argument))

    def prompt(self, task: EnvTask) -> str:
        """The first user turn: the instruction, the one-shot example, the question (the question alone
        when the environment's ``oneshot`` option is off)."""
        if not getattr(self.params, "oneshot", True):
            return f"Question: {task.question}"
        return f"{self.instruction}\n\n{self.example}\n\nQuestion: {task.question}"


def failure_kind(step: Step | None, verdict: dict[str, Any], errors: list[str]) -> str | None:
    """How an episode ended badly (one of :data:`FAILURE_KINDS`), or None when it succeeded.

    Args:
        step: The environment's answer to the last action (None: the environment crashed on it).
        verdict: :meth:`Environment.verify` of the final answer.
        errors: Environment errors raised during the episode.
    """
    if errors:
        return "env_error"
    if step is not None and step.malformed:
        return "malformed_action"
    if step is not None and not step.done:
        return "step_limit"
    if step is None or step.answer is None:
        return "no_answer"
    return None if verdict["success"] else "wrong_answer"


ENVS: Registry[type[Environment]] = Registry("environment", package="tunelab.envs", entry_points="tunelab.envs")


def get_env(name: str, **options: Any) -> Environment:
    """A new environment registered as ``name`` with ``options`` (checked against its Params)."""
    cls = ENVS.get(name)
    return cls(parse_params(cls.Params, {"name": name, **options}, f"env {name}"))
