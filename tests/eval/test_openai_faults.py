"""Flaky endpoints: a fault-injecting OpenAI-compatible server on 127.0.0.1.

Every fault a real endpoint shows (429 with Retry-After, 500, 503, a timeout, a truncated body, a
connection dropped before the response, a body that is not JSON) is injected; retries are bounded,
every answer comes back complete and right, the retries are counted by reason, and the response
cache never stores an error as an answer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tunelab.eval.harness import evaluate
from tunelab.eval.tasks.base import get_task
from tunelab.generate.base import GenerationConfig
from tunelab.generate.cache import CachedGenerator
from tunelab.generate.openai_compat import OpenAIError, OpenAIGenerator

FAULTS = ["429", "500", "503", "timeout", "truncated", "drop", "not-json"]
REASONS = {"429": "HTTP 429", "500": "HTTP 500", "503": "HTTP 503", "timeout": "timeout",
           "truncated": "connection dropped", "drop": "connection dropped", "not-json": "truncated or invalid response"}
CLIENT_TIMEOUT = 0.5


class _Faulty(BaseHTTPRequestHandler):
    """Prompt ``p<i>`` fails its first ``faults[i]`` attempts, then answers ``echo:p<i>``."""

    plan: dict[str, list[str]] = {}
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        with self.lock:
            k = self.attempts.get(prompt, 0)
            self.attempts[prompt] = k + 1
        faults = self.plan.get(prompt, [])
        fault = faults[k] if k < len(faults) else None
        payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                   "content": f"echo:{prompt}"}}]}).encode()
        if fault in ("429", "500", "503"):
            data = json.dumps({"error": {"message": "busy"}}).encode()
            self.send_response(int(fault))
            if fault == "429":
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if fault == "timeout":
            time.sleep(CLIENT_TIMEOUT * 3)
        if fault == "drop":
            self.close_connection = True
            return  # no status line at all
        if fault == "not-json":
            payload = b"<html>502 upstream gone</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload[: len(payload) // 2] if fault == "truncated" else payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if fault == "truncated":
            self.close_connection = True


@pytest.fixture
def faulty() -> Iterator[str]:
    _Faulty.plan, _Faulty.attempts = {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _client(url: str, **kw) -> OpenAIGenerator:
    return OpenAIGenerator(url, "m", timeout=CLIENT_TIMEOUT, backoff=0.01, **{"max_retries": 3, **kw})


def test_every_fault_is_retried_and_counted_and_answers_are_complete(faulty: str, tmp_path: Path) -> None:
    prompts = [f"p{i}" for i in range(14)]
    for i, p in enumerate(prompts):  # each fault on its own, then pairs of different faults
        _Faulty.plan[p] = [FAULTS[i % 7]] if i < 7 else [FAULTS[i % 7], FAULTS[(i + 3) % 7]]
    gen = CachedGenerator(_client(faulty, concurrency=4), tmp_path / "cache")
    out = gen.generate([[{"role": "user", "content": p}] for p in prompts], GenerationConfig(max_new_tokens=8))
    assert out == [[f"echo:{p}"] for p in prompts]
    expected: dict[str, int] = {}
    for faults in _Faulty.plan.values():
        for f in faults:
            expected[REASONS[f]] = expected.get(REASONS[f], 0) + 1
    assert gen.retries == expected and sum(expected.values()) == 21
    assert all(_Faulty.attempts[p] == len(_Faulty.plan[p]) + 1 for p in prompts)


def test_retries_are_bounded_and_errors_never_cached(faulty: str, tmp_path: Path) -> None:
    _Faulty.plan = {"good": [], "doomed": ["503"] * 10}
    gen = CachedGenerator(_client(faulty, max_retries=2), tmp_path / "cache")
    chat = lambda p: [[{"role": "user", "content": p}]]  # noqa: E731
    assert gen.generate(chat("good"), GenerationConfig()) == [["echo:good"]]
    with pytest.raises(OpenAIError, match="HTTP 503"):
        gen.generate(chat("doomed"), GenerationConfig())
    assert _Faulty.attempts["doomed"] == 3  # the first try and 2 retries, no more
    with sqlite3.connect(gen.path) as db:
        values = [json.loads(v) for (v,) in db.execute("SELECT value FROM completions")]
    assert values == [["echo:good"]]  # only the good answer is stored
    # the server now fails everything: the cached answer is still served, nothing is asked
    _Faulty.plan["good"] = ["500"] * 10
    asked = _Faulty.attempts["good"]
    assert gen.generate(chat("good"), GenerationConfig()) == [["echo:good"]]
    assert _Faulty.attempts["good"] == asked and gen.hits == 1


def test_an_evaluation_against_a_flaky_endpoint_reports_its_retries(faulty: str) -> None:
    task = get_task("arith")
    items = task.items(7, 0)
    for i, it in enumerate(items):
        _Faulty.plan[it.prompt[-1]["content"]] = [FAULTS[i]]
    result = evaluate(task, _client(faulty, concurrency=3), limit=7, seed=0, max_new_tokens=8)
    assert len(result.rows) == 7 and len({r["id"] for r in result.rows}) == 7
    assert all(r["completion"].startswith("echo:") for r in result.rows)
    assert sum(result.retries.values()) == 7 and result.retries["HTTP 429"] == 1
