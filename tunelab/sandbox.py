"""Run untrusted Python (model-written code plus its unit tests) in a contained subprocess.

Each sample runs in its own session/process group with a fresh temporary working directory
(deleted afterwards), resource limits (CPU, address space, process count, file size, no core dumps)
and a wall-clock timeout that SIGKILLs the whole group. Plans, strongest first (probed once; see
:func:`isolation_details`):

* ``root-drop`` (bubblewrap; we are root and may create namespaces): new mount/pid/net/ipc/uts
  namespaces, read-only binds of the system and the Python installation, the working directory
  bound writable at ``/sandbox``, size-capped tmpfs ``/tmp`` and ``/dev/shm``, ``/`` and ``/dev``
  remounted read-only. Every capability is dropped except CAP_SETUID/SETGID, which a small trusted
  launcher uses to switch to an unprivileged uid (one per concurrent run) before exec'ing the
  program: it holds no capabilities (``mount -o remount,rw`` fails) and RLIMIT_NPROC is enforced.
* ``userns`` (bubblewrap in an unprivileged user namespace, uid 65534 inside, all capabilities
  dropped). As root we start bwrap itself as a leased uid when that uid can reach the interpreter;
  otherwise the sandbox uid maps back to root, which the kernel exempts from RLIMIT_NPROC (the
  timeout and the pid namespace still end a fork bomb, but it may spin up many processes first).
* ``rlimits`` (no bubblewrap; only with ``allow_unsandboxed``): limits and the timeout only, no
  file-system or network isolation; as root, an unprivileged uid when it can run the interpreter.

The program runs as ``python -s -P main.py`` (``-I`` minus ``-E``) under an environment built from
scratch (PATH, LANG, PYTHONHASHSEED=0, HOME=cwd): ``-I`` would ignore PYTHONHASHSEED and make string
hashing, hence set order, differ from run to run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 10_000  # bytes of stdout/stderr kept (head and tail)
SANDBOX_DIR = "/sandbox"
NOBODY = 65534
_UID_BASE, _UID_COUNT = 61_000, 256  # unprivileged uids leased to concurrent runs when we are root
_SYSTEM_RO = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_RO = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
           "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/os-release")  # fmt: skip

# Trusted; runs inside the sandbox: set limits, drop to the uid, report on the status pipe, exec.
_LAUNCHER = """\
import os, resource as r, sys
uid, fd, mem, nproc, fsize, cpu = (int(v) for v in sys.argv[1:7])
for res, soft, hard in ((r.RLIMIT_AS, mem, mem), (r.RLIMIT_NPROC, nproc, nproc), (r.RLIMIT_CORE, 0, 0),
                        (r.RLIMIT_FSIZE, fsize, fsize), (r.RLIMIT_CPU, cpu, cpu + 1)):
    r.setrlimit(res, (soft, hard))
if uid >= 0:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
    if os.getresuid() != (uid,) * 3 or os.getresgid() != (uid,) * 3:
        os.write(fd, b"Euid drop failed"); os._exit(126)
os.write(fd, b"L")
os.set_inheritable(fd, False)
try:
    os.execv(sys.executable, [sys.executable, *sys.argv[7:]])
except OSError as exc:
    os.write(fd, ("E" + repr(exc)).encode()); os._exit(126)
