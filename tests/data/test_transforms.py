"""Transforms: crafted cases for every filter, and errors for unknown names and params."""

from __future__ import annotations

import pytest

from tunelab.config import ConfigError
from tunelab.data.transforms import TRANSFORMS, TransformContext, apply_transforms, build_transforms
from tunelab.registry import RegistryError
from tunelab.types import Sample

PARAGRAPH = (
    "The committee met on a rainy Tuesday morning to review the annual budget of the small town library. "
    "After a long discussion about new books, repairs to the old roof, longer opening hours for students, "
    "and a reading program for children during the summer holidays, the members agreed to ask the council "
    "for a modest increase in funding and to publish a short report for every resident before the end of "
    "the month so that people could comment on the plan and suggest other improvements."
)


def qa(q: str, a: str, i: int = 0) -> Sample:
    return Sample([{"role": "user", "content": q}, {"role": "assistant", "content": a}], {"source": "s", "id": f"s-{i}"})


def run(specs: list[dict], samples: list[Sample], ctx: TransformContext | None = None) -> tuple[list[Sample], dict]:
    return apply_transforms(samples, specs, ctx or TransformContext())


def test_registered_names() -> None:
    assert {"dedup", "near_dedup", "length", "empty_response", "refusal", "decontaminate", "cap"} <= set(TRANSFORMS)


def test_exact_dedup_on_normalised_text() -> None:
    samples = [qa("Hello  World", "Hi"), qa("hello world", "hi "), qa("hello world", "bye"), qa("other", "hi")]
    kept, removed = run([{"name": "dedup"}], samples)
    assert kept == [samples[0], samples[2], samples[3]] and removed == {"duplicate": 1}
    kept, _ = run([{"name": "dedup", "on": "prompt"}], samples)
    assert kept == [samples[0], samples[3]]


def test_near_dedup_removes_one_word_edit_keeps_unrelated() -> None:
    words = PARAGRAPH.split()
    words[len(words) // 2] = "banana"
    edited = " ".join(words)
    unrelated = (
        "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a "
        "by-product; it takes place in chloroplasts, which contain the green pigment chlorophyll."
    )
    samples = [qa(PARAGRAPH, "ok", 0), qa(edited, "ok", 1), qa(unrelated, "ok", 2)]
    kept, removed = run([{"name": "near_dedup"}], samples)
    assert [s.meta["id"] for s in kept] == ["s-0", "s-2"] and removed == {"near_duplicate": 1}
    assert run([{"name": "near_dedup"}], samples)[0] == kept  # seeded: same answer every time


def test_decontaminate_13gram_vs_12gram() -> None:
    eval_text = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar"
    w = eval_text.split()
    copies_13 = qa("Question: " + " ".join(w[1:14]) + " ?", "answer", 1)
    shares_12 = qa("Question: " + " ".join(w[1:13]) + " zulu " + " ".join(w[13:]), "answer", 2)
    clean = qa("nothing in common here", "answer", 3)
    ctx = TransformContext(eval_texts=["unrelated eval text", eval_text.upper()])
    specs = build_transforms([{"name": "decontaminate"}])
    kept, removed = apply_transforms([copies_13, shares_12, clean], specs, ctx)
    assert kept == [shares_12, clean] and removed == {"contaminated": 1}
    (overlap,) = specs[0].last_overlaps
    assert overlap["id"] == "s-1" and overlap["eval_index"] == 1 and len(overlap["ngram"].split()) == 13
    assert ctx.stats["contaminated"] == [overlap]
    kept, _ = run([{"name": "decontaminate", "n": 8}], [shares_12], ctx)
    assert kept == []


def test_length_tokens_and_chars_fallback() -> None:
    samples = [qa("a", "b", 0), qa("one two three", "four five six", 1), qa(" ".join(["w"] * 50), "x", 2)]
    ctx = TransformContext(count_tokens=lambda s: sum(len(m["content"].split()) for m in s.messages))
    kept, removed = run([{"name": "length", "min_tokens": 3, "max_tokens": 20}], samples, ctx)
    assert kept == [samples[1]] and removed == {"too_short": 1, "too_long": 1}
    kept, removed = run([{"name": "length", "min_chars": 5, "max_chars": 60}], samples)
    assert kept == [samples[1]] and removed == {"too_short": 1, "too_long": 1}
    kept, _ = run([{"name": "length", "max_tokens": 10}], samples)  # no tokenizer: chars / 4
    assert kept == samples[:2]


def test_empty_and_degenerate_responses() -> None:
    samples = [qa("q", "", 0), qa("q", "   \n", 1), qa("q", "?!...", 2), qa("q", "ha ha ha ha", 3),
               qa("q", "Yes", 4), qa("q", "4", 5), qa("q", "It is 4.", 6)]
    kept, removed = run([{"name": "empty_response"}], samples)
    assert [s.meta["id"] for s in kept] == ["s-4", "s-5", "s-6"]
    assert removed == {"empty_response": 2, "degenerate_response": 2}


def test_refusal_default_and_custom_phrases() -> None:
    samples = [qa("q", "As an AI language model, I cannot do that.", 0), qa("q", "I\u2019m sorry, but no.", 1),
               qa("q", "Sure! Here it is.", 2), qa("q", "Nope, not doing it.", 3)]
    kept, removed = run([{"name": "refusal"}], samples)
    assert [s.meta["id"] for s in kept] == ["s-2", "s-3"] and removed == {"refusal": 2}
    kept, _ = run([{"name": "refusal", "phrases": ["not doing it"]}], samples)
    assert [s.meta["id"] for s in kept] == ["s-0", "s-1", "s-2"]


def test_cap_is_seeded_and_keeps_order() -> None:
    samples = [qa(f"q{i}", "a", i) for i in range(20)]
    kept, removed = run([{"name": "cap", "max_examples": 5}], samples, TransformContext(seed=3))
    again, _ = run([{"name": "cap", "max_examples": 5}], samples, TransformContext(seed=3))
    other, _ = run([{"name": "cap", "max_examples": 5}], samples, TransformContext(seed=4))
    ids = [s.meta["id"] for s in kept]
    assert len(kept) == 5 and removed == {"capped": 15} and kept == again and kept != other
    assert ids == sorted(ids, key=lambda x: int(x.split("-")[1]))


def test_pipeline_sums_removed_counts() -> None:
    samples = [qa("q", "a", 0), qa("q", "a", 1), qa("r", "", 2), qa("s", "I cannot help.", 3)]
    kept, removed = run([{"name": "dedup"}, {"name": "empty_response"}, {"name": "refusal"}], samples)
    assert kept == [samples[0]] and removed == {"duplicate": 1, "empty_response": 1, "refusal": 1}


def test_unknown_transform_lists_valid_names() -> None:
    with pytest.raises(RegistryError, match=r"unknown transform 'dedupe'.*valid choices:.*dedup.*near_dedup"):
        build_transforms([{"name": "dedupe"}])


def test_unknown_param_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key.*thresh.*valid keys: threshold, num_perm, ngram, on"):
        build_transforms([{"name": "near_dedup", "thresh": 0.9}])
    with pytest.raises(ConfigError, match=r"missing required key\(s\) max_examples"):
        build_transforms([{"name": "cap"}])
    with pytest.raises(ConfigError, match="'name'"):
        build_transforms([{"threshold": 0.9}])
