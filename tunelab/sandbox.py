"""Run untrusted Python (model-written code plus its unit tests) in a contained subprocess.

Every sample runs in its own process group with a fresh temporary working directory (deleted
afterwards), resource limits (CPU, address space, process count, file size, no core dumps) and a
wall-clock timeout that SIGKILLs the whole group.

Isolation, strongest first (see :func:`isolation_details`):

* ``bubblewrap``, mode ``root-drop`` (we are root and may create a mount namespace): ``bwrap`` builds
  new mount/pid/net/ipc/uts namespaces with read-only binds of the system and of the Python
  installation, a writable bind of the working directory at ``/sandbox`` and size-capped tmpfs at
  ``/tmp`` and ``/dev/shm``. All capabilities are dropped except CAP_SETUID/SETGID, which a tiny
  trusted launcher uses to switch to an unprivileged uid (a distinct one per concurrent run), so the
  code has no capabilities (a ``mount -o remount,rw`` fails) and RLIMIT_NPROC is enforced (the kernel
  exempts uid 0 from it, even uid 0 seen through a user namespace).
* ``bubblewrap``, mode ``userns``: the same binds inside an unprivileged user namespace as uid 65534
  with all capabilities dropped. When the caller is root, that uid maps back to root outside, so the
  kernel does not enforce RLIMIT_NPROC (the timeout and the pid namespace still end a fork bomb).
* ``rlimits-only`` (no bubblewrap; only with ``allow_unsandboxed``): limits and the timeout only, no
  file-system or network isolation. As root the code runs as an unprivileged uid when that uid can
  execute the interpreter; otherwise it runs as root and can touch anything root can.

The program runs with ``python -s -P`` (the effect of ``-I`` except ``-E``) under an environment we
build from scratch (PATH, LANG, PYTHONHASHSEED=0, HOME=cwd), because ``-I`` would ignore
PYTHONHASHSEED and make set/dict-of-str ordering differ between runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 10_000  # characters of stdout/stderr kept (head and tail)
SANDBOX_DIR = "/sandbox"
NOBODY = 65534
_UID_BASE, _UID_COUNT = 61_000, 256  # unprivileged uids leased to concurrent runs when we are root
_SYSTEM_RO = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_RO = (
    "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/os-release",
)  # fmt: skip
_PROBE_SOURCE = "import os\nprint(os.getuid())\n"

# Runs inside the sandbox (trusted): apply limits, drop to the target uid, report, exec the program.
_LAUNCHER = """\
import os, resource as r, sys
uid, gid, fd, mem, nproc, fsize, cpu = (int(v) for v in sys.argv[1:8])
for res, soft, hard in ((r.RLIMIT_AS, mem, mem), (r.RLIMIT_NPROC, nproc, nproc), (r.RLIMIT_CORE, 0, 0),
                        (r.RLIMIT_FSIZE, fsize, fsize), (r.RLIMIT_CPU, cpu, cpu + 1)):
    r.setrlimit(res, (soft, hard))
if uid >= 0:
    os.setgroups([]); os.setgid(gid); os.setuid(uid)
    if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3:
        os.write(fd, b"Euid drop failed"); os._exit(126)
os.write(fd, b"L")
os.set_inheritable(fd, False)
try:
    os.execv(sys.executable, [sys.executable, *sys.argv[8:]])
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
            wall-clock limit) or "error" (the sandbox itself failed to start the program).
        returncode: Exit status (negative for a signal in rlimits-only mode); None after a timeout.
        stdout: Captured stdout, truncated to about OUTPUT_LIMIT characters (head and tail kept).
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
    """How runs are isolated: ``mode`` is "root-drop", "userns" or "rlimits"; ``drop`` leases a uid."""

    mode: str
    drop: bool

    @property
    def isolation(self) -> str:
        return "rlimits-only" if self.mode == "rlimits" else "bubblewrap"


class _UidPool:
    """Hands out distinct unprivileged uids so concurrent runs do not share an RLIMIT_NPROC budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free = list(range(_UID_BASE + _UID_COUNT - 1, _UID_BASE - 1, -1))

    @contextlib.contextmanager
    def lease(self, wanted: bool) -> Iterator[int]:
        """Yield a uid (or -1 when not wanted; NOBODY when the pool is exhausted)."""
        if not wanted:
            yield -1
            return
        with self._lock:
            uid = self._free.pop() if self._free else NOBODY
        try:
            yield uid
        finally:
            if uid != NOBODY:
                with self._lock:
                    self._free.append(uid)


_UIDS = _UidPool()
_PLAN_LOCK = threading.Lock()
_PLANS: dict[str, _Plan | None] = {}


def _interpreter() -> tuple[str, str]:
    """The base (non-venv) interpreter's real path and the real path of its installation prefix."""
    prefix = os.path.realpath(sys.base_prefix)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for name in (version, "python3"):
        candidate = os.path.join(sys.base_prefix, "bin", name)
        if os.path.exists(candidate):
            return os.path.realpath(candidate), prefix
    return os.path.realpath(sys.executable), prefix


def _python_flags() -> list[str]:
    """``-I`` minus ``-E``: no user site-packages, no script directory on sys.path."""
    return ["-s", "-P"] if sys.version_info >= (3, 11) else ["-s"]


def _bind_args() -> list[str]:
    """Read-only binds of the system directories (symlinks recreated) and the Python installation."""
    args: list[str] = []
    for path in (*_SYSTEM_RO, *_ETC_RO):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    exe, prefix = _interpreter()
    for path in (prefix, os.path.dirname(exe)):
        if not any(path == p or path.startswith(p + "/") for p in _SYSTEM_RO):
            args += ["--ro-bind", path, path]
    return args


