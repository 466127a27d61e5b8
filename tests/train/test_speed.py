"""``train.compile: auto``: compiled where it pays and is tested, eager elsewhere, with the reasons; and
``train.gradient_checkpointing: auto``: recomputed where several sequences per example dominate memory."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tunelab.train import speed
from tunelab.train.speed import (
    AUTO_TOKENS_PER_PASS,
    decide_checkpointing,
    decide_compile,
    decide_heap_trim,
    decide_passes,
    trim_heap,
)


def _model(n: int) -> nn.Module:
    m = nn.Module()
    m.w = nn.Parameter(torch.empty(n, device="meta"))  # a parameter count without memory
    return m


def test_explicit_choices_are_kept():
    assert decide_compile(True, _model(10), "prefix", 1, "cpu") == (True, {"requested": True})
    assert decide_compile(False, _model(10**9), "lora", 10**4, "cpu")[0] is False


@pytest.mark.skipif(not shutil.which("g++") and not shutil.which("c++"), reason="no C++ compiler here")
def test_auto_compiles_a_long_lora_run_of_a_large_model():
    on, info = decide_compile("auto", _model(speed.MIN_PARAMS), "lora", speed.MIN_STEPS, "cpu")
    assert on and info["requested"] == "auto" and "repay" in info["why"][0]


@pytest.mark.parametrize(("n", "method", "steps", "reason"), [
    (10**6, "lora", 10**4, "compile time would dominate"),
    (10**9, "lora", 10, "too short"),
    (10**9, "prefix", 10**4, "not among the compile-tested"),
])
def test_auto_stays_eager_and_says_why(n, method, steps, reason):
    on, info = decide_compile("auto", _model(n), method, steps, "cpu")
    assert not on and any(reason in w for w in info["why"])


def test_auto_without_a_compiler_stays_eager(monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    on, info = decide_compile("auto", _model(10**9), "lora", 10**4, "cpu")
    assert not on and any("C++ compiler" in w for w in info["why"])


@pytest.mark.parametrize(("kind", "compiled", "on", "reason"), [
    ("pairs", False, True, "several sequences per example"),  # DPO, IPO, ORPO, SimPO
    ("unpaired", False, True, "several sequences per example"),  # KTO
    ("online", False, True, "several sequences per example"),  # GRPO, RLOO
    ("tokens", False, False, "one sequence per row"),  # SFT, NAT
    ("choices", False, False, "one sequence per row"),  # choice_head
    ("pairs", True, False, "compiled layers"),
])
def test_auto_checkpointing_where_several_sequences_per_example_dominate_memory(kind, compiled, on, reason):
    got, info = decide_checkpointing("auto", kind, compiled)
    assert got is on and info["requested"] == "auto" and reason in info["why"][0]
    assert decide_checkpointing(False, "pairs", False) == (False, {"requested": False})
    assert decide_checkpointing(True, "tokens", True) == (True, {"requested": True})


@pytest.mark.parametrize(("kind", "per_example", "passes"), [
    ("pairs", True, AUTO_TOKENS_PER_PASS),  # DPO, IPO, ORPO, SimPO
    ("online", True, AUTO_TOKENS_PER_PASS),  # GRPO, RLOO
    ("unpaired", False, None),  # KTO: its KL reference point is the micro-batch's mean
    ("tokens", True, None),  # SFT, NAT
    ("choices", True, None),
])
def test_auto_passes_bound_multi_sequence_steps_and_checkpointing_steps_aside(kind, per_example, passes,
                                                                             monkeypatch):
    from tunelab.train import speed

    monkeypatch.setattr(speed, "allocator", lambda: "glibc")  # jemalloc's online passes: the test below
    got, info = decide_passes("auto", kind, per_example)
    assert got == passes and info["requested"] == "auto" and info["why"]
    on, why = decide_checkpointing("auto", kind, False, got)
    assert on is (kind == "unpaired")  # only KTO, whose micro-batch cannot be cut, still recomputes
    if got:
        assert "passes of at most 1024 positions" in why["why"][0]
    assert decide_passes(None, "pairs", True) == (None, {"requested": None})
    assert decide_passes(512, "tokens", True) == (512, {"requested": 512})


def test_online_passes_are_smaller_under_jemalloc(monkeypatch):
    from tunelab.train import speed

    monkeypatch.setattr(speed, "allocator", lambda: "jemalloc (/usr/lib/libjemalloc.so.2)")
    got, info = decide_passes("auto", "online", True)
    assert got == speed.ONLINE_JEMALLOC_TOKENS_PER_PASS == 512 and "under jemalloc" in info["why"][1]
    assert info["allocator"].startswith("jemalloc")
    assert decide_passes("auto", "pairs", True)[0] == AUTO_TOKENS_PER_PASS  # measured for GRPO only
    assert decide_passes(2048, "online", True)[0] == 2048  # a number is kept
    monkeypatch.setattr(speed, "allocator", lambda: "glibc")
    assert decide_passes("auto", "online", True)[0] == AUTO_TOKENS_PER_PASS  # glibc: 512 measured slower


@pytest.mark.parametrize("kind", ["online", "pairs", "tokens", "unpaired"])
def test_auto_leaves_the_heap_alone_and_says_why(kind):
    got, info = decide_heap_trim("auto", kind)
    assert got is False and info["requested"] == "auto" and info["why"]
    assert ("29%" in info["why"][0]) is (kind == "online")  # the measured cost, for the kind it was measured on
    assert decide_heap_trim(False, "online") == (False, {"requested": False})
    assert decide_heap_trim(True, "tokens") == (True, {"requested": True})


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_trim_heap_gives_freed_small_blocks_back_to_the_os():
    import ctypes

    from tunelab.train.speed import glibc_malloc

    if glibc_malloc() is None:
        pytest.skip("the tests run under another allocator (LD_PRELOAD): glibc's heap is not the heap")

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    trim_heap()
    before = _rss_mb()
    blocks = [libc.malloc(64 << 10) for _ in range(3200)]  # 200 MB in heap-sized blocks (below the mmap threshold)
    keep = libc.malloc(64 << 10)  # one live block above them: the heap's top cannot simply shrink
    for b in blocks:
        libc.memset(b, 1, 64 << 10)
    grown = _rss_mb()
    for b in blocks:
        libc.free(b)
    kept = _rss_mb()  # freed, yet still resident
    trim_heap()
    trimmed = _rss_mb()
    libc.free(keep)
    assert grown - before > 150 and kept - before > 150
    assert trimmed - before < 50, (before, grown, kept, trimmed)


JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("preload", [None, JEMALLOC])
def test_glibc_malloc_is_none_when_another_allocator_is_preloaded(preload):
    if preload is not None and not preload.exists():
        pytest.skip("libjemalloc2 not installed")
    code = ("from tunelab.train.speed import allocator, glibc_malloc, trim_heap; "
            "print(glibc_malloc() is None, trim_heap(), allocator())")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | ({"LD_PRELOAD": str(preload)} if preload else {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[0] == str(preload is not None)  # jemalloc in front: glibc's heap is not the heap
    if preload:
        assert out.stdout.split()[1] == "True"  # trimmed through jemalloc's purge, not glibc's malloc_trim
        assert out.stdout.split(maxsplit=2)[2].strip() == f"jemalloc ({preload})"  # what env.json says
    else:
        assert out.stdout.split()[2] == "glibc"


JEMALLOC_HEAP = """
import ctypes, os
from tunelab.train.speed import jemalloc_allocated, trim_heap
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
c = ctypes.CDLL(None)
c.malloc.restype, c.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
c.free.argtypes = [ctypes.c_void_p]
c.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
trim_heap()
base, live0 = rss(), jemalloc_allocated()
blocks = [c.malloc(64 << 10) for _ in range(3200)]
for b in blocks:
    c.memset(b, 1, 64 << 10)