"""


class SandboxUnavailable(RuntimeError):
    """Raised when bubblewrap is missing and running without it was not explicitly allowed."""


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run.

    Attributes:
        status: "passed" (exit 0), "failed" (non-zero exit or signal), "timeout" (killed at the
            wall-clock limit) or "error" (the sandbox itself could not start the program).
        returncode: Exit status; None after a timeout.
        stdout: Captured stdout, head and tail kept when longer than OUTPUT_LIMIT bytes.
        stderr: Captured stderr, truncated likewise.
        duration_s: Wall-clock seconds, sandbox start-up included.
        isolation: "bubblewrap" or "rlimits-only".
        flaky: True when the first run timed out and the rerun did not.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str
    flaky: bool = False

    @property
    def passed(self) -> bool:
        """Whether the program ran to completion with exit status 0."""
        return self.status == "passed"


@dataclass(frozen=True)
class _Limits:
    timeout: float
    memory_mb: int
    max_procs: int
    max_file_mb: int


@dataclass(frozen=True)
class _Plan:
    """``mode``: "root-drop", "userns" or "rlimits"; ``drop``: run as a leased unprivileged uid."""

    mode: str
    drop: bool

    @property
    def isolation(self) -> str:
        return "rlimits-only" if self.mode == "rlimits" else "bubblewrap"


_UID_LOCK = threading.Lock()
_FREE_UIDS = deque(range(_UID_BASE, _UID_BASE + _UID_COUNT))  # FIFO: killed processes have time to go


@contextlib.contextmanager
def _lease_uid(wanted: bool) -> Iterator[int]:
    """A distinct unprivileged uid per concurrent run, so runs never share an RLIMIT_NPROC budget.

    Yields -1 when not wanted, NOBODY when the pool is exhausted.
    """
    if not wanted:
        yield -1
        return
    with _UID_LOCK:
        uid = _FREE_UIDS.popleft() if _FREE_UIDS else NOBODY
    try:
        yield uid
    finally:
        if uid != NOBODY:
            with _UID_LOCK:
                _FREE_UIDS.append(uid)


_PLAN_LOCK = threading.Lock()
_PLANS: dict[str, _Plan | None] = {}


def _interpreter() -> tuple[str, str]:
    """Real paths of the base (non-venv) interpreter and of its installation prefix."""
    prefix = os.path.realpath(sys.base_prefix)
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        candidate = os.path.join(sys.base_prefix, "bin", name)
        if os.path.exists(candidate):
            return os.path.realpath(candidate), prefix
    return os.path.realpath(sys.executable), prefix


def _ro_bind_with_parents(path: str) -> list[str]:
    """Read-only bind of ``path``, its parents created world-traversable (bwrap would make them 0700)."""
    parents: list[str] = []
    parent = os.path.dirname(path)
    while parent not in ("/", ""):
        parents.insert(0, parent)
        parent = os.path.dirname(parent)
    return [a for p in parents for a in ("--perms", "0755", "--dir", p)] + ["--ro-bind", path, path]


def _bind_args() -> list[str]:
    """Read-only binds of the system directories (symlinks recreated) and of the Python installation."""
    args: list[str] = []
    for path in (*_SYSTEM_RO, *_ETC_RO):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    exe, prefix = _interpreter()
    bound = list(_SYSTEM_RO)
    for path in (prefix, os.path.dirname(exe)):
        if not any(path == b or path.startswith(b + "/") for b in bound):
            args += _ro_bind_with_parents(path)
            bound.append(path)
    return args


def _bwrap_args(mode: str, workdir: str, limits: _Limits) -> list[str]:
    """The ``bwrap`` command line up to the sandboxed command."""
    tmp_bytes, shm_bytes = max(16, 4 * limits.max_file_mb) << 20, max(1, limits.max_file_mb) << 20
    args = [shutil.which("bwrap") or "bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net",
            "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session"]  # fmt: skip
    if mode == "userns":
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL"]
    else:  # root-drop: the launcher needs these two only, and loses them at setuid
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args + _bind_args() + [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp",
        "--size", str(shm_bytes), "--perms", "1777", "--tmpfs", "/dev/shm",
        "--bind", workdir, SANDBOX_DIR, "--chdir", SANDBOX_DIR, "--remount-ro", "/", "--remount-ro", "/dev",
    ]  # fmt: skip


def _command(plan: _Plan, workdir: str, uid: int, fd: int, limits: _Limits) -> tuple[list[str], dict]:
    """Command line and environment of one run (the launcher drops to ``uid`` unless bwrap runs as it)."""
    exe, _ = _interpreter()
    flags = ["-s", "-P"] if sys.version_info >= (3, 11) else ["-s"]
    numbers = [-1 if plan.mode == "userns" else uid, fd, limits.memory_mb << 20, limits.max_procs,
               limits.max_file_mb << 20, math.ceil(limits.timeout) + 1]  # fmt: skip
    cmd = [exe, "-I", "-S", "-c", _LAUNCHER, *map(str, numbers), *flags, "main.py"]
    if plan.mode != "rlimits":
        cmd = _bwrap_args(plan.mode, workdir, limits) + cmd
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
           "HOME": workdir if plan.mode == "rlimits" else SANDBOX_DIR, "TMPDIR": "/tmp"}  # fmt: skip
    return cmd, env


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` s, then SIGKILL the process group (stragglers too); True if timed out.

    The leader stays an unreaped zombie (WNOWAIT) until the group is killed, so its pid, which is
    the group id we signal, cannot have been reused.
    """
    deadline, delay, timed_out = time.monotonic() + timeout, 0.001, False
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return timed_out


