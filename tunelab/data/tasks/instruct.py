"""``instruct`` family (instruction-mixing type A): IFEval-like open instructions with checkable constraints.

Each item asks for a short text about a topic under verifiable constraints (``meta["constraints"]``,
a list of ``{"type": ..., **params}``). A *format* constraint (``word_count``, ``bullets``, ``json``,
``sentences``) shapes the whole answer; *modifiers* (``lowercase``, ``include_words``, ``end_with``,
``no_commas``, ``title``) combine with the formats listed in ``COMPATIBLE``. The train/test splits
hold one constraint per item; ``ood`` combines two or three on unseen topics, with extra
phrasings. The reference response is assembled from a small word bank so that it satisfies
every constraint. ``verify`` checks each constraint programmatically.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

from tunelab.data.tasks.base import TASK_FAMILIES, TaskFamily

TOPICS = (
    "green tea", "morning walks", "reading books", "cycling", "gardening", "cooking at home",
    "learning a language", "drinking water", "yoga", "board games", "journaling", "public libraries",
    "recycling", "swimming", "music practice", "volunteering", "camping", "baking bread", "meditation",
    "chess", "photography", "painting", "running", "a good breakfast", "sleep", "team sports", "dancing",
    "writing letters", "bird watching", "public transport", "fresh fruit", "hiking", "pottery",
    "knitting", "stretching", "podcasts", "city parks", "house plants", "early mornings", "cold showers",
)  # fmt: skip
OOD_TOPICS = (
    "rock climbing", "beekeeping", "sailing", "astronomy", "origami", "kayaking", "calligraphy",
    "composting", "fishing", "surfing", "woodworking", "archery", "skiing", "jigsaw puzzles", "tai chi",
)  # fmt: skip
BENEFITS = (
    "helps you relax", "can lift your mood", "builds patience", "is easy to start", "costs very little",
    "brings people together", "sharpens your focus", "keeps the body active", "teaches new skills",
    "makes busy days feel calmer", "gives a sense of progress", "fits into a busy week",
    "is fun at any age", "clears the mind", "improves sleep", "sparks curiosity",
)  # fmt: skip
PLURAL = {"morning walks", "board games", "public libraries", "podcasts", "city parks", "house plants",
          "early mornings", "cold showers", "team sports", "jigsaw puzzles"}  # fmt: skip
FRAMES = ("{T} {b}.", "Many people say {t} {b}.", "In short {t} {b}.", "Above all {t} {b}.", "I think {t} {b}.")
BULLET_FRAMES = ("{it} {b}.", "{T} {b}.", "{it} {b}.")
WORDS = ("sunlight", "patience", "friends", "morning", "energy", "habit", "balance", "curiosity",
         "routine", "joy", "weekend", "garden", "smile", "rhythm")  # fmt: skip
KEYS = ("title", "summary", "tip", "reason", "benefit", "example", "verdict")
END_PHRASES = ("Is there anything else I can help with?", "Thanks for reading.", "That is all.",
               "Enjoy!", "Let me know if you have questions.", "Happy exploring!")  # fmt: skip

FORMATS = ("plain", "word_count", "bullets", "json", "sentences")
MODIFIERS = ("lowercase", "include_words", "end_with", "no_commas", "title")
COMPATIBLE = {
    "plain": MODIFIERS,
    "word_count": ("lowercase", "include_words", "no_commas"),
    "bullets": MODIFIERS,
    "json": ("lowercase", "include_words"),
    "sentences": ("lowercase", "include_words", "no_commas", "title"),
}
# Phrasings; the last variant of each is used only in the ood split.
REQUESTS = {
    "plain": ("Write a short note about {t}.", "Tell me about {t}.", "Describe {t} briefly.",
              "Share a few thoughts on {t}."),
    "word_count": ("Write a short note about {t} in exactly {n} words.", "Describe {t} using exactly {n} words.",
                   "In precisely {n} words, tell me about {t}."),
    "bullets": ("List {n} benefits of {t} as bullet points starting with '- '.",
                "Give {n} reasons to try {t} as a bulleted list where each line starts with '- '.",
                "Why bother with {t}? Answer with exactly {n} markdown bullets ('- ')."),
    "json": ('Describe {t}. Answer in JSON with keys "{k1}" and "{k2}".',
             'Give a JSON object about {t} with the keys "{k1}" and "{k2}".',
             'Output only valid JSON (keys: "{k1}", "{k2}") describing {t}.'),
    "sentences": ("Tell me about {t} in exactly {n} sentences.", "Respond in exactly {n} sentences: why try {t}?",
                  "Using {n} sentences and no more, explain the appeal of {t}."),
}  # fmt: skip
MODIFIER_TEXT = {
    "lowercase": ("Write your entire answer in lowercase letters.", "Use only lowercase letters.",
                  "No capital letters anywhere, please."),
    "include_words": ('Include the words "{w1}" and "{w2}".', "Make sure to use the words {w1} and {w2}.",
                      "Somewhere in the text mention {w1} as well as {w2}."),
    "end_with": ('End your answer with the phrase "{p}"', 'Finish with exactly this phrase: "{p}"',
                 'Your very last words must be "{p}"'),
    "no_commas": ("Do not use any commas.", "Avoid commas entirely.", "Commas are not allowed."),
    "title": ("Include a title wrapped in double angular brackets, like <<title>>.",
              "Give your answer a title in double angular brackets, e.g. <<my title>>.",
              "Start with a title in the form <<...>>."),
}  # fmt: skip


# -- checkers ------------------------------------------------------------------------------
def count_words(text: str) -> int:
    """Whitespace-separated tokens that contain a letter or digit."""
    return sum(1 for w in text.split() if re.search(r"[A-Za-z0-9]", w))


def count_sentences(text: str) -> int:
    """Sentences ending in . ! or ? (a <<title>> is not counted)."""
    text = re.sub(r"<<[^<>\n]*>>", " ", text).strip()
    return sum(1 for s in re.split(r"(?<=[.!?])\s+", text) if re.search(r"[A-Za-z0-9]", s))


def parse_json(text: str) -> Any:
    """Parse a completion as JSON (markdown code fences allowed); None if it is not JSON."""
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text.strip())
    try:
        return json.loads(text)
    except ValueError:
        return None


def _check_json(c: dict[str, Any], text: str) -> bool:
    obj = parse_json(text)
    return isinstance(obj, dict) and all(k in obj for k in c["keys"])


def _check_include(c: dict[str, Any], text: str) -> bool:
    return all(re.search(rf"\b{re.escape(w)}\b", text, re.I) for w in c["words"])


CHECKS: dict[str, Callable[[dict[str, Any], str], bool]] = {
    "word_count": lambda c, t: count_words(t) == c["n"],
    "sentences": lambda c, t: count_sentences(t) == c["n"],
    "bullets": lambda c, t: sum(1 for line in t.splitlines() if line.strip().startswith("- ")) == c["n"],
    "json": _check_json,
    "lowercase": lambda c, t: t == t.lower() and re.search(r"[a-z]", t) is not None,
    "include_words": _check_include,
    "end_with": lambda c, t: t.strip().lower().endswith(c["phrase"].lower()),
    "no_commas": lambda c, t: "," not in t,
    "title": lambda c, t: re.search(r"<<[^<>\n]*[A-Za-z0-9][^<>\n]*>>", t) is not None,
}


def check_constraint(constraint: dict[str, Any], text: str) -> bool:
    """Whether ``text`` satisfies one constraint ``{"type": ..., **params}``."""
    return bool(CHECKS[constraint["type"]](constraint, text))


# -- generation ----------------------------------------------------------------------------
def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _agree(benefit: str, topic: str) -> str:
    """``benefit`` (a verb phrase in the third person singular) in agreement with ``topic``."""
    if topic not in PLURAL:
        return benefit
    verb, rest = benefit.split(" ", 1)
    verb = {"is": "are", "can": "can"}.get(verb, verb[:-2] if verb.endswith("ches") else verb[:-1])
    return f"{verb} {rest}"


def _fill(frame: str, topic: str, benefit: str) -> str:
    it = "They" if topic in PLURAL else "It"
    return _cap(frame.format(T=_cap(topic), t=topic, b=_agree(benefit, topic), it=it))


def _sentences(rng: random.Random, topic: str, k: int) -> list[str]:
    return [_fill(rng.choice(FRAMES), topic, b) for b in rng.sample(BENEFITS, k)]


def _with_words(sentence: str, words: list[str]) -> str:
    return f"{sentence.rstrip('.!?')} with {words[0]} and {words[1]}."


def _choose(rng: random.Random, ood: bool) -> tuple[str, list[str]]:
    """Pick a format and modifiers: one constraint in train/test, two or three in ood."""
    if not ood:
        kind = rng.choice(FORMATS[1:] + MODIFIERS)
        return (kind, []) if kind in FORMATS else ("plain", [kind])
    fmt = rng.choice(FORMATS)
    n_mods = rng.choice([2, 3]) - (fmt != "plain")
    return fmt, rng.sample(COMPATIBLE[fmt], min(n_mods, len(COMPATIBLE[fmt])))


def _body(rng: random.Random, fmt: str, topic: str, c: dict[str, Any], words: list[str] | None) -> str:
    """The answer text for ``fmt``; fills the format constraint's parameters into ``c``."""
    if fmt == "bullets":
        c["n"] = rng.randint(2, 5)
        lines = [_fill(rng.choice(BULLET_FRAMES), topic, b) for b in rng.sample(BENEFITS, c["n"])]
        if words:
            lines[0] = _with_words(lines[0], words)
        return "\n".join(f"- {line}" for line in lines)
    if fmt == "json":
        c["keys"] = rng.sample(KEYS, 2)
        values = _sentences(rng, topic, 2)
        if words:
            values[0] = _with_words(values[0], words)
        return json.dumps(dict(zip(c["keys"], values)))
    k = {"plain": 2, "sentences": rng.randint(1, 4), "word_count": rng.randint(1, 3)}[fmt]
    sents = _sentences(rng, topic, k)
    if words:
        sents[0] = _with_words(sents[0], words)
    text = " ".join(sents)
    if fmt != "plain":
        c["n"] = count_words(text) if fmt == "word_count" else k
    return text


