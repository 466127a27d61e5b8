"""The diagnostics registry, the context they read (run folder, base and tuned models, probe rows), and
the panel each draws in the run report (:class:`Panel`; by default a table of its result's values)."""

from __future__ import annotations

import json
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


@dataclass
class Panel:
    """A diagnostic's panel in the run report: a heading, then a paragraph, a figure and a table, each
    optional (:mod:`tunelab.report.run_report` draws it as HTML, escaping the text)."""

    title: str
    text: str = ""
    """A paragraph under the heading."""
    figure: Any = None
    """A matplotlib figure; the report inlines it as SVG (labelled ``label``) and closes it."""
    label: str = ""
    """The figure's label (``data-plot``)."""
    table: tuple[list[str], list[list[Any]]] | None = None
    """(header, rows) of plain values."""


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive backend, imported on first use (only panels draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cost(result: dict[str, Any]) -> str:
    """`` (1.2s)``: the seconds the diagnostic took, for a panel's heading."""
    return f" ({result.get('seconds', 0):.1f}s)"


def _value(value: Any, width: int = 120) -> str:
    """A leaf of a result as table text (a float to 4 significant digits, anything else as JSON, shortened)."""
    text = f"{value:.4g}" if isinstance(value, float) else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def generic_panel(name: str, result: dict[str, Any], limit: int = 40) -> Panel:
    """A result as a table of its values (nested keys joined by dots; at most ``limit`` rows, the rest
    counted): the panel of a diagnostic that draws none of its own, or is not installed here."""
    rows: list[list[Any]] = []

    def walk(tree: Any, prefix: str) -> None:
        if isinstance(tree, dict) and tree:
            for key, value in tree.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            rows.append([prefix, _value(tree)])

    walk({k: v for k, v in result.items() if k != "seconds"}, "")
    more = f"{len(rows) - limit} more value(s) in diagnostics/{name}.json" if len(rows) > limit else ""
    return Panel(f"{name}{cost(result)}", more, table=(["value", ""], rows[:limit]))


class Diagnostic:
    """One diagnostic: ``Params`` are its recipe keys; :meth:`run` returns its JSON-able result and
    :meth:`panel` draws it in the run report."""

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

    @classmethod
    def panel(cls, result: dict[str, Any]) -> Panel:
        """The diagnostic's panel in the run report, from its result (``<run>/diagnostics/<name>.json``,
        neither an error nor a note). By default a table of the result's values: a diagnostic without
        a panel of its own still shows."""
        return generic_panel(getattr(cls, "name", cls.__name__), result)


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