def _read_capped(path: str, limit: int = OUTPUT_LIMIT) -> str:
    """Text of a captured stream, keeping head and tail when it is longer than ``limit`` bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if size <= limit:
            return fh.read().decode("utf-8", "replace")
        head = fh.read(limit // 2)
        fh.seek(size - limit // 2)
        tail = fh.read()
    cut = f"\n...[{size - len(head) - len(tail)} bytes truncated]...\n"
    return head.decode("utf-8", "replace") + cut + tail.decode("utf-8", "replace")


def _read_marker(fd: int) -> bytes:
    """What the launcher wrote on the status pipe (every writer has exited by now)."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _remove_tree(path: str) -> None:
    """Delete a run directory; when not root, first make sandbox-made directories traversable."""
    if os.geteuid() != 0:
        for dirpath, dirnames, _ in os.walk(path):
            for sub in (os.path.join(dirpath, d) for d in dirnames):
                if not os.path.islink(sub):
                    with contextlib.suppress(OSError):
                        os.chmod(sub, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _execute(cmd: list[str], env: dict, cwd: str, root: str, uid: int, plan: _Plan, limits: _Limits,
             fds: tuple[int, int]) -> tuple[str, int | None, float]:  # fmt: skip
    """Run ``cmd`` in a new session, output to files in ``root``; return (status, returncode, seconds)."""
    read_fd, write_fd = fds
    as_uid = {"user": uid, "group": uid, "extra_groups": []} if plan.drop and plan.mode == "userns" else {}
    try:
        with open(os.path.join(root, "stdout"), "wb") as out, open(os.path.join(root, "stderr"), "wb") as err:
            start = time.monotonic()
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                                        start_new_session=True, pass_fds=(write_fd,), **as_uid)  # fmt: skip
            except OSError as exc:
                err.write(f"sandbox failed to start: {exc!r}\n".encode())
                return "error", None, time.monotonic() - start
            finally:
                os.close(write_fd)
            timed_out = _wait_or_kill(proc, limits.timeout)
            duration = time.monotonic() - start
        marker = _read_marker(read_fd)
    finally:
        os.close(read_fd)
    if b"E" in marker:
        with open(os.path.join(root, "stderr"), "ab") as err:
            err.write(b"\nsandbox launcher: " + marker.split(b"E", 1)[1] + b"\n")
    if timed_out:
        return "timeout", None, duration
    if marker != b"L":  # the program never started
        return "error", proc.returncode, duration
    return ("passed" if proc.returncode == 0 else "failed"), proc.returncode, duration


def _completion_footer(nonce: str) -> str:
    """The last statement of every program: prints a per-run nonce once everything before it ran."""
    return f"\nimport sys as _tunelab_sys\n_tunelab_sys.stdout.write('\\n{nonce}\\n')\n_tunelab_sys.stdout.flush()\n"


