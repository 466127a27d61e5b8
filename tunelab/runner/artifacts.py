"""Load a model or a finished run for inference (eval, chat, export)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.config import ModelConfig
from tunelab.methods import METHODS
from tunelab.models.load import load_model, load_tokenizer


def is_run(path: str | Path) -> bool:
    p = Path(path)
    return (p / "config.yaml").is_file() and (p / "final").is_dir()


def load_for_inference(model_or_run: str, device: str | None = None):
    """(model, tokenizer, info) for a model name/dir or a run folder (its ``final/`` weights)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not is_run(model_or_run):
        return load_model(ModelConfig(name=model_or_run), device=device)
    from tunelab.runner.run import load_config

    cfg = load_config(model_or_run)
    final = Path(model_or_run) / "final"
    base, _, info = load_model(cfg.model, device=device)
    method_cls = METHODS.get(cfg.method.get("name", "lora"))
    model = method_cls.load_final(base, final).to(device)
    tok = load_tokenizer(cfg.model, str(final)) if (final / "tokenizer_config.json").is_file() else load_tokenizer(cfg.model)
    info = {**info, "run": str(model_or_run), "method": cfg.method}
    return model.eval(), tok, info


def export(run_dir: str | Path, out: str | Path | None = None, merge: bool = False) -> Path:
    """Write standard artefacts: the peft adapter / HF checkpoint, or a merged HF model."""
    model, tok, info = load_for_inference(str(run_dir), device="cpu")
    out = Path(out or Path(run_dir) / ("merged" if merge else "export"))
    if merge:
        method = METHODS.get(info["method"].get("name", "lora"))()
        if not method.mergeable:
            raise ValueError(f"method {method.name!r} cannot be merged into the base weights; "
                             f"`tunelab export {run_dir}` writes its standard artefacts")
        model = method.merge(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "tunelab.json").write_text(json.dumps({"from_run": str(run_dir), "merged": merge}, indent=1))
    return out
