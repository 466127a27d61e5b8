"""What the commands print, apart from the commands: each function turns a library result into the
text a command writes (the commands in :mod:`tunelab.cli` only call the library and print these)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def format_quickstart(res: dict[str, Any], run_dir: Path) -> str:
    """The quickstart's results: each task's base and tuned score with its 95% CI, the wall time phase by
    phase, then the run folder."""
    lines = ["\n[tunelab] quickstart results (held-out, exact verifier, 95% CI):"]
    for task, r in res.items():
        if task == "run" or "base" not in r:
            continue
        b, t = r["base"], r["tuned"]
        lines.append(f"  {task:10s} base {b['value']:6.1%} [{b['ci'][0]:.1%}, {b['ci'][1]:.1%}]  ->  "
                     f"tuned {t['value']:6.1%} [{t['ci'][0]:.1%}, {t['ci'][1]:.1%}]  (n={t['n']})")
    phases = res["run"].get("phases") or {}
    lines.append(f"[tunelab] wall time {res['run']['seconds']:.0f} s"
                 + (": " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items() if v >= 0.5) if phases else ""))
    lines.append(f"[tunelab] run folder: {run_dir}")
    return "\n".join(lines)


def format_diagnose(results: dict[str, Any]) -> str:
    """``tunelab diagnose``'s summary: each diagnostic's seconds (and error), as JSON."""
    return json.dumps({k: {"seconds": v.get("seconds"), **({"error": v["error"]} if "error" in v else {})}
                       for k, v in results.items()}, indent=1)


def format_compare(out: dict) -> str:
    """``tunelab compare``'s lines: per task the paired delta with its CI, p, n, method and verdict."""
    lines = []
    for task, r in out.items():
        lines.append(f"{task}: delta {r['delta']:+.3f} CI [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] "
                     f"p={r['p_value']:.3g} n={r['n']} ({r['method']}) -> {r['verdict']}"
                     + (f"  ({r['note']})" if r.get("note") else ""))
    return "\n".join(lines)


def format_listing(sections: dict[str, list[tuple[str, str]]], what: str | None = None) -> str:
    """``tunelab ls``: each section (or only ``what``) with its names and descriptions."""
    lines = []
    for name, rows in sections.items():
        if what and what != name:
            continue
        lines.append(f"{name}:")
        lines += [f"  {key:28s} {desc}" for key, desc in rows]
    return "\n".join(lines)


def format_sweep_done(result: dict[str, Any]) -> str:
    """The line ``tunelab sweep`` ends with: the sweep folder, the records and the failed runs."""
    failed = sum(r["status"] == "failed" for r in result["runs"].values())
    return (f"[tunelab] sweep folder: {result['folder']} (sweep.json); records: {result['records']}"
            f"{f'; {failed} run(s) failed' if failed else ''}")


def format_findings_written(doc: Path, names: list[str]) -> str:
    """The line ``tunelab findings`` ends with: the document and the studies it holds."""
    return f"[tunelab] {doc}: {len(names)} stud{'ies' if len(names) != 1 else 'y'} ({', '.join(names)})"