grown, live1 = rss(), jemalloc_allocated()
for b in blocks:
    c.free(b)
kept, live2 = rss(), jemalloc_allocated()
done = trim_heap()
print(grown - base, kept - base, rss() - base, (live1 - live0) / 2**20, (live2 - live0) / 2**20, done)
"""


@pytest.mark.skipif(not JEMALLOC.exists(), reason="libjemalloc2 not installed")
def test_under_jemalloc_live_bytes_are_read_and_freed_pages_purged():
    """jemalloc keeps freed pages for seconds (its decay); trim_heap purges them at once, and
    jemalloc_allocated() tells the bytes handed out from the pages kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")} | {"LD_PRELOAD": str(JEMALLOC)}
    out = subprocess.run([sys.executable, "-c", JEMALLOC_HEAP], capture_output=True, text=True, env=env, check=True)
    grown, kept, purged, live_grown, live_freed, done = out.stdout.split()
    assert float(grown) > 150 and 190 < float(live_grown) < 215  # 200 MB handed out, resident
    assert abs(float(live_freed)) < 10 and float(kept) > 30  # handed back, part of it still resident (its decay)
    assert done == "True" and float(purged) < 10, out.stdout  # purged: back to the OS at once
    code = "from tunelab.train.speed import jemalloc_allocated; print(jemalloc_allocated())"
    bare = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=bare,
                          check=True).stdout.strip() == "None"  # glibc's malloc: not asked
