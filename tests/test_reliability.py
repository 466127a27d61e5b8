"""Reliability drills: one writer per run folder, and writes that fail leave the previous file intact."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
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


def _tunelab(args: list[str], **kw) -> subprocess.Popen:
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunelab.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_kill_9_during_training_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    """``tunelab run`` killed with SIGKILL twice at different steps, resumed each time, ends with the
    weights (1e-5) and the per-item evaluation rows of a run never interrupted."""
    from safetensors.torch import load_file

    args = ["run", "recipes/tiny.yaml", "train.max_steps=16", "train.save_every=2", "eval.limit=8",
            "eval.max_new_tokens=8", "name=drill"]
    ref = _tunelab(args + ["--out", str(tmp_path / "ref")])
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]
    run_dir = tmp_path / "killed" / "drill"
    for kill_after in (4, 11):  # metrics rows written before the kill
        proc = _tunelab(args + ["--out", str(tmp_path / "killed"), "--resume"])
        metrics = run_dir / "metrics.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= kill_after:
                break
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no cleanup, the lock file stays behind
        proc.wait()
        assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    done = _tunelab(args + ["--out", str(tmp_path / "killed"), "--resume"])
    assert done.wait(timeout=300) == 0, done.stderr.read()[-2000:]
    ref_dir = tmp_path / "ref" / "drill"
    a = load_file(ref_dir / "final" / "adapter_model.safetensors")
    b = load_file(run_dir / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() <= 1e-5 for k in a)
    rows = lambda d: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                      for line in (d / "eval" / "tuned" / "arith.jsonl").read_text().splitlines()]
    assert rows(ref_dir) == rows(run_dir)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)), "a step was logged twice"


class _Counting:
    """A generator wrapper that counts prompts and can be 'killed' on its k-th call."""

    def __init__(self, inner, die_on_call: int | None = None) -> None:
        self.inner, self.die_on_call, self.calls, self.prompts = inner, die_on_call, 0, 0

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def generate(self, prompts, cfg):
        self.calls += 1
        if self.calls == self.die_on_call:
            raise KeyboardInterrupt("killed")
        self.prompts += len(prompts)
        return self.inner.generate(prompts, cfg)


def test_a_killed_evaluation_resumes_without_regenerating(tmp_path: Path) -> None:
    from tunelab.eval.harness import evaluate
    from tunelab.eval.tasks.base import get_task
    from tunelab.generate.hf import HFGenerator
    from tunelab.models.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    inner = HFGenerator(tiny_model(len(tok), seed=0), tok, batch_size=8, progress=False, precision="fp32")
    task = get_task("arith")
    kw = {"limit": 40, "seed": 0, "max_new_tokens": 6, "persist_every": 8}
    reference = evaluate(task, inner, out=tmp_path / "ref" / "arith.jsonl", **kw)
    out = tmp_path / "killed" / "arith.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate(task, _Counting(inner, die_on_call=3), out=out, **kw)  # dies after 16 of 40 items
    partial = out.with_name(".arith.jsonl.partial")
    assert len(partial.read_text().splitlines()) == 16 and not out.exists()
    partial.write_text(partial.read_text() + '{"id": "cut-by-the-ki')  # a line cut by kill -9
    resumed = _Counting(inner)
    result = evaluate(task, resumed, out=out, **kw)
    assert resumed.prompts == 24  # only the items not generated before the kill
    assert result.rows == reference.rows and out.read_text() == (tmp_path / "ref" / "arith.jsonl").read_text()
    assert not partial.exists()


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    import torch

    from tunelab.train import checkpoint

    weights = {"w": torch.randn(64, 64)}
    opt = torch.optim.AdamW([torch.nn.Parameter(weights["w"].clone())])
    checkpoint.save(tmp_path / "checkpoints", 1, weights, opt, {"method": {}})
    code = textwrap.dedent(f"""
        import resource, signal, sys, torch
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from tunelab.io import StorageError
        from tunelab.train import checkpoint
        weights = {{"w": torch.randn(256, 256)}}
        opt = torch.optim.AdamW([torch.nn.Parameter(weights["w"].clone())])
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
        try:
            checkpoint.save(Path({str(tmp_path / "checkpoints")!r}), 2, weights, opt, {{"method": {{}}}})
        except StorageError as e:
            print(e)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"could not write checkpoint {tmp_path / 'checkpoints' / 'step-2'}" in proc.stdout
    assert checkpoint.list_checkpoints(tmp_path / "checkpoints") == [1]
    assert checkpoint.verify(tmp_path / "checkpoints" / "step-1") is None
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


@pytest.mark.slow
def test_kill_9_during_tunelab_eval_then_rerun_loses_and_repeats_nothing(tmp_path: Path) -> None:
    args = ["eval", "tiny", "--tasks", "arith", "--limit", "240", "--max-new-tokens", "24", "--batch-size", "8"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "TUNELAB_EVAL_PERSIST_EVERY": "8"}

    def tunelab(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tunelab.cli", *args, "--out", str(out)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    ref = tunelab(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]
    out = tmp_path / "killed"
    partial = out / ".arith.jsonl.partial"
    proc = tunelab(out)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if partial.is_file() and len(partial.read_text().splitlines()) >= 64:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (out / "arith.jsonl").exists(), "the evaluation finished before it could be killed"
    saved = len(partial.read_text().splitlines())
    again = tunelab(out)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-2000:]
    rows = (out / "arith.jsonl").read_text().splitlines()
    assert rows == (tmp_path / "ref" / "arith.jsonl").read_text().splitlines()
    assert len(rows) == 240 and len({json.loads(r)["id"] for r in rows}) == 240 and 64 <= saved < 240
    assert not partial.exists()


@pytest.mark.slow
def test_kill_9_during_tunelab_sample_then_rerun_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """``tunelab sample`` killed with SIGKILL part-way (a line may be cut), rerun: the per-trajectory rows
    equal an uninterrupted run's, none duplicated, none missing."""
    args = ["sample", "calculator", "--model", "tiny", "--attempts", "2", "--limit", "60", "--temperature", "0",
            "--max-new-tokens", "24", "--max-live", "8"]

    def rows(path: Path) -> list[dict]:
        return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["id"])

    ref = _tunelab([*args, "--out", str(tmp_path / "ref.jsonl")])
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]
    out = tmp_path / "killed.jsonl"
    proc = _tunelab([*args, "--out", str(out)])
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.is_file() and out.read_text().count("\n") >= 24:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    saved = out.read_text().count("\n")
    assert 24 <= saved < 120, f"the sampling finished (or never started) before it could be killed: {saved} rows"
    out.write_text(out.read_text() + '{"id": "arith/0/59#1", "task_id": "ari')  # a line cut by kill -9
    again = _tunelab([*args, "--out", str(out)])
    assert again.wait(timeout=300) == 0, again.stderr.read()[-2000:]
    got, want = rows(out), rows(tmp_path / "ref.jsonl")
    assert len(got) == 120 and len({r["id"] for r in got}) == 120
    assert got == want
