"""Tests for the built-in task families ``code``, ``nlp`` and ``instruct``."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import types
from typing import Any

import pytest

from tunelab.data.tasks import code as code_mod
from tunelab.data.tasks.base import TASK_FAMILIES, get_family
from tunelab.data.tasks.code import OOD_TEMPLATES, TEMPLATES, CodeFamily, build_item, extract_code
from tunelab.data.tasks.instruct import check_constraint, count_sentences, count_words
from tunelab.data.tasks.nlp import SUBTASKS, normalize_answer

# Sandboxed runs share a pool of uids: one xdist worker runs them all (see Makefile --dist loadgroup).
pytestmark = pytest.mark.xdist_group("sandbox")

FAMILIES = ("code", "nlp", "instruct")


def _prompts(samples: list[Any]) -> list[str]:
    return [s.messages[0]["content"] for s in samples]


# -- shared behaviour -------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_registered(name: str) -> None:
    assert name in TASK_FAMILIES


@pytest.mark.parametrize("name", FAMILIES)
def test_splits_disjoint_and_consistent(name: str) -> None:
    fam = get_family(name)
    train = set(_prompts(fam.samples("train", 400, seed=0)))
    test = set(_prompts(fam.samples("test", 60, seed=0)))
    assert len(train) == 400 and len(test) == 60
    assert not train & test
    assert all(not fam.in_test(p) for p in train) and all(fam.in_test(p) for p in test)


@pytest.mark.parametrize("name", FAMILIES)
def test_deterministic_by_seed(name: str) -> None:
    fam = get_family(name)
    a, b = fam.samples("train", 50, seed=1), fam.samples("train", 50, seed=1)
    assert [s.messages for s in a] == [s.messages for s in b] and [s.meta for s in a] == [s.meta for s in b]
    assert _prompts(a) != _prompts(fam.samples("train", 50, seed=2))


@pytest.mark.parametrize("name", FAMILIES)
def test_many_distinct_items_and_json_meta(name: str) -> None:
    samples = get_family(name).samples("train", 2000, seed=0)
    assert len(set(_prompts(samples))) == 2000
    assert len({s.meta["id"] for s in samples}) == 2000
    for s in samples[:200]:
        json.dumps(s.meta)
        assert s.meta["task"] == name and "answer" in s.meta
        assert [m["role"] for m in s.messages] == ["user", "assistant"]


@pytest.mark.parametrize("name", FAMILIES)
def test_ood_split_differs(name: str) -> None:
    fam = get_family(name)
    ood = set(_prompts(fam.samples("ood", 200, seed=0)))
    assert len(ood) == 200
    assert len(ood & set(_prompts(fam.samples("train", 1000, seed=0)))) <= 2


@pytest.mark.parametrize(("name", "max_chars"), [("code", 700), ("nlp", 400), ("instruct", 700)])
def test_items_are_short(name: str, max_chars: int) -> None:
    for split in ("train", "ood"):
        lengths = [len(s.messages[0]["content"]) + len(s.response()) for s in get_family(name).samples(split, 300)]
        assert max(lengths) <= max_chars and sum(lengths) / len(lengths) < max_chars / 2


@pytest.mark.parametrize("name", ("nlp", "instruct"))
@pytest.mark.parametrize("split", ("train", "test", "ood"))
def test_references_verify(name: str, split: str) -> None:
    fam = get_family(name)
    for s in fam.samples(split, 300, seed=3):
        result = fam.verify(s.meta, s.response())
        assert result["correct"], (s.messages, result)
        assert "extracted" in result


# -- code ---------------------------------------------------------------------------------------
def _all_templates(rng: random.Random) -> list[Any]:
    comps = [code_mod._composition(rng) for _ in range(40)]
    return list(TEMPLATES) + list(OOD_TEMPLATES) + comps


def test_code_templates_tests_pass_in_process_and_catch_a_stub() -> None:
    rng = random.Random(0)
    assert 25 <= len(TEMPLATES) <= 40 and not {t.key for t in TEMPLATES} & {t.key for t in OOD_TEMPLATES}
    for tpl in _all_templates(rng):
        for _ in range(3):
            prompt, response, meta = build_item(tpl, rng)
            assert response.startswith("```python\n") and response.endswith("```")
            assert f"`{meta['entry_point']}(" in prompt and len(meta["tests"]) >= 3
            exec(extract_code(response) + "\n" + "\n".join(meta["tests"]), {})
        stub = f"def {meta['entry_point']}(*args):\n    return 'wrong'\n"
        with pytest.raises(AssertionError):
            exec(stub + "\n".join(meta["tests"]), {})


def test_code_ood_uses_unseen_templates() -> None:
    keys = {s.meta["template"] for s in CodeFamily().samples("ood", 200)}
    train_keys = {t.key for t in TEMPLATES}
    assert not keys & train_keys
    assert any(k.startswith("compose_") for k in keys) and keys & {t.key for t in OOD_TEMPLATES}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1"),
        ("Sure! Here it is:\n```\ndef f(): pass\n```\nDone.", "def f(): pass"),
        ("def f(x):\n    return x", "def f(x):\n    return x"),
        ("```python\ndef f(x):\n    return x", "def f(x):\n    return x"),
        ("```py\na = 1\n```\n```python\nb = 2\n```", "a = 1"),
    ],
)
def test_extract_code(text: str, expected: str) -> None:
    assert extract_code(text) == expected


def _subprocess_run_python(source: str, *, timeout: float = 10.0, **_: Any) -> types.SimpleNamespace:
    """Stand-in for ``tunelab.sandbox.run_python`` (a plain subprocess)."""
    try:
        proc = subprocess.run([sys.executable, "-c", source], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return types.SimpleNamespace(passed=False, status="timeout", isolation="none", stdout="")
    status = "ok" if proc.returncode == 0 else "error"
    ok = proc.returncode == 0
    return types.SimpleNamespace(passed=ok, status=status, isolation="none", stdout=proc.stdout.decode())


def _wrong_completions(meta: dict[str, Any]) -> dict[str, str]:
    name = meta["entry_point"]
    return {
        "stub": f"```python\ndef {name}(*args):\n    return 'nope'\n```",
        "syntax": f"```python\ndef {name}(:\n    return\n```",
        "missing": "```python\ndef something_else(x):\n    return x\n```",
        "raises": f"```python\ndef {name}(*args):\n    raise ValueError\n```",
        "loop": f"```python\ndef {name}(*args):\n    while True:\n        pass\n```",
        "prose": "I would use a loop over the items and return the result.",
        "exit": f"```python\nimport sys\ndef {name}(*args):\n    return 0\nsys.exit(0)\n```",
        "hard_exit": f"```python\nimport os\ndef {name}(*args):\n    return 0\nos._exit(0)\n```",
    }


def _check_code_family(fam: CodeFamily, n: int) -> set[str]:
    """Right answers pass and every kind of wrong one fails; returns the isolations reported."""
    isolations = set()
    for s in fam.samples("train", n, seed=5) + fam.samples("ood", n, seed=5):
        good = fam.verify(s.meta, "Here you go:\n" + s.response())
        assert good["correct"] and good["extracted"] == extract_code(s.response()), good
        assert set(good) >= {"correct", "extracted", "status", "isolation"}
        isolations.add(good["isolation"])
    s = fam.samples("train", 1, seed=6)[0]
    for kind, text in _wrong_completions(s.meta).items():
        assert not fam.verify(s.meta, text)["correct"], kind
    return isolations


@pytest.fixture
def stand_in_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code family runs its tests in a plain subprocess (no bubblewrap needed): the name is replaced
    where it is used, ``tunelab.data.tasks.code.run_python`` (bound at import)."""
    monkeypatch.setattr(code_mod, "run_python", _subprocess_run_python)


