"""The ``tunelab`` command's launch under jemalloc (tunelab.launch): when it re-executes, with what, and that
the re-executed process really runs on the preloaded allocator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.launch import MARK, SETTING, LaunchError, find_jemalloc, preload

LIB = "/opt/lib/libjemalloc.so.2"


def found() -> str:
    return LIB


def test_auto_preloads_the_library_found_and_marks_the_environment() -> None:
    env = preload({"PATH": "/bin", "LD_PRELOAD": "/opt/other.so"}, system="linux", find=found)
    assert env is not None
    assert env["LD_PRELOAD"] == f"{LIB}:/opt/other.so"  # in front of what was preloaded, which stays
    assert env[MARK] == LIB and env["PATH"] == "/bin"  # everything else passes through


@pytest.mark.parametrize("environ, system, why", [
    ({SETTING: "system"}, "linux", "opted out"),
    ({MARK: LIB}, "linux", "already re-executed: never loop"),
    ({"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}, "linux", "another allocator is preloaded"),
    ({}, "darwin", "LD_PRELOAD is Linux's"),
])
def test_no_reexecution(environ, system, why) -> None:
    assert preload(environ, system=system, find=found) is None, why


def test_without_jemalloc_installed_auto_goes_on_with_the_c_library() -> None:
    assert preload({}, system="linux", find=lambda: None) is None
    with pytest.raises(LaunchError, match="no libjemalloc found"):  # asked for by name: said, not ignored
        preload({SETTING: "jemalloc"}, system="linux", find=lambda: None)


def test_an_allocator_already_preloaded_is_kept_and_said(capsys) -> None:
    assert preload({SETTING: "jemalloc", "LD_PRELOAD": "/x/libtcmalloc.so.4"}, system="linux", find=found) is None
    assert "already names an allocator" in capsys.readouterr().err


def test_an_explicit_library_must_exist(tmp_path: Path) -> None:
    lib = tmp_path / "libtcmalloc.so.4"
    with pytest.raises(LaunchError, match="no such shared library"):
        preload({SETTING: str(lib)}, system="linux", find=found)
    lib.write_bytes(b"")
    env = preload({SETTING: str(lib)}, system="linux", find=lambda: None)
    assert env is not None and env["LD_PRELOAD"] == str(lib)


def test_find_jemalloc_looks_in_the_given_directories(tmp_path: Path) -> None:
    assert find_jemalloc([str(tmp_path)]) is None
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    assert find_jemalloc([str(tmp_path / "missing"), str(tmp_path)]) == str(tmp_path / "libjemalloc.so.2")


# The command's entry with tunelab.cli replaced by a stub that prints what the process runs on (the stub is
# installed again after the re-execution, which runs this same -c program from its start).
PROGRAM = """
import os, sys, types
cli = types.ModuleType("tunelab.cli")
def main():
    maps = open("/proc/self/maps").read()
    print("jemalloc-mapped" if "libjemalloc" in maps else "c-library", os.environ.get("MARK_NAME", "-"), sys.argv[1:])
    return 0
cli.main = main
sys.modules["tunelab.cli"] = cli
from tunelab.launch import main as entry
entry()
""".replace("MARK_NAME", MARK)


@pytest.mark.skipif(not sys.platform.startswith("linux") or find_jemalloc() is None,
                    reason="jemalloc not installed (Debian: libjemalloc2)")
@pytest.mark.parametrize("setting", ["auto", "system"])
@pytest.mark.parametrize("started_as", ["-c", "script"])
def test_the_command_reexecutes_itself_under_jemalloc(setting: str, started_as: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (MARK, "LD_PRELOAD")}
    env[SETTING] = setting
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    if started_as == "script":  # as a console script: the script's path is the interpreter's first argument
        script = tmp_path / "tunelab"
        script.write_text(PROGRAM)
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-c", PROGRAM]
    out = subprocess.run([*cmd, "sweep", "x.yaml"], capture_output=True, text=True, env=env, check=True,
                         timeout=60)
    kind, mark, argv = out.stdout.strip().split(" ", 2)
    assert argv == "['sweep', 'x.yaml']"  # the arguments survive the re-execution
    if setting == "auto":
        assert (kind, mark) == ("jemalloc-mapped", find_jemalloc())
    else:
        assert (kind, mark) == ("c-library", "-")
