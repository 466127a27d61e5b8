"""The OpenAI wire format of ``tunelab serve``: request bodies, errors in OpenAI's shape, response and
stream-chunk JSON.

Request bodies are validated by pydantic (:class:`ChatBody`, :class:`CompletionBody`) and turn into a
:class:`~tunelab.generate.base.GenerationConfig`; every error is answered as ``{"error": {"message",
"type", "param", "code"}}`` (:class:`APIError`, :func:`install_error_handlers`); :class:`ChatFormat`
and :class:`TextFormat` write the responses and the server-sent events of the two endpoints.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.generate.base import GenerationConfig
from tunelab.generate.engine import Request as Job
from tunelab.generate.engine import RequestError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
MAX_N = 64
ANY_MODEL = ("", "default")
"""Model names accepted besides the served one (clients that do not know it send these)."""


# ----------------------------------------------------------------------------- request bodies


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with the usage."""

    include_usage: bool = False


class Body(BaseModel):
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


class ChatBody(Body):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)


class CompletionBody(Body):
    """``POST /v1/completions`` (one prompt or a list of prompts)."""

    prompt: str | Annotated[list[str], Field(min_length=1)]


def config_from_request(body: dict[str, Any]) -> GenerationConfig:
    """GenerationConfig from OpenAI request fields (``stop`` may be a string or a list).

    Raises:
        pydantic.ValidationError: A field out of range or of the wrong type.
    """
    return Body.model_validate(body).config()


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


def failure(error: BaseException) -> APIError:
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


def install_error_handlers(app: FastAPI) -> None:
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


# ----------------------------------------------------------------------------- responses


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(payload)}\n\n"


def _usage(jobs: list[Job]) -> dict[str, int]:
    """OpenAI's ``usage`` over the requests (prompt tokens counted once per prompt, not per sample)."""
    prompt = sum(j.prompt_tokens for j in jobs)
    completion = sum(j.completion_tokens for j in jobs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Format:
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


class ChatFormat(Format):
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


class TextFormat(Format):
    """``text_completion`` responses and chunks."""

    kind, chunk_kind, id_prefix = "text_completion", "text_completion", "cmpl"

    def choice(self, index: int, text: str, reason: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}

    def chunks(self, index: int, delta: str, reason: str | None) -> list[dict[str, Any]]:
        return [self.envelope(self.chunk_kind, [self.choice(index, delta, reason)])] if delta or reason else []
