"""``report.html`` for a run or a sweep: one self-contained page (inline SVG plots, no script, no network).

A run report shows the training curves (loss overall and per source, held-out loss, learning rate,
gradient norm, tokens/s, memory), the realised mixture, the method and its parameters, the
evaluation table with CIs (base vs tuned and the paired delta, with a forest plot), examples where
base and tuned differ, and the environment. A sweep report shows the arm table, a forest plot of
the paired deltas against the baseline, an interaction plot of the first two factors with every
seed's score, the ANOVA and links to each run's report. Whatever is missing or unreadable (no
evaluation, a corrupted metrics file) is said on the page instead of failing.

Plots are drawn with matplotlib (Agg) as SVG and inlined.
"""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

from tunelab.diagnostics import DIAGNOSTICS, Panel  # noqa: E402
from tunelab.diagnostics.base import generic_panel  # noqa: E402
from tunelab.io import read_jsonl  # noqa: E402

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem} h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top} th{background:#f5f5f5} .num{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#a33;font-style:italic} .plots{display:flex;flex-wrap:wrap;gap:1rem} figure{margin:0}
pre{white-space:pre-wrap;background:#f8f8f8;padding:.4rem;margin:0;max-height:14rem;overflow:auto;font-size:.8rem}
.better{color:#176a2c;font-weight:600} .worse{color:#a33;font-weight:600}
"""


VERDICTS = {"b better": "tuned better", "a better": "base better"}
"""A run's paired verdicts (A = base, B = tuned) in the report's words."""


def _e(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value))


def _svg(fig: plt.Figure, label: str) -> str:
    """A figure as inline SVG (closed afterwards), with an accessible label."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": label}):  # element ids from the label: the same page byte for byte
        fig.savefig(buf, format="svg", bbox_inches="tight",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    return f'<figure class="plot" data-plot="{_e(label)}" aria-label="{_e(label)}">{svg}</figure>'


def _missing(text: str) -> str:
    """A note that something is not there."""
    return f'<p class="missing">{_e(text)}</p>'


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    """An HTML table (cells escaped; columns in ``numeric`` right-aligned)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(x: Any, spec: str = ".3f") -> str:
    """A number for a table ('-' for none or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def _page(title: str, sections: list[str]) -> str:
    """The whole HTML document."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>{''.join(sections)}</body></html>")


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(content, problem): a missing or unreadable file is a problem, not an exception."""
    if not path.is_file():
        return None, f"{path.name} is missing"
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as e:
        return None, f"{path.name} could not be read: {e}"


def _metrics(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """metrics.jsonl rows; unreadable lines are skipped and counted in the problem text."""
    if not path.is_file():
        return [], "metrics.jsonl is missing: no training curves"
    rows, bad = [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
            else:
                bad.append(n)
        except ValueError:
            bad.append(n)
    problem = f"metrics.jsonl: {len(bad)} unreadable line(s) skipped (first at line {bad[0]})" if bad else None
    return rows, problem


def _curves(rows: list[dict[str, Any]]) -> str:
    """Loss (overall, per source, held-out), LR, grad norm, tokens/s and memory against steps."""
    train = [r for r in rows if "loss" in r]
    held = [r for r in rows if "heldout_loss" in r]
    panels = []
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1.5)
    sources = sorted({k for r in train for k in r if k.startswith("loss/")})
    for key in sources:
        pts = [(r["step"], r[key]) for r in train if key in r]
        ax.plot(*zip(*pts), label=key, lw=0.8, alpha=0.7)
    if held:
        ax.plot([r["step"] for r in held], [r["heldout_loss"] for r in held], "o-", label="held-out", lw=1.5)
    ax.set(xlabel="step", ylabel="loss per target token", title="Loss")
    ax.legend(fontsize=7)
    panels.append(_svg(fig, "loss"))
    for key, title in (("lr", "Learning rate"), ("grad_norm", "Gradient norm"), ("tokens_per_s", "Tokens/s"),
                       ("peak_mem_mb", "Peak memory (MB)")):
        pts = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(3.6, 2.4))
        ax.plot(*zip(*pts), lw=1.2)
        ax.set(xlabel="step", title=title)
        panels.append(_svg(fig, key))
    return f'<div class="plots">{"".join(panels)}</div>'


def _forest(labels: list[str], deltas: list[float], cis: list[list[float]], title: str) -> str:
    """A forest plot: one row per label, the delta and its CI, the zero line."""
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(labels)))
    ys = list(range(len(labels)))[::-1]
    for y, d, (lo, hi) in zip(ys, deltas, cis):
        if not (math.isnan(lo) or math.isnan(hi)):
            ax.plot([lo, hi], [y, y], color="#555", lw=2)
        ax.plot([d], [y], "o", color="#1f77b4")
    ax.axvline(0, color="#a33", lw=1, ls="--")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set(xlabel="delta (95% CI)", title=title)
    return _svg(fig, "forest")


def _examples(run_dir: Path, tasks: list[str], per_task: int = 4) -> str:
    """Items where base and tuned differ (correctness first, else the completion)."""
    parts = []
    for task in tasks:
        base_p, tuned_p = run_dir / "eval" / "base" / f"{task}.jsonl", run_dir / "eval" / "tuned" / f"{task}.jsonl"
        if not (base_p.is_file() and tuned_p.is_file()):
            continue
        try:
            base = {str(r["id"]): r for r in read_jsonl(base_p)}
            tuned = read_jsonl(tuned_p)
        except (OSError, ValueError) as e:
            parts.append(_missing(f"{task}: per-item rows unreadable ({e})"))
            continue
        diff = [(base[str(t["id"])], t) for t in tuned if str(t["id"]) in base
                and (base[str(t["id"])].get("correct") != t.get("correct")
                     or base[str(t["id"])].get("completion") != t.get("completion"))]
        diff.sort(key=lambda bt: bt[0].get("correct") == bt[1].get("correct"))
        rows = [[_e(t["id"]), _e(b.get("correct", "")), f"<pre>{_e(b.get('completion', ''))}</pre>",
                 _e(t.get("correct", "")), f"<pre>{_e(t.get('completion', ''))}</pre>"] for b, t in diff[:per_task]]
        if rows:
            parts.append(f"<h3>{_e(task)}</h3>" + _table(["id", "base correct", "base", "tuned correct", "tuned"],
                                                          rows))
    return "".join(parts) or _missing("no items where base and tuned differ (or no base evaluation)")


def run_report(run_dir: str | Path) -> Path:
    """Write ``<run>/report.html`` from what the run folder holds; returns its path."""
    run_dir = Path(run_dir)
    results, res_problem = _read_json(run_dir / "results.json")
    env, env_problem = _read_json(run_dir / "env.json")
    mixture, mix_problem = _read_json(run_dir / "data" / "mixture.json")
    rows, met_problem = _metrics(run_dir / "metrics.jsonl")
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None
    sections = []

    train = (results or {}).get("run", {}).get("train", {})
    summary = [["steps", _fmt(train.get("steps"), "d")], ["final train loss", _fmt(train.get("final_loss"))],
               ["held-out loss", _fmt(train.get("heldout_loss"))],
               ["trainable parameters", f"{train.get('trainable_parameters', 0):,} of "
                                        f"{train.get('total_parameters', 0):,}" if train else "-"],
               ["peak memory (MB)", _fmt(max((r.get("peak_mem_mb", 0) for r in rows), default=None), ".0f")],
               ["seconds", _fmt((results or {}).get("run", {}).get("seconds"), ".0f")]]
    if train.get("best_step") is not None:
        summary.append(["best step", f"{train['best_step']} ({train.get('best_metric')} {_fmt(train.get('best_value'))})"])
    sections.append("<h2>Run</h2>" + (_missing(res_problem) if res_problem else "") + _table(["", ""], summary))

    sections.append("<h2>Training curves</h2>" + (_missing(met_problem) if met_problem else "")
                    + (_curves(rows) if rows else ""))

    tasks = [t for t, v in (results or {}).items() if t != "run" and isinstance(v, dict) and "tuned" in v]
    if tasks:
        table_rows, labels, deltas, cis = [], [], [], []
        for t in tasks:
            v = results[t]
            b, tu, d = v.get("base"), v["tuned"], v.get("delta")
            table_rows.append([_e(t), _e(v.get("metric")),
                               f"{_fmt(b['value'])} [{_fmt(b['ci'][0])}, {_fmt(b['ci'][1])}]" if b else "-",
                               f"{_fmt(tu['value'])} [{_fmt(tu['ci'][0])}, {_fmt(tu['ci'][1])}]",
                               f"{_fmt(d['delta'], '+.3f')} [{_fmt(d['ci'][0], '+.3f')}, {_fmt(d['ci'][1], '+.3f')}]"
                               if d else "-", _e(VERDICTS.get(d["verdict"], d["verdict"])) if d else "-",
                               _e(tu.get("n", ""))])
            if d:
                labels.append(t)
                deltas.append(d["delta"])
                cis.append(d["ci"])
        sections.append("<h2>Evaluation</h2>" + _table(
            ["task", "metric", "base [95% CI]", "tuned [95% CI]", "delta tuned - base [95% CI]", "verdict", "n"],
            table_rows) + (_forest(labels, deltas, cis, "Tuned - base, paired") if labels else ""))
        sections.append("<h2>Where base and tuned differ</h2>" + _examples(run_dir, tasks))
    else:
        sections.append("<h2>Evaluation</h2>" + _missing("this run has no evaluation (eval.tasks is empty, or the "
                                                         "run did not finish)"))

    sections.append(_diagnostics(run_dir))
    if mixture:
        mix_rows = [[_e(s["name"]), _fmt(s.get("target_fraction")), _fmt(s.get("examples"), "d"),
                     _fmt(s.get("tokens"), "d"), _fmt(s.get("realized_fraction")), _e(s.get("removed") or "-")]
                    for s in mixture.get("sources", [])]
        sections.append("<h2>Data mixture</h2>" + _table(
            ["source", "target", "examples", "tokens", "realised", "removed"], mix_rows, {1, 2, 3, 4}))
    else:
        sections.append("<h2>Data mixture</h2>" + _missing(mix_problem or "no mixture report"))

    if config:
        sections.append(f"<h2>Recipe (resolved)</h2><pre>{_e(config)}</pre>")
    if env:
        env_rows = [[_e(k), _e(env[k])] for k in ("cpu", "cores", "cpu_flags", "precision", "precision_reason",
                                                  "torch_threads", "python", "platform", "packages") if k in env]
        sections.append("<h2>Environment</h2>" + _table(["", ""], env_rows))
    else:
        sections.append("<h2>Environment</h2>" + _missing(env_problem or "no env.json"))
    path = run_dir / "report.html"
    path.write_text(_page(f"tunelab run {run_dir.name}", sections), encoding="utf-8")
    return path


def sweep_report(result: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``<sweep>/report.html`` (or ``path``) from ``sweep.json`` content; returns its path."""
    folder = Path(result["folder"])
    sections = []
    runs = result["runs"]
    status_rows = [[f'<a href="runs/{_e(name)}/report.html">{_e(name)}</a>', _e(r["arm"]), _e(r["seed"]),
                    _e(r["status"]) + (f": {_e(r.get('error', ''))}" if r.get("error") else "")]
                   for name, r in runs.items()]
    sections.append("<h2>Design</h2>" + _table(["factor", "levels"], [[_e(f), _e(", ".join(lv))] for f, lv in
                                                                       result["design"]["factors"].items()])
                    + f"<p>seeds {_e(result['design']['seeds'])}; baseline {_e(result['design']['baseline'])}; "
                      f"reused data {result['reused']['data_from_cache']}x, base evaluations "
                      f"{result['reused']['base_eval_from_cache']}x</p>")
    for task, t in result["tasks"].items():
        arms = t["arms"]
        rows, labels, deltas, cis = [], [], [], []
        for label, a in arms.items():
            vs = a.get("vs_baseline")
            verdict = vs["verdict"] if vs else "(baseline)"
            cls = "better" if "better than" in verdict else "worse" if "worse than" in verdict else ""
            rows.append([_e(label), _e(a["seeds"]), _fmt(a["mean"]),
                         f"[{_fmt(a['ci_items'][0])}, {_fmt(a['ci_items'][1])}]",
                         f"[{_fmt(a['ci_seeds'][0])}, {_fmt(a['ci_seeds'][1])}]",
                         _fmt(vs["delta"], "+.3f") if vs else "-", _fmt(vs["p_holm"], ".3g") if vs else "-",
                         f'<span class="{cls}">{_e(verdict)}</span>'])
            if vs:
                labels.append(label)
                deltas.append(vs["delta"])
                cis.append(vs["ci"])
        parts = [_table(["arm", "seeds", "mean", "CI (items)", "CI (seeds)", "delta vs baseline", "p (Holm)",
                         "verdict"], rows)]
        if labels:
            parts.append(_forest(labels, deltas, cis, f"{task}: arm - baseline, paired"))
        parts.append(_interaction(result, task))
        anova = t["anova"]
        if "table" in anova:
            parts.append(_table(["term", "df", "F", "p"], [[_e(r["term"]), _fmt(r["df"], ".0f"), _fmt(r["F"], ".2f"),
                                                             _fmt(r["p_value"], ".3g")] for r in anova["table"]])
                         + f"<p>{_e(anova['method'])}</p>")
        else:
            parts.append(_missing(f"ANOVA: {anova['note']}"))
        sections.append(f"<h2>{_e(task)} ({_e(t['metric'])})</h2>" + "".join(parts))
    if judged := result.get("judged"):
        rows = []
        for c in judged["claims"]:
            t = c.get("test")
            rows.append([_e(c["claim"]), _e(f"{c['arm']} vs {c['versus']}"), _e(len(c["seeds"])), _e(c.get("items", 0)),
                         f"{_fmt(c['win_rate'])} [{_fmt(c['win_ci'][0])}, {_fmt(c['win_ci'][1])}]" if t else "-",
                         _fmt(c["lc_win_rate"].get("value")) if t else "-", _fmt(c.get("p_holm"), ".3g"),
                         _fmt(c["position"]["flip_rate"].get("value")) if t else "-", _e(c["verdict"])])
        sections.append(f"<h2>Judged claims ({_e(judged['task'])}, judge {_e(judged['judge'])})</h2>" + _table(
            ["claim", "arm vs", "seeds", "items", "win rate [95% CI]", "length-controlled", "p (Holm)", "flip rate",
             "verdict"], rows))
    sections.append("<h2>Runs</h2>" + _table(["run", "arm", "seed", "status"], status_rows))
    path = Path(path) if path else folder / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"tunelab sweep {result['name']}", sections), encoding="utf-8")
    return path


def _interaction(result: dict[str, Any], task: str) -> str:
    """Mean score per level of the first factor, one line per level of the second; every seed's dot."""
    factors = list(result["design"]["factors"])
    arms = result["tasks"][task]["arms"]
    if not factors:
        return ""
    x_f, line_f = factors[0], factors[1] if len(factors) > 1 else None
    x_levels = result["design"]["factors"][x_f]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    groups: dict[str, list[tuple[int, dict]]] = {}
    for a in arms.values():
        key = a["levels"].get(line_f, "") if line_f else ""
        groups.setdefault(key, []).append((x_levels.index(a["levels"][x_f]), a))
    for key, pts in groups.items():
        pts.sort(key=lambda p: p[0])
        ax.plot([p[0] for p in pts], [p[1]["mean"] for p in pts], "o-", label=f"{line_f}={key}" if line_f else None)
        for x, a in pts:
            ax.plot([x] * len(a["seed_scores"]), a["seed_scores"], ".", color="#888", alpha=0.7)
    ax.set_xticks(range(len(x_levels)), x_levels)
    ax.set(xlabel=x_f, ylabel=result["tasks"][task]["metric"], title="Interaction (dots: seeds)")
    if line_f:
        ax.legend(fontsize=7)
    return _svg(fig, "interaction")


def _panel(panel: Panel) -> str:
    """A diagnostic's panel as HTML: its heading, paragraph, figure and table (text escaped)."""
    html_ = f"<h3>{_e(panel.title)}</h3>" + (f"<p>{_e(panel.text)}</p>" if panel.text else "")
    if panel.figure is not None:
        html_ += _svg(panel.figure, panel.label)
    if panel.table is not None:
        header, rows = panel.table
        html_ += _table(header, [[_e(c) for c in row] for row in rows])
    return html_


def _diagnostics(run_dir: Path) -> str:
    """The diagnostics panels of a run (those it has under ``diagnostics/``), each drawn by its
    diagnostic (:meth:`tunelab.diagnostics.Diagnostic.panel`; one not installed here: a table of its values)."""
    folder = run_dir / "diagnostics"
    found = {p.stem: _read_json(p)[0] for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    if not found:
        return "<h2>Diagnostics</h2>" + _missing("none run (recipe `diagnostics:` or `tunelab diagnose RUN`)")
    parts = []
    for name, d in found.items():
        if not isinstance(d, dict) or "error" in d or "note" in d:
            parts.append(f"<h3>{_e(name)}</h3>" + _missing((d or {}).get("error") or (d or {}).get("note")
                                                            or "unreadable"))
            continue
        diagnostic = DIAGNOSTICS.get(name) if name in DIAGNOSTICS else None
        parts.append(_panel(diagnostic.panel(d) if hasattr(diagnostic, "panel") else generic_panel(name, d)))
    return "<h2>Diagnostics</h2>" + "".join(parts)
