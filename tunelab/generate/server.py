"""A minimal OpenAI-compatible HTTP server in front of any Generator (standard library only).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``. Requests are
served by threads, but generation is serialised with a lock (local models are not thread-safe).
Meant for local use (judges, agents, tests): it binds 127.0.0.1 by default and has no auth.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tunelab.generate.base import GenerationConfig, Generator


class GeneratorServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding the generator, its public name and a request counter."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], generator: Generator, model_name: str) -> None:
        super().__init__(address, _Handler)
        self.generator, self.model_name = generator, model_name
        self.gen_lock, self.count_lock = threading.Lock(), threading.Lock()
        self.requests_served = 0
        """Completion requests answered (for tests and logs)."""

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8000`` (append ``/v1/...``)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def config_from_request(body: dict[str, Any]) -> GenerationConfig:
    """GenerationConfig from OpenAI request fields (``stop`` may be a string or a list)."""
    stop = body.get("stop") or []
    return GenerationConfig(
        max_new_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
        temperature=float(body.get("temperature") if body.get("temperature") is not None else 1.0),
        top_p=float(body.get("top_p") if body.get("top_p") is not None else 1.0),
        n=int(body.get("n") or 1),
        stop=[stop] if isinstance(stop, str) else list(stop),
        seed=int(body.get("seed") or 0),
    )


class _Handler(BaseHTTPRequestHandler):
    server: GeneratorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "tunelab"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        routes = {"/v1/chat/completions": self._chat, "/v1/completions": self._completions}
        route = routes.get(self.path.rstrip("/"))
        if route is None:
            return self._error(404, f"no route {self.path}")
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            payload = route(body)
        except (ValueError, KeyError, TypeError) as e:
            return self._error(400, f"bad request: {e}")
        except Exception as e:  # noqa: BLE001 - report the failure to the client
            return self._error(500, f"generation failed: {e!r}", "server_error")
        with self.server.count_lock:
            self.server.requests_served += 1
        self._send(200, payload)

    def _generate(self, prompts: list[Any], cfg: GenerationConfig) -> list[list[str]]:
        with self.server.gen_lock:
            return self.server.generator.generate(prompts, cfg)

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"tl-{uuid.uuid4().hex[:12]}",
            "object": kind,
            "created": int(time.time()),
            "model": self.server.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        texts = self._generate([messages], config_from_request(body))[0]
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ]
        return self._envelope("chat.completion", choices)

    def _completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["prompt"]
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError("'prompt' must be a string or a list of strings")
        results = self._generate(prompts, config_from_request(body))
        texts = [t for per_prompt in results for t in per_prompt]
        choices = [
            {"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)
        ]
        return self._envelope("text_completion", choices)


def make_server(
    generator: Generator, host: str = "127.0.0.1", port: int = 8000, model_name: str = "tunelab"
) -> GeneratorServer:
    """A bound (not yet serving) server; port 0 picks a free port (see ``server.url``)."""
    return GeneratorServer((host, port), generator, model_name)


def serve(
    generator: Generator, host: str = "127.0.0.1", port: int = 8000, model_name: str = "tunelab"
) -> None:
    """Serve ``generator`` over the OpenAI API until interrupted (blocking).

    Args:
        generator: Any Generator (e.g. ``HFGenerator`` over a model or a run).
        host: Interface to bind; keep 127.0.0.1 unless you mean to expose it (there is no auth).
        port: TCP port (0 = any free port).
        model_name: The id reported by ``/v1/models`` and in responses.
    """
    server = make_server(generator, host, port, model_name)
    print(f"[tunelab] serving {model_name!r} at {server.url}/v1 (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@contextlib.contextmanager
def running_server(
    generator: Generator, host: str = "127.0.0.1", port: int = 0, model_name: str = "tunelab"
) -> Iterator[GeneratorServer]:
    """Serve in a background thread for the duration of a ``with`` block; yields the server."""
    server = make_server(generator, host, port, model_name)
    thread = threading.Thread(target=server.serve_forever, name="tunelab-serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_model(
    model_or_run: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    batch_size: int = 16,
    model_name: str | None = None,
) -> None:
    """Load a model name/dir or a run folder into an ``HFGenerator`` and :func:`serve` it (blocking).

    Args:
        model_or_run: What ``tunelab.runner.artifacts.load_for_inference`` accepts.
        host: Interface to bind.
        port: TCP port.
        batch_size: Generation batch size.
        model_name: The served model id (default: the last part of ``model_or_run``).
    """
    import torch

    from tunelab.generate.hf import HFGenerator
    from tunelab.runner.artifacts import load_for_inference
    from tunelab.train.precision import decide

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok, _ = load_for_inference(model_or_run, device)
    precision, _ = decide("auto", device)
    generator = HFGenerator(model, tok, batch_size=batch_size, precision=precision, progress=False)
    name = model_name or model_or_run.rstrip("/").rsplit("/", 1)[-1]
    serve(generator, host, port, name)
