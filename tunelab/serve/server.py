"""The OpenAI-compatible server (:class:`Server`): FastAPI routes over one decoding loop.

Every request goes into one :class:`~tunelab.generate.batching.BatchingLoop`; a streamed request
sends its text as it is decoded, a client that goes away cancels its requests. The wire format
(bodies, errors, response JSON) is :mod:`tunelab.serve.api`'s; the entry points are in
:mod:`tunelab.serve`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from tunelab.generate.base import GenerationConfig, Generator, Prompt
from tunelab.generate.batching import BatchingLoop
from tunelab.generate.engine import Request as Job
from tunelab.serve.api import (
    ANY_MODEL,
    APIError,
    Body,
    ChatBody,
    ChatFormat,
    CompletionBody,
    Format,
    TextFormat,
    failure,
    install_error_handlers,
    sse,
)
from tunelab.web import AppServer

# ----------------------------------------------------------------------------- the server


class Server(AppServer):
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
        super().__init__(host, port)  # bound first: a taken port starts no decoding loop
        self.loop = BatchingLoop(generator)
        """The decoding loop every request goes through (``loop.max_rows``: the batching seen)."""
        self.mount(self._build_app(), graceful_shutdown=3)

    def closing(self) -> None:
        """Stop decoding once serving ends."""
        self.loop.close()

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
        install_error_handlers(app)

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
            return await self._respond(body, [prompt], ChatFormat(self.model_name))

        @app.post("/v1/completions")
        async def completions(body: CompletionBody) -> Any:
            """Text completions of one prompt or a list (choice ``k * n + s``: sample ``s`` of prompt ``k``)."""
            self._check_model(body.model)
            prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
            return await self._respond(body, prompts, TextFormat(self.model_name))

        return app

    async def _respond(self, body: Body, prompts: list[Prompt], fmt: Format) -> Any:
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
                raise failure(job.error)
        return jobs

    async def _stream(
        self, prompts: list[Prompt], cfg: GenerationConfig, fmt: Format, include_usage: bool
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
                yield sse(first)
            left = len(jobs)
            while left:
                event = await events.get()
                if isinstance(event, Job):
                    left -= 1
                    if event.error is not None:
                        yield sse(failure(event.error).payload())
                        return
                    continue
                for chunk in fmt.chunks(*event):
                    yield sse(chunk)
            if include_usage:
                yield sse(fmt.usage_chunk(jobs))
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
