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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.generate.base import GenerationConfig, Generator, Prompt
from tunelab.generate.batching import BatchingLoop
from tunelab.generate.build import build_generator
from tunelab.generate.engine import Request as Job
from tunelab.generate.engine import RequestError
from tunelab.web import in_background

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
MAX_N = 64
ANY_MODEL = ("", "default")
"""Model names accepted besides the served one (clients that do not know it send these)."""


# ----------------------------------------------------------------------------- request bodies


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    include_usage: bool = False


class _Body(BaseModel):
    """Fields shared by chat and text completions; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def config(self) -> GenerationConfig:
        """The GenerationConfig these fields ask for (OpenAI's defaults where a field is missing)."""
        limit = self.max_tokens if self.max_tokens is not None else self.max_completion_tokens
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationConfig(
            max_new_tokens=DEFAULT_MAX_TOKENS if limit is None else limit,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            n=self.n,
            stop=[s for s in stop if s],
            seed=secrets.randbits(63) if self.seed is None else self.seed,
        )

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(BaseModel):
    """A text part of a message's content (the only kind a text model takes)."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message; ``developer`` is sent to the chat template as ``system``."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def as_prompt(self) -> dict[str, str]:
        """The message as the chat template takes it."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatBody(_Body):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)


class CompletionBody(_Body):
    """``POST /v1/completions`` (one prompt or a list of prompts)."""

    prompt: str | Annotated[list[str], Field(min_length=1)]


def config_from_request(body: dict[str, Any]) -> GenerationConfig:
    """GenerationConfig from OpenAI request fields (``stop`` may be a string or a list).

    Raises:
        pydantic.ValidationError: A field out of range or of the wrong type.
    """
    return _Body.model_validate(body).config()


# ----------------------------------------------------------------------------- errors


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error",
        param: str | None = None, code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def payload(self) -> dict[str, Any]:
        """``{"error": {...}}``."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The JSON response."""
        return JSONResponse(self.payload(), status_code=self.status)


def _failure(error: BaseException) -> APIError:
    """A failed generation request as an API error: 400 for the request's fault, else 500."""
    if isinstance(error, RequestError):
        return APIError(400, str(error))
    return APIError(500, f"generation failed: {type(error).__name__}: {error}", "server_error")


def _invalid(exc: RequestValidationError) -> APIError:
    """FastAPI's validation error (a 422) as OpenAI's 400."""
    errors = exc.errors()
    if not errors:
        return APIError(400, "invalid request body")
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, f"malformed JSON body: {first.get('msg')}", code="invalid_json")
    param = loc[0] if loc else None
    where = ".".join(loc)
    return APIError(400, f"{where}: {first.get('msg')}" if where else str(first.get("msg")), param=param)


def _install_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape (validation 422 -> 400, 404/405, 500 without a traceback)."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s: %r", request.url.path, exc)
        return APIError(500, f"internal error: {type(exc).__name__}", "server_error").response()


# ----------------------------------------------------------------------------- the server


