"""Trajectory sampling: N attempts per task from any generator, run through an environment, verified.

Live attempts (at most ``max_live``) advance together: each round sends every unfinished
trajectory's next turn to the generator in one call (continuous batching for local models,
concurrency for servers), stops at ``"\\nObservation:"``, runs the action and appends the
observation. A trajectory is written to the output JSONL the moment it ends, keyed by
``(task id, attempt)``: a killed run, rerun, continues where it stopped, nothing sampled twice
or lost. Each row is a trainable ``messages`` sample
(observations are user turns, so they carry no loss) plus its ``outcome`` and ``origin``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tunelab.config import ConfigError
from tunelab.envs.base import OBSERVATION_STOP, Environment, EnvTask, Step, failure_kind
from tunelab.generate.base import GenerationConfig, Generator
from tunelab.io import JsonlAppender, read_jsonl, read_jsonl_resumable


@dataclass
class Attempt:
    """One episode in flight: its task, attempt index, chat so far, steps taken and errors."""

    task: EnvTask
    attempt: int
    messages: list[dict[str, Any]]
    steps: int = 0
    malformed: int = 0
    errors: list[str] = field(default_factory=list)


def _done_keys(out: Path) -> set[tuple[str, int]]:
    """(task id, attempt) of every trajectory already written (a line cut by a kill is dropped)."""
    return {(r["task_id"], r["attempt"]) for r in read_jsonl_resumable(out)}


def check_sample_args(*, attempts: int, limit: int | None, max_steps: int, max_new_tokens: int,
                      temperature: float, max_live: int) -> None:
    """Reject bad sampling settings before any work (no model loaded, no file written).

    Raises:
        ConfigError: Naming the setting (and its command-line flag) and the range it must be in.
    """
    for name, value in (("attempts", attempts), ("limit", limit), ("max_steps", max_steps),
                        ("max_new_tokens", max_new_tokens), ("max_live", max_live)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"sample: {name} (--{name.replace('_', '-')}) must be an integer >= 1, got {value!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature >= 0:
        raise ConfigError(f"sample: temperature (--temperature) must be >= 0, got {temperature!r}")


def sample(env: Environment, env_name: str, generator: Generator, out: str | Path, *, attempts: int = 4,
           limit: int | None = 20, temperature: float = 0.8, max_steps: int = 6, max_new_tokens: int = 128,
           seed: int = 0, max_live: int = 256, progress: bool = True) -> dict[str, Any]:
    """Sample ``attempts`` trajectories per task into ``out`` (appending; resumable); returns the summary.

    At most ``max_live`` attempts advance together; one that ends is written at once and the next
    waiting attempt takes its place, so a kill loses at most the attempts in flight.

    The summary: trajectories written (this call and in total), success rate overall and per
    attempt index, failure kinds (wrong answer, no answer, malformed action, step limit,
    environment error) with their rates, steps and seconds.
    """
    check_sample_args(attempts=attempts, limit=limit, max_steps=max_steps, max_new_tokens=max_new_tokens,
                      temperature=temperature, max_live=max_live)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(out)
    tasks = env.tasks(limit, seed)
    waiting = [Attempt(t, a, [{"role": "user", "content": env.prompt(t)}]) for t in tasks for a in range(attempts)
               if (t.id, a) not in done]
    waiting.reverse()  # popped from the end: task order
    fingerprint = getattr(generator, "fingerprint", type(generator).__name__)
    t0, written = time.perf_counter(), 0
    bar = tqdm(total=len(tasks) * attempts, initial=len(done), desc=f"sample {env_name}", disable=not progress)
    with JsonlAppender(out) as f:

        def write(a: Attempt, step: Step | None) -> None:
            nonlocal written
            f.write([_row(env, env_name, a, step, fingerprint, temperature, seed, max_steps)])
            written += 1
            bar.update(1)

        run_episodes(env, generator, waiting, write, temperature=temperature, max_steps=max_steps,
                     max_new_tokens=max_new_tokens, seed=seed, max_live=max_live)
    bar.close()
    return summarize(out, written, time.perf_counter() - t0)


def run_episodes(env: Environment, generator: Generator, waiting: list[Attempt],
                 on_done: Callable[[Attempt, Step | None], None], *, temperature: float, max_steps: int,
                 max_new_tokens: int, seed: int, max_live: int = 256) -> None:
    """Run the attempts of ``waiting`` (popped from its end) to their ends, ``max_live`` at a time;
    ``on_done(attempt, last step)`` is called the moment one ends (the step is None when the
    environment raised). Each round asks the generator for every live attempt's next turn at once."""
    rounds, live = 0, []
    while live or waiting:
        while waiting and len(live) < max_live:
            live.append(waiting.pop())
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, n=1,
                               seed=seed * 1_000_003 + rounds, stop=[OBSERVATION_STOP])
        texts = _generate(generator, [a.messages for a in live], cfg)
        rounds += 1
        still = []
        for a, text in zip(live, texts):
            a.steps += 1
            a.messages.append({"role": "assistant", "content": text.strip()})
            try:
                step = env.act(text)
            except Exception as e:  # noqa: BLE001 - an environment crash ends this attempt, recorded
                a.errors.append(f"{type(e).__name__}: {e}")
                step = None
            if step is not None and not step.done and a.steps < max_steps:
                a.messages.append({"role": "user", "content": f"Observation: {step.observation}"})
                still.append(a)
                continue
            on_done(a, step)
        live = still


