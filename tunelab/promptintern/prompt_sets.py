"""PromptIntern's built-in prompt sets: long templates with their pools of few-shot examples.

:data:`PROMPT_SETS` (a recipe's ``prompt: <name>``): ``gsm8k_cot`` (a step-by-step instruction with Wei
et al.'s 8-shot chain-of-thought exemplars), ``mbpp_long`` (a long rule template with MBPP tasks 2-4,
the MBPP paper's few-shot prompt) and ``arith_rules`` (a long rule template for the built-in ``arith``
family).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunelab.data.prompt_parts import Example
from tunelab.data.sources import read_rows, resolve_data_path
from tunelab.data.tasks.arith import Arith
from tunelab.io import DataError


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
