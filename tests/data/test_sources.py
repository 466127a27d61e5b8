"""Sources: every row format, field mapping, bad rows, path resolution, splits, real data."""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tunelab.config import SourceConfig
from tunelab.data.sources import (
    DataError,
    check_source,
    load_mt_bench,
    load_source,
    read_rows,
    resolve_data_path,
    to_sample,
)
from tunelab.data.tasks.base import TASK_FAMILIES, TaskFamily

REAL_DATA = Path(os.environ.get("TUNELAB_DATA_DIR", "/work/shared/data"))

if "fake_src_family" not in TASK_FAMILIES:

    @TASK_FAMILIES.register("fake_src_family")
    class FakeFamily(TaskFamily):
        """Adds two small numbers (test only)."""

        def make_item(self, rng: random.Random, ood: bool) -> tuple[str, str, dict[str, Any]]:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            return f"{a}+{b}=?", str(a + b), {"answer": str(a + b)}

        def verify(self, meta: dict[str, Any], completion: str) -> dict[str, Any]:
            return {"correct": completion.strip() == meta["answer"], "extracted": completion.strip()}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


# ----------------------------------------------------------------------------- formats


def test_messages_format_keeps_turns_and_train_flags() -> None:
    row = {"messages": [*chat(("system", "S"), ("user", "hi")), {"role": "assistant", "content": "yo", "loss": False}]}
    s = to_sample(row, "messages", {}, "f:1")
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant"]
    assert s.messages[2]["train"] is False and s.response() == "yo"


def test_alpaca_with_input_system_and_history() -> None:
    row = {"instruction": "Sum", "input": "1 2", "output": "3", "system": "Be brief", "history": [["q0", "a0"]]}
    s = to_sample(row, "alpaca", {}, "f:1")
    assert [(m["role"], m["content"]) for m in s.messages] == [
        ("system", "Be brief"), ("user", "q0"), ("assistant", "a0"), ("user", "Sum\n\n1 2"), ("assistant", "3"),
    ]


def test_alpaca_field_mapping_reads_other_columns() -> None:
    row = {"question": "What is 2+2?", "answer": "4"}
    s = to_sample(row, "alpaca", {"instruction": "question", "output": "answer"}, "f:1")
    assert s.messages[0]["content"] == "What is 2+2?" and s.response() == "4"


def test_sharegpt_multi_turn_and_tool_roles() -> None:
    conv = [
        {"from": "system", "value": "sys"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "user", "value": "q2"}, {"from": "function_call", "value": "{}"},
        {"from": "observation", "value": "42"}, {"from": "chatgpt", "value": "a2"},
    ]
    s = to_sample({"conversations": conv, "tools": "[]"}, "sharegpt", {}, "f:1")
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant", "tool", "assistant"]
    assert s.response() == "a2" and s.meta["tools"] == "[]"


def test_prompt_completion_and_dolly() -> None:
    s = to_sample({"prompt": "p", "completion": "c"}, "prompt_completion", {}, "f:1")
    assert (s.messages[0]["content"], s.response()) == ("p", "c")
    d = to_sample({"instruction": "i", "context": "ctx", "response": "r", "category": "qa"}, "dolly", {}, "f:1")
    assert d.messages[0]["content"] == "i\n\nctx" and d.response() == "r" and d.meta["category"] == "qa"


def test_gsm8k_keeps_solution_and_parses_final_answer() -> None:
    row = {"question": "How many?", "answer": "2 + 3 = <<2+3=5>>5 and 1,000 more\n#### 1,005"}
    s = to_sample(row, "gsm8k", {}, "f:1")
    assert s.response() == row["answer"] and s.meta["answer"] == "1005"
    with pytest.raises(DataError, match="'answer'.*####"):
        to_sample({"question": "q", "answer": "no marker"}, "gsm8k", {}, "f:1")


def test_code_presets_keep_tests_in_meta() -> None:
    he = {"task_id": "HumanEval/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
          "test": "assert f() == 1", "entry_point": "f"}
    s = to_sample(he, "humaneval", {}, "f:1")
    assert s.response() == "    return 1\n" and s.meta["test"] == he["test"] and s.meta["entry_point"] == "f"
    mb = {"text": "Write f.", "code": "def f():\r\n\treturn 1", "task_id": 3, "test_list": ["assert f() == 1"],
          "test_setup_code": "", "challenge_test_list": []}
    m = to_sample(mb, "mbpp", {}, "f:1")
    assert "assert f() == 1" in m.messages[0]["content"] and m.response() == "def f():\n\treturn 1"
    assert m.meta["tests"] == ["assert f() == 1"]


