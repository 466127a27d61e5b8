"""Agent evaluation: every environment is also an eval task, ``agent_<env>`` (``tunelab ls tasks``).

An item is one task of the environment; the model acts turn by turn through the harness's multi-turn
hook (``follow_up``): each answer runs as an action, its observation is the next user turn, until
``finish[...]``, a malformed action or ``max_steps``. The result reports ``success`` (the primary
metric), the mean verifier ``score``, the environment's own metrics (``em`` and ``f1`` for ``f1_qa``)
and, so that runs can be compared on how they fail, ``failure/<kind>`` for every kind
:data:`tunelab.envs.base.FAILURE_KINDS` names: its rate over the items with its CI, ``n`` and ``count``.

Options: ``max_steps`` and the environment's own (``--task-option agent_calculator.source=gsm8k``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tunelab.envs.base import (
    ENVS,
    FAILURE_KINDS,
    OBSERVATION_STOP,
    Environment,
    EnvTask,
    Step,
    failure_kind,
    get_env,
)
from tunelab.eval.stats import proportion_score
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask
from tunelab.generate.base import Prompt


def failure_scores(kinds: list[str | None]) -> dict[str, dict[str, Any]]:
    """``{"failure/<kind>": score}`` for every known kind (and any other seen): the rate over all
    items in the usual score shape (value, Wilson CI, n) plus ``count``."""
    out = {}
    for kind in [*FAILURE_KINDS, *sorted({k for k in kinds if k and k not in FAILURE_KINDS})]:
        flags = [k == kind for k in kinds]
        out[f"failure/{kind}"] = {**proportion_score(flags), "count": sum(flags)}
    return out


class AgentTask(EvalTask):
    """Episodes in an environment, scored by its verifier; success rate, score and failure-kind rates."""

    env_name: ClassVar[str] = ""
    primary = "success"
    max_new_tokens = 128
    stop = [OBSERVATION_STOP]

    def __init__(self, max_steps: int = 6, **options: Any) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"task {self.name!r}: max_steps must be an integer >= 1, got {max_steps!r}")
        self.env: Environment = get_env(self.env_name, **options)
        self.max_steps = max_steps

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        """One item per environment task; the prompt is the environment's first user turn."""
        return [EvalItem(t.id, [{"role": "user", "content": self.env.prompt(t)}],
                         {"question": t.question, "env": t.meta, **_answer(t)})
                for t in self.env.tasks(limit, seed)]

    def _replay(self, item: EvalItem, answers: list[str]) -> tuple[list[dict], Step | None, list[str], bool]:
        """Run the answers as actions: (conversation so far, last step, environment errors, episode over)."""
        messages: list[dict[str, Any]] = [dict(m) for m in item.prompt]
        step: Step | None = None
        for k, text in enumerate(answers):
            messages.append({"role": "assistant", "content": text.strip()})
            try:
                step = self.env.act(text)
            except Exception as e:  # noqa: BLE001 - an environment crash ends the episode, counted
                return messages, None, [f"{type(e).__name__}: {e}"], True
            if step.done or k + 1 >= self.max_steps:
                return messages, step, [], True
            messages.append({"role": "user", "content": f"Observation: {step.observation}"})
        return messages, step, [], False

    def follow_up(self, item: EvalItem, answers: list[str]) -> Prompt | None:
        """The conversation with the last action's observation, or None once the episode is over."""
        messages, _, _, over = self._replay(item, answers)
        return None if over else messages

    def score_batch(self, items: list[EvalItem], completions: list[list[str]],
                    answers: list[list[str]] | None = None) -> list[dict[str, Any]]:
        """Per item: success, score, the failure kind (None on success), steps, the final answer and the gold."""
        rows = []
        for it, turns in zip(items, answers or [c[:1] for c in completions]):
            _, step, errors, _ = self._replay(it, turns)
            task = EnvTask(it.id, it.meta["question"], it.meta["env"])
            verdict = self.env.verify(task, step.answer if step is not None else None)
            rows.append({"correct": int(verdict["success"]), "score": float(verdict["score"]),
                         "failure": failure_kind(step, verdict, errors), "steps": len(turns),
                         **{k: verdict[k] for k in ("answer", "gold", *self.env.metrics) if k in verdict}})
        return rows

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        """success, score, the environment's metrics, and ``failure/<kind>`` rates with counts."""
        scores = {"success": proportion_score([r["correct"] for r in rows]),
                  "score": proportion_score([r["score"] for r in rows])}
        for key in self.env.metrics:
            scores[key] = proportion_score([r.get(key, 0.0) for r in rows])
        return {**scores, **failure_scores([r["failure"] for r in rows])}


def _answer(task: EnvTask) -> dict[str, str]:
    """The gold answer as text (decontamination reads it), where the task has one."""
    answer = task.meta.get("answer")
    return {"answer": answer} if isinstance(answer, str) else {}


def register_agent_tasks() -> None:
    """Register ``agent_<env>`` for every environment (again: the same definitions replace themselves).

    Registering does not import the eval tasks package (only looking a task up does).
    """
    for name in ENVS.names():
        cls = type(f"Agent_{name}", (AgentTask,), {
            "env_name": name, "__module__": __name__,
            "__doc__": f"Agent episodes in the {name} environment: success, score, failure-kind rates."})
        EVAL_TASKS.register(f"agent_{name}")(cls)