def _bwrap_args(mode: str, workdir: str, limits: _Limits) -> list[str]:
    """The ``bwrap`` command line up to (not including) the sandboxed command."""
    mb = 1024 * 1024
    args = [shutil.which("bwrap") or "bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net",
            "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--hostname", "sandbox"]  # fmt: skip
    if mode == "userns":
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL"]
    else:  # root-drop: the launcher needs only these two, and loses them at setuid
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += _bind_args()
    args += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(max(16, 4 * limits.max_file_mb) * mb), "--perms", "1777", "--tmpfs", "/tmp",
             "--size", str(max(1, limits.max_file_mb) * mb), "--perms", "1777", "--tmpfs", "/dev/shm",
             "--bind", workdir, SANDBOX_DIR, "--chdir", SANDBOX_DIR,
             "--remount-ro", "/", "--remount-ro", "/dev"]  # fmt: skip
    return args


def _command(plan: _Plan, workdir: str, uid: int, fd: int, limits: _Limits) -> tuple[list[str], dict]:
    """Full command line and environment for one run."""
    exe, _ = _interpreter()
    inner_dir = SANDBOX_DIR if plan.mode != "rlimits" else workdir
    cpu = math.ceil(limits.timeout) + 1
    numbers = [uid, uid, fd, limits.memory_mb * 1024 * 1024, limits.max_procs,
               limits.max_file_mb * 1024 * 1024, cpu]  # fmt: skip
    cmd = [exe, "-I", "-S", "-c", _LAUNCHER, *map(str, numbers), *_python_flags(), "main.py"]
    if plan.mode != "rlimits":
        cmd = _bwrap_args(plan.mode, workdir, limits) + cmd
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
           "HOME": inner_dir, "TMPDIR": "/tmp"}  # fmt: skip
    return cmd, env


def _killpg(pgid: int) -> None:
    """SIGKILL a whole process group, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for ``proc`` up to ``timeout`` seconds, then kill its process group; True if timed out.

    The leader is left a zombie (WNOWAIT) until the group is killed, so its pid cannot be reused as
    the process-group id we signal.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    timed_out = False
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)
    _killpg(proc.pid)  # stragglers too, after a normal exit
    proc.wait()
    return timed_out


def _read_capped(path: str, limit: int = OUTPUT_LIMIT) -> str:
    """Text of a captured stream, keeping head and tail when longer than ``limit`` bytes."""
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
    """Everything the launcher wrote to the status pipe (all writers are dead by now)."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _remove_tree(path: str) -> None:
    """Delete a run directory, first making sandbox-created directories traversable (non-root case)."""
    if os.geteuid() != 0:
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                sub = os.path.join(dirpath, name)
                if not os.path.islink(sub):
                    with contextlib.suppress(OSError):
                        os.chmod(sub, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _prepare(root: str, source: str, uid: int) -> str:
    """Create the working directory with ``main.py``, owned by the sandbox uid when one is leased."""
    work = os.path.join(root, "work")
    os.mkdir(work, 0o755)
    with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as fh:
        fh.write(source)
    if uid >= 0:
        os.chown(work, uid, uid)
    return work


def _classify(timed_out: bool, marker: bytes, rc: int | None) -> str:
    """Status from the timeout flag, the launcher's marker and the exit code."""
    if timed_out:
        return "timeout"
    if not marker.startswith(b"L") or b"E" in marker:
        return "error"
    return "passed" if rc == 0 else "failed"


def _execute(cmd: list[str], env: dict, cwd: str, root: str, timeout: float) -> tuple[str, int | None, float]:
    """Start ``cmd`` in a new session with output captured to files; return (status, rc, seconds)."""
    read_fd, write_fd = os.pipe()
    try:
        with open(os.path.join(root, "stdout"), "wb") as out, open(os.path.join(root, "stderr"), "wb") as err:
            start = time.monotonic()
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                                        env=env, start_new_session=True, pass_fds=(write_fd,))  # fmt: skip
            except OSError as exc:
                err.write(f"sandbox failed to start: {exc!r}\n".encode())
                return "error", None, time.monotonic() - start
            os.close(write_fd)
            write_fd = -1
            timed_out = _wait_or_kill(proc, timeout)
            duration = time.monotonic() - start
        marker = _read_marker(read_fd)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    if marker.startswith(b"LE") or marker.startswith(b"E"):
        with open(os.path.join(root, "stderr"), "ab") as err:
            err.write(b"\nsandbox launcher: " + marker.lstrip(b"L")[1:] + b"\n")
    status = _classify(timed_out, marker, proc.returncode)
    return status, None if timed_out else proc.returncode, duration


def _run_once(source: str, limits: _Limits, plan: _Plan) -> SandboxResult:
    """One run of ``source`` in a fresh directory that is removed afterwards."""
    root = tempfile.mkdtemp(prefix="tunelab-sbx-")
    try:
        with _UIDS.lease(plan.drop) as uid:
            work = _prepare(root, source, uid)
            cmd, env = _command(plan, work, uid, 0, limits)
            # the launcher learns the pipe's fd number only after it is created
            status, rc, duration = _execute_with_fd(cmd, env, work, root, limits.timeout)
        return SandboxResult(status, rc, _read_capped(os.path.join(root, "stdout")),
                             _read_capped(os.path.join(root, "stderr")), duration, plan.isolation)  # fmt: skip
    finally:
        _remove_tree(root)
