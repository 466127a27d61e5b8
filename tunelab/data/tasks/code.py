"""``code`` family (instruction-mixing type C): small Python functions checked by unit tests.

Each item asks, in one sentence, for a function with a given name and signature; the reference
response is the implementation in a fenced ```python block. Items come from parameterised
templates (list, string, arithmetic and dict operations) with random constants, function names
and argument names. The unit tests (``meta["tests"]``, a list of ``assert`` lines) are computed at
generation time by running the reference implementation in-process on random inputs. The ``ood``
split uses held-out templates and compositions of two list operations.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunelab.data.tasks.base import TASK_FAMILIES, TaskFamily
from tunelab.sandbox import run_python

Consts = Callable[[random.Random], dict[str, Any]]

WORDS = (
    "apple", "river", "stone", "level", "radar", "tree", "moon", "sun", "read", "rest", "start",
    "stop", "noon", "cat", "dog", "bird", "table", "area", "test", "star", "train", "open", "kayak",
    "sea", "red", "blue", "green", "idea", "rotor", "ant",
)  # fmt: skip
_LIST, _STR, _INT, _DICT = ("xs", "nums", "values", "items", "arr"), ("s", "text", "line"), (
    "n", "x", "num", "value"), ("d", "counts", "scores", "table")
ARG_NAMES = {"list": _LIST, "str": _STR, "word": ("s", "word", "w"), "int": _INT, "nat": _INT,
             "small": _INT, "dict": _DICT, "udict": _DICT}
PHRASES = (
    "Write a Python function `{sig}` that {desc}.",
    "Implement `{sig}` in Python: it {desc}.",
    "Define a Python function `{sig}` which {desc}.",
    "Create a function `{sig}` that {desc}.",
    "In Python, write `{sig}`, which {desc}.",
)
N_TESTS = 5


@dataclass(frozen=True)
class Template:
    """One parameterised function template.

    Attributes:
        key: Template id (stored in ``meta["template"]``).
        names: Candidate function names (format strings over the constants).
        kinds: Argument kinds, one per argument (see ``_gen_arg``); the i-th argument name
            is ``{a}``, ``{b}``, ... in ``desc`` and ``body``.
        desc: What the function returns (format string; ``{{``/``}}`` for literal braces).
        body: The indented function body (format string).
        consts: Draws the template constants (``{k}``, ``{c}``, ...).
    """

    key: str
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    desc: str
    body: str
    consts: Consts = field(default=lambda rng: {})


def _k(lo: int, hi: int, name: str = "k") -> Consts:
    return lambda rng: {name: rng.randint(lo, hi)}


def _lohi(rng: random.Random) -> dict[str, Any]:
    lo = rng.randint(-3, 4)
    return {"lo": lo, "hi": lo + rng.randint(3, 9)}


def _T(key: str, names: str, kinds: str, desc: str, body: str, consts: Consts | None = None) -> Template:
    return Template(key, tuple(names.split()), tuple(kinds.split()), desc, body, consts or (lambda rng: {}))


_LOOP_PRODUCT = "    result = 1\n    for x in {a}:\n        result *= x\n    return result"
_LOOP_UNIQUE = "    seen = []\n    for x in {a}:\n        if x not in seen:\n            seen.append(x)\n    return seen"
_LOOP_PREFIX = "    out, total = [], 0\n    for x in {a}:\n        total += x\n        out.append(total)\n    return out"
_LOOP_FACT = "    result = 1\n    for i in range(2, {a} + 1):\n        result *= i\n    return result"
_LOOP_FREQ = "    out = {{}}\n    for c in {a}:\n        out[c] = out.get(c, 0) + 1\n    return out"
_LOOP_WFREQ = "    out = {{}}\n    for w in {a}.split():\n        out[w] = out.get(w, 0) + 1\n    return out"

TEMPLATES: tuple[Template, ...] = (
    # -- list operations ----------------------------------------------------------------
    _T("sum_parity", "sum_{par}s total_{par}s", "list", "returns the sum of the {par} numbers in the list {a}",
       "    return sum(x for x in {a} if x % 2 == {r})",
       lambda rng: rng.choice([{"par": "even", "r": 0}, {"par": "odd", "r": 1}])),
    _T("count_greater", "count_greater count_above num_greater", "list",
       "returns how many numbers in the list {a} are greater than {k}",
       "    return sum(1 for x in {a} if x > {k})", _k(0, 10)),
    _T("filter_less", "keep_below filter_less values_below", "list",
       "returns a list of the numbers in {a} that are less than {k}, in their original order",
       "    return [x for x in {a} if x < {k}]", _k(0, 10)),
    _T("scale", "scale multiply_all times_each", "list",
       "returns a new list with every number in {a} multiplied by {k}", "    return [x * {k} for x in {a}]", _k(2, 9)),
    _T("add_each", "add_to_each shift_all offset_all", "list",
       "returns a new list with {k} added to every number in {a}", "    return [x + {k} for x in {a}]", _k(1, 20)),
    _T("max_default", "max_or_default largest biggest", "list",
       "returns the largest number in the list {a}, or {d} if {a} is empty",
       "    return max({a}) if {a} else {d}", lambda rng: {"d": rng.choice([0, -1, None])}),
    _T("min_default", "min_or_default smallest lowest", "list",
       "returns the smallest number in the list {a}, or {d} if {a} is empty",
       "    return min({a}) if {a} else {d}", lambda rng: {"d": rng.choice([0, -1, None])}),
    _T("product", "product multiply_list prod", "list",
       "returns the product of the numbers in {a} (1 for an empty list)", _LOOP_PRODUCT),
    _T("count_multiples", "count_multiples num_multiples", "list",
       "returns how many numbers in {a} are divisible by {k}", "    return sum(1 for x in {a} if x % {k} == 0)", _k(2, 7)),
    _T("squares", "squares square_all squared", "list",
       "returns a list of the squares of the numbers in {a}", "    return [x * x for x in {a}]"),
    _T("unique", "unique dedupe remove_duplicates", "list",
       "returns the numbers of {a} without duplicates, in order of first occurrence", _LOOP_UNIQUE),
    _T("first_index", "find_index index_of first_index", "list int",
       "returns the index of the first occurrence of {b} in the list {a}, or -1 if {b} is not in {a}",
       "    return {a}.index({b}) if {b} in {a} else -1"),
    _T("sum_abs", "sum_abs total_magnitude abs_sum", "list",
       "returns the sum of the absolute values of the numbers in {a}", "    return sum(abs(x) for x in {a})"),
    _T("count_equal", "count_value occurrences count_of", "list int",
       "returns how many times {b} appears in the list {a}", "    return {a}.count({b})"),
    # -- string operations ----------------------------------------------------------------
    _T("count_vowels", "count_vowels num_vowels vowel_count", "str",
       "returns the number of vowels (a, e, i, o, u) in the lowercase string {a}",
       "    return sum(1 for c in {a} if c in 'aeiou')"),
    _T("reverse", "reverse reverse_string backwards", "str",
       "returns the string {a} reversed", "    return {a}[::-1]"),
    _T("palindrome", "is_palindrome palindrome reads_same", "word",
       "returns True if the string {a} reads the same forwards and backwards, else False",
       "    return {a} == {a}[::-1]"),
    _T("count_char", "count_{c}s count_letter letter_count", "str",
       "returns how many times the letter '{c}' appears in {a}", "    return {a}.count('{c}')",
       lambda rng: {"c": rng.choice("aeinorst")}),
    _T("capitalize", "capitalize_words title_case cap_words", "str",
       "returns {a} with the first letter of every word made uppercase (words are separated by single spaces)",
       "    return ' '.join(w.capitalize() for w in {a}.split(' '))"),
    _T("remove_char", "remove_char strip_letter drop_char", "str",
       "returns {a} with every '{c}' removed", "    return {a}.replace('{c}', '')",
       lambda rng: {"c": rng.choice("aeinorst ")}),
    _T("word_count", "word_count count_words num_words", "str",
       "returns the number of words in {a}, where words are separated by whitespace", "    return len({a}.split())"),
    _T("longest_word", "longest_word longest", "str",
       "returns the longest word in {a} (the first one on ties, '' if there are none)",
       "    return max({a}.split(), key=len, default='')"),
    _T("repeat", "repeat repeat_join echo", "word", "returns {a} repeated {k} times, separated by '{sep}'",
       "    return '{sep}'.join([{a}] * {k})", lambda rng: {"k": rng.randint(2, 5), "sep": rng.choice("-,| ")}),
    _T("starts_with", "starts_with_{w} has_prefix begins_with", "word",
       "returns True if {a} starts with '{w}', else False", "    return {a}.startswith('{w}')",
       lambda rng: {"w": rng.choice(["re", "st", "a", "s", "ra", "t"])}),
    # -- arithmetic -----------------------------------------------------------------------
    _T("divisible", "is_divisible divisible_by_{k} is_multiple", "int",
       "returns True if the integer {a} is divisible by {k}, else False", "    return {a} % {k} == 0", _k(2, 9)),
    _T("digit_sum", "digit_sum sum_digits", "nat",
       "returns the sum of the digits of the non-negative integer {a}", "    return sum(int(d) for d in str({a}))"),
    _T("factorial", "factorial fact", "small", "returns the factorial of the non-negative integer {a}", _LOOP_FACT),
    _T("linear", "linear affine apply_rule", "int", "returns {m} times {a} plus {c}", "    return {m} * {a} + {c}",
       lambda rng: {"m": rng.randint(2, 9), "c": rng.randint(1, 12)}),
    _T("clamp", "clamp limit bound", "int", "returns {a} limited to the range {lo} to {hi} (inclusive)",
       "    return min(max({a}, {lo}), {hi})", _lohi),
    _T("sum_to", "sum_to triangle sum_up_to", "int",
       "returns the sum of the integers from 1 to {a} (0 if {a} is less than 1)", "    return sum(range(1, {a} + 1))"),
    # -- dict operations ------------------------------------------------------------------
    _T("char_freq", "char_freq char_counts letter_freq", "str",
       "returns a dict mapping each character of {a} to the number of times it appears", _LOOP_FREQ),
    _T("word_lengths", "word_lengths word_lens length_map", "str",
       "returns a dict mapping each word of {a} to its length", "    return {{w: len(w) for w in {a}.split()}}"),
    _T("invert", "invert invert_dict swap_keys", "udict",
       "returns a new dict with the keys and values of the dict {a} swapped (its values are unique)",
       "    return {{v: k for k, v in {a}.items()}}"),
    _T("sum_values", "sum_values total_value value_sum", "dict",
       "returns the sum of the values of the dict {a}", "    return sum({a}.values())"),
    _T("keys_above", "keys_above keys_over big_keys", "dict",
       "returns a sorted list of the keys of the dict {a} whose value is greater than {k}",
       "    return sorted(k for k, v in {a}.items() if v > {k})", _k(0, 9)),
    _T("word_freq", "word_freq word_counts count_each_word", "str",
       "returns a dict mapping each word of {a} to how many times it occurs", _LOOP_WFREQ),
)

OOD_TEMPLATES: tuple[Template, ...] = (
    _T("clip", "clip clamp_all bound_values", "list",
       "returns a new list where every number in {a} below {lo} becomes {lo} and every number above {hi} becomes {hi}",
       "    return [min(max(x, {lo}), {hi}) for x in {a}]", _lohi),
    _T("prefix_sums", "running_sum prefix_sums cumulative_sum", "list",
       "returns a list whose item i is the sum of the first i + 1 numbers of {a}", _LOOP_PREFIX),
    _T("acronym", "acronym initials", "str",
       "returns the uppercase first letters of the words in {a}, joined together",
       "    return ''.join(w[0].upper() for w in {a}.split())"),
    _T("sign", "sign sign_of", "int", "returns 1 if {a} is positive, -1 if it is negative and 0 if it is zero",
       "    return ({a} > 0) - ({a} < 0)"),
    _T("max_key", "max_key best_key argmax", "dict",
       "returns the key of the dict {a} with the largest value (the first such key on ties, None if {a} is empty)",
       "    return max({a}, key={a}.get, default=None)"),
    _T("abs_diff", "abs_diff distance gap", "int int",
       "returns the absolute difference between {a} and {b}", "    return abs({a} - {b})"),
    _T("is_sorted", "is_sorted ascending in_order", "list",
       "returns True if the numbers in {a} are in non-decreasing order, else False",
       "    return all(x <= y for x, y in zip({a}, {a}[1:]))"),
)

# (name token, phrase, expression over the list {a}) -- composed as transform then reduce in ood.
TRANSFORMS = (
    ("big", "keeps the numbers greater than {k}", "[x for x in {a} if x > {k}]"),
    ("even", "keeps the even numbers", "[x for x in {a} if x % 2 == 0]"),
    ("scaled", "multiplies every number by {k}", "[x * {k} for x in {a}]"),
    ("squared", "squares every number", "[x * x for x in {a}]"),
    ("nonneg", "drops the negative numbers", "[x for x in {a} if x >= 0]"),
)
REDUCERS = (
    ("sum", "the sum of what is left", "sum(ys)"),
    ("count", "how many numbers are left", "len(ys)"),
    ("max", "the largest number left (0 if none is left)", "max(ys, default=0)"),
    ("sorted", "what is left sorted in ascending order", "sorted(ys)"),
)


def _composition(rng: random.Random) -> Template:
    """An ood template: a list transform followed by a reduction."""
    tname, tdesc, texpr = rng.choice(TRANSFORMS)
    rname, rdesc, rexpr = rng.choice(REDUCERS)
    return Template(
        f"compose_{tname}_{rname}", (f"{rname}_{tname}", f"{tname}_{rname}"), ("list",),
        f"takes a list of integers {{a}}, {tdesc}, and returns {rdesc}",
        f"    ys = {texpr}\n    return {rexpr}", _k(2, 6),
    )


def _gen_arg(kind: str, rng: random.Random) -> Any:
    """A random argument value of ``kind``."""
    if kind == "list":
        return [rng.randint(-5, 15) for _ in range(rng.choice([0, 1, 2, 3, 4, 5, 6, 7]))]
    if kind == "str":
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4)))
    if kind == "word":
        return rng.choice(WORDS) if rng.random() < 0.7 else rng.choice(WORDS)[::-1] + rng.choice("abc")
    if kind == "int":
        return rng.randint(-12, 40)
    if kind == "nat":
        return rng.randint(0, 99999)
    if kind == "small":
        return rng.randint(0, 10)
    keys = rng.sample(WORDS, rng.randint(0, 4))
    vals = rng.sample(range(-5, 20), len(keys)) if kind == "udict" else [rng.randint(-5, 20) for _ in keys]
    return dict(zip(keys, vals))


def extract_code(text: str) -> str:
    """The code in a completion: the first ```python (or plain ```) block, else the whole text.

    An unclosed fence (a truncated completion) yields everything after it.
    """
    m = re.search(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", text, re.S)
    return (m.group(1) if m else text).strip("\n")


SENTINEL = "__TUNELAB_TESTS_DONE__"


def build_test_program(code: str, tests: list[str]) -> str:
    """A script that defines ``code`` and runs the ``assert`` lines ``tests``.

    The solution is run through ``exec`` so that a ``sys.exit()`` in it fails the tests instead of
    skipping them; the script prints ``SENTINEL`` when every test has run.
    """
    return (
        f"try:\n    exec(compile({code!r}, 'solution.py', 'exec'), globals())\n"
        "except SystemExit:\n    raise AssertionError('the solution called exit') from None\n"
        + "\n".join(tests)
        + f"\nprint({SENTINEL!r})\n"
    )


def _call_reference(code: str, name: str, args: tuple[Any, ...]) -> Any:
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # our own generated reference implementation, not model output
    return namespace[name](*copy.deepcopy(args))


def build_item(tpl: Template, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """Instantiate ``tpl``: (prompt, fenced reference, meta with entry_point/tests)."""
    consts = tpl.consts(rng)
    argnames: list[str] = []
    for kind in tpl.kinds:
        argnames.append(rng.choice([p for p in ARG_NAMES[kind] if p not in argnames]))
    fmt = {**consts, **dict(zip("ab", argnames))}
    name = rng.choice(tpl.names).format(**fmt)
    sig = f"{name}({', '.join(argnames)})"
    code = f"def {sig}:\n{tpl.body.format(**fmt)}\n"
    prompt = rng.choice(PHRASES).format(sig=sig, desc=tpl.desc.format(**fmt))
    tests: list[str] = []
    for _ in range(4 * N_TESTS):
        args = tuple(_gen_arg(k, rng) for k in tpl.kinds)
        line = f"assert {name}({', '.join(map(repr, args))}) == {_call_reference(code, name, args)!r}"
        if line not in tests:
            tests.append(line)
        if len(tests) == N_TESTS:
            break
    meta = {"answer": code, "entry_point": name, "tests": tests, "template": tpl.key}
    return prompt, f"```python\n{code}```", meta


@TASK_FAMILIES.register("code")
class CodeFamily(TaskFamily):
    """Small Python functions from a one-sentence spec, verified by unit tests in a sandbox.

    Options:
        allow_unsandboxed: Run tests without bubblewrap isolation when it is unavailable.
        timeout: Seconds allowed per verification run (default 10).
    """

    description = "write small Python functions (list/string/arith/dict ops); unit tests in a sandbox"

    def make_item(self, rng: random.Random, ood: bool) -> tuple[str, str, dict[str, Any]]:
        if not ood:
            tpl = rng.choice(TEMPLATES)
        else:
            tpl = rng.choice(OOD_TEMPLATES) if rng.random() < 0.5 else _composition(rng)
        return build_item(tpl, rng)

    def verify(self, meta: dict[str, Any], completion: str) -> dict[str, Any]:
        """Run the extracted code against ``meta["tests"]`` in the sandbox.

        Raises:
            SandboxUnavailable: bubblewrap is missing and ``allow_unsandboxed`` is not set.
        """
        code = extract_code(completion)
        result = run_python(
            build_test_program(code, meta["tests"]),
            timeout=float(self.options.get("timeout", 10.0)),
            allow_unsandboxed=bool(self.options.get("allow_unsandboxed", False)),
        )
        stdout = getattr(result, "stdout", None)
        finished = SENTINEL in stdout if isinstance(stdout, str) else True
        return {
            "correct": bool(result.passed) and finished,
            "extracted": code,
            "status": result.status,
            "isolation": result.isolation,
        }
