"""OpenAI-compatible client, server and response cache (tiny model served on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tunelab.generate.base import GenerationConfig
from tunelab.generate.cache import CachedGenerator, cache_key
from tunelab.generate.openai_compat import OpenAIError, OpenAIGenerator, _api_root
from tunelab.serve import running_server
from tunelab.serve.api import config_from_request


@pytest.fixture(scope="module")
def tiny_gen():
    from tunelab.generate.hf import HFGenerator
    from tunelab.models.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    return HFGenerator(tiny_model(len(tok)), tok, batch_size=4, progress=False)


CHATS = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "2+2?"}]]


def test_server_client_and_cache(tiny_gen, tmp_path: Path) -> None:
    cfg = GenerationConfig(max_new_tokens=6)
    direct = tiny_gen.generate(CHATS + ["plain text prompt"], cfg)
    with running_server(tiny_gen, model_name="tiny") as server:
        client = OpenAIGenerator(server.url, "tiny", concurrency=2)
        assert client.models() == ["tiny"]
        cached = CachedGenerator(client, tmp_path / "cache")
        first = cached.generate(CHATS + ["plain text prompt"], cfg)
        assert first == direct  # greedy: the server answers exactly what the model says
        served = server.requests_served
        assert served == 3 and cached.misses == 3
        again = cached.generate(CHATS + ["plain text prompt"], cfg)
        assert again == first and server.requests_served == served and cached.hits == 3
        cached.generate(CHATS[:1], GenerationConfig(max_new_tokens=3))  # another config: not cached
        assert server.requests_served == served + 1
        sampled = client.generate(CHATS[:1], GenerationConfig(max_new_tokens=4, temperature=1.0, n=2, seed=3))
        assert len(sampled) == 1 and len(sampled[0]) == 2
    reopened = CachedGenerator(client, tmp_path / "cache")  # persists on disk; server is gone
    assert reopened.generate(CHATS, cfg) == first[:2] and reopened.misses == 0


class _Inner:
    def __init__(self, fingerprint: str) -> None:
        self.fingerprint, self.calls = fingerprint, []

    def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
        self.calls.append(list(prompts))
        return [[f"{self.fingerprint}:{p}"] * cfg.n for p in prompts]


def test_cache_keys_and_dedup(tmp_path: Path) -> None:
    cfg = GenerationConfig()
    a = CachedGenerator(_Inner("m1"), tmp_path)
    assert a.generate(["x", "y", "x"], cfg) == [["m1:x"], ["m1:y"], ["m1:x"]]
    assert a.inner.calls == [["x", "y"]]  # duplicates sent once
    assert a.generate(["y", "z"], cfg) == [["m1:y"], ["m1:z"]] and a.inner.calls[-1] == ["z"]
    b = CachedGenerator(_Inner("m2"), tmp_path)  # a changed model never reuses stale answers
    assert b.generate(["x"], cfg) == [["m2:x"]]
    assert cache_key("m", "x", cfg) != cache_key("m", "x", GenerationConfig(seed=1))
    assert cache_key("m", [{"role": "user", "content": "x"}], cfg) != cache_key("m", "x", cfg)


class _Stub(BaseHTTPRequestHandler):
    """Answers from a script of (status, n choices) per request; records request bodies."""

    script: list[tuple[int, int]] = []
    bodies: list[dict] = []

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        status, n = type(self).script.pop(0) if type(self).script else (200, body.get("n", 1))
        if status != 200:
            payload = {"error": {"message": "busy"}}
        else:
            payload = {
                "choices": [
                    {"index": i, "message": {"role": "assistant", "content": f"ok{i} STOP x"}}
                    for i in range(n)
                ]
            }
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def stub() -> Iterator[str]:
    _Stub.script, _Stub.bodies = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/"
    server.shutdown()
    server.server_close()


def test_retry_on_503_then_success(stub: str) -> None:
    _Stub.script = [(503, 0), (503, 0), (200, 1)]
    gen = OpenAIGenerator(stub, "m", backoff=0.01, max_retries=3)
    out = gen.generate(CHATS[:1], GenerationConfig(max_new_tokens=5, stop=["STOP"], temperature=0.3, seed=7))
    assert out == [["ok0 "]] and len(_Stub.bodies) == 3
    body = _Stub.bodies[-1]
    assert body["messages"] == CHATS[0] and body["stop"] == ["STOP"] and body["max_tokens"] == 5
    assert body["seed"] == 7 and body["temperature"] == 0.3 and body["model"] == "m"


def test_no_retry_on_400_and_give_up_after_retries(stub: str) -> None:
    _Stub.script = [(400, 0)]
    with pytest.raises(OpenAIError, match="HTTP 400"):
        OpenAIGenerator(stub, "m", backoff=0.01).generate(["p"], GenerationConfig())
    assert len(_Stub.bodies) == 1
    _Stub.script = [(429, 0)] * 3
    with pytest.raises(OpenAIError, match="HTTP 429"):
        OpenAIGenerator(stub, "m", backoff=0.01, max_retries=2).generate(["p"], GenerationConfig())
    assert len(_Stub.bodies) == 4


def test_fewer_choices_than_n_are_topped_up(stub: str) -> None:
    _Stub.script = [(200, 1), (200, 1), (200, 1)]
    out = OpenAIGenerator(stub, "m").generate(CHATS[:1], GenerationConfig(n=3, temperature=1.0))
    assert len(out[0]) == 3 and [b["n"] for b in _Stub.bodies] == [3, 2, 1]


def test_url_and_request_config() -> None:
    assert _api_root("http://h:1") == _api_root("http://h:1/v1/") == "http://h:1/v1"
    cfg = config_from_request({"max_tokens": 9, "stop": "x", "n": 2, "temperature": 0})
    assert (cfg.max_new_tokens, cfg.stop, cfg.n, cfg.temperature) == (9, ["x"], 2, 0.0)
    assert OpenAIGenerator("http://h:1", "m").fingerprint == "openai:http://h:1/v1|m"


def test_vllm_import_guarded() -> None:
    from tunelab.generate.vllm import VLLMGenerator, vllm_fingerprint

    assert vllm_fingerprint("m", None) != vllm_fingerprint("m", "adapter")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install"):
            VLLMGenerator("some/model")
        pytest.skip("vllm not installed")
