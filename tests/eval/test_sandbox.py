"""Tests for tunelab.sandbox: hostile programs must be contained and reported as not passed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tunelab import sandbox
from tunelab.sandbox import SandboxResult, SandboxUnavailable, isolation_available, run_many, run_python

# Sandboxed runs share a pool of uids: one xdist worker runs them all (see Makefile --dist loadgroup).
pytestmark = pytest.mark.xdist_group("sandbox")


def test_sandbox_group_runs_on_one_worker(request: pytest.FixtureRequest) -> None:
    """Under ``--dist loadgroup`` the group suffix must reach the node id, or the grouping silently does
    nothing (pytest 9.2 with xdist 3.8 dropped it, and the fork-bomb drill then counted other tests' uids)."""
    if request.config.getoption("dist", "no") != "loadgroup" and not getattr(request.config.option, "loadgroup", 0):
        pytest.skip("not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@sandbox"), request.node.nodeid


def _why_no_bubblewrap() -> str:
    """The skip reason of a test that needs a working bubblewrap sandbox."""
    if shutil.which("bwrap") is None:
        return ("bubblewrap is not installed (`apt-get install bubblewrap`; `make install` installs it when run as "
                "root with apt)")
    return "bubblewrap is installed but cannot start a sandbox here (no user namespaces, or no permission)"


@pytest.fixture
def rlimits_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend bubblewrap is unavailable so runs take the rlimits-only path."""
    real = sandbox._plan_for
    monkeypatch.setattr(sandbox, "_plan_for", lambda kind: None if kind == "bwrap" else real(kind))
    monkeypatch.delenv("TUNELAB_ALLOW_UNSANDBOXED", raising=False)


_MODE_PLANS: dict[str, object] = {}


def _working_plan(mode: str) -> object:
    """The strongest working bubblewrap plan of ``mode`` here (cached), or None."""
    if mode not in _MODE_PLANS:
        plans = [sandbox._Plan(mode, True)] if os.geteuid() == 0 else []
        plans += [sandbox._Plan(mode, False)] if mode == "userns" else []
        ok = isolation_available() == "bubblewrap"
        _MODE_PLANS[mode] = next((p for p in plans if ok and sandbox._probe(p)), None)
    return _MODE_PLANS[mode]


@pytest.fixture(params=["root-drop", "userns"])
def bwrap_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test under each bubblewrap plan that works here."""
    plan = _working_plan(request.param)
    if plan is None:
        reason = _why_no_bubblewrap() if isolation_available() != "bubblewrap" else "unavailable here"
        pytest.skip(f"bubblewrap plan {request.param!r}: {reason}")
    real = sandbox._plan_for
    monkeypatch.setattr(sandbox, "_plan_for", lambda kind: plan if kind == "bwrap" else real(kind))
    return request.param


def _src(code: str) -> str:
    return textwrap.dedent(code).lstrip()


def _host_processes(uid_range: range, arg: str) -> list[int]:
    """Live host pids (zombies excluded) running as a uid in ``uid_range`` or with ``arg`` in their command line."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
            cmdline = (entry / "cmdline").read_bytes().split(b"\0") if status else []
        except OSError:
            continue
        uid = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Uid:")), -1)
        if "\nState:\tZ" in status:  # a zombie runs nothing: it waits to be reaped by its parent
            continue
        if uid in uid_range or arg.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


# ---------------------------------------------------------------- positive behaviour (any isolation)


@pytest.mark.parametrize("mode", ["default", "rlimits"])
def test_correct_program_passes(mode: str, request: pytest.FixtureRequest) -> None:
    if mode == "rlimits":
        request.getfixturevalue("rlimits_only")
    elif isolation_available() != "bubblewrap":
        pytest.skip(_why_no_bubblewrap())
    r = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n",
                   allow_unsandboxed=True)  # fmt: skip
    assert isinstance(r, SandboxResult)
    assert r.passed and r.status == "passed" and r.returncode == 0
    assert r.stdout == "ok\n" and not r.flaky and r.duration_s > 0
    assert r.isolation == ("rlimits-only" if mode == "rlimits" else "bubblewrap")


@pytest.mark.parametrize("mode", ["default", "rlimits"])
def test_assertion_error_fails_with_traceback(mode: str, request: pytest.FixtureRequest) -> None:
    if mode == "rlimits":
        request.getfixturevalue("rlimits_only")
    elif isolation_available() != "bubblewrap":
        pytest.skip(_why_no_bubblewrap())
    r = run_python("def f():\n    return 1\n\nassert f() == 2, 'wrong answer'\n", allow_unsandboxed=True)
    assert not r.passed and r.status == "failed" and r.returncode == 1
    assert "Traceback" in r.stderr and "AssertionError: wrong answer" in r.stderr


def test_unavailable_without_opt_in(rlimits_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_python("print(1)")
    monkeypatch.setenv("TUNELAB_ALLOW_UNSANDBOXED", "1")
    r = run_python("print(1)")
    assert r.passed and r.isolation == "rlimits-only"


def test_environment_is_minimal_and_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/nonexistent/leak")
    monkeypatch.setenv("TUNELAB_SECRET_TOKEN", "s3cret")
    prog = "import os, sys\nprint(hash('tunelab'), sorted(os.environ), sys.flags.no_user_site, sys.path)\n"
    a = run_python(prog, allow_unsandboxed=True)
    b = run_python(prog, allow_unsandboxed=True)
    assert a.passed and a.stdout == b.stdout
    assert (
        "s3cret" not in a.stdout and "TUNELAB_SECRET_TOKEN" not in a.stdout and "/nonexistent" not in a.stdout
    )
    assert "PYTHONHASHSEED" in a.stdout


def test_infinite_loop_times_out_quickly(rlimits_only: None) -> None:
    start = time.monotonic()
    r = run_python("while True:\n    pass\n", timeout=1.0, retry_timeouts=False, allow_unsandboxed=True)
    assert r.status == "timeout" and not r.passed and r.returncode is None
    assert time.monotonic() - start < 4


def test_memory_hog_gets_memory_error(rlimits_only: None) -> None:
    r = run_python("x = bytearray(10 * 1024**3)\n", memory_mb=512, allow_unsandboxed=True)
    assert r.status == "failed" and "MemoryError" in r.stderr


def test_output_is_truncated_and_file_size_limited() -> None:
    r = run_python("print('x' * 100_000)\nprint('END')\n", allow_unsandboxed=True)
    assert r.passed and len(r.stdout) < 10_500 and "truncated" in r.stdout and r.stdout.endswith("END\n")
    flood = run_python("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n", max_file_mb=1,
                       timeout=5, retry_timeouts=False, allow_unsandboxed=True)  # fmt: skip
    assert flood.status == "failed" and flood.duration_s < 5


def test_timeout_retry_marks_flaky(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = iter(["timeout", "passed"])
    calls = []

    def fake_run_once(source: str, limits: object, plan: object) -> SandboxResult:
        calls.append(source)
        status = next(outcomes)
        return SandboxResult(status, 0 if status == "passed" else None, "", "", 0.1, "bubblewrap")

    monkeypatch.setattr(sandbox, "_run_once", fake_run_once)
    monkeypatch.setattr(sandbox, "_select_plan", lambda allow: sandbox._Plan("userns", False))
    r = run_python("x")
    assert r.passed and r.flaky and len(calls) == 2
    outcomes = iter(["timeout"])
    assert run_python("x", retry_timeouts=False).status == "timeout" and len(calls) == 3


def test_rlimits_only_fork_limit(rlimits_only: None) -> None:
    if not sandbox.isolation_details(allow_unsandboxed=True)["nproc_enforced"]:
        pytest.skip("rlimits-only runs as root here: the kernel does not enforce RLIMIT_NPROC for root")
    prog = _src("""
        import os, time
        n = 0
        try:
            for _ in range(50):
                if os.fork() == 0:
                    time.sleep(3)
                    os._exit(0)
                n += 1
        except OSError:
            print("limit", n)
        """)
    r = run_python(prog, max_procs=8, timeout=2, retry_timeouts=False, allow_unsandboxed=True)
    assert "limit" in r.stdout and int(r.stdout.split()[1]) < 8


def test_sandbox_failure_is_reported_as_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if isolation_available() != "bubblewrap":
        pytest.skip(_why_no_bubblewrap())
    monkeypatch.setattr(sandbox, "_bind_args", lambda: [])  # no /usr, no Python: nothing can start
    r = run_python("print('never')\n")
    assert r.status == "error" and not r.passed and "never" not in r.stdout


def test_run_many_keeps_order() -> None:
    sources = [f"print({i})\nassert {i} != 2\n" for i in range(4)]
    results = run_many(sources, workers=2, allow_unsandboxed=True)
    assert [r.stdout.strip() for r in results] == ["0", "1", "2", "3"]
    assert [r.passed for r in results] == [True, True, False, True]
    assert run_many([]) == []


# ---------------------------------------------------------------- hostile programs under bubblewrap


def test_reports_isolation_details(bwrap_mode: str) -> None:
    d = sandbox.isolation_details()
    assert d["isolation"] == "bubblewrap" and d["network"] == "none" and d["unprivileged_uid"]
    assert d["mode"] == bwrap_mode
    r = run_python("import os\nprint(os.getuid(), open('/proc/self/status').read())\n")
    uid = int(r.stdout.split()[0])
    cap_eff = next(ln for ln in r.stdout.splitlines() if ln.startswith("CapEff:"))
    assert r.passed and uid != 0 and cap_eff.split()[1].strip("0") == ""
    assert "NoNewPrivs:\t1" in r.stdout


def test_fork_bomb_is_contained(bwrap_mode: str) -> None:
    enforced = sandbox.isolation_details()["nproc_enforced"]
    tag = f"59.{uuid.uuid4().int % 10**9}"  # a unique `sleep` argument to find leftovers by
    if enforced:  # a real bomb: every process forks forever, the NPROC limit stops it at 8
        bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    else:  # the kernel would not stop a real bomb (uid 0 outside); a bounded one tests the kill
        bomb = _src(f"""
            import os, time
            for _ in range(40):
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", "{tag}"])
            time.sleep(60)
            """)
    start = time.monotonic()
    r = run_python(bomb, timeout=2.0, max_procs=8, retry_timeouts=False)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - start < 6
    time.sleep(0.3)
    pool = range(sandbox._UID_BASE, sandbox._UID_BASE + sandbox._UID_COUNT)
    deadline = time.monotonic() + 5  # SIGKILLed processes can take a moment to be reaped
    while _host_processes(pool, tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _host_processes(pool, tag) == []
    if enforced:
        counted = run_python(
            "import os, time\nn = 0\ntry:\n    for _ in range(50):\n        if os.fork() == 0:\n"
            "            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError:\n"
            "    print('limit', n)\n", max_procs=8, timeout=3, retry_timeouts=False)  # fmt: skip
        assert "limit" in counted.stdout and int(counted.stdout.split()[1]) < 8


def test_memory_hog_under_bwrap(bwrap_mode: str) -> None:
    r = run_python("x = [0] * (10 * 1024**3 // 8)\n", memory_mb=512)
    assert r.status == "failed" and "MemoryError" in r.stderr


def test_writes_outside_workdir_do_not_reach_host(bwrap_mode: str) -> None:
    tag = uuid.uuid4().hex
    targets = [f"/etc/tunelab_pwned_{tag}", f"/root/pwned_{tag}", f"/usr/tunelab_pwned_{tag}"]
    host_tmp = f"/tmp/tunelab_pwned_{tag}"
    prog = _src(f"""
        import json
        ok = []
        for path in {targets + [host_tmp]!r}:
            try:
                with open(path, "w") as fh:
                    fh.write("pwned")
                ok.append(path)
            except OSError:
                pass
        with open("inside.txt", "w") as fh:
            fh.write("fine")
        print(json.dumps(ok))
        assert set(ok) >= set({targets!r}), "could not escape"
        """)
    try:
        r = run_python(prog)
        assert not r.passed and "could not escape" in r.stderr
        assert json.loads(r.stdout) == [host_tmp]  # the sandbox's own /tmp only
        for path in [*targets, host_tmp]:
            assert not os.path.exists(path), path
    finally:
        for path in [*targets, host_tmp]:
            if os.path.exists(path):
                os.remove(path)


def test_read_only_remount_attack_fails(bwrap_mode: str) -> None:
    tag = uuid.uuid4().hex
    prog = _src(f"""
        import ctypes, json, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        MS_REMOUNT, MS_BIND = 32, 4096
        out = {{}}
        for target in ("/usr", "/etc/passwd", "/"):
            rc = libc.mount(None, target.encode(), None, MS_REMOUNT | MS_BIND, None)
            out[target] = [rc, ctypes.get_errno()]
        cmd = subprocess.run(["mount", "-o", "remount,rw", "/usr"], capture_output=True, text=True)
        out["mount_cmd"] = cmd.returncode
        out["umount"] = libc.umount2(b"/usr", 2)
        try:
            open("/usr/tunelab_pwned_{tag}", "w").write("x")
            out["write"] = "ok"
        except OSError as exc:
            out["write"] = repr(exc)
        print(json.dumps(out))
        assert out["write"] == "ok", "still read-only"
        """)
    r = run_python(prog)
    assert not r.passed, r.stdout
    out = json.loads(r.stdout)
    for target in ("/usr", "/etc/passwd", "/"):
        assert out[target][0] == -1 and out[target][1] in (errno.EPERM, errno.EACCES), out
    assert out["mount_cmd"] != 0 and out["umount"] == -1 and "Read-only" in out["write"]
    assert not os.path.exists(f"/usr/tunelab_pwned_{tag}")


def test_network_is_unreachable(bwrap_mode: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    prog = _src(f"""
        import socket
        reached = []
        for addr in (("127.0.0.1", {port}), ("8.8.8.8", 53)):
            try:
                socket.create_connection(addr, timeout=1.5).close()
                reached.append(addr)
            except OSError as exc:
                print(addr, repr(exc))
        assert reached, "no network"
        """)
    try:
        r = run_python(prog, timeout=8)
        assert r.status == "failed" and "no network" in r.stderr
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_cannot_delete_host_files(bwrap_mode: str, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    prog = _src(f"""
        import os, shutil
        try:
            os.remove({str(precious / "data.txt")!r})
        except OSError as exc:
            print("remove:", repr(exc))
        shutil.rmtree({str(precious)!r})
        """)
    r = run_python(prog)
    assert not r.passed and "FileNotFoundError" in r.stderr
    assert (precious / "data.txt").read_text() == "keep me"


def test_workdir_is_fresh_and_removed(bwrap_mode: str) -> None:
    prog = "import os\nprint(sorted(os.listdir('.')), os.getcwd())\nopen('leftover', 'w').write('x')\n"
    first, second = run_python(prog), run_python(prog)
    assert first.stdout == second.stdout == "['main.py'] /sandbox\n"
