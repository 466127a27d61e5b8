"""Statistics of an Evol-Instruct run: per generation and per operator, from the item rows.

Per generation (round 0 = the seeds, round r = the evolutions kept in round r, and ``all`` = the
final set): instruction and answer length in words, constraint count, lexical diversity
(distinct-1 and distinct-2: distinct word uni/bigrams over all of them; it falls as a set grows,
so compare generations of similar size), and the near-duplicate rate: the share of instructions
the data layer's MinHash ``near_dedup`` would remove (no embeddings). Per round and operator:
attempts, kept, eliminated by rule, and the elimination rate.
"""

from __future__ import annotations

import re
from typing import Any

from tunelab.data.transforms.base import TransformContext, words
from tunelab.data.transforms.filters import NearDedup
from tunelab.evolve.eliminate import RULES
from tunelab.types import Sample

_CUES = re.compile(
    r"\b(must|should|exactly|at least|at most|no more than|no fewer than|without|only|include|including|"
    r"ensure|each|every|avoid|do not|don't|limit|within|format|list|table|step|steps|json|bullet)\b", re.I)


def constraint_count(row: dict[str, Any]) -> int:
    """The item's checkable constraints (``instruct`` items), else a count of constraint cue words
    ("must", "exactly", "at least", "without", "each", "format" ...) in its instruction."""
    if isinstance(row.get("constraints"), list):
        return len(row["constraints"])
    return len(_CUES.findall(row["instruction"]))


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (0 when there are none)."""
    grams = [tuple(ws[i:i + n]) for t in texts for ws in [words(t)] for i in range(len(ws) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


def near_duplicate_rate(texts: list[str], threshold: float = 0.8, seed: int = 0) -> float:
    """Share of ``texts`` that MinHash near-deduplication (the data layer's ``near_dedup``, 3-word
    shingles: instructions are short) would drop."""
    if len(texts) < 2:
        return 0.0
    dedup = NearDedup(NearDedup.Params(threshold=threshold, ngram=3, on="prompt"))
    samples = [Sample([{"role": "user", "content": t}, {"role": "assistant", "content": ""}]) for t in texts]
    kept, _ = dedup(samples, TransformContext(seed=seed))
    return round(1 - len(kept) / len(samples), 4)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def generation_stats(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Length, constraint count, diversity and near-duplicate rate of one generation's kept rows."""
    texts = [r["instruction"] for r in rows]
    return {
        "items": len(rows),
        "instruction_words": _mean([len(words(t)) for t in texts]),
        "answer_words": _mean([len(words(r["response"])) for r in rows if isinstance(r.get("response"), str)]),
        "constraints": _mean([constraint_count(r) for r in rows]),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "near_duplicate_rate": near_duplicate_rate(texts, threshold),
    }


def elimination_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{round: {operator | "all": {attempted, kept, eliminated, rate, by_rule}}}`` over evolved rows."""
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["round"] == 0:
            continue
        for op in (r["operator"], "all"):
            cell = table.setdefault(str(r["round"]), {}).setdefault(op, {
                "attempted": 0, "kept": 0, "eliminated": 0, "by_rule": dict.fromkeys(RULES, 0)})
            cell["attempted"] += 1
            if r["verdict"] == "kept":
                cell["kept"] += 1
            else:
                cell["eliminated"] += 1
                cell["by_rule"][r["reason"]] = cell["by_rule"].get(r["reason"], 0) + 1
    for ops in table.values():
        for cell in ops.values():
            cell["rate"] = round(cell["eliminated"] / cell["attempted"], 4)
    return table


def run_stats(rows: list[dict[str, Any]], final: list[dict[str, Any]], threshold: float = 0.8) -> dict[str, Any]:
    """Per-generation statistics, the final set's, and the elimination table."""
    rounds = sorted({r["round"] for r in rows})
    per = {str(k): generation_stats([r for r in rows if r["round"] == k and r["verdict"] == "kept"], threshold)
           for k in rounds}
    return {"generations": per, "final": generation_stats(final, threshold), "eliminations": elimination_table(rows)}


def format_report(stats: dict[str, Any]) -> str:
    """The statistics as a few plain-text tables (what ``tunelab evolve`` prints at the end)."""
    lines = [f"{'gen':>5s} {'items':>6s} {'instr.w':>8s} {'answer.w':>9s} {'constr.':>8s} {'dist-2':>7s} {'near-dup':>9s}"]
    gens = {**stats["generations"], "final": stats["final"]}
    for name, g in gens.items():
        lines.append(f"{name:>5s} {g['items']:6d} {_f(g['instruction_words']):>8s} {_f(g['answer_words']):>9s} "
                     f"{_f(g['constraints']):>8s} {g['distinct_2']:7.3f} {g['near_duplicate_rate']:9.3f}")
    lines.append("")
    lines.append(f"{'round':>5s} {'operator':20s} {'tried':>6s} {'kept':>5s} {'elim.':>6s}  eliminated by rule")
    for rnd, ops in stats["eliminations"].items():
        for op, c in sorted(ops.items(), key=lambda kv: (kv[0] == "all", kv[0])):
            why = ", ".join(f"{k} {v}" for k, v in c["by_rule"].items() if v) or "-"
            lines.append(f"{rnd:>5s} {op:20s} {c['attempted']:6d} {c['kept']:5d} {c['rate']:6.1%}  {why}")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