def _generate(generator: Generator, prompts: list, cfg: GenerationConfig) -> list[str]:
    """One completion per prompt. Identical prompts (attempts of one task before they diverge) are
    asked once for ``n`` samples, so they are independent draws, not copies of one."""
    same: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        same.setdefault(json.dumps(p, sort_keys=True), []).append(i)
    by_count: dict[int, list[list[int]]] = {}
    for idx in same.values():
        by_count.setdefault(len(idx), []).append(idx)
    texts = [""] * len(prompts)
    for n, groups in by_count.items():
        outs = generator.generate([prompts[g[0]] for g in groups], replace(cfg, n=n))
        for g, comps in zip(groups, outs):
            for i, text in zip(g, comps):
                texts[i] = text
    return texts


def _row(env: Environment, env_name: str, a: Attempt, step: Any, fingerprint: str, temperature: float,
         seed: int, max_steps: int) -> dict[str, Any]:
    """The JSONL row of a finished attempt."""
    answer = step.answer if step is not None else None
    verdict = env.verify(a.task, answer)
    failure = failure_kind(step, verdict, a.errors)
    return {"id": f"{a.task.id}#{a.attempt}", "task_id": a.task.id, "attempt": a.attempt, "messages": a.messages,
            "outcome": {**verdict, "failure": failure, "steps": a.steps, "errors": a.errors},
            "origin": {"env": env_name, "sampler": fingerprint, "temperature": temperature, "seed": seed,
                       "max_steps": max_steps, "attempt": a.attempt}}


def summarize(out: str | Path, written: int = 0, seconds: float = 0.0) -> dict[str, Any]:
    """Success rates and failure kinds over every trajectory in ``out``."""
    rows = read_jsonl(out) if Path(out).is_file() else []
    by_attempt: dict[int, list[bool]] = {}
    failures: dict[str, int] = {}
    for r in rows:
        by_attempt.setdefault(r["attempt"], []).append(bool(r["outcome"]["success"]))
        kind = r["outcome"]["failure"]
        if kind:
            failures[kind] = failures.get(kind, 0) + 1
    tasks = {r["task_id"] for r in rows}
    solved = {r["task_id"] for r in rows if r["outcome"]["success"]}
    return {"trajectories": len(rows), "written_now": written, "tasks": len(tasks),
            "success_rate": sum(r["outcome"]["success"] for r in rows) / len(rows) if rows else float("nan"),
            "tasks_solved_at_least_once": len(solved),
            "success_by_attempt": {k: sum(v) / len(v) for k, v in sorted(by_attempt.items())},
            "positives": sum(r["outcome"]["success"] for r in rows),
            "negatives": sum(not r["outcome"]["success"] for r in rows), "failures": failures,
            "failure_rates": {k: v / len(rows) for k, v in sorted(failures.items())},
            "mean_steps": sum(r["outcome"]["steps"] for r in rows) / len(rows) if rows else float("nan"),
            "seconds": round(seconds, 1)}