@pytest.mark.parametrize(
    ("row", "expected_user"),
    [
        ({"messages": chat(("user", "u"), ("assistant", "a"))}, "u"),
        ({"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]}, "u"),
        ({"conversations": chat(("user", "u"), ("assistant", "a"))}, "u"),
        ({"instruction": "u", "input": "", "output": "a"}, "u"),
        ({"prompt": "u", "completion": "a"}, "u"),
        ({"question": "u", "answer": "a\n#### 1"}, "u"),
        ({"instruction": "u", "response": "a"}, "u"),
    ],
)
def test_auto_detects_format(row: dict[str, Any], expected_user: str) -> None:
    s = to_sample(row, "auto", {}, "f:1")
    assert s.messages[0]["content"] == expected_user and s.response().startswith("a")


def test_auto_unknown_keys_names_formats() -> None:
    with pytest.raises(DataError, match=r"f:3: cannot detect.*alpaca"):
        to_sample({"foo": 1}, "auto", {}, "f:3")


# ----------------------------------------------------------------------------- bad rows


def load_file(path: Path, fmt: str = "auto", on_error: str = "fail", **kw: Any) -> Any:
    return load_source(SourceConfig(name="src", path=str(path), format=fmt, on_error=on_error, **kw), None, 0, 0)


GOOD_ROWS: dict[str, dict[str, Any]] = {
    "messages": {"messages": chat(("user", "u"), ("assistant", "a"))},
    "auto": {"messages": chat(("user", "u"), ("assistant", "a"))},
    "alpaca": {"instruction": "i", "output": "o"},
    "sharegpt": {"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]},
}


@pytest.mark.parametrize(
    ("bad", "fmt", "pattern"),
    [
        ("{not json", "auto", r"invalid JSON"),
        ({"instruction": "i"}, "alpaca", r"field 'output': missing"),
        ({"messages": chat(("user", "u"), ("bot", "b"))}, "messages",
         r"field 'messages\[1\]\.role': unknown role 'bot' \(valid: system, user, assistant, tool\)"),
        ({"messages": []}, "messages", r"field 'messages': empty conversation"),
        ({"messages": chat(("user", "u"))}, "messages", r"field 'messages': no assistant turn"),
        ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": 5}]}, "messages",
         r"field 'messages\[1\]\.content': expected a string"),
        ({"conversations": [{"from": "human", "value": "u"}, {"from": "bot", "value": "b"}]}, "sharegpt",
         r"field 'conversations\[1\]\.from': unknown role 'bot'"),
        ({"instruction": ["list"], "output": "o"}, "alpaca", r"field 'instruction': expected a string"),
    ],
)
def test_bad_row_fails_naming_file_line_and_field(tmp_path: Path, bad: Any, fmt: str, pattern: str) -> None:
    good = GOOD_ROWS[fmt]
    path = write_jsonl(tmp_path / "x.jsonl", [good, bad, good])
    with pytest.raises(DataError, match=rf"x\.jsonl:2: .*{pattern}"):
        load_file(path, fmt)


def test_field_mapping_error_names_the_row_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"question": "q"}])
    with pytest.raises(DataError, match=r"x\.jsonl:1: field 'answer': missing"):
        load_file(path, "alpaca", fields={"instruction": "question", "output": "answer"})


def test_skip_mode_counts_and_keeps_first_errors(tmp_path: Path) -> None:
    good = {"instruction": "i", "output": "o"}
    rows = [good, "{oops", {"instruction": "i"}, good, "", "[1, 2]", good]
    out = load_file(write_jsonl(tmp_path / "x.jsonl", rows), "alpaca", on_error="skip")
    assert len(out.train) == 3 and out.removed == {"malformed": 3}
    assert out.errors[0].startswith(f"{tmp_path / 'x.jsonl'}:2: invalid JSON")
    assert ":3: field 'output'" in out.errors[1] and ":6: expected a JSON object" in out.errors[2]


def test_json_rows_are_named_by_index(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"data": [{"prompt": "p", "completion": "c"}, {"prompt": "p"}]}))
    with pytest.raises(DataError, match=r"x\.json\[1\]: field 'completion': missing"):
        load_file(path)


# ----------------------------------------------------------------------------- files and paths


def test_read_rows_gzip_json_and_parquet(tmp_path: Path) -> None:
    rows = [{"prompt": str(i), "completion": "c"} for i in range(3)]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    with gzip.open(tmp_path / "b.json.gz", "wt") as f:
        json.dump(rows, f)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    assert [n for n, _ in read_rows(tmp_path / "a.jsonl.gz")] == [1, 2, 3]
    for name in ("a.jsonl.gz", "b.json.gz", "c.parquet"):
        assert [r["prompt"] for _, r in read_rows(tmp_path / name)] == ["0", "1", "2"]
    with pytest.raises(DataError, match="unsupported file type"):
        list(read_rows(tmp_path / "d.csv"))


def test_resolve_prefers_data_dir_then_recipe_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, recipe = tmp_path / "data", tmp_path / "recipe"
    for d in (data, recipe):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f.jsonl").write_text("")
    (recipe / "only_here.jsonl").write_text("")
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(data))
    assert resolve_data_path("sub/f.jsonl", str(recipe)) == data / "sub" / "f.jsonl"
    assert resolve_data_path("only_here.jsonl", str(recipe)) == recipe / "only_here.jsonl"
    assert resolve_data_path(str(recipe / "only_here.jsonl"), None) == recipe / "only_here.jsonl"
    with pytest.raises(DataError) as e:
        resolve_data_path("missing.jsonl", str(recipe))
    assert "missing.jsonl" in str(e.value) and str(data / "missing.jsonl") in str(e.value)
    assert str(recipe / "missing.jsonl") in str(e.value)
    monkeypatch.delenv("TUNELAB_DATA_DIR")
    with pytest.raises(DataError, match=r"TUNELAB_DATA_DIR is not set"):
        resolve_data_path("sub/nope.jsonl", str(recipe))


