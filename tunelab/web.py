"""Shared by the two web servers (``tunelab serve`` and ``tunelab ui``): running one in a background thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Protocol, TypeVar


class Serving(Protocol):
    """A server with a blocking loop, a started flag and a way to stop (both tunelab servers)."""

    url: str
    started: bool

    def serve_forever(self) -> None: ...

    def shutdown(self) -> None: ...


S = TypeVar("S", bound=Serving)


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
