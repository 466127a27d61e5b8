"""``tunelab ui``, ``chat`` and ``serve``: talking to models and runs, and the two web servers."""

from __future__ import annotations

import argparse

from tunelab.cli.common import Commands
from tunelab.generate.base import GenerationConfig
from tunelab.generate.build import BACKENDS, build_generator
from tunelab.serve import serve_model
from tunelab.ui import serve_ui


def cmd_ui(a: argparse.Namespace) -> int:
    """A local web app over a folder of runs and sweeps: reports, side-by-side answers, blind rating."""

    serve_ui(a.runs, host=a.host, port=a.port)
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    """Talk to a model or a fine-tuned run (``--prompt`` for one shot)."""

    gen = build_generator(a.model, backend=a.backend, progress=False)
    cfg = GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=a.temperature)
    history: list[dict] = [{"role": "system", "content": a.system}] if a.system else []
    prompts = [a.prompt] if a.prompt else None
    while True:
        text = prompts.pop(0) if prompts else (None if a.prompt else _read_user())
        if text is None:
            return 0
        history.append({"role": "user", "content": text})
        reply = gen.generate([history], cfg)[0][0]
        history.append({"role": "assistant", "content": reply})
        print(reply if a.prompt else f"assistant> {reply}")
        if a.prompt and not prompts:
            return 0


def _read_user() -> str | None:
    try:
        text = input("you> ").strip()
    except EOFError:
        return None
    return None if text in ("/exit", "/quit") else text


def cmd_serve(a: argparse.Namespace) -> int:
    """Serve a model or run as an OpenAI-compatible endpoint (chat and completions) on HOST:PORT."""

    serve_model(a.model, host=a.host, port=a.port, batch_size=a.batch_size, model_name=a.model_name)
    return 0


COMMANDS: Commands = {
    "ui": (cmd_ui, lambda p: (
        p.add_argument("--runs", default="runs", help="folder of runs and sweeps (ratings.sqlite is kept there)"),
        p.add_argument("--host", default="127.0.0.1"), p.add_argument("--port", type=int, default=8501))),
    "chat": (cmd_chat, lambda p: (
        p.add_argument("model", help="model name/dir, run folder or http://host:port/v1#name"),
        p.add_argument("--backend", default="auto", choices=BACKENDS),
        p.add_argument("--prompt", help="one message, print the reply and exit"),
        p.add_argument("--system", help="system prompt"),
        p.add_argument("--max-new-tokens", type=int, default=256),
        p.add_argument("--temperature", type=float, default=0.0))),
    "serve": (cmd_serve, lambda p: (
        p.add_argument("model", help="model name/dir or run folder"),
        p.add_argument("--host", default="127.0.0.1"), p.add_argument("--port", type=int, default=8000),
        p.add_argument("--model-name", help="the name clients ask for (default: the model argument)"),
        p.add_argument("--batch-size", type=int, default=16))),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