def _prompt(rng: random.Random, fmt: str, topic: str, constraints: list[dict[str, Any]], ood: bool) -> str:
    def pick(options: tuple[str, ...]) -> str:
        return rng.choice(options if ood else options[:-1])

    by_type = {c["type"]: c for c in constraints}
    fc = by_type.get(fmt, {})
    keys = fc.get("keys", ["", ""])
    parts = [pick(REQUESTS[fmt]).format(t=topic, n=fc.get("n"), k1=keys[0], k2=keys[1])]
    for c in constraints:
        if c["type"] in MODIFIERS:
            ws = c.get("words", ["", ""])
            parts.append(pick(MODIFIER_TEXT[c["type"]]).format(w1=ws[0], w2=ws[1], p=c.get("phrase")))
    return " ".join(parts).replace(" 1 sentences", " 1 sentence")


def build_item(rng: random.Random, ood: bool) -> tuple[str, str, dict[str, Any]]:
    """One (prompt, reference response, meta) item."""
    topic = rng.choice(OOD_TOPICS if ood else TOPICS)
    fmt, mods = _choose(rng, ood)
    mod_cs = {m: {"type": m} for m in mods}
    words = rng.sample(WORDS, 2) if "include_words" in mod_cs else None
    fmt_c: dict[str, Any] = {"type": fmt}
    text = _body(rng, fmt, topic, fmt_c, words)
    if "title" in mod_cs:
        text = f"<<{_cap(topic)} in brief>>\n{text}"
    if "end_with" in mod_cs:
        mod_cs["end_with"]["phrase"] = rng.choice(END_PHRASES)
        text = f"{text}\n{mod_cs['end_with']['phrase']}"
    if words:
        mod_cs["include_words"]["words"] = words
    if "lowercase" in mod_cs:
        text = text.lower()
    constraints = ([fmt_c] if fmt != "plain" else []) + list(mod_cs.values())
    prompt = _prompt(rng, fmt, topic, constraints, ood)
    return prompt, text, {"answer": None, "constraints": constraints, "topic": topic}


