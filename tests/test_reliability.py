"""Reliability drills: one writer per run folder, and writes that fail leave the previous file intact."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.io import FolderLock, FolderLocked

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path, capsys) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = tmp_path / "runs" / "tiny-locked"
        run_dir.mkdir(parents=True)
        (run_dir / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                   "started": "2026-12-02T10:00:00+0000"}))
        with pytest.raises(FolderLocked, match=f"in use by pid {holder.pid} on {socket.gethostname()}"):
            with FolderLock(run_dir):
                pass
        code = main(["run", "recipes/tiny.yaml", "--out", str(tmp_path / "runs"), "name=tiny-locked",
                     "train.max_steps=1", "eval.tasks=[]"])
        err = capsys.readouterr().err
        assert code == 2 and f"pid {holder.pid}" in err and "since 2026-12-02T10:00:00" in err
        assert "Traceback" not in err and not (run_dir / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "runs" / "tiny-stale"
    run_dir.mkdir(parents=True)
    pid = _dead_pid()
    (run_dir / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "x"}))
    assert main(["run", "recipes/tiny.yaml", "--out", str(tmp_path / "runs"), "name=tiny-stale",
                 "train.max_steps=1", "eval.tasks=[]"]) == 0
    assert f"taking over a stale lock on {run_dir} (pid {pid} is gone)" in capsys.readouterr().out
    assert (run_dir / "results.json").is_file() and not (run_dir / ".lock").exists()


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text('{"previous": true}')
    # a file-size limit stands in for a full disk: the write fails part-way (EFBIG)
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from tunelab.io import StorageError, write_json
        try:
            write_json({str(target)!r}, {{"rows": ["x" * 100] * 1000}})
        except StorageError as e:
            print(e)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"could not write {target}" in proc.stdout and "too large" in proc.stdout.lower()
    assert target.read_text() == '{"previous": true}'
    assert not list(tmp_path.glob("*.tmp"))
