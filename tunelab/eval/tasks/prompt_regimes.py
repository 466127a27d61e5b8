"""A task evaluated in PromptIntern's three prompt regimes: ``<suite>_full``, ``<suite>_compressed``,
``<suite>_query``.

A suite is a base task and a built-in prompt set (:data:`tunelab.promptintern.prompt_sets.PROMPT_SETS`):

* ``gsm8k_cot``: GSM8K test (zero-shot chat items) with a step-by-step template and Wei et al.'s 8
  chain-of-thought exemplars;
* ``mbpp_long``: MBPP test (ids 11-510) with a long rule template and tasks 2-4 as examples; the query is
  the task and its tests, as the ``mbpp`` row format writes training prompts;
* ``arith_rules``: the built-in ``arith`` family's test split with a ten-rule answer-format template.

Regimes: ``full`` (template + ``shots`` examples + query), ``compressed`` (the template compressed to
``keep`` by the same :class:`~tunelab.promptintern.compress.Compressor` as training, and
``compressed_shots`` examples, default ``round(keep * shots)``: prompt compression at inference) and
``query`` (the bare query). Scoring is the base task's; rows add ``input_tokens`` (the prompt as the
generator encodes it, chat template included, under the run's tokenizer, bound by the runner, or
``tokenizer``) and aggregates add ``input_tokens`` with a bootstrap CI. Every regime task of a recipe
uses the same options whatever the training arm, so the arms of a sweep see the same prompts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tunelab.config import ConfigError
from tunelab.data.prompt_parts import query_turn, render, with_user_text
from tunelab.eval.stats import bootstrap_ci
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask, get_task
from tunelab.generate.base import encode_prompt
from tunelab.models.surprisal import Scorer, model_scorer
from tunelab.promptintern.compress import Compressor
from tunelab.promptintern.examples import rank_examples
from tunelab.promptintern.prompt_sets import get_prompt_set, mbpp_query

REGIMES = ("full", "compressed", "query")
_MBPP_TASK = re.compile(r"Your task: (.*?)\nYour code should pass this test:", re.S)


def _last_user(item: EvalItem) -> str:
    if isinstance(item.prompt, str):
        return item.prompt
    return str(item.prompt[query_turn(item.prompt)]["content"])


def _gsm8k_query(item: EvalItem) -> str:
    return str(item.meta["question"])


def _mbpp(item: EvalItem) -> str:
    m = _MBPP_TASK.search(_last_user(item))
    if m is None:
        raise ValueError(f"mbpp item {item.id}: cannot find the task text in its prompt")
    return mbpp_query(m.group(1), item.meta["tests"])


@dataclass(frozen=True)
class Suite:
    """A base task with a built-in prompt set."""

    prompt: str
    """The prompt set (template + examples)."""
    task: str
    """The base evaluation task (its items and scoring)."""
    query: Callable[[EvalItem], str]
    """An item's bare query."""


SUITES: dict[str, Suite] = {
    "gsm8k_cot": Suite("gsm8k_cot", "gsm8k", _gsm8k_query),
    "mbpp_long": Suite("mbpp_long", "mbpp", _mbpp),
    "arith_rules": Suite("arith_rules", "arith", _last_user),
}


