"""tunelab.io's shared file helpers: resumable JSONL (a line cut by a kill) and the SQLite cache."""

from __future__ import annotations

import json
import sqlite3

from tunelab.io import JsonlAppender, SqliteCache, append_jsonl, read_jsonl_resumable


def test_resumable_jsonl_drops_and_truncates_a_cut_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"', encoding="utf-8")
    assert read_jsonl_resumable(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"a": 2}\n'
    append_jsonl(path, [{"a": "é"}], ensure_ascii=False)
    assert read_jsonl_resumable(path) == [{"a": 1}, {"a": 2}, {"a": "é"}]
    assert path.read_text(encoding="utf-8").endswith('{"a": "é"}\n')


def test_resumable_jsonl_missing_and_only_a_cut_line(tmp_path):
    assert read_jsonl_resumable(tmp_path / "none.jsonl") == []
    path = tmp_path / "cut.jsonl"
    path.write_text('{"a"', encoding="utf-8")
    assert read_jsonl_resumable(path) == []
    assert path.read_text(encoding="utf-8") == ""


def test_jsonl_appender_writes_each_batch(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    with JsonlAppender(path, sync=True) as f:
        f.write([{"i": 0}, {"i": 1}])
        assert path.read_text(encoding="utf-8") == '{"i": 0}\n{"i": 1}\n'  # flushed before the block ends
        f.write([{"i": "é"}])
    assert path.read_text(encoding="utf-8").splitlines()[-1] == json.dumps({"i": "é"})


def test_sqlite_cache_round_trip_and_existing_files(tmp_path):
    path = tmp_path / "c" / "cache.sqlite"
    cache = SqliteCache(path, "items")
    keys = [f"k{i}" for i in range(1200)]  # more than one lookup chunk
    cache.put_many({k: [k, "é"] for k in keys})
    assert cache.get_many(["k0", "missing", "k1199"]) == {"k0": ["k0", "é"], "k1199": ["k1199", "é"]}
    assert len(SqliteCache(path, "items").get_many(keys)) == 1200  # reopened: same table, kept
    with sqlite3.connect(path) as db:  # the stored format: JSON text, non-ASCII kept
        assert db.execute("SELECT value FROM items WHERE key='k0'").fetchone()[0] == '["k0", "é"]'
