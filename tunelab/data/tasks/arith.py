"""``arith``: multi-step arithmetic word problems with a final numeric answer (GSM8K-like).

In distribution: two steps with small numbers. OOD (``ood`` split): three steps (one more
than trained). Option ``big: true`` uses two-digit factors and three-digit addends. The reference answer shows each step as an equation and ends ``#### N``; the
verifier extracts the ``#### N`` answer (else the last number) and compares numerically.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tunelab.data.tasks.base import TASK_FAMILIES, TaskFamily

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kira", "Liam",
         "Mia", "Noah", "Olga", "Pablo", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe"]
THINGS = ["apples", "stickers", "marbles", "books", "coins", "pencils", "cookies", "stamps", "shells",
          "cards", "eggs", "candles", "buttons", "balloons", "rocks", "plums"]
BOXES = ["bags", "boxes", "packs", "jars", "crates", "baskets"]

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _steps_2(rng: random.Random, big: bool) -> tuple[str, list[str], int]:
    """Two-step templates: returns (question, equations, answer).

    Small numbers in distribution (one-digit by up-to-10 products, addends up to 20), so a
    135M model can learn the skill in a couple of minutes; ``big`` operands are two-digit
    factors and three-digit addends.
    """
    n, t, box = rng.choice(NAMES), rng.choice(THINGS), rng.choice(BOXES)
    few = (lambda: rng.randint(11, 49)) if big else (lambda: rng.randint(2, 9))
    per = (lambda: rng.randint(11, 99)) if big else (lambda: rng.randint(2, 10))
    add = (lambda: rng.randint(30, 500)) if big else (lambda: rng.randint(2, 20))
    kind = rng.randrange(6)
    if kind == 0:
        a, b, c = add(), few(), per()
        return (f"{n} has {a} {t}. {n} buys {b} {box} with {c} {t} in each. How many {t} does {n} have now?",
                [f"{b} * {c} = {b * c}", f"{a} + {b * c} = {a + b * c}"], a + b * c)
    if kind == 1:
        b, c = few(), per()
        a = b * c + add()
        return (f"{n} has {a} {t} and gives away {b} {box} of {c} {t} each. How many {t} are left?",
                [f"{b} * {c} = {b * c}", f"{a} - {b * c} = {a - b * c}"], a - b * c)
    if kind == 2:
        a, b, c = add(), per(), few()
        return (f"One of the {box} costs {b} dollars. {n} buys {c} {box} and a book for {a} dollars. "
                f"How many dollars does {n} spend?",
                [f"{c} * {b} = {c * b}", f"{c * b} + {a} = {c * b + a}"], c * b + a)
    if kind == 3:
        a, c = per(), few()
        total = a * c
        e = rng.randint(1, total - 1)
        return (f"{n} fills {c} {box} with {a} {t} each and then sells {e} of them. How many {t} are left?",
                [f"{c} * {a} = {total}", f"{total} - {e} = {total - e}"], total - e)
    if kind == 4:
        a, b, c = per(), few(), add()
        return (f"A {box[:-1]} holds {a} {t}. {n} has {b} full {box} and {c} loose {t}. "
                f"How many {t} is that in total?",
                [f"{b} * {a} = {a * b}", f"{a * b} + {c} = {a * b + c}"], a * b + c)
    a, b = add(), add()
    m = rng.choice([x for x in NAMES if x != n])
    return (f"{n} has {a} {t}. {m} has {b} more than {n}. How many {t} do they have together?",
            [f"{a} + {b} = {a + b}", f"{a} + {a + b} = {2 * a + b}"], 2 * a + b)


def _steps_3(rng: random.Random, big: bool) -> tuple[str, list[str], int]:
    """OOD: a two-step problem extended by a third operation (one step more than trained)."""
    q, eqs, ans = _steps_2(rng, big)
    d = rng.randint(11, 99) if big else rng.randint(2, 9)
    n = re.match(r"(?:A \w+ holds \d+ \w+\. )?(\w+)", q).group(1)
    if rng.random() < 0.5:
        q = q.rsplit(".", 1)[0] + f". Then {n} finds {d} more. " + q.rsplit(".", 1)[1].strip()
        return q, eqs + [f"{ans} + {d} = {ans + d}"], ans + d
    q = q.rsplit(".", 1)[0] + f". Later, {n} ends up with {d} times as many as that. " + q.rsplit(".", 1)[1].strip()
    return q, eqs + [f"{ans} * {d} = {ans * d}"], ans * d


def parse_number(text: str) -> float | None:
    """'1,234' -> 1234.0; '$5' -> 5.0; '3/4' -> 0.75; None if no number."""
    text = text.replace("$", "").strip()
    frac = re.fullmatch(r"(-?\d+)\s*/\s*(\d+)", text)
    if frac and int(frac.group(2)) != 0:
        return int(frac.group(1)) / int(frac.group(2))
    m = NUMBER.search(text)
    if not m:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def extract_answer(completion: str) -> str | None:
    """The text after the last ``####``, else the last number in the completion."""
    if "####" in completion:
        tail = completion.rsplit("####", 1)[1].strip().splitlines()
        if tail and NUMBER.search(tail[0]):
            return NUMBER.search(tail[0]).group(0)
    nums = NUMBER.findall(completion)
    return nums[-1] if nums else None


@TASK_FAMILIES.register("arith")
class Arith(TaskFamily):
    """Arithmetic word problems (GSM8K-like): 2 steps in distribution, 3 steps OOD."""

    def make_item(self, rng: random.Random, ood: bool) -> tuple[str, str, dict[str, Any]]:
        big = bool(self.options.get("big", False))  # larger operands (a harder variant)
        q, eqs, ans = _steps_3(rng, big) if ood else _steps_2(rng, big)
        return q, " ".join(e + "." for e in eqs) + f"\n#### {ans}", {"answer": ans}

    def verify(self, meta: dict[str, Any], completion: str) -> dict[str, Any]:
        raw = extract_answer(completion)
        value = parse_number(raw) if raw is not None else None
        correct = value is not None and abs(value - float(meta["answer"])) < 1e-6
        return {"correct": bool(correct), "extracted": raw}