class PromptRegimeTask(EvalTask):
    """A base task's items with a prompt-set prompt in one regime (see the module docstring).

    Options:
        shots: Examples in the full prompt (default: the prompt set's).
        select: ``similarity`` (to the query) or ``random`` (seeded per item).
        keep: Template fraction of the ``compressed`` regime.
        compressed_shots: Examples of the ``compressed`` regime (default ``round(keep * shots)``).
        unit / score / score_model / seed: The template compression (as the ``promptintern`` transform;
            ``score_model`` None: the run's base model, bound by the runner; named by hand elsewhere).
        tokenizer: A model whose tokenizer counts input tokens when the runner binds none.
        Other options go to the base task (``allow_unsandboxed`` for MBPP, ``path`` ...).
    """

    suite: ClassVar[str] = ""
    regime: ClassVar[str] = ""

    def __init__(self, shots: int | None = None, select: str = "similarity", keep: float = 0.3,
                 compressed_shots: int | None = None, unit: str = "sentence", score: str = "surprisal",
                 score_model: str | None = None, seed: int = 0, tokenizer: str | None = None,
                 **task_options: Any) -> None:
        s = SUITES[self.suite]
        self.base = get_task(s.task, **task_options)
        self.primary, self.max_new_tokens, self.stop = self.base.primary, self.base.max_new_tokens, self.base.stop
        self.prompt_set = get_prompt_set(s.prompt)
        self.shots = self.prompt_set.shots if shots is None else int(shots)
        if not 0 <= keep <= 1:
            raise ValueError(f"{self.name}: keep must be in [0, 1], got {keep}")
        self.select, self.keep, self.seed = select, float(keep), int(seed)
        self.compressed_shots = round(self.keep * self.shots) if compressed_shots is None else int(compressed_shots)
        self.unit, self.score_kind, self.score_model = unit, score, score_model
        Compressor(unit, score)  # checks unit and score now
        self.tokenizer_name, self._tok = tokenizer, None

    def bind(self, tok: Any = None, model_name: str | None = None) -> None:
        """The run's tokenizer (counts input tokens) and model name (scores surprisal unless ``score_model``)."""
        if tok is not None:
            self._tok = tok
        if model_name is not None and self.score_model is None:
            self.score_model = model_name

    def level(self) -> tuple[float, int]:
        """(template kept fraction, examples) of this task's regime."""
        return {"full": (1.0, self.shots), "compressed": (self.keep, self.compressed_shots),
                "query": (0.0, 0)}[self.regime]

    def compressor(self) -> Compressor:
        """The template compressor (the same settings give the same text in training and evaluation)."""
        if self.score_kind == "surprisal" and not self.score_model:
            raise ConfigError(f"{self.name}: surprisal compression needs score_model (the run's base model: a run "
                              "binds its own, but not before its data is built, e.g. for decontaminate), or "
                              "score: position | random")
        return Compressor(self.unit, self.score_kind, self.score_model, self.seed)

    def scorer(self) -> Scorer | None:
        """The surprisal scorer of ``score_model``, its model loaded on first use (None: not scored by surprisal)."""
        if self.score_kind != "surprisal":
            return None
        name = self.score_model
        return lambda text: model_scorer(name)(text)

    def tokenizer(self) -> Any:
        """The tokenizer counting input tokens (None: not counted)."""
        if self._tok is None and self.tokenizer_name:
            from tunelab.config import ModelConfig  # loaded only when asked for by name
            from tunelab.models.load import load_tokenizer

            self._tok = load_tokenizer(ModelConfig(name=self.tokenizer_name))
        return self._tok

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        """The base task's items, each prompt rewritten for this regime (``meta``: ``question``, ``regime``,
        ``input_tokens`` when a tokenizer is at hand)."""
        base = self.base.items(limit, seed)
        queries = [SUITES[self.suite].query(it) for it in base]
        keep, shots = self.level()
        pool = self.prompt_set.examples() if shots else []
        chosen = rank_examples(queries, pool, self.select, shots, seed=self.seed, keys=[str(it.id) for it in base])
        template = (self.prompt_set.template if keep >= 1 else
                    self.compressor().compress(self.prompt_set.template, keep, self.scorer()) if keep > 0 else "")
        tok = self.tokenizer()
        out = []
        for it, q, idx in zip(base, queries, chosen):
            text = render(template, [pool[i] for i in idx], q)
            prompt = (with_user_text(it.prompt, text) if isinstance(it.prompt, list)
                      else [{"role": "user", "content": text}])
            meta = {**it.meta, "question": q, "regime": self.regime}
            if tok is not None:
                meta["input_tokens"] = len(encode_prompt(tok, prompt))
            out.append(EvalItem(it.id, prompt, meta))
        return out

    def generation_config(self, max_new_tokens: int | None = None, **kw: Any):
        """The base task's generation settings."""
        return self.base.generation_config(max_new_tokens, **kw)

    def _with_tokens(self, item: EvalItem, row: dict[str, Any]) -> dict[str, Any]:
        if "input_tokens" in item.meta:
            row["input_tokens"] = item.meta["input_tokens"]
        return {**row, "regime": self.regime}

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        """The base task's score of the item, with its input tokens."""
        return self._with_tokens(item, self.base.score(item, completions))

    def score_batch(self, items: list[EvalItem], completions: list[list[str]]) -> list[dict[str, Any]]:
        """Scores in bulk where the base task does so (sandboxed code), else item by item."""
        batch = getattr(self.base, "score_batch", None)
        rows = batch(items, completions) if batch else [self.base.score(i, c) for i, c in zip(items, completions)]
        return [self._with_tokens(i, r) for i, r in zip(items, rows)]

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        """The base task's scores plus ``input_tokens`` (mean per item, bootstrap CI) when counted."""
        out = self.base.aggregate(rows)
        if rows and all("input_tokens" in r for r in rows):
            out["input_tokens"] = bootstrap_ci([float(r["input_tokens"]) for r in rows])
        return out


_SHOWN = {"full": "template + examples + query", "compressed": "compressed template + fewer examples",
          "query": "the bare query"}


def _register() -> None:
    """One task per suite and regime (``arith_rules_query`` ...)."""
    for suite in SUITES:
        for regime in REGIMES:
            name = f"{suite}_{regime}"
            doc = f"{SUITES[suite].task} with the {suite} prompt set, {regime} regime ({_SHOWN[regime]})."
            cls = type(f"PromptRegime_{name}", (PromptRegimeTask,),
                       {"suite": suite, "regime": regime, "__doc__": doc, "__module__": __name__})
            EVAL_TASKS.register(name)(cls)


_register()
