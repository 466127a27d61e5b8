"""Shared by the two web servers (``tunelab serve`` and ``tunelab ui``): an app bound to a socket and
served by uvicorn (:class:`AppServer`), and running one in a background thread (:func:`in_background`)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

import uvicorn


class Serving(Protocol):
    """A server with a blocking loop, a started flag and a way to stop (both tunelab servers)."""

    url: str
    started: bool

    def serve_forever(self) -> None: ...

    def shutdown(self) -> None: ...


S = TypeVar("S", bound=Serving)


class AppServer:
    """An ASGI app (FastAPI) bound to its socket at construction and served by uvicorn: the start,
    stop and address code of both tunelab servers.

    Bind with ``__init__``, then :meth:`mount` the app; serve with :meth:`serve_forever` (blocking)
    or :func:`in_background`.

    Args:
        host: Interface to bind (an IPv6 address, with ``:``, binds IPv6).
        port: TCP port (0 = any free port; see :attr:`url`).
    """

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.app: Any = None
        self._uvicorn: uvicorn.Server | None = None

    def mount(self, app: Any, graceful_shutdown: float) -> None:
        """Serve ``app``, quietly (warnings only, no access log, no lifespan events); a stop waits at most
        ``graceful_shutdown`` seconds for requests in flight."""
        self.app = app
        self._uvicorn = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                      timeout_graceful_shutdown=graceful_shutdown))

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8000``."""
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def started(self) -> bool:
        """Whether uvicorn accepts connections."""
        return self._uvicorn is not None and self._uvicorn.started

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C in the main thread); then :meth:`closing` and close the socket."""
        assert self._uvicorn is not None, "AppServer.serve_forever before mount"
        try:
            self._uvicorn.run(sockets=[self.sock])
        finally:
            self.closing()
            self.sock.close()

    def closing(self) -> None:
        """What a subclass stops once serving ends (before the socket closes); nothing here."""

    def shutdown(self) -> None:
        """Ask a running server to stop (from another thread)."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True


@contextlib.contextmanager
def in_background(server: S, name: str, timeout: float = 30.0) -> Iterator[S]:
    """Serve ``server`` in a daemon thread for the duration of a ``with`` block; yields it once started.

    Raises:
        RuntimeError: The server did not start within ``timeout`` seconds.
    """
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if not server.started:
            raise RuntimeError(f"the server at {server.url} did not start")
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=10)
