"""PromptIntern's engine (Zou et al., EMNLP 2024 Findings, arXiv 2407.02211): what acts on a prompt's parts.

The parts themselves (template, few-shot examples, query) and the ``prompt_structure`` row format are
:mod:`tunelab.data.prompt_parts`; the staged training schedule is
:mod:`tunelab.data.transforms.promptintern`. Here:

* :class:`Compressor`: template compression by dropping units (sentences or words) ranked by a named,
  reproducible score: ``surprisal`` (mean token surprisal -log p under a causal LM, the Selective
  Context score of Li et al. 2023, arXiv 2310.06201, computed by :mod:`tunelab.models.surprisal`:
  predictable text goes first), ``position`` (earlier units first) or ``random`` (seeded). A fraction
  ``keep`` keeps the best-ranked units whose words fit in ``keep`` x the template's words, in their
  original order;
* :func:`rank_examples`: examples ordered by similarity to the query (cosine of word counts) or a
  seeded random order; taking a prefix of the order gives the ``k`` examples, so fewer examples are
  always a subset of more;
* :data:`PROMPT_SETS`: built-in templates with their example pools (``gsm8k_cot``: Wei et al.'s
  8-shot chain-of-thought exemplars; ``mbpp_long``: a long rule template with MBPP tasks 2-4, the
  paper's few-shot prompt; ``arith_rules``: a long rule template for the built-in ``arith`` family).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tunelab.data.prompt_parts import Example
from tunelab.data.sources import read_rows, resolve_data_path
from tunelab.data.tasks.arith import Arith
from tunelab.io import DataError
from tunelab.models.surprisal import Scorer, model_scorer

UNITS = ("sentence", "word")
SCORES = ("surprisal", "position", "random")
SELECTIONS = ("similarity", "random")


# ----------------------------------------------------------------------------- template compression

_SENTENCE = re.compile(r".+?(?:[.!?](?=\s)|\n|$)\s*", re.S)
_WORD = re.compile(r"\S+\s*")


def split_units(text: str, unit: str) -> list[str]:
    """``text`` (stripped) cut into sentences (also at line ends) or words, each with its trailing
    whitespace, so the units joined give the stripped text back."""
    if unit not in UNITS:
        raise ValueError(f"compression unit must be one of {', '.join(UNITS)}, got {unit!r}")
    pattern = _WORD if unit == "word" else _SENTENCE
    return [m.group(0) for m in pattern.finditer(text.strip()) if m.group(0)]


_RANKINGS: dict[tuple, list[int]] = {}  # (unit, score, model, seed, template) -> unit order; per process


@dataclass
class Compressor:
    """Template compression by unit dropping (see the module docstring); rankings are memoised per process."""

    unit: str = "sentence"
    """``sentence`` | ``word``."""
    score: str = "surprisal"
    """``surprisal`` (drop the most predictable units first) | ``position`` | ``random``."""
    model: str | None = None
    """The model whose surprisal ranks the units (``score: surprisal``; needed unless a scorer is passed)."""
    seed: int = 0
    """Seed of ``score: random``."""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")

    def _key(self, template: str) -> tuple:
        model = self.model if self.score == "surprisal" else None
        return (self.unit, self.score, model, self.seed if self.score == "random" else None, template.strip())

    def scores(self, template: str, scorer: Scorer | None = None) -> list[float]:
        """One score per unit of ``template`` (higher: kept longer)."""
        units = split_units(template, self.unit)
        if self.score == "position":
            return [-float(i) for i in range(len(units))]
        if self.score == "random":
            rng = random.Random(f"compress/{self.seed}/{hashlib.sha1(template.strip().encode()).hexdigest()}")
            return [rng.random() for _ in units]
        if scorer is None and self.model is None:
            raise ValueError("surprisal compression needs the scoring model (score_model: the run's base model)")
        per_token = (scorer or model_scorer(self.model))("".join(units))
        out, pos, j = [], 0, 0
        for u in units:  # mean surprisal of the tokens starting inside the unit
            end, vals = pos + len(u), []
            while j < len(per_token) and per_token[j][0] < end:
                vals.append(per_token[j][1])
                j += 1
            out.append(sum(vals) / len(vals) if vals else 0.0)
            pos = end
        return out

    def ranking(self, template: str, scorer: Scorer | None = None) -> list[int]:
        """Unit indices, the best first (ties: the earlier unit first); memoised per process."""
        key = self._key(template)
        if key not in _RANKINGS:
            s = self.scores(template, scorer)
            _RANKINGS[key] = sorted(range(len(s)), key=lambda i: (-s[i], i))
        return _RANKINGS[key]

    def compress(self, template: str, keep: float, scorer: Scorer | None = None) -> str:
        """``template`` with the best units whose words fit in ``keep`` x its words, in their order."""
        if keep >= 1:
            return template.strip()
        units = split_units(template, self.unit)
        if keep <= 0 or not units:
            return ""
        budget = keep * sum(len(u.split()) for u in units) + 1e-9
        kept, used = set(), 0
        for i in self.ranking(template, scorer):
            n = len(units[i].split())
            if used + n <= budget:
                kept.add(i)
                used += n
        return "".join(units[i] for i in sorted(kept)).strip()


# ----------------------------------------------------------------------------- example selection

_WORDS = re.compile(r"\w+")


def _bags(texts: Sequence[str], vocab: dict[str, int]) -> sparse.csr_matrix:
    """L2-normalised word-count rows of ``texts`` (lowercased words; new words join ``vocab``)."""
    indptr, cols, vals = [0], [], []
    for text in texts:
        counts = Counter(_WORDS.findall(text.lower()))
        norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
        for w, v in counts.items():
            cols.append(vocab.setdefault(w, len(vocab)))
            vals.append(v / norm)
        indptr.append(len(cols))
    return sparse.csr_matrix((vals, cols, indptr), shape=(len(texts), max(len(vocab), 1)))


def rank_examples(queries: Sequence[str], pool: Sequence[Example], how: str = "similarity", k: int | None = None,
                  *, seed: int = 0, keys: Sequence[str] | None = None, exclude_same: bool = False) -> list[list[int]]:
    """For each query, the indices of the ``k`` examples of ``pool`` it gets, in the order they are taken.

    Args:
        queries: The items' queries.
        pool: The candidate examples.
        how: ``similarity`` (cosine of lowercased word counts, most similar first; ties: pool order) or
            ``random`` (a seeded order, a function of ``seed`` and the item's key).
        k: Examples per query (None: the whole pool).
        seed: Seed of the random order.
        keys: Stable item ids (the random order of each item; default: the query text).
        exclude_same: Never give a query an example with the same query (the pool is its own source).
    """
    if how not in SELECTIONS:
        raise ValueError(f"example selection must be one of {', '.join(SELECTIONS)}, got {how!r}")
    k = len(pool) if k is None else min(k, len(pool))
    if not queries or not pool or k == 0:
        return [[] for _ in queries]
    keys = list(keys) if keys is not None else list(queries)
    if how == "random":
        out = []
        for q, key in zip(queries, keys):
            idx = [i for i, e in enumerate(pool) if not (exclude_same and e.query == q)]
            out.append(random.Random(f"examples/{seed}/{key}").sample(idx, min(k, len(idx))))
        return out
    vocab: dict[str, int] = {}
    p = _bags([e.query for e in pool], vocab)
    q = _bags(queries, vocab)
    width = max(len(vocab), 1)  # the pool's matrix was built before the queries' words joined
    p = sparse.csr_matrix((p.data, p.indices, p.indptr), shape=(p.shape[0], width))
    q = sparse.csr_matrix((q.data, q.indices, q.indptr), shape=(q.shape[0], width))
    sims = (q @ p.T).toarray()  # (queries, pool)
    if exclude_same:
        where: dict[str, list[int]] = {}
        for i, e in enumerate(pool):
            where.setdefault(e.query, []).append(i)
        for r, text in enumerate(queries):
            sims[r, where.get(text, [])] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")
    return [[int(i) for i in row if np.isfinite(sims[r, i])][:k] for r, row in enumerate(order)]


# ----------------------------------------------------------------------------- built-in prompt sets


@dataclass
class PromptSet:
    """A built-in template with its pool of examples."""

    template: str
    """The instruction template."""
    examples: Callable[[], list[Example]]
    """The pool of examples (read when needed: some come from data files)."""
    shots: int
    """Examples in a full prompt by default."""
    description: str = ""
    """One line for listings."""


GSM8K_TEMPLATE = """You are a careful math tutor who solves grade-school word problems.
Read the whole problem before you start, and write down the quantities it gives you.
Then reason one step at a time, with one short sentence per step.
Show every calculation as an equation, for example 3 * 4 = 12, and reuse the results of earlier steps instead of computing them again.
Keep track of the units in the story, such as dollars, hours, days or items.
Do not skip steps, do not round intermediate results and never guess.
Before you answer, check that your result is the quantity the question asks for.
End with a sentence of the form "The answer is N." and then a final line "#### N", where N is the number alone, without units or thousands separators.
Worked examples follow."""

_WEI_COT = [  # Wei et al. 2022 (arXiv 2201.11903), the 8 GSM8K chain-of-thought exemplars; "#### N" added
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
     "been 21 - 15 = 6. The answer is 6.", 6),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.", 5),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
     "they had 74 - 35 = 39. The answer is 39.", 39),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "The answer is 8.", 8),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
     "The answer is 9.", 9),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers "
     "were added. 9 + 20 is 29. The answer is 29.", 29),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
     "he had 35 - 2 = 33 golf balls. The answer is 33.", 33),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
     "left. 23 - 15 is 8. The answer is 8.", 8),
]

MBPP_TEMPLATE = """You are an expert Python programmer who writes small, correct, self-contained functions.
Each task is described in one sentence and followed by the tests your code must pass.
Follow these rules.
1. Read the tests first: they give the exact function name, the number and order of its arguments and the type of the value it must return.
2. Define the function with exactly that name and signature. Helper functions are allowed, but the tested function must exist at the top level of your code.
3. Return the result. Never print it, and never read input with input().
4. Use only the Python standard library, and put every import at the top of your code.
5. Handle the edge cases the description implies, such as empty lists, zero, negative numbers or repeated values.
6. Keep the code simple and readable: clear names, no classes unless the task needs them, no global state.
7. Do not copy the tests, example calls or explanations into your answer.
8. Answer with the Python code only.
Examples of tasks with correct solutions follow."""

ARITH_TEMPLATE = """You solve short arithmetic word problems about people, objects and prices. Follow these rules exactly.
Rule 1: Find every number in the problem and what it counts: items, groups of items, or dollars.
Rule 2: Decide which operations the story describes. Buying or finding more adds. Giving away, selling or spending subtracts. Each, per or full groups of a size multiply.
Rule 3: When a problem has groups with a number of items in each, multiply first, then add or subtract the loose items.
Rule 4: More than means adding to the other person's amount, and together means adding both amounts.
Rule 5: Write each step as an equation of the form a op b = c. with the result computed exactly, using * for times, + for plus and - for minus.
Rule 6: Put all the equations on one line, separated by single spaces, in the order you compute them.
Rule 7: Use the result of one step in the next step, and never round.
Rule 8: Do not write any words, units or explanations.
Rule 9: After the equations write a new line of the form #### N, where N is the final answer as a plain integer.
Rule 10: Check that N counts the thing the question asks about before you write it."""


def _wei_examples() -> list[Example]:
    return [Example(q, f"{a}\n#### {n}") for q, a, n in _WEI_COT]


def mbpp_query(text: str, tests: Sequence[str]) -> str:
    """An MBPP query as the ``mbpp`` row format writes it: the task, then its tests."""
    return f"{text}\nYour code should pass these tests:\n" + "\n".join(map(str, tests))


def _mbpp_examples() -> list[Example]:
    rows = {r.get("task_id"): r for _, r in read_rows(resolve_data_path("mbpp/mbpp.jsonl", None))
            if isinstance(r, dict)}
    missing = [i for i in (2, 3, 4) if i not in rows]
    if missing:
        raise DataError(f"mbpp/mbpp.jsonl: few-shot task ids {missing} not found")
    return [Example(mbpp_query(rows[i]["text"], rows[i]["test_list"]), rows[i]["code"].replace("\r\n", "\n"))
            for i in (2, 3, 4)]


def _arith_examples() -> list[Example]:
    # the family's own generator (a fixed seed of its train split)
    return [Example(s.messages[0]["content"], s.response()) for s in Arith().samples("train", 8, seed=20_240_707)]


PROMPT_SETS: dict[str, PromptSet] = {
    "gsm8k_cot": PromptSet(GSM8K_TEMPLATE, _wei_examples, 8,
                           "GSM8K: a step-by-step instruction + the 8-shot chain-of-thought exemplars (Wei et al. 2022)"),
    "mbpp_long": PromptSet(MBPP_TEMPLATE, _mbpp_examples, 3,
                           "MBPP: a long rule template + tasks 2-4 as examples (the MBPP paper's few-shot prompt)"),
    "arith_rules": PromptSet(ARITH_TEMPLATE, _arith_examples, 4,
                             "the built-in arith family: ten answer-format rules + generated worked examples"),
}
"""Built-in templates with their example pools, by name (a recipe's ``prompt: <name>``)."""


def get_prompt_set(name: str) -> PromptSet:
    """A built-in prompt set by name (ValueError listing the valid names)."""
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; valid: {', '.join(PROMPT_SETS)}")
    return PROMPT_SETS[name]