def _completed(stdout: str, nonce: str) -> tuple[bool, str]:
    """(whether the program printed its nonce last, stdout without what the footer printed)."""
    suffix = f"\n{nonce}\n"
    if stdout.endswith(suffix):
        return True, stdout[: -len(suffix)]
    return False, stdout


def _run_once(source: str, limits: _Limits, plan: _Plan) -> SandboxResult:
    """One run of ``source`` as ``main.py`` in a fresh directory that is removed afterwards.

    A program passes only if it exits 0 *and* reaches its end: a per-run nonce printed by a
    footer must be the last line of stdout, so code that exits early with status 0 (``sys.exit(0)``,
    ``os._exit(0)``, a patched ``exit``) before its tests ran fails. (A program that reads its own
    source could still forge the nonce; tests and candidate share one process.)
    """
    root = tempfile.mkdtemp(prefix="tunelab-sbx-")
    nonce = "tunelab-done-" + secrets.token_hex(16)
    try:
        with _lease_uid(plan.drop) as uid:
            work = os.path.join(root, "work")
            os.mkdir(work, 0o755)
            with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as fh:
                fh.write(source + _completion_footer(nonce))
            if uid >= 0:  # the run's uid may traverse root (not list it) and owns work
                os.chmod(root, 0o711)
                os.chown(work, uid, uid)
            fds = os.pipe()
            cmd, env = _command(plan, work, uid, fds[1], limits)
            status, rc, duration = _execute(cmd, env, work, root, uid, plan, limits, fds)
        stdout, stderr = (_read_capped(os.path.join(root, name)) for name in ("stdout", "stderr"))
        completed, stdout = _completed(stdout, nonce)
        if status == "passed" and not completed:
            status = "failed"
            stderr += "\nsandbox: the program exited with status 0 before reaching its end (an early exit)\n"
        return SandboxResult(status, rc, stdout, stderr, duration, plan.isolation)
    finally:
        _remove_tree(root)


def _probe(plan: _Plan) -> bool:
    """Whether ``plan`` runs a trivial program here, as a non-root uid where the plan promises one."""
    try:
        result = _run_once("import os\nprint(os.getuid())\n", _Limits(30.0, 1024, 64, 1), plan)
    except OSError as exc:  # e.g. chown refused
        log.debug("sandbox probe %s raised %r", plan, exc)
        return False
    ok = result.passed and (result.stdout.strip() != "0" or plan == _Plan("rlimits", False))
    if not ok:
        log.debug("sandbox probe %s: %s %s", plan, result.status, result.stderr[-500:])
    return ok


def _plan_for(kind: str) -> _Plan | None:
    """The strongest working plan of ``kind`` ("bwrap" or "rlimits"), probed once and cached."""
    with _PLAN_LOCK:
        if kind not in _PLANS:
            root = os.geteuid() == 0
            if kind == "bwrap":
                candidates = [_Plan("root-drop", True), _Plan("userns", True)] if root else []
                candidates = candidates + [_Plan("userns", False)] if shutil.which("bwrap") else []
            else:
                candidates = [_Plan("rlimits", True)] if root else []
                candidates.append(_Plan("rlimits", False))
            _PLANS[kind] = next((p for p in candidates if _probe(p)), None)
        return _PLANS[kind]


def isolation_available() -> str:
    """``"bubblewrap"`` when a bubblewrap sandbox works on this machine (probed once), else ``"none"``."""
    return "bubblewrap" if _plan_for("bwrap") is not None else "none"


