"""The diagnostics registry, the context they read (run folder, base and tuned models, probe rows)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tunelab.config import RunConfig, load_config, parse_params
from tunelab.data.sources import load_source
from tunelab.data.tokenize import collate, encode, pack
from tunelab.io import write_json
from tunelab.registry import Registry
from tunelab.train.artifacts import load_for_inference, load_start


class Diagnostic:
    """One diagnostic: ``Params`` are its recipe keys; :meth:`run` returns its JSON-able result."""

    during_training: ClassVar[bool] = False
    """True for diagnostics measured by the training loop (their :meth:`run` summarises the log)."""

    @dataclass
    class Params:
        """No options."""

    def __init__(self, params: Any) -> None:
        self.params = params

    def run(self, ctx: Context) -> dict[str, Any]:
        """The diagnostic's result for the run in ``ctx``."""
        raise NotImplementedError


DIAGNOSTICS: Registry[type[Diagnostic]] = Registry(
    "diagnostic", package="tunelab.diagnostics", entry_points="tunelab.diagnostics"
)


def build_diagnostic(spec: dict[str, Any]) -> Diagnostic:
    """A diagnostic from ``{name: ..., **params}``."""
    cls = DIAGNOSTICS.get(spec["name"])
    return cls(parse_params(cls.Params, spec, f"diagnostics ({spec['name']})"))


class Context:
    """What diagnostics read, loaded once and on demand: the config, both models, probe rows."""

    def __init__(self, run_dir: str | Path, probe_rows: int = 16, device: str = "cpu") -> None:
        self.run_dir, self.probe_rows, self.device = Path(run_dir), probe_rows, device

    @cached_property
    def cfg(self) -> RunConfig:
        """The run's resolved config."""
        return load_config(self.run_dir)

    @cached_property
    def tuned(self) -> tuple[nn.Module, Any]:
        """(tuned model with adapters merged where possible, tokenizer), fp32, eval mode."""
        model, tok, _ = load_for_inference(str(self.run_dir), device=self.device)
        if hasattr(model, "merge_and_unload"):
            try:
                model = model.merge_and_unload()
            except (ValueError, AttributeError, NotImplementedError):  # prompt methods cannot merge
                pass
        return model.float().eval(), tok

    @cached_property
    def base(self) -> nn.Module:
        """The untrained model, fp32, eval mode."""
        model, _, _ = load_start(self.cfg.model, device=self.device)
        return model.float().eval()

    @cached_property
    def probes(self) -> dict[str, dict[str, torch.Tensor]]:
        """One batch of ``probe_rows`` rows per source (held-out examples first), unpacked.

        Only these examples are tokenized: each source is loaded as the run loaded it (same seed and
        held-out split), without the run's mixing and transforms over the whole training set."""
        cfg, tok = self.cfg, self.tuned[1]
        names = [src.name for src in cfg.data.sources]
        out = {}
        for src in cfg.data.sources:
            loaded = load_source(src, cfg.recipe_dir, cfg.data.seed, cfg.data.heldout)
            encoded = [e for s in loaded.heldout + loaded.train
                       if (e := encode(s, tok, cfg.data.max_length, cfg.data.truncation)) is not None]
            rows = pack(encoded[: self.probe_rows], names, cfg.data.max_length, False)
            if rows:
                out[src.name] = collate(rows, tok.pad_token_id, False)
        return out


def run_diagnostics(run_dir: str | Path, specs: list[dict[str, Any]] | None = None,
                    say: Any = lambda msg: print(f"[tunelab] {msg}")) -> dict[str, Any]:
    """Run diagnostics on a finished run (default: the recipe's ``diagnostics``, else every one) and write
    ``<run>/diagnostics/<name>.json``; returns {name: result} with each one's ``seconds``."""
    ctx = Context(run_dir)
    specs = specs or ctx.cfg.diagnostics or [{"name": n} for n in DIAGNOSTICS.names()]
    out: dict[str, Any] = {}
    for spec in specs:
        diag = build_diagnostic(spec)
        t0 = time.perf_counter()
        try:
            result = diag.run(ctx)
        except Exception as e:  # noqa: BLE001 - a failed diagnostic is recorded; the run and the others go on
            result = {"error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(ctx.run_dir / "diagnostics" / f"{spec['name']}.json", result)
        say(f"diagnostic {spec['name']}: {result['seconds']:.1f}s" + (f" ({result['error']})" if "error" in result else ""))
        out[spec["name"]] = result
    return out
