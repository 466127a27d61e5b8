"""Evolution operators: prompt templates that ask a model to rewrite one instruction.

In depth (WizardLM's five kinds: add a constraint, deepen the inquiry, concretize, ask for more
reasoning steps, complicate the input with code, a table or a formula) and in breadth (a new,
rarer instruction of the same domain). The templates are our own wording. Each carries a version:
a changed template gets a new version, and the item cache, keyed by it, never serves an answer of
the old wording. ``markers`` are the template's own scaffolding words: an evolution that repeats
them copied the prompt (eliminator rule 4).

The judge template asks whether two instructions are the same (rule 1); its reply is read with
:func:`parse_equal` ("Not Equal" is looked for before "Equal", which it contains).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tunelab.evolve.program import PROGRAM_OPERATORS
from tunelab.io import digest

_FRAME = """You make instructions for an AI assistant more demanding, one step at a time.
{task}
Rules: the new instruction must still make sense on its own and be answerable by a person; keep \
every table, code block or input of the original; add no more than 10 to 20 words; do not mention \
that it was rewritten. Reply with the new instruction and nothing else.

Original instruction:
{instruction}

New instruction:"""


@dataclass(frozen=True)
class Operator:
    """A rewriting template: its name, kind (``depth``/``breadth``), version and wording."""

    name: str
    kind: str
    version: int
    task: str
    """The operator's own sentence, put into the shared frame."""
    markers: tuple[str, ...] = ("original instruction", "new instruction")

    @property
    def prompt_version(self) -> str:
        """``name@version`` plus a hash of the template text (a silent edit changes it too)."""
        return f"{self.name}@{self.version}-{digest([_FRAME, self.task], 6)}"

    def prompt(self, instruction: str) -> list[dict[str, str]]:
        """The chat prompt asking the evolver to rewrite ``instruction``."""
        return [{"role": "user", "content": _FRAME.format(task=self.task, instruction=instruction.strip())}]


OPERATORS: dict[str, Operator] = {op.name: op for op in (
    Operator("add_constraints", "depth", 1,
             "Rewrite it so that it adds one more requirement or restriction the answer must meet."),
    Operator("deepen", "depth", 1,
             "Rewrite it so that it asks about the subject in more depth and breadth: more aspects, "
             "finer distinctions, consequences or trade-offs."),
    Operator("concretize", "depth", 1,
             "Rewrite it so that it replaces general ideas with specific, concrete ones (named cases, "
             "numbers, settings)."),
    Operator("more_reasoning", "depth", 1,
             "Rewrite it so that answering needs several explicit steps of reasoning instead of one."),
    Operator("complicate_input", "depth", 1,
             "Rewrite it so that it comes with a richer input to work on: a short table, a code snippet "
             "or a formula that the answer must use."),
    Operator("breadth", "breadth", 1,
             "Do not make it harder: write a brand-new instruction from the same domain that is rarer "
             "and less common than the original, of similar length and difficulty."),
)}
"""The model operators by name (``tunelab evolve --list-operators``)."""

WIZARDLM_MARKERS = ("#given prompt#", "#rewritten prompt#", "given prompt", "rewritten prompt",
                    "#created prompt#", "created prompt")
"""Words of WizardLM's own rewriting prompts (rule 4 as in the paper)."""

JUDGE_VERSION = 1
_JUDGE = """Compare the two instructions below. They are equal when they ask for the same thing, \
with the same requirements and constraints, at the same depth and breadth. Reply with exactly \
"Equal" or "Not Equal".

First instruction:
{first}

Second instruction:
{second}

Reply:"""


def judge_prompt(parent: str, child: str) -> list[dict[str, str]]:
    """The chat prompt asking whether ``child`` has no information gain over ``parent`` (rule 1)."""
    return [{"role": "user", "content": _JUDGE.format(first=parent.strip(), second=child.strip())}]


def judge_version() -> str:
    """Version of the judge template (with a hash of its text)."""
    return f"judge@{JUDGE_VERSION}-{digest(_JUDGE, 6)}"


def parse_equal(reply: str) -> bool | None:
    """True for "Equal", False for "Not Equal" (checked first: it contains "Equal"), None when the
    reply says neither."""
    text = reply.lower()
    if re.search(r"\bnot\s+equal\b", text):
        return False
    if re.search(r"\bequal\b", text):
        return True
    return None


def clean_evolution(text: str) -> str:
    """The evolver's reply as an instruction: surrounding whitespace and matching quotes removed.

    Scaffolding words (a ``New instruction:`` label) are kept on purpose: rule 4 judges them."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def parse_operators(spec: list[str] | dict[str, float], available: dict[str, object]) -> dict[str, float]:
    """``{name: weight}`` from a list (uniform) or a mapping; empty -> every available operator.

    Raises:
        ValueError: An unknown name, a negative weight or weights that are all zero.
    """
    weights = {n: 1.0 for n in spec} if isinstance(spec, list) else {k: float(v) for k, v in spec.items()}
    weights = weights or {n: 1.0 for n in available}
    unknown = [n for n in weights if n not in available]
    if unknown:
        raise ValueError(f"unknown operator(s) {', '.join(unknown)}; valid: {', '.join(available)}")
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"operator weights must be >= 0 and not all zero, got {weights}")
    return weights


def pick_operator(weights: dict[str, float], seed: int, round_: int, root_id: str) -> str:
    """The operator for one item: a seeded draw by weight, independent of every other item's (so a
    resumed run picks what the uninterrupted one would)."""
    rng = random.Random(f"evolve/{seed}/{round_}/{root_id}")
    names = sorted(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def describe_operators() -> str:
    """Every operator with its kind and version (``tunelab evolve --list-operators``)."""
    lines = ["model operators (--evolver MODEL_OR_URL):"]
    lines += [f"  {op.name:20s} {op.kind:8s} {op.prompt_version}  {op.task}" for op in OPERATORS.values()]
    lines.append("programmatic operators over the instruct family (--evolver programmatic, seeds task:instruct):")
    lines += [f"  {name:20s} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}"
              for name, fn in PROGRAM_OPERATORS.items()]
    return "\n".join(lines)
