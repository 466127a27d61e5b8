"""Multiple-choice rows for a classifier head (the ``choices`` data kind of the ``choice_head`` objective).

An example is a :class:`~tunelab.types.Sample` whose ``meta`` holds ``choices`` (the label words of its
item) and ``answer`` (one of them), as the ``nlp`` family's classification sub-tasks give. It becomes one
:class:`~tunelab.data.preference.SeqRow` with one sequence per choice, each the prompt as the model sees
it at generation time followed by the choice's text (:func:`choice_ids`, which the evaluation scorer
uses too, so training and scoring see the same sequences); ``label`` is the answer's index. No token
carries a language-model loss.
"""

from __future__ import annotations

from tunelab.data.preference import SeqRow, split_prompt
from tunelab.data.tokenize import IGNORE, Encoded
from tunelab.io import DataError
from tunelab.models.prompt import Prompt, encode_prompt
from tunelab.types import Sample


def choice_ids(tok, prompt: Prompt, choice: str) -> list[int]:
    """Token ids of ``prompt`` (chat template with the generation prompt) followed by ``choice``."""
    return encode_prompt(tok, prompt) + tok(choice, add_special_tokens=False)["input_ids"]


def check_choices(sample: Sample) -> None:
    """Raise :class:`DataError` naming the source, example and field when ``sample`` is no multiple-choice example."""
    where = f"source {sample.source!r}, example {sample.meta.get('id')!r}"
    choices = sample.meta.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise DataError(f"{where}: field 'choices' must list two or more label words (got {choices!r}); the "
                        "choice_head objective trains on multiple-choice examples, such as the nlp task's "
                        "sentiment, topic and yesno sub-tasks")
    if sample.meta.get("answer") not in choices:
        raise DataError(f"{where}: field 'answer' ({sample.meta.get('answer')!r}) is not one of its choices {choices}")


def encode_choices(sample: Sample, tok, max_length: int, source_idx: int) -> SeqRow | None:
    """The row of one example (None when a sequence is longer than ``max_length``)."""
    check_choices(sample)
    prompt, _ = split_prompt(sample.messages)
    row = SeqRow(id=str(sample.meta.get("id", "")), label=sample.meta["choices"].index(sample.meta["answer"]))
    for choice in sample.meta["choices"]:
        ids = choice_ids(tok, prompt, choice)
        if len(ids) > max_length:
            return None
        row.add(Encoded(ids, [IGNORE] * len(ids), sample.source, row.id), source_idx)
    return row


def build_choice_rows(samples: list[Sample], tok, sources: list[str], max_length: int) -> tuple[list[SeqRow], int]:
    """Rows of every example (in order) and how many were dropped as too long.

    Raises:
        DataError: an example without ``choices`` or whose ``answer`` is not among them.
    """
    index = {s: i for i, s in enumerate(sources)}
    rows, dropped = [], 0
    for s in samples:
        row = encode_choices(s, tok, max_length, index[s.source])
        if row is None:
            dropped += 1
        else:
            rows.append(row)
    return rows, dropped