def test_code_verify_with_stand_in_sandbox(stand_in_sandbox: None) -> None:
    assert _check_code_family(CodeFamily(timeout=2.0), n=4) == {"none"}  # the stand-in's mark: it ran


def test_code_verify_in_real_sandbox() -> None:
    """The real sandbox: bubblewrap where it works, else its rlimits-only runner (allowed here)."""
    assert _check_code_family(CodeFamily(timeout=3.0, allow_unsandboxed=True), n=3) <= {"bubblewrap", "rlimits-only"}


def test_code_off_by_one_fails(stand_in_sandbox: None) -> None:
    tpl = next(t for t in TEMPLATES if t.key == "count_greater")
    _, response, meta = build_item(tpl, random.Random(1))
    wrong = response.replace(" > ", " >= ")
    assert wrong != response and not CodeFamily().verify(meta, wrong)["correct"]


# -- nlp ----------------------------------------------------------------------------------------
def test_normalize_answer() -> None:
    assert normalize_answer("  The Positive. ") == "positive"
    assert normalize_answer("Two!") == "2" and normalize_answer("an apple, please") == "apple please"


def _by_subtask(split: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in get_family("nlp").samples(split, 300, seed=0):
        out.setdefault(s.meta["subtask"], []).append(s)
    return out


@pytest.mark.parametrize("split", ("train", "ood"))
def test_nlp_subtasks_meta(split: str) -> None:
    groups = _by_subtask(split)
    assert set(groups) == set(SUBTASKS)
    for sub, items in groups.items():
        for s in items:
            classification = sub in ("sentiment", "topic", "yesno")
            assert ("choices" in s.meta) == classification
            if classification:
                assert s.meta["answer"] in s.meta["choices"] and len(s.meta["choices"]) >= 2
            assert s.response() == s.meta["answer"]


def _wrong_nlp(s: Any) -> list[str]:
    """Plausible wrong answers for one nlp item."""
    answer = s.meta["answer"]
    wrong = [f"The answer is {answer} because the text says so.", ""]
    if "choices" in s.meta:
        wrong += [c for c in s.meta["choices"] if c != answer]
    elif s.meta["subtask"] == "count":
        wrong += [str(int(answer) + 1)]
    else:
        wrong += [w for w in re.findall(r"\b[A-Z][a-z]+\b", s.messages[0]["content"]) if w != answer][:3]
    return wrong


@pytest.mark.parametrize("split", ("train", "ood"))
def test_nlp_verify_true_and_false_per_subtask(split: str) -> None:
    fam = get_family("nlp")
    for sub, items in _by_subtask(split).items():
        for s in items[:10]:
            answer = s.meta["answer"]
            for ok in (answer.upper() + ".", f"  the {answer}!\n"):
                assert fam.verify(s.meta, ok)["correct"], (sub, ok)
            for bad in _wrong_nlp(s):
                assert not fam.verify(s.meta, bad)["correct"], (sub, bad)


def test_nlp_count_accepts_number_words() -> None:
    meta = {"answer": "3", "subtask": "count"}
    assert get_family("nlp").verify(meta, "Three.")["correct"]
    assert not get_family("nlp").verify(meta, "four")["correct"]


# -- instruct -----------------------------------------------------------------------------------
CONSTRAINT_CASES = [
    ({"type": "word_count", "n": 5}, "One two three four five.", "One two three four."),
    ({"type": "sentences", "n": 2}, "<<T>>\nIt is fun. It is cheap!", "It is fun. It is cheap. Go."),
    ({"type": "bullets", "n": 2}, "- a\n- b\nThanks.", "- a\n- b\n- c"),
    ({"type": "json", "keys": ["tip", "reason"]}, '```json\n{"tip": "x", "reason": "y"}\n```', '{"tip": "x"}'),
    ({"type": "json", "keys": ["tip", "reason"]}, '{"reason": 1, "tip": 2, "extra": 3}', "tip: x, reason: y"),
    ({"type": "lowercase"}, "all lower case here.", "Not lower case."),
    ({"type": "include_words", "words": ["joy", "habit"]}, "Joy is a habit.", "Joyful habits."),
    ({"type": "end_with", "phrase": "That is all."}, "Text.\nthat is all.  ", "That is all. More."),
    ({"type": "no_commas"}, "No commas here.", "Commas, here."),
    ({"type": "title"}, "<<My Title>>\nBody.", "My Title\nBody <<>>."),
]


@pytest.mark.parametrize(("constraint", "good", "bad"), CONSTRAINT_CASES)
def test_check_constraint_true_and_false(constraint: dict[str, Any], good: str, bad: str) -> None:
    assert check_constraint(constraint, good)
    assert not check_constraint(constraint, bad)


def test_counters() -> None:
    assert count_words("Hello - world, it's me!") == 4
    assert count_sentences("One. Two? Three!") == 3 and count_sentences("no end") == 1


def _break(ctype: str, text: str, c: dict[str, Any]) -> str:
    """Edit ``text`` so that it violates constraint ``c``."""
    breakers = {
        "word_count": lambda: text + " extra",
        "sentences": lambda: text + " One more sentence.",
        "bullets": lambda: text + "\n- Another point.",
        "json": lambda: text[:-1],
        "lowercase": lambda: text.upper(),
        "include_words": lambda: re.sub(c.get("words", ["", ""])[0], "thing", text, flags=re.I),
        "end_with": lambda: text + " Bye.",
        "no_commas": lambda: text.replace(" ", ", ", 1),
        "title": lambda: re.sub(r"<<.*?>>", "", text),
    }
    return breakers[ctype]()


def test_instruct_every_constraint_type_breakable() -> None:
    fam = get_family("instruct")
    seen: set[str] = set()
    for s in fam.samples("train", 300, seed=0):
        (c,) = s.meta["constraints"]
        seen.add(c["type"])
        result = fam.verify(s.meta, _break(c["type"], s.response(), c))
        assert not result["correct"] and result["constraints_passed"] == 0, (c, result)
    assert seen == {"word_count", "sentences", "bullets", "json", "lowercase", "include_words",
                    "end_with", "no_commas", "title"}  # fmt: skip


def test_instruct_ood_combines_constraints() -> None:
    fam = get_family("instruct")
    for s in fam.samples("ood", 200, seed=0):
        cs = s.meta["constraints"]
        assert 2 <= len(cs) <= 3 and len({c["type"] for c in cs}) == len(cs)
        result = fam.verify(s.meta, s.response())
        assert result["correct"] and result["constraints_total"] == len(cs)
        broken = fam.verify(s.meta, _break(cs[0]["type"], s.response(), cs[0]))
        assert not broken["correct"] and broken["constraints_passed"] < len(cs)
