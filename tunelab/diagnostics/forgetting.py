"""Forgetting panel: per task, the items the base model got right and the tuned model lost (and gained)."""

from __future__ import annotations

from typing import Any

from tunelab.diagnostics.base import DIAGNOSTICS, Context, Diagnostic, Panel, cost
from tunelab.io import read_jsonl


@DIAGNOSTICS.register("forgetting")
class Forgetting(Diagnostic):
    """Items right before and wrong after fine-tuning (and the reverse), from the run's evaluation rows."""

    def run(self, ctx: Context) -> dict[str, Any]:
        """``{task: {"lost": [ids], "gained": [ids], "base_right": n, "n": n}}``."""
        base_dir, tuned_dir = ctx.run_dir / "eval" / "base", ctx.run_dir / "eval" / "tuned"
        out: dict[str, Any] = {}
        for path in sorted(tuned_dir.glob("*.jsonl")):
            base_path = base_dir / path.name
            if not base_path.is_file():
                continue
            base = {str(r["id"]): r.get("correct") for r in read_jsonl(base_path)}
            tuned = {str(r["id"]): r.get("correct") for r in read_jsonl(path)}
            common = [i for i in tuned if i in base and base[i] is not None and tuned[i] is not None]
            if not common:
                continue
            out[path.stem] = {"n": len(common), "base_right": sum(bool(base[i]) for i in common),
                              "lost": [i for i in common if base[i] and not tuned[i]],
                              "gained": [i for i in common if tuned[i] and not base[i]]}
        return {"tasks": out} if out else {"note": "no task with per-item correctness for base and tuned"}

    @classmethod
    def panel(cls, result: dict[str, Any]) -> Panel:
        """Per task: items, those the base got right, lost and gained, the first lost ones."""
        rows = [[t, v["n"], v["base_right"], len(v["lost"]), len(v["gained"]), ", ".join(v["lost"][:10])]
                for t, v in result["tasks"].items()]
        return Panel(f"Forgetting{cost(result)}", table=(
            ["task", "items", "base right", "lost", "gained", "first lost items"], rows))
