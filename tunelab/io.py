"""Reading and writing the project's files: one JSONL reader with ``file:line`` errors, atomic writers.

Every layer reads JSONL through :func:`read_jsonl` (strict: the first bad line is an error naming
the file and line) or :func:`iter_jsonl` (lenient: a bad line is yielded as its error, for sources
whose recipe says ``on_error: skip``), and writes results with :func:`write_json` /
:func:`write_jsonl` (a temporary file renamed over the target, so a reader never sees half a file). Append-only
files that a kill may cut are read back with :func:`read_jsonl_resumable` and written with
:class:`JsonlAppender`; :class:`SqliteCache` is the one on-disk key -> value cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class DataError(ValueError):
    """A data problem; the message names the file, the row and the field."""


def open_text(path: Path) -> IO[str]:
    """A UTF-8 text handle; ``.gz`` files are decompressed on the fly."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def checked_object(where: str, record: Any) -> dict | DataError:
    """``record`` if it is a JSON object, else the error naming ``where``."""
    if isinstance(record, dict):
        return record
    return DataError(f"{where}: expected a JSON object, got {type(record).__name__}")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict | DataError]]:
    """``(line number, object or its error)`` for every non-blank line (1-based lines).

    Raises:
        DataError: The file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, DataError(f"{path}:{line_no}: invalid JSON: {e.msg} (column {e.colno})")
                continue
            yield line_no, checked_object(f"{path}:{line_no}", record)


def read_jsonl(path: str | Path, *, with_where: bool = False) -> list[Any]:
    """Every object of a JSONL file (``.gz`` allowed); the first bad line raises.

    Args:
        path: The file.
        with_where: Return ``(\"file:line\", row)`` pairs, for errors found later about a row.

    Raises:
        DataError: Naming the file and line of the first line that is not a JSON object.
    """
    rows = []
    for line_no, row in iter_jsonl(path):
        if isinstance(row, DataError):
            raise row
        rows.append((f"{path}:{line_no}", row) if with_where else row)
    return rows


def read_jsonl_resumable(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an append-only JSONL file that a killed writer may have left; ``[]`` if it is missing.

    A last line without its newline was cut by a kill: it is dropped, and cut from the file too, so
    the next append starts on a fresh line. Every other line must be a JSON object (see :func:`read_jsonl`).
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    keep = text[: text.rfind("\n") + 1]
    if keep != text:
        path.write_text(keep, encoding="utf-8")
    return read_jsonl(path) if keep else []


class JsonlAppender:
    """An open JSONL file that rows are appended to, each :meth:`write` flushed (and fsynced with
    ``sync``): with :func:`read_jsonl_resumable`, a killed run loses at most the rows being written.

    Args:
        path: The file (its folder is created).
        ensure_ascii: Passed to ``json.dumps`` (``False`` keeps non-ASCII text as it is).
        sync: ``os.fsync`` after each write, not only flush.

    Use as a context manager.
    """

    def __init__(self, path: str | Path, *, ensure_ascii: bool = True, sync: bool = False) -> None:
        self.path = Path(path)
        self.ensure_ascii, self.sync = ensure_ascii, sync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = None

    def __enter__(self) -> JsonlAppender:
        self._f = self.path.open("a", encoding="utf-8")
        return self

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows``, one JSON object a line, then flush (and fsync with ``sync``)."""
        assert self._f is not None, "JsonlAppender.write outside its with block"
        self._f.write("".join(json.dumps(r, ensure_ascii=self.ensure_ascii) + "\n" for r in rows))
        self._f.flush()
        if self.sync:
            os.fsync(self._f.fileno())

    def __exit__(self, *exc: Any) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def append_jsonl(path: str | Path, rows: list[dict[str, Any]], *, ensure_ascii: bool = True) -> None:
    """Append ``rows`` to ``path`` and flush (see :class:`JsonlAppender`)."""
    with JsonlAppender(path, ensure_ascii=ensure_ascii) as f:
        f.write(rows)


def digest(tree: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-able tree (keys sorted; non-JSON values by ``str``): run names
    and cache keys."""
    return hashlib.sha1(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:length]


class StorageError(OSError):
    """A file could not be written (disk full, size limit, permissions); the message names it.
    The file it was replacing is left as it was."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _atomic_write(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to a temporary file beside ``path``, then rename it over ``path``; on
    failure the temporary file is removed, ``path`` keeps its previous content and StorageError names it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name of this process's own: two writers of one path (parallel runs filling a shared
    # cache) never rename each other's file away; the last rename wins, whole
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(e.errno, f"could not write {path}: {e.strerror or e}") from e


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary file + rename; see :class:`StorageError`)."""
    _atomic_write(Path(path), json.dumps(obj, indent=2, default=str))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically (temporary file + rename; see :class:`StorageError`)."""
    _atomic_write(Path(path), text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` atomically (temporary file + rename; see :class:`StorageError`)."""
    _atomic_write(Path(path), data)


def write_json_gz(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as compact gzip-compressed JSON, atomically and byte-for-byte reproducibly (keys
    sorted, no timestamp in the gzip header): the same object always gives the same file."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    _atomic_write(Path(path), gzip.compress(data, compresslevel=9, mtime=0))


def read_json_gz(path: str | Path) -> Any:
    """The object of a :func:`write_json_gz` file.

    Raises:
        DataError: Naming the file when it is not gzip-compressed JSON.
    """
    try:
        return json.loads(gzip.decompress(Path(path).read_bytes()))
    except (OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a gzip-compressed JSON file ({e})") from None


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically (temporary file + rename; see :class:`StorageError`)."""
    _atomic_write(Path(path), "".join(json.dumps(r, default=str) + "\n" for r in rows))


class FolderLocked(RuntimeError):
    """Another live process holds the folder's lock; the message names it (pid, host, start time)."""


class FolderLock:
    """An exclusive lock on a folder (``<folder>/.lock``), so two processes never write one run.

    The lock file records the holder's pid, host and start time. A lock left by a process that no
    longer exists on this host is stale: it is taken over, with a message. Use as a context manager.
    """

    def __init__(self, folder: str | Path, say: Any = print) -> None:
        self.path = Path(folder) / ".lock"
        self.say = say

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return True  # another machine's process: it cannot be checked, so it is respected
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            return True
        return True

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and self._alive(holder):
                    raise FolderLocked(
                        f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                        f"(since {holder.get('started')}); wait for it or stop it") from None
                self.say(f"[tunelab] taking over a stale lock on {self.path.parent} "
                         f"(pid {holder.get('pid') if holder else '?'} is gone)")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return self
        raise FolderLocked(f"{self.path.parent}: could not take the lock")

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def sqlite_db(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A connection to the SQLite file ``path`` (WAL journal, 60 s busy timeout) that commits on
    success, rolls back on error and is always closed: the item caches' one way in."""
    db = sqlite3.connect(path, timeout=60)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            yield db
    finally:
        db.close()


class SqliteCache:
    """A persistent ``key -> JSON value`` table in a SQLite file (safe across threads and processes):
    the one cache behind generation caching and the Evol-Instruct item cache.

    Values are stored as JSON text (``ensure_ascii=False``) in ``<table>(key TEXT PRIMARY KEY,
    value TEXT NOT NULL)``; every read and write opens its own :func:`sqlite_db` connection.

    Args:
        path: The database file (its folder is created).
        table: The table's name (each cache keeps the name its files were written with).
    """

    CHUNK = 500
    """Keys looked up per query (SQLite limits the number of parameters)."""

    def __init__(self, path: str | Path, table: str) -> None:
        if not table.isidentifier():
            raise ValueError(f"SqliteCache: table name must be an identifier, got {table!r}")
        self.path, self.table = Path(path), table
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite_db(self.path) as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """The cached values of ``keys`` (missing keys absent)."""
        found: dict[str, Any] = {}
        with sqlite_db(self.path) as db:
            for start in range(0, len(keys), self.CHUNK):
                chunk = keys[start : start + self.CHUNK]
                marks = ",".join("?" * len(chunk))
                for k, v in db.execute(f"SELECT key, value FROM {self.table} WHERE key IN ({marks})", chunk):
                    found[k] = json.loads(v)
        return found

    def put_many(self, entries: dict[str, Any]) -> None:
        """Store values (replacing those of the same keys; committed before returning)."""
        with sqlite_db(self.path) as db:
            db.executemany(f"INSERT OR REPLACE INTO {self.table} (key, value) VALUES (?, ?)",
                           [(k, json.dumps(v, ensure_ascii=False)) for k, v in entries.items()])