def isolation_details(allow_unsandboxed: bool = False) -> dict:
    """What a run gets here, for provenance in evaluation reports.

    Args:
        allow_unsandboxed: Describe the rlimits-only fallback when bubblewrap does not work.

    Returns:
        ``{"isolation", "mode", "unprivileged_uid", "nproc_enforced", "network"}``.
    """
    plan = _plan_for("bwrap") or (_plan_for("rlimits") if allow_unsandboxed else None)
    if plan is None:
        return {"isolation": "none", "mode": None, "unprivileged_uid": False, "nproc_enforced": False,
                "network": "host"}  # fmt: skip
    real_uid_unprivileged = plan.drop or os.geteuid() != 0
    return {"isolation": plan.isolation, "mode": plan.mode,
            "unprivileged_uid": real_uid_unprivileged or plan.mode == "userns",
            "nproc_enforced": real_uid_unprivileged,
            "network": "host" if plan.mode == "rlimits" else "none"}  # fmt: skip


def _select_plan(allow_unsandboxed: bool) -> _Plan:
    """The bubblewrap plan; else rlimits-only when allowed (flag or env); else SandboxUnavailable."""
    plan = _plan_for("bwrap")
    if plan is not None:
        return plan
    env_ok = os.environ.get("TUNELAB_ALLOW_UNSANDBOXED", "").strip().lower() in {"1", "true", "yes", "on"}
    if not (allow_unsandboxed or env_ok):
        raise SandboxUnavailable(
            "No working bubblewrap sandbox for untrusted code on this machine. Install it (Debian/Ubuntu: "
            "`apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`), or accept resource limits "
            "only, without file-system or network isolation, by passing allow_unsandboxed=True or "
            "setting TUNELAB_ALLOW_UNSANDBOXED=1."
        )
    plan = _plan_for("rlimits")
    if plan is None:
        raise SandboxUnavailable("Even the rlimits-only runner failed to start Python here.")
    if not plan.drop and os.geteuid() == 0:
        log.warning("Running untrusted code as root without a sandbox (rlimits only).")
    return plan


def run_python(
    source: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    max_procs: int = 64,
    max_file_mb: int = 16,
    allow_unsandboxed: bool = False,
    retry_timeouts: bool = True,
) -> SandboxResult:
    """Run a Python program (e.g. a completion followed by its tests) in the sandbox.

    Args:
        source: Program text; it runs as ``main.py`` in the working directory.
        timeout: Wall-clock seconds before the process group is killed (CPU limit: this + 1 s).
        memory_mb: Address-space limit (RLIMIT_AS) per process.
        max_procs: RLIMIT_NPROC, processes of the sandbox uid (see the module docstring for when
            the kernel enforces it).
        max_file_mb: Largest file the program may write (RLIMIT_FSIZE; stdout/stderr included, so a
            program printing more is killed by SIGXFSZ).
        allow_unsandboxed: Fall back to rlimits-only when bubblewrap does not work (also enabled by
            the environment variable TUNELAB_ALLOW_UNSANDBOXED=1).
        retry_timeouts: Rerun once after a timeout; a rerun that ends otherwise is marked ``flaky``.

    Returns:
        The run's :class:`SandboxResult` (the rerun's, when there was one).

    Raises:
        SandboxUnavailable: No bubblewrap, and running without it was not allowed.
    """
    plan = _select_plan(allow_unsandboxed)
    limits = _Limits(float(timeout), int(memory_mb), int(max_procs), int(max_file_mb))
    result = _run_once(source, limits, plan)
    if result.status == "timeout" and retry_timeouts:
        result = _run_once(source, limits, plan)
        result.flaky = result.status != "timeout"
    return result


def run_many(sources: list[str], *, workers: int = 2, **kw) -> list[SandboxResult]:
    """Run several programs concurrently in a thread pool; results follow the order of ``sources``.

    Args:
        sources: Programs to run.
        workers: Concurrent sandboxes.
        **kw: Keyword arguments of :func:`run_python`.
    """
    if not sources:
        return []
    _select_plan(kw.get("allow_unsandboxed", False))  # probe (or raise) once, before the threads
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda src: run_python(src, **kw), sources))
