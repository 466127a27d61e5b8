"""A model name or a finished run folder, loaded for inference (eval, chat, serve) or exported.

Below generation and evaluation on purpose: every layer that needs "the weights a run made"
calls :func:`load_for_inference`, and the generator builder (``tunelab.generate.build``) wraps it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.config import DEFAULT_METHOD, ModelConfig, is_run, load_config
from tunelab.device import default_device
from tunelab.methods import METHODS
from tunelab.models.heads import HEAD_FILE, load_head
from tunelab.models.load import ModelError, load_model, load_tokenizer


def load_start(cfg: ModelConfig, device: str | torch.device = "cpu"):
    """(model, tokenizer, info) a run trains from: ``cfg.name`` is a model, or a finished run folder whose
    final weights are merged into its base (``model: runs/sft-run`` makes DPO start from an SFT run; the
    reference of a preference objective is then that model). ``info["resolved"]`` names the run's
    ``final/`` folder, so caches keyed by the weights (base evaluations, reference log-probs) see them.

    Raises:
        ModelError: the run's method cannot be merged into plain weights (prefix, prompt tuning).
    """
    if not is_run(cfg.name):
        return load_model(cfg, device=device)
    model, tok, info = load_for_inference(cfg.name, device=str(device))
    method = METHODS.get(info["method"].get("name", DEFAULT_METHOD))()
    try:
        model = method.merge(model)
    except (NotImplementedError, ValueError) as e:
        raise ModelError(f"model.name: {cfg.name} was trained with method {method.name!r}, which cannot be "
                         "merged into plain weights, so a run cannot start from it") from e
    for p in model.parameters():
        p.requires_grad_(True)  # as a freshly loaded model: the method decides what trains
    final = Path(cfg.name).resolve() / "final"
    return model, tok, {**info, "resolved": str(final), "kind": "run", "from_run": str(cfg.name)}


def load_for_inference(model_or_run: str, device: str | None = None, merge: bool = False):
    """(model, tokenizer, info) for a model name/dir or a run folder (its ``final/`` weights), in eval mode.
    ``merge``: a run's adapters merged into its base weights (plain weights; what ``export --merge`` writes).

    Raises:
        ValueError: ``merge`` for a plain model (nothing to merge) or a run whose method cannot be merged
            (prefix, prompt tuning).
    """
    device = device or default_device()
    if not is_run(model_or_run):
        if merge:
            raise ValueError(f"{model_or_run}: not a run folder, so there are no adapters to merge")
        model, tok, info = load_model(ModelConfig(name=model_or_run), device=device)
        return model.eval(), tok, info
    cfg = load_config(model_or_run)
    final = Path(model_or_run) / "final"
    base, _, info = load_start(cfg.model, device=device)  # a run started from another run: its merged weights
    method_cls = METHODS.get(cfg.method.get("name", DEFAULT_METHOD))
    model = method_cls.load_final(base, final).to(device)
    load_head(model, final / HEAD_FILE)  # an objective's head (choice_head), where the run trained one
    has_tok = (final / "tokenizer_config.json").is_file()
    tok = load_tokenizer(cfg.model, str(final)) if has_tok else load_tokenizer(cfg.model)
    info = {**info, "run": str(model_or_run), "method": cfg.method, "merged": merge}
    if merge:
        method = method_cls()
        if not method.mergeable:
            raise ValueError(f"method {method.name!r} cannot be merged into the base weights; "
                             f"`tunelab export {model_or_run}` writes its standard artefacts")
        model = method.merge(model)
    return model.eval(), tok, info


def export(run_dir: str | Path, out: str | Path | None = None, merge: bool = False) -> Path:
    """Write standard artefacts: the peft adapter / HF checkpoint, or a merged HF model."""
    model, tok, info = load_for_inference(str(run_dir), device="cpu", merge=merge)
    out = Path(out or Path(run_dir) / ("merged" if merge else "export"))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "tunelab.json").write_text(json.dumps({"from_run": str(run_dir), "merged": merge}, indent=1))
    return out
