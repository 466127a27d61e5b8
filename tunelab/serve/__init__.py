"""An OpenAI-compatible HTTP server (FastAPI + uvicorn) in front of any Generator.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` (and
``/v1/models/{id}``), ``GET /health``. Every request goes into one
:class:`~tunelab.generate.batching.BatchingLoop`: over a local transformers model, requests that arrive
together decode together (continuous batching), each with its own settings; any other generator
answers one request at a time.

Supported request fields: ``stream`` (server-sent events in OpenAI's chunk format, ending with
``data: [DONE]``; ``stream_options.include_usage``), ``n``, ``stop`` (a string or a list),
``max_tokens`` / ``max_completion_tokens`` (default 256), ``temperature`` (default 1), ``top_p``,
``seed`` (default: random). Responses carry real ``usage`` token counts and ``finish_reason``
(``stop`` or ``length``). Errors have OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``: 400 for a bad request (also malformed JSON), 404 for an unknown route or model, 500 for
an internal failure (a message, never a traceback).

Meant for local use (judges, agents, tests): it binds 127.0.0.1 by default and has no auth.

The entry points are here; the server is :mod:`tunelab.serve.server`, the wire format (request bodies,
errors, response JSON) :mod:`tunelab.serve.api`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tunelab.generate.base import Generator
from tunelab.generate.build import build_generator
from tunelab.serve.server import Server
from tunelab.web import in_background

# ----------------------------------------------------------------------------- entry points


def make_server(
    generator: Generator, host: str = "127.0.0.1", port: int = 8000, model_name: str = "tunelab"
) -> Server:
    """A bound (not yet serving) server; port 0 picks a free port (see ``server.url``)."""
    return Server(generator, host, port, model_name)


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
    mode = "continuous batching" if server.loop.batching else "requests that arrive together in one generate call"
    print(f"[tunelab] serving {model_name!r} at {server.url}/v1 ({mode}; Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
        server.serve_forever()


@contextlib.contextmanager
def running_server(
    generator: Generator, host: str = "127.0.0.1", port: int = 0, model_name: str = "tunelab"
) -> Iterator[Server]:
    """Serve in a background thread for the duration of a ``with`` block; yields the started server.

    Raises:
        RuntimeError: The server did not start within 30 s.
    """
    with in_background(make_server(generator, host, port, model_name), "tunelab-serve") as server:
        yield server


def serve_model(
    model_or_run: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    batch_size: int = 16,
    model_name: str | None = None,
) -> None:
    """Load a model name/dir or a run folder and :func:`serve` it (blocking, until Ctrl-C).

    Args:
        model_or_run: What ``tunelab.generate.build.build_generator`` accepts (an alias, a hub id,
            a local model folder, a run folder).
        host: Interface to bind.
        port: TCP port.
        batch_size: Rows decoded together at most.
        model_name: The served model id (default: the last part of ``model_or_run``).
    """
    generator = build_generator(model_or_run, batch_size=batch_size, progress=False)
    name = model_name or model_or_run.rstrip("/").rsplit("/", 1)[-1]
    serve(generator, host, port, name)