class Server:
    """An OpenAI-compatible server over one generator, bound to its socket (not yet serving).

    Serve with :meth:`serve_forever` (blocking) or :func:`running_server` (a background thread).

    Args:
        generator: Any Generator; an ``HFGenerator`` gets continuous batching.
        host: Interface to bind.
        port: TCP port (0 = any free port; see :attr:`url`).
        model_name: The id reported by ``/v1/models`` and in responses.
    """

    def __init__(self, generator: Generator, host: str, port: int, model_name: str) -> None:
        self.generator, self.model_name = generator, model_name
        self.created = int(time.time())
        self.requests_served = 0
        """Completion requests answered (for tests and logs)."""
        self._count = threading.Lock()
        self.sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.loop = BatchingLoop(generator)
        """The decoding loop every request goes through (``loop.max_rows``: the batching seen)."""
        self.app = self._build_app()
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3
        )
        self._uvicorn = uvicorn.Server(config)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8000`` (append ``/v1/...``)."""
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C in the main thread); then stop decoding."""
        try:
            self._uvicorn.run(sockets=[self.sock])
        finally:
            self.loop.close()
            self.sock.close()

    def shutdown(self) -> None:
        """Ask a running server to stop (from another thread)."""
        self._uvicorn.should_exit = True

    @property
    def started(self) -> bool:
        """Whether it accepts connections."""
        return self._uvicorn.started

    def _served(self) -> None:
        """Count one answered request."""
        with self._count:
            self.requests_served += 1

    def _check_model(self, name: str | None) -> None:
        """400 for a model name this server does not serve."""
        if name is not None and name not in (self.model_name, *ANY_MODEL):
            raise APIError(400, f"unknown model {name!r}; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def _model_card(self) -> dict[str, Any]:
        """The served model as ``/v1/models`` lists it."""
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "tunelab"}

    def _build_app(self) -> FastAPI:
        """The FastAPI app and its routes."""
        app = FastAPI(title="tunelab", docs_url=None, redoc_url=None, openapi_url=None)
        _install_error_handlers(app)

        @app.get("/health")
        async def health() -> dict[str, Any]:
            """Liveness plus the decoding loop's state (queued requests, rows decoding, most rows together)."""
            loop = self.loop
            return {"status": "ok", "model": self.model_name, "batching": loop.batching,
                    "queued": loop.queued, "running": loop.running, "max_rows": loop.max_rows}

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            """The one served model."""
            return {"object": "list", "data": [self._model_card()]}

        @app.get("/v1/models/{model_id:path}")
        async def model(model_id: str) -> dict[str, Any]:
            """The served model's card; 404 for any other id."""
            if model_id != self.model_name:
                raise APIError(404, f"unknown model {model_id!r}", param="model", code="model_not_found")
            return self._model_card()

        @app.post("/v1/chat/completions")
        async def chat(body: ChatBody) -> Any:
            """A chat completion (the chat template renders the messages)."""
            self._check_model(body.model)
            prompt = [m.as_prompt() for m in body.messages]
            return await self._respond(body, [prompt], _ChatFormat(self.model_name))

        @app.post("/v1/completions")
        async def completions(body: CompletionBody) -> Any:
            """Text completions of one prompt or a list (choice ``k * n + s``: sample ``s`` of prompt ``k``)."""
            self._check_model(body.model)
            prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
            return await self._respond(body, prompts, _TextFormat(self.model_name))

        return app

    async def _respond(self, body: _Body, prompts: list[Prompt], fmt: _Format) -> Any:
        """The whole response, or a stream of chunks when the body asks for ``stream``."""
        cfg = body.config()
        if body.stream:
            stream = self._stream(prompts, cfg, fmt, body.include_usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        jobs = await self._complete(prompts, cfg)
        self._served()
        return fmt.response(jobs)

    async def _complete(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[Job]:
        """Submit every prompt and wait for all of them (cancelled if the client goes away)."""
        aloop = asyncio.get_running_loop()
        futures = [aloop.create_future() for _ in prompts]
        jobs = [self.loop.submit(p, cfg, on_done=_threadsafe(aloop, _resolve, f)) for p, f in zip(prompts, futures)]
        try:
            await asyncio.gather(*futures)
        finally:
            for job in jobs:
                job.cancel()  # no-op for finished jobs
        for job in jobs:
            if job.error is not None:
                raise _failure(job.error)
        return jobs

    async def _stream(
        self, prompts: list[Prompt], cfg: GenerationConfig, fmt: _Format, include_usage: bool
    ) -> AsyncIterator[str]:
        """Server-sent events: a chunk per text delta and per finished choice, then ``[DONE]``."""
        aloop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        put = _threadsafe(aloop, events.put_nowait)
        jobs = [
            self.loop.submit(
                p, cfg,
                on_text=lambda s, delta, reason, k=k: put((k * cfg.n + s, delta, reason)),
                on_done=lambda job: put(job),
            )
            for k, p in enumerate(prompts)
        ]
        try:
            for first in fmt.opening(len(prompts) * cfg.n):
                yield _sse(first)
            left = len(jobs)
            while left:
                event = await events.get()
                if isinstance(event, Job):
                    left -= 1
                    if event.error is not None:
                        yield _sse(_failure(event.error).payload())
                        return
                    continue
                for chunk in fmt.chunks(*event):
                    yield _sse(chunk)
            if include_usage:
                yield _sse(fmt.usage_chunk(jobs))
            self._served()
            yield "data: [DONE]\n\n"
        finally:
            for job in jobs:
                job.cancel()


def _resolve(future: asyncio.Future, value: Any) -> None:
    """Set a future's result unless it is already settled (e.g. cancelled)."""
    if not future.done():
        future.set_result(value)


def _threadsafe(aloop: asyncio.AbstractEventLoop, fn: Callable[..., None], *first: Any) -> Callable[..., None]:
    """``fn(*first, *args)`` run on ``aloop``, callable from the decoding thread (dropped once it closed)."""

    def call(*args: Any) -> None:
        if not aloop.is_closed():
            aloop.call_soon_threadsafe(fn, *first, *args)

    return call


def _sse(payload: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(payload)}\n\n"


def _usage(jobs: list[Job]) -> dict[str, int]:
    """OpenAI's ``usage`` over the requests (prompt tokens counted once per prompt, not per sample)."""
    prompt = sum(j.prompt_tokens for j in jobs)
    completion = sum(j.completion_tokens for j in jobs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Format:
    """The JSON of one endpoint's responses and stream chunks (one id per response)."""

    kind = chunk_kind = ""
    id_prefix = ""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def envelope(self, kind: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """The fields around ``choices``."""
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_name,
                "choices": choices, **extra}

    def response(self, jobs: list[Job]) -> dict[str, Any]:
        """The whole (non-streamed) response: choice ``k * n + s`` is sample ``s`` of prompt ``k``."""
        choices = [
            self.choice(k * job.cfg.n + s, text, job.finish_reasons[s])
            for k, job in enumerate(jobs)
            for s, text in enumerate(job.texts)
        ]
        return self.envelope(self.kind, choices, usage=_usage(jobs))

    def usage_chunk(self, jobs: list[Job]) -> dict[str, Any]:
        """The last chunk of a stream that asked for usage."""
        return self.envelope(self.chunk_kind, [], usage=_usage(jobs))

    def opening(self, choices: int) -> list[dict[str, Any]]:
        """Chunks sent before any text."""
        return []

    def chunks(self, index: int, delta: str, reason: str | None) -> list[dict[str, Any]]:
        """Chunks for new text of choice ``index`` (and its finish, when ``reason`` is set)."""
        raise NotImplementedError

    def choice(self, index: int, text: str, reason: str | None) -> dict[str, Any]:
        """One choice of a whole response."""
        raise NotImplementedError


class _ChatFormat(_Format):
    """``chat.completion`` responses and ``chat.completion.chunk`` chunks (the first carries the role)."""

    kind, chunk_kind, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def choice(self, index: int, text: str, reason: str | None) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "finish_reason": reason, "logprobs": None}

    def opening(self, choices: int) -> list[dict[str, Any]]:
        return [self._chunk(i, {"role": "assistant", "content": ""}, None) for i in range(choices)]

    def chunks(self, index: int, delta: str, reason: str | None) -> list[dict[str, Any]]:
        out = [self._chunk(index, {"content": delta}, None)] if delta else []
        return out + ([self._chunk(index, {}, reason)] if reason else [])

    def _chunk(self, index: int, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
        return self.envelope(self.chunk_kind, [choice])


class _TextFormat(_Format):
    """``text_completion`` responses and chunks."""

    kind, chunk_kind, id_prefix = "text_completion", "text_completion", "cmpl"

    def choice(self, index: int, text: str, reason: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}

    def chunks(self, index: int, delta: str, reason: str | None) -> list[dict[str, Any]]:
        return [self.envelope(self.chunk_kind, [self.choice(index, delta, reason)])] if delta or reason else []


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
    mode = "continuous batching" if server.loop.batching else "one request at a time"
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
