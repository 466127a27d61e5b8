"""Evol-Instruct (WizardLM: Xu et al., 2023, arXiv:2304.12244): seeds -> rounds of rewriting -> a dataset.

Every round, each item of the pool (one per seed: the seed, or its latest kept evolution) is
rewritten once by an operator drawn by weight; the eliminator drops failed evolutions, whose
parents stay in the pool; the final set mixes every generation. Rows record their lineage: parent
id, root id, operator, round, evolver / judge / answerer fingerprints, template version, verdict
and reason.

Work is carried out in chunks of items (evolve -> instruction rules -> judge -> answer -> answer
rules) and each chunk's rows are appended to ``<work>/items.jsonl`` at once; every completion is
cached the moment it arrives (:mod:`tunelab.evolve.calls`). A killed run, started again with the
same command, skips the written rows and regenerates nothing that arrived. The dataset
(``out``) and ``report.json`` are written at the end.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tunelab.config import to_dict
from tunelab.evolve.calls import Caller, GenerationFailed, ItemCache, Ledger, item_key
from tunelab.evolve.config import PROGRAMMATIC, EvolveConfig
from tunelab.evolve.eliminate import check_answer, check_instruction, copy_phrases
from tunelab.evolve.operators import (
    OPERATORS,
    clean_evolution,
    judge_prompt,
    judge_version,
    parse_equal,
    parse_operators,
    pick_operator,
)
from tunelab.evolve.program import FINGERPRINT, PROGRAM_OPERATORS, PROGRAM_VERSION, evolve_item
from tunelab.evolve.seeds import load_seeds
from tunelab.evolve.stats import format_report, run_stats
from tunelab.generate.base import GenerationConfig, Generator
from tunelab.generate.build import build_generator, is_url
from tunelab.io import FolderLock, append_jsonl, digest, read_jsonl_resumable, write_json, write_jsonl

ROLES = ("evolver", "judge", "answerer")
SETTINGS = ("seeds", "evolver", "answerer", "judge", "operators", "seed", "temperature", "answer_temperature",
            "max_new_tokens", "answer_max_new_tokens", "eliminator", "answer_seeds")
"""Keys that decide the rows: a work folder made with other values is not continued."""
JUDGE_TOKENS = 8


class EvolveError(RuntimeError):
    """A run that cannot start or go on; the message says why and what to do."""


def read_items(path: Path) -> list[dict[str, Any]]:
    """The rows of ``items.jsonl``; a last line cut by a kill is dropped (and cut from the file)."""
    return read_jsonl_resumable(path)


class EvolInstruct:
    """One Evol-Instruct run over a work folder (see the module docstring).

    Args:
        cfg: The settings.
        generators: Generators to use instead of building them, by model spec (tests, library use).
        say: Where messages go.
    """

    def __init__(self, cfg: EvolveConfig, generators: dict[str, Generator] | None = None, say: Any = print) -> None:
        self.cfg, self.say = cfg, say
        self.folder = cfg.folder
        self.programmatic = cfg.evolver == PROGRAMMATIC
        available = PROGRAM_OPERATORS if self.programmatic else OPERATORS
        try:
            self.weights = parse_operators(cfg.operators, available)
        except ValueError as e:
            raise EvolveError(f"evolve.operators: {e}") from None
        for role in ("answerer", "judge"):
            if getattr(cfg, role) == PROGRAMMATIC and not self.programmatic:
                raise EvolveError(f"{role} 'programmatic' needs the programmatic evolver (it knows the "
                                  "constraints of instruct items only)")
        self.seeds = load_seeds(cfg.seeds, cfg.limit, cfg.seed, cfg.recipe_dir)
        if self.programmatic and not all(isinstance(s.get("constraints"), list) for s in self.seeds):
            raise EvolveError(f"the programmatic operators evolve instruct items; seeds {cfg.seeds!r} are not "
                              "(use seeds: task:instruct, or a model as evolver)")
        self.generators = generators or {}
        self.callers: dict[str, Caller | None] = {}
        self.ledger = Ledger(prices=cfg.prices)
        self.phrases = copy_phrases(cfg.eliminator)

    # -- setup --------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        tree = to_dict(self.cfg)
        return {k: tree[k] for k in SETTINGS}

    def _check_folder(self) -> None:
        """Refuse to continue a work folder made with other settings."""
        path = self.folder / "run.json"
        now = self._settings()
        if path.is_file():
            before = json.loads(path.read_text()).get("settings", {})
            changed = [k for k in SETTINGS if before.get(k) != now.get(k)]
            if changed:
                raise EvolveError(f"{self.folder} holds a run made with other settings (changed: {', '.join(changed)}); "
                                  "use another --out, or delete that folder to start over")
        else:
            write_json(path, {"settings": now, "program_version": PROGRAM_VERSION})

    def _callers(self) -> None:
        """Build (once per spec) the generators of the three roles; servers must answer first."""
        cache = ItemCache(self.folder / "cache.sqlite")
        built: dict[str, Generator] = {}
        for role in ROLES:
            spec = getattr(self.cfg, role)
            if spec == PROGRAMMATIC:
                self.callers[role] = None
                continue
            if spec not in built:
                try:
                    built[spec] = self.generators.get(spec) or build_generator(
                        spec, backend=self.cfg.backend, batch_size=self.cfg.concurrency, progress=False)
                except ValueError as e:
                    raise EvolveError(f"{role} {spec!r}: {e}") from None
                _reachable(role, spec, built[spec])
            self.callers[role] = Caller(role, spec, built[spec], cache, self.ledger, self.cfg.concurrency)

    def fingerprint(self, role: str) -> str:
        """The fingerprint a row records for ``role``."""
        caller = self.callers.get(role)
        return FINGERPRINT if caller is None else caller.fingerprint

    # -- the run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every missing round (continuing a killed run); write the dataset and the report."""
        t0 = time.perf_counter()
        with FolderLock(self.folder, self.say):
            self._check_folder()
            ledger_path = self.folder / "ledger.json"
            if ledger_path.is_file():  # a continued run adds to what the earlier ones spent
                self.ledger = Ledger(json.loads(ledger_path.read_text()), self.cfg.prices)
            self._callers()
            items_path = self.folder / "items.jsonl"
            rows = read_items(items_path)
            done = {(r["root_id"], r["round"]) for r in rows}
            written = 0
            try:
                for round_ in range(self.cfg.rounds + 1):
                    todo = [s["id"] for s in self.seeds if (s["id"], round_) not in done]
                    pool = _pool(rows, round_)
                    bar = tqdm(total=len(self.seeds), initial=len(self.seeds) - len(todo),
                               desc=f"evolve round {round_}", disable=not self.cfg.progress or not todo)
                    for start in range(0, len(todo), self.cfg.chunk):
                        roots = todo[start:start + self.cfg.chunk]
                        new = self._seed_rows(roots) if round_ == 0 else self._evolve(round_, [pool[r] for r in roots])
                        _append(items_path, new)
                        rows += new
                        written += len(new)
                        write_json(ledger_path, self.ledger.state())
                        bar.update(len(new))
                    bar.close()
            except GenerationFailed as e:
                write_json(ledger_path, self.ledger.state())
                raise EvolveError(f"{e}\n{len(rows)} item rows are written in {items_path} and every completion "
                                  "that arrived is cached: run the same command again to continue") from None
            return self._finish(rows, written, time.perf_counter() - t0)

    def _seed_rows(self, roots: list[str]) -> list[dict[str, Any]]:
        """Round 0: the seeds, answered where they have no answer (or ``answer_seeds``)."""
        by_id = {s["id"]: s for s in self.seeds}
        items = [{**_base(by_id[r]["id"], None, r, 0), **{k: v for k, v in by_id[r].items() if k != "id"},
                  "answerer": "seed", "verdict": "kept", "reason": None} for r in roots]
        ask = [it for it in items if it["response"] is None or (self.cfg.answer_seeds and not self.programmatic)]
        if ask:
            for it, answer in zip(ask, self._answer(0, ask)):
                it.update(response=answer, answerer=self.fingerprint("answerer"))
        return items

    def _evolve(self, round_: int, parents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One chunk of a round: evolve, eliminate, answer; the rows to write."""
        items = self._evolutions(round_, parents)
        for it in items:
            it["reason"] = check_instruction(self.cfg.eliminator, it["instruction"], self.phrases)
        self._judge(round_, [(it, p) for it, p in zip(items, parents) if it["reason"] is None])
        alive = [it for it in items if it["reason"] is None]
        model_answer = self.callers["answerer"] is not None
        for it, answer in zip(alive, self._answer(round_, alive)):
            it["response"] = answer
            it["reason"] = check_answer(self.cfg.eliminator, answer, it.get("constraints") if model_answer else None)
        for it in items:
            it["verdict"] = "kept" if it["reason"] is None else "eliminated"
            it.pop("_program", None)
        return items

    def _evolutions(self, round_: int, parents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The new instruction of each parent: a model's rewrites (one call for the chunk), or programmatic."""
        items = []
        for parent in parents:
            root = parent["root_id"]
            op = pick_operator(self.weights, self.cfg.seed, round_, root)
            items.append({**_base(f"{root}.r{round_}", parent["id"], root, round_), "operator": op,
                          "seed": int(digest([self.cfg.seed, round_, root], 8), 16) % 2**31,
                          "evolver": self.fingerprint("evolver"), "judge": self.fingerprint("judge"),
                          "answerer": self.fingerprint("answerer")})
        if self.programmatic:
            for it, parent in zip(items, parents):
                op, root = it["operator"], it["root_id"]
                result = evolve_item(op, f"{self.cfg.seed}/{round_}/{root}", parent, self._partner(round_, root),
                                     hold_out=self.cfg.hold_out_pairs)
                it.update(prompt_version=f"{op}@program{PROGRAM_VERSION}", instruction=result["instruction"],
                          constraints=result["constraints"], topic=result["topic"], _program=result)
            return items
        caller = self.callers["evolver"]
        assert caller is not None
        templates = [OPERATORS[it["operator"]] for it in items]
        keys = [item_key(role="evolver", fp=it["evolver"], version=t.prompt_version, parent=p["instruction"],
                         seed=it["seed"], settings=self._gen_settings("evolver"))
                for it, t, p in zip(items, templates, parents)]
        cfg = GenerationConfig(max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                               seed=self.cfg.seed * 1_000_003 + round_)
        texts = caller.complete(round_, [t.prompt(p["instruction"]) for t, p in zip(templates, parents)], keys, cfg,
                                seeds=[it["seed"] for it in items])
        for it, t, text in zip(items, templates, texts):
            it.update(prompt_version=t.prompt_version, instruction=clean_evolution(text))
        return items

    def _partner(self, round_: int, root: str) -> dict[str, Any]:
        """Another seed, drawn for ``combine_constraints`` (seeds only: independent of run order)."""
        others = [s for s in self.seeds if s["id"] != root] or self.seeds
        return random.Random(f"partner/{self.cfg.seed}/{round_}/{root}").choice(others)

    def _gen_settings(self, role: str) -> dict[str, Any]:
        if role == "evolver":
            return {"t": self.cfg.temperature, "max": self.cfg.max_new_tokens}
        return {"t": self.cfg.answer_temperature, "max": self.cfg.answer_max_new_tokens}

    def _judge(self, round_: int, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Rule 1 over (item, parent) pairs: "Equal" eliminates; an unreadable reply keeps the item."""
        if not self.cfg.eliminator.no_information_gain or not pairs:
            return
        caller = self.callers["judge"]
        if caller is None:
            equal = [it["_program"]["equal"] if "_program" in it else
                     " ".join(it["instruction"].split()) == " ".join(p["instruction"].split()) for it, p in pairs]
            replies = ["Equal" if e else "Not Equal" for e in equal]
        else:
            version = judge_version()
            keys = [item_key(role="judge", fp=caller.fingerprint, version=version, parent=p["instruction"],
                             child=it["instruction"]) for it, p in pairs]
            prompts = [judge_prompt(p["instruction"], it["instruction"]) for it, p in pairs]
            replies = caller.complete(round_, prompts, keys, GenerationConfig(max_new_tokens=JUDGE_TOKENS))
        for (it, _), reply in zip(pairs, replies):
            same = parse_equal(reply)
            it["judge_reply"] = {True: "equal", False: "not_equal", None: "unparsed"}[same]
            if caller is not None and same is None:
                it["judge_raw"] = reply[:200]
            if same:
                it["reason"] = "no_information_gain"

    def _answer(self, round_: int, items: list[dict[str, Any]]) -> list[str]:
        """Answers to ``items``' instructions (the programmatic reference, or the answerer's)."""
        caller = self.callers["answerer"]
        if caller is None:
            return [it["_program"]["response"] if "_program" in it else it["response"] for it in items]
        keys = [item_key(role="answerer", fp=caller.fingerprint, instruction=it["instruction"],
                         settings=self._gen_settings("answerer")) for it in items]
        prompts = [[{"role": "user", "content": it["instruction"]}] for it in items]
        cfg = GenerationConfig(max_new_tokens=self.cfg.answer_max_new_tokens, temperature=self.cfg.answer_temperature,
                               seed=self.cfg.seed)
        return [a.strip() for a in caller.complete(round_, prompts, keys, cfg)]

    # -- the end ------------------------------------------------------------------------
    def _finish(self, rows: list[dict[str, Any]], written: int, seconds: float) -> dict[str, Any]:
        """Write the dataset (kept rows of every generation) and the report; return the report."""
        roots = {s["id"] for s in self.seeds}
        rows = [r for r in rows if r["root_id"] in roots and r["round"] <= self.cfg.rounds]
        kept = selected([r for r in rows if r["verdict"] == "kept"], self.cfg.include_seeds, self.cfg.keep_rounds,
                        self.cfg.roots_kept_in)
        write_jsonl(self.cfg.out, [dataset_row(r) for r in kept])
        stats = run_stats(rows, kept, self.cfg.near_dup_threshold)
        unparsed = sum(r.get("judge_reply") == "unparsed" for r in rows)
        report = {"dataset": str(self.cfg.out), "items": str(self.folder / "items.jsonl"), "seeds": len(self.seeds),
                  "rounds": self.cfg.rounds, "rows": len(rows), "rows_written_now": written, "dataset_rows": len(kept),
                  "judge_unparsed": unparsed, "stats": stats, "ledger": self.ledger.state(),
                  "fingerprints": {role: self.fingerprint(role) for role in ROLES},
                  "operators": self.weights, "seconds": round(seconds, 1), "config": asdict(self.cfg)}
        write_json(self.folder / "report.json", report)
        return report


def selected(kept: list[dict[str, Any]], include_seeds: bool = True, keep_rounds: list[int] | None = None,
             roots_kept_in: list[int] | None = None) -> list[dict[str, Any]]:
    """The kept rows a dataset takes (each with ``round`` and ``root_id``): the seeds only with
    ``include_seeds``, only the rounds in ``keep_rounds`` (None: all), and only the roots with a kept row in
    one of the rounds ``roots_kept_in`` (None: all roots); order kept."""
    roots = None if roots_kept_in is None else {r["root_id"] for r in kept if r.get("round", 0) in roots_kept_in}
    return [r for r in kept if (r.get("round", 0) > 0 or include_seeds)
            and (keep_rounds is None or r.get("round", 0) in keep_rounds)
            and (roots is None or r.get("root_id") in roots)]


def _base(id_: str, parent: str | None, root: str, round_: int) -> dict[str, Any]:
    return {"id": id_, "parent_id": parent, "root_id": root, "round": round_, "operator": None,
            "prompt_version": None, "evolver": None, "judge": None}


def _pool(rows: list[dict[str, Any]], round_: int) -> dict[str, dict[str, Any]]:
    """root id -> the item evolved in ``round_``: its latest kept row from an earlier round."""
    pool: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["round"]):
        if r["round"] < round_ and r["verdict"] == "kept":
            pool[r["root_id"]] = r
    return pool


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    append_jsonl(path, rows, ensure_ascii=False)


LINEAGE = ("parent_id", "root_id", "round", "operator", "prompt_version", "evolver", "judge", "answerer",
           "verdict", "reason", "constraints", "topic")


def dataset_row(row: dict[str, Any]) -> dict[str, Any]:
    """A trainable ``messages`` row with its lineage (the data layer reads it as format ``messages``)."""
    out = {"id": row["id"], "messages": [{"role": "user", "content": row["instruction"]},
                                         {"role": "assistant", "content": row["response"] or ""}]}
    out.update({k: row[k] for k in LINEAGE if k in row})
    return out


def _reachable(role: str, spec: str, gen: Any) -> None:
    """Fail before any work when a server does not answer (``GET /v1/models``)."""
    if not is_url(spec) or not hasattr(gen, "models"):
        return
    try:
        gen.models()
    except urllib.error.HTTPError:
        return  # it answered: a server without /models can still complete
    except (OSError, ValueError) as e:
        raise EvolveError(f"{role} {spec} is unreachable: {getattr(e, 'reason', e)}") from None


def evolve(cfg: EvolveConfig, generators: dict[str, Generator] | None = None, say: Any = print) -> dict[str, Any]:
    """Run (or continue) Evol-Instruct as ``cfg`` says; returns the report (also in ``report.json``).

    Raises:
        EvolveError: Bad settings, an unreachable server, a request that failed for good (the rows
            written so far are kept: the same call continues), or a folder made with other settings.
        DataError: A missing or malformed seed file (file:line and field named).
    """
    report = EvolInstruct(cfg, generators, say).run()
    say(format_report(report["stats"]))
    return report
