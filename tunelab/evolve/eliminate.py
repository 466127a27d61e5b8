"""The eliminator: which evolutions fail, and why (WizardLM, Xu et al. 2023, section 3.3).

A failed evolution is dropped and its parent goes back to the pool. The paper's four rules:

1. ``no_information_gain``: a judge finds the new instruction equal to its parent;
2. ``sorry_short``: the answer contains "sorry" and is at most 80 words;
3. ``stopwords_only``: the answer is only punctuation and stop words;
4. ``copied_prompt``: the new instruction copies words of the rewriting prompt.

Two more, each switchable: ``degenerate`` (an empty, too short or mostly non-letter instruction,
which is what a broken evolver returns: it is never judged or answered) and ``unverified`` (an
``instruct`` item whose model answer fails its checkable constraints). Rules are checked in the
order in which their inputs exist: the instruction alone, then the judge, then the answer.
"""

from __future__ import annotations

import re

from tunelab.data.tasks.instruct import check_constraint
from tunelab.data.transforms.base import words
from tunelab.evolve.config import EliminatorConfig
from tunelab.evolve.operators import OPERATORS, WIZARDLM_MARKERS

RULES = ("degenerate", "copied_prompt", "no_information_gain", "sorry_short", "stopwords_only", "unverified")
"""Every reason an evolution is eliminated, in the order they are checked."""

STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more
most mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same
shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've this those through to too under
until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
while who who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours yourself
yourselves yes ok okay oh um uh hmm well just also s t d ll m re ve
""".split())
"""English function words (rule 3): an answer made only of these says nothing."""


def copy_phrases(cfg: EliminatorConfig) -> list[str]:
    """Rule 4's phrases: WizardLM's, every operator's markers and the configured extras (lowercase)."""
    phrases = list(WIZARDLM_MARKERS) + [m for op in OPERATORS.values() for m in op.markers] + cfg.copy_phrases
    return sorted({p.lower() for p in phrases if p.strip()})


def check_instruction(cfg: EliminatorConfig, text: str, phrases: list[str]) -> str | None:
    """The rule a new instruction breaks on its own (``degenerate`` or ``copied_prompt``), or None."""
    if cfg.degenerate:
        letters = sum(c.isalpha() for c in text)
        visible = sum(not c.isspace() for c in text)
        if len(words(text)) < cfg.min_words or letters < 0.35 * max(visible, 1):
            return "degenerate"
    if cfg.copied_prompt:
        low = text.lower()
        if any(p in low for p in phrases):
            return "copied_prompt"
    return None


def only_stopwords(text: str) -> bool:
    """Whether ``text`` holds nothing but punctuation and stop words (empty text included)."""
    return all(w in STOPWORDS for w in re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'")))


def check_answer(cfg: EliminatorConfig, answer: str, constraints: list[dict] | None = None) -> str | None:
    """The rule an answer breaks (``sorry_short``, ``stopwords_only``, ``unverified``), or None.

    ``constraints``: the item's checkable constraints (``instruct`` items answered by a model), or None.
    """
    if cfg.sorry_short and "sorry" in answer.lower() and len(answer.split()) <= cfg.sorry_max_words:
        return "sorry_short"
    if cfg.stopwords_only and only_stopwords(answer):
        return "stopwords_only"
    if cfg.unverified and constraints and not all(check_constraint(c, answer) for c in constraints):
        return "unverified"
    return None