HELD_OUT_PAIRS: tuple[frozenset[str], ...] = tuple(frozenset(p) for p in (
    ("bullets", "title"), ("json", "lowercase"), ("sentences", "no_commas"), ("include_words", "end_with"),
    ("lowercase", "title")))
"""Constraint-type pairs an evolution study keeps out of training (``hold_out_pairs`` of the programmatic
evolver never makes them), so ``instruct_ood_unseen`` (the ``ood`` items holding one) measures
generalisation to combinations never evolved into, not reproduction of them."""


def types_of(constraints: list[dict[str, Any]]) -> frozenset[str]:
    """The constraint types of an item (its format, unless plain, and its modifiers)."""
    return frozenset(c["type"] for c in constraints if c["type"] != "plain")


def holds_out(types: frozenset[str]) -> bool:
    """Whether constraint ``types`` contain one of :data:`HELD_OUT_PAIRS`."""
    return any(pair <= types for pair in HELD_OUT_PAIRS)


@TASK_FAMILIES.register("instruct")
class InstructFamily(TaskFamily):
    """Open instructions with programmatically checkable constraints (IFEval-like).

    Options:
        pairs: ``all`` (default), ``held_out`` (only items holding one of :data:`HELD_OUT_PAIRS`) or
            ``seen`` (only items holding none).
    """

    description = "IFEval-like instructions: word/sentence counts, bullets, JSON, lowercase, keywords..."

    def make_item(self, rng: random.Random, ood: bool) -> tuple[str, str, dict[str, Any]]:
        want = self.options.get("pairs", "all")
        if want not in ("all", "held_out", "seen"):
            raise ValueError(f"instruct: pairs must be all, held_out or seen, got {want!r}")
        while True:
            item = build_item(rng, ood)
            if want == "all" or holds_out(types_of(item[2]["constraints"])) == (want == "held_out"):
                return item

    def verify(self, meta: dict[str, Any], completion: str) -> dict[str, Any]:
        results = [check_constraint(c, completion) for c in meta["constraints"]]
        return {
            "correct": all(results),
            "extracted": None,
            "constraints_passed": sum(results),
            "constraints_total": len(results),
            "per_constraint": {c["type"]: ok for c, ok in zip(meta["constraints"], results)},
        }
