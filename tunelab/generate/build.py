"""The one generator builder: a model name, a run folder, a URL or an in-memory model -> a Generator.

Evaluation, judging, chat, the server, trajectory sampling and Evol-Instruct all call
:func:`build_generator`, so a model decodes with the same precision and settings everywhere.

Specs (strings):
- ``http(s)://host:port[/v1][#model]``: an OpenAI-compatible server (``backend: openai``);
- a model alias, hub id, local HF folder or a run folder: loaded locally (``backend: hf``), or
  handed to vLLM (``backend: vllm``; a run's ``final/`` adapter is served unmerged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch import nn

from tunelab.config import run_config
from tunelab.device import decide, default_device
from tunelab.generate.base import Generator
from tunelab.generate.hf import HFGenerator
from tunelab.generate.openai_compat import OpenAIGenerator
from tunelab.generate.vllm import VLLMGenerator
from tunelab.models.load import resolve
from tunelab.train.artifacts import load_for_inference

Backend = Literal["auto", "hf", "openai", "vllm"]
BACKENDS = ("auto", "hf", "openai", "vllm")


def is_url(spec: Any) -> bool:
    """Whether ``spec`` names an OpenAI-compatible server (``http(s)://...``)."""
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))


def build_generator(
    source: str | Generator | nn.Module,
    *,
    tokenizer: Any = None,
    backend: Backend = "auto",
    precision: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
    device: str | None = None,
) -> Generator:
    """Return the Generator for ``source``, with its precision decided once (``tunelab.device.decide``).

    Args:
        source: A spec string (see the module docstring), a Generator (returned as is), or an
            in-memory model (then ``tokenizer`` is required; ``backend`` must be ``hf``/``auto``).
        tokenizer: The tokenizer of an in-memory model.
        backend: ``auto`` (URL -> ``openai``, anything else -> ``hf``), ``hf``, ``openai`` or ``vllm``.
        precision: ``auto`` | ``fp32`` | ``bf16`` for local decoding.
        batch_size: Rows decoded together (local backends) or requests in flight (``openai``).
        progress: Show a progress bar while generating.
        device: ``cuda`` / ``cpu`` (default: a GPU where one is visible).

    Raises:
        ValueError: An unknown backend, or a source the backend cannot take.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown generator backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    if not isinstance(source, str | nn.Module):  # already a Generator
        return source
    device = device or default_device()
    resolved, _ = decide(precision, device)
    if isinstance(source, nn.Module):
        if backend not in ("auto", "hf") or tokenizer is None:
            raise ValueError("an in-memory model decodes with backend 'hf' and needs its tokenizer")
        return HFGenerator(source, tokenizer, batch_size=batch_size, precision=resolved, progress=progress)
    if backend == "openai" or (backend == "auto" and is_url(source)):
        if not is_url(source):
            raise ValueError(f"backend 'openai' needs a server URL (http://host:port/v1#model), got {source!r}")
        url, _, model = source.partition("#")
        return OpenAIGenerator(url, model or "default", concurrency=batch_size)
    if is_url(source):
        raise ValueError(f"{source!r} is a server URL; use backend 'openai' (or 'auto')")
    if backend == "vllm":
        return _vllm(source, resolved)
    model, tok, _ = load_for_inference(source, device)
    return HFGenerator(model, tok, batch_size=batch_size, precision=resolved, progress=progress)


def _vllm(source: str, precision: str) -> Generator:
    """A vLLM engine over a model, or over a run's base model with its ``final/`` LoRA adapter."""

    dtype = "bfloat16" if precision == "bf16" else "auto"
    cfg = run_config(source)
    if cfg:
        if cfg.method.get("name") != "lora":
            raise ValueError(f"backend 'vllm' serves LoRA runs unmerged; {source} was trained with "
                             f"{cfg.method.get('name')!r}: `tunelab export {source} --merge` first")
        return VLLMGenerator(resolve(cfg.model.name)[0], adapter=str(Path(source) / "final"), dtype=dtype)
    return VLLMGenerator(resolve(source)[0], dtype=dtype)
