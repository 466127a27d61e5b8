"""``tunelab data inspect EVOLVED.jsonl``: evolved items beside their parents, with operator and verdict.

Reads the dataset written by ``tunelab evolve`` (or its work folder's ``items.jsonl``, which also
holds the eliminated evolutions and their reasons); parents are looked up in the work folder's
rows when the folder is there, else in the file itself.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from tunelab.io import DataError, read_jsonl

WIDTH = 52


def is_evolved(path: str | Path) -> bool:
    """Whether ``path`` is a JSONL file whose first row carries Evol-Instruct lineage."""
    p = Path(path)
    if not p.name.endswith(".jsonl") or not p.is_file():
        return False
    with p.open(encoding="utf-8") as f:
        first = f.readline()
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and "root_id" in row and "round" in row


def _instruction(row: dict[str, Any]) -> str:
    if isinstance(row.get("instruction"), str):
        return row["instruction"]
    return next((m["content"] for m in row.get("messages", []) if m.get("role") == "user"), "")


def _answer(row: dict[str, Any]) -> str:
    if isinstance(row.get("response"), str):
        return row["response"]
    return next((m["content"] for m in reversed(row.get("messages", [])) if m.get("role") == "assistant"), "")


def pairs(path: str | Path, n: int = 3) -> list[dict[str, Any]]:
    """Up to ``n`` evolved rows of ``path`` (latest rounds first, one per root), each with its parent."""
    path = Path(path)
    rows = read_jsonl(path)
    folder = path.with_name(path.name.removesuffix(".jsonl") + ".evolve")
    if path.name == "items.jsonl":
        folder = path.parent
    known = {r["id"]: r for r in (read_jsonl(folder / "items.jsonl") if (folder / "items.jsonl").is_file() else rows)}
    out, seen = [], set()
    for r in sorted((r for r in rows if r.get("round", 0) > 0), key=lambda r: (-r["round"], str(r["id"]))):
        if r["root_id"] in seen:
            continue
        seen.add(r["root_id"])
        parent = known.get(r.get("parent_id"))
        out.append({"id": r["id"], "round": r["round"], "operator": r.get("operator"), "verdict": r.get("verdict"),
                    "reason": r.get("reason"), "parent_id": r.get("parent_id"),
                    "parent": _instruction(parent) if parent else None, "instruction": _instruction(r),
                    "answer": _answer(r)})
        if len(out) >= n:
            break
    return out


def _side_by_side(left: str, right: str) -> list[str]:
    a = [line for para in left.splitlines() for line in textwrap.wrap(para, WIDTH) or [""]]
    b = [line for para in right.splitlines() for line in textwrap.wrap(para, WIDTH) or [""]]
    return [f"{x:{WIDTH}s} | {y}" for x, y in zip(a + [""] * (len(b) - len(a)), b + [""] * (len(a) - len(b)))]


def inspect_evolved(path: str | Path, n: int = 3, as_json: bool = False) -> int:
    """Print ``n`` evolved items beside their parents (``as_json``: the pairs as JSON); returns 0.

    Raises:
        DataError: The file is not an Evol-Instruct dataset or items file.
    """
    if not is_evolved(path):
        raise DataError(f"{path}: not an Evol-Instruct file (rows with root_id and round)")
    found = pairs(path, n)
    rows = read_jsonl(path)
    if as_json:
        print(json.dumps({"rows": len(rows), "pairs": found}, indent=2, ensure_ascii=False))
        return 0
    by_round: dict[int, int] = {}
    for r in rows:
        by_round[r.get("round", 0)] = by_round.get(r.get("round", 0), 0) + 1
    print(f"{path}: {len(rows)} rows; by round: {', '.join(f'{k}: {v}' for k, v in sorted(by_round.items()))}")
    for p in found:
        status = p["verdict"] + (f" ({p['reason']})" if p["reason"] else "")
        print(f"\n--- {p['id']}  round {p['round']}  operator {p['operator']}  {status}  parent {p['parent_id']}")
        print(f"{'parent':{WIDTH}s} | evolved")
        print("\n".join(_side_by_side(p["parent"] or "(parent not found)", p["instruction"])))
        print(f"answer: {textwrap.shorten(p['answer'] or '-', 300)}")
    return 0
