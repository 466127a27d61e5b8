"""A test-sized Negative-Aware Training regime: systematic failures in the calculator environment.

Two scripted agents solve the calculator's one-step ``pairs`` problems ("Ana has 3 apples and finds 5
more..."). The careful one adds both quantities (``calculate[3 + 5]``); the forgetful one drops the
first quantity (``calculate[5]``), so every one of its trajectories fails, and fails the same way.
Both run through :func:`tunelab.envs.sample.sample`: the environment executes the actions and its
verifier labels the outcomes. A model trained on both kinds told apart (NAT) can learn to avoid the
error when asked for success; one trained on the unlabelled mix (NUT) cannot tell what to avoid.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.envs.base import EnvTask, get_env
from tunelab.envs.sample import sample
from tunelab.generate.base import GenerationConfig, Prompt

if TYPE_CHECKING:  # torch and transformers only where a model is scored
    from tunelab.generate.loglik import LoglikScorer

POLICIES = ("careful", "forget_first")
THOUGHT = "Thought: I add the quantities."
_QUANTITIES = re.compile(r"has (\d+) \w+ and finds (\d+) more")


def first_action(question: str, policy: str) -> str:
    """The first turn of ``policy`` on a ``pairs`` question: ``calculate[a + b]`` or, forgetting ``a``,
    ``calculate[b]``."""
    m = _QUANTITIES.search(question)
    if m is None:
        raise ValueError(f"not a pairs question: {question!r}")
    expression = f"{m.group(1)} + {m.group(2)}" if policy == "careful" else m.group(2)
    return f"{THOUGHT}\nAction: calculate[{expression}]"


class ScriptedAgent:
    """A generator that plays ``policy`` (careful or forget_first) on ``pairs`` questions: its first
    action, then ``finish[<the observation>]``."""

    def __init__(self, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        self.fingerprint = f"scripted:{policy}"

    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        """``cfg.n`` copies of the policy's next turn for each conversation."""
        out = []
        for messages in prompts:
            assert isinstance(messages, list)
            if messages[-1]["content"].startswith("Observation:"):
                text = f"Thought: That is the total.\nAction: finish[{messages[-1]['content'].split(':', 1)[1].strip()}]"
            else:
                text = first_action(messages[0]["content"], self.policy)
            out.append([text] * cfg.n)
        return out


def error_rate(scorer: LoglikScorer, tasks: list[EnvTask], signal: str = "") -> float:
    """How likely a model makes the forgetful agent's error, averaged over ``tasks``.

    At the decisive point of its first action, after ``calculate[<first quantity>``, the model either
    closes the bracket (a one-operand expression: the forgetful form) or goes on with `` +``; this is
    the probability of closing, normalised over the two, with ``signal`` appended to the question (a
    NAT run's success or failure wording; "" for none).
    """
    pairs = []
    for t in tasks:
        prompt = [{"role": "user", "content": f"Question: {t.question}{' ' + signal if signal else ''}"}]
        prefix = f"{THOUGHT}\nAction: calculate[{t.meta['quantities'][0]}"
        pairs += [(prompt, prefix + "]"), (prompt, prefix + " +")]
    ll = scorer.loglik(pairs)
    return sum(1 / (1 + math.exp(ll[i + 1] - ll[i])) for i in range(0, len(ll), 2)) / len(tasks)


def systematic_set(out: str | Path, positives: int = 320, negatives: int = 320, seed: int = 0) -> dict[str, Any]:
    """Write ``positives`` careful and ``negatives`` forgetful trajectories (distinct problems) to ``out``.

    The prompt is the question alone (the environment's ``oneshot`` off), so tiny models train on it
    in seconds. Resumable like any sampling run. Returns the summary of :func:`sample`.
    """
    env = get_env("calculator", source="pairs", oneshot=False)
    kw: dict[str, Any] = {"attempts": 1, "temperature": 0.0, "max_steps": 3, "progress": False}
    sample(env, "calculator", ScriptedAgent("careful"), out, limit=positives, seed=seed, **kw)
    return sample(env, "calculator", ScriptedAgent("forget_first"), out, limit=negatives, seed=seed + 1, **kw)


def paired_set(out: str | Path, tasks: int = 320, seed: int = 0) -> dict[str, Any]:
    """A pool for every learning-from-failure objective at once: on each of ``tasks`` problems one careful
    (success) and one forgetful (failure) trajectory, attempts 0 and 1 of the same ``task_id``, so NAT,
    NUT and positives-only read it as they read any sampled pool and DPO/ORPO (``pairs``) and KTO
    (``kto_labels``) get a success and a failure of the same task. Returns {policy: summary}."""
    import json
    import tempfile

    out = Path(out)
    env = get_env("calculator", source="pairs", oneshot=False)
    kw: dict[str, Any] = {"attempts": 1, "temperature": 0.0, "max_steps": 3, "progress": False}
    summaries, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="tl-drill-") as tmp:
        for attempt, policy in enumerate(POLICIES):
            part = Path(tmp) / f"{policy}.jsonl"
            summaries[policy] = sample(env, "calculator", ScriptedAgent(policy), part, limit=tasks, seed=seed, **kw)
            for line in part.read_text().splitlines():
                row = json.loads(line)
                row.update(attempt=attempt, id=f"{row['task_id']}#{attempt}")
                row["origin"] = {**row.get("origin", {}), "attempt": attempt, "policy": policy}
                rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp_out.replace(out)
    return summaries


if __name__ == "__main__":  # python -m tunelab.envs.drill OUT [TASKS]: the paired pool of recipes/failures.yaml
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m tunelab.envs.drill OUT.jsonl [TASKS=320]")
    result = paired_set(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 320)
    print({p: {k: s[k] for k in ("trajectories", "success_rate") if k in s} for p, s in result.items()})