# ----------------------------------------------------------------------------- load_source


def qa_rows(n: int, with_id: bool = False) -> list[dict[str, Any]]:
    return [{**({"id": f"q{i}"} if with_id else {}), "prompt": f"p{i}", "completion": f"c{i}"} for i in range(n)]


def test_ids_source_and_duplicate_ids(tmp_path: Path) -> None:
    rows = qa_rows(3, with_id=True) + [{"id": "q0", "prompt": "again", "completion": "c"}]
    out = load_file(write_jsonl(tmp_path / "x.jsonl", rows))
    assert [s.meta["id"] for s in out.train] == ["q0", "q1", "q2", "q0#2"]
    assert {s.meta["source"] for s in out.train} == {"src"}
    plain = load_file(write_jsonl(tmp_path / "y.jsonl", qa_rows(2)))
    assert [s.meta["id"] for s in plain.train] == ["src-1", "src-2"]


def test_heldout_split_seeded_disjoint_and_capped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", qa_rows(100))
    src = SourceConfig(name="s", path=str(path), system="Be nice", max_examples=50)
    a, b = load_source(src, None, 0, 10), load_source(src, None, 0, 10)
    c = load_source(src, None, 1, 10)
    ids = lambda xs: [s.meta["id"] for s in xs]  # noqa: E731
    assert len(a.heldout) == 10 and len(a.train) == 50
    assert not set(ids(a.train)) & set(ids(a.heldout))
    assert ids(a.heldout) == ids(b.heldout) and ids(a.train) == ids(b.train) and ids(a.heldout) != ids(c.heldout)
    assert all(s.messages[0] == {"role": "system", "content": "Be nice"} for s in a.train + a.heldout)
    small = load_source(SourceConfig(name="s", path=str(write_jsonl(tmp_path / "y.jsonl", qa_rows(4)))), None, 0, 32)
    assert len(small.heldout) == 2 and len(small.train) == 2  # at most half held out


def test_task_source_uses_family_splits() -> None:
    src = SourceConfig(name="adds", task="fake_src_family", count=20)
    out = load_source(src, None, 0, 5)
    assert len(out.train) == 20 and len(out.heldout) == 5
    assert {s.meta["source"] for s in out.train + out.heldout} == {"adds"}
    assert {s.meta["split"] for s in out.heldout} == {"test"}
    assert not {s.meta["id"] for s in out.train} & {s.meta["id"] for s in out.heldout}


def test_check_source_reports_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNELAB_DATA_DIR", raising=False)
    assert check_source(SourceConfig(name="ok", task="fake_src_family"), None) == []
    both = check_source(SourceConfig(name="b", task="fake_src_family", path="x.jsonl"), str(tmp_path))
    assert any("exactly one of task, path, hub" in p for p in both)
    assert any("not found" in p and str(tmp_path / "x.jsonl") in p for p in both)
    unknown = check_source(SourceConfig(name="u", task="no_such_family", format="csvish"), None)
    assert any("unknown task family 'no_such_family'" in p and "fake_src_family" in p for p in unknown)
    assert any("unknown format 'csvish'" in p and "alpaca" in p for p in unknown)
    assert check_source(SourceConfig(name="none"), None)


def test_load_mt_bench(tmp_path: Path) -> None:
    rows = [{"question_id": 81, "category": "writing", "turns": ["a", "b"]},
            {"question_id": 111, "category": "math", "turns": ["x", "y"], "reference": ["r1", "r2"]}]
    out = load_mt_bench(write_jsonl(tmp_path / "question.jsonl", rows))
    assert out[0] == {"id": "81", "category": "writing", "turns": ["a", "b"], "reference": None}
    assert out[1]["reference"] == ["r1", "r2"]


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (REAL_DATA / "gsm8k" / "train.jsonl").is_file(), reason="shared data folder absent")
def test_real_gsm8k_and_mbpp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(REAL_DATA))
    gsm = load_source(SourceConfig(name="gsm8k", path="gsm8k/train.jsonl", format="gsm8k"), None, 0, 0)
    assert len(gsm.train) == 7473 and gsm.removed == {}
    first = gsm.train[0]
    assert first.meta["answer"] == "72" and first.response().endswith("#### 72")
    mbpp = load_source(SourceConfig(name="mbpp", path="mbpp/mbpp.jsonl", format="mbpp"), None, 0, 0)
    assert len(mbpp.train) == 974 and mbpp.train[0].meta["id"] == "1" and mbpp.train[0].meta["tests"]
    if (REAL_DATA / "mt_bench" / "question.jsonl").is_file():
        assert len(load_mt_bench("mt_bench/question.jsonl")) == 80
