"""``tunelab ui``: a local web app over a folder of runs and sweeps, with blind human rating.

Pages (FastAPI + uvicorn, the stack of ``tunelab serve``; bound to 127.0.0.1 by default, no auth):

* ``/``: every run and sweep under the folder, filterable, with their scores and report links, and
  a form to compare two runs.
* ``/report?path=...``: a run's or sweep's ``report.html`` (written if missing).
* ``/compare?a=&b=&task=``: both runs' answers to the same items side by side.
* ``/rate?a=&b=&task=``: blind pairwise rating: a prompt and two answers in random order (which run
  wrote which is kept on the server, never in the page), A / B / tie. Ratings are stored in
  ``<folder>/ratings.sqlite`` with the rater id and the time, one per rater and item.
* ``/ratings?a=&b=&task=``: B's win rate over A with its CI (a tie counts half; bootstrap over
  ratings), per rater, and the agreement with an LLM judge on the same items (Cohen's kappa,
  statsmodels) where run B's ``judge`` evaluation compared it pairwise (``winner_turn1``); then the
  judge calibrated on people: the human win rate estimated from every judge verdict plus the rated
  items by prediction-powered inference (:mod:`tunelab.eval.ppi`) beside the judge-only and
  human-only estimates, the ratings a chosen interval width needs, and the judge's self-preference.
* ``/items?run=&task=[&other=][&kind=][&changed=1]``: every item of a run (a study arm's run too):
  prompt, answer, score, failure kind, the judge's rationale and people's ratings; filtered by failure
  kind; with ``other``, a second run's answer beside it, the table of outcome changes, and only the
  items whose score changed.

Errors are shown as a short message; no traceback reaches the browser.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException
from statsmodels.stats.inter_rater import cohens_kappa

from tunelab.config import is_run, load_config
from tunelab.eval.judge_bias import self_preference
from tunelab.eval.ppi import PPIError, labeled_split, ppi_mean, ratings_needed
from tunelab.eval.stats import proportion_score
from tunelab.io import read_jsonl
from tunelab.report.run_report import CSS, run_report, sweep_report
from tunelab.runner.judged import task_prompts
from tunelab.web import AppServer, in_background

CHOICES = ("a", "b", "tie")


def _e(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value))


def _page(title: str, body: str) -> HTMLResponse:
    """A page in the reports' style."""
    return HTMLResponse(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
                        f"<style>{CSS} button{{font-size:1rem;padding:.4rem 1.2rem;margin-right:.5rem}}"
                        f".pair{{display:flex;gap:1rem}} .pair>div{{flex:1}}</style></head><body>"
                        f'<p><a href="/">all runs</a></p><h1>{_e(title)}</h1>{body}</body></html>')


class Catalog:
    """The runs and sweeps under one folder, and the ratings database beside them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.db_path = self.root / "ratings.sqlite"
        self.root.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS ratings (rater TEXT, at TEXT, a TEXT, b TEXT, task TEXT, "
                       "item TEXT, winner TEXT, left_side TEXT, PRIMARY KEY (rater, a, b, task, item))")
            db.execute("CREATE TABLE IF NOT EXISTS pending (token TEXT PRIMARY KEY, rater TEXT, a TEXT, b TEXT, "
                       "task TEXT, item TEXT, left_side TEXT)")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and is always closed."""
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            yield db
            db.commit()
        finally:
            db.close()

    def resolve(self, rel: str) -> Path:
        """A folder named relative to the root; anything outside it is refused."""
        path = (self.root / rel).resolve()
        if path != self.root and self.root not in path.parents:
            raise HTTPException(400, f"{rel!r} is outside {self.root}")
        if not path.is_dir():
            raise HTTPException(404, f"no folder {rel!r} under {self.root}")
        return path

    def entries(self, query: str = "") -> list[dict[str, Any]]:
        """Runs (a ``config.yaml`` and ``results.json``) and sweeps (``sweep.json``), newest first."""
        out = []
        for marker in ("results.json", "sweep.json"):
            for f in self.root.rglob(marker):
                if len(f.relative_to(self.root).parts) > 6 or (marker == "results.json"
                                                                  and not is_run(f.parent, need="results")):
                    continue
                rel = str(f.parent.relative_to(self.root))
                if query.lower() in rel.lower():
                    out.append({"path": rel, "kind": "sweep" if marker == "sweep.json" else "run",
                                "mtime": f.stat().st_mtime, "scores": self._scores(f) if marker == "results.json" else ""})
        return sorted(out, key=lambda e: -e["mtime"])

    @staticmethod
    def _scores(results: Path) -> str:
        """``task: tuned value`` for a run's table row."""
        try:
            data = json.loads(results.read_text())
        except (OSError, ValueError):
            return "(results unreadable)"
        return ", ".join(f"{t}: {v['tuned']['value']:.3f}" for t, v in data.items()
                         if t != "run" and isinstance(v, dict) and "tuned" in v)

    def rows(self, rel: str, task: str) -> dict[str, dict[str, Any]]:
        """A run's tuned per-item rows of ``task`` by id."""
        path = self.resolve(rel) / "eval" / "tuned" / f"{task}.jsonl"
        if not path.is_file():
            raise HTTPException(404, f"run {rel!r} has no evaluation of {task!r}")
        return {str(r["id"]): r for r in read_jsonl(path)}

    def prompts(self, rel: str, task: str) -> dict[str, str]:
        """Item id -> prompt text, rebuilt from the run's recipe (empty if it cannot be)."""
        try:
            prompts = task_prompts(self.resolve(rel), task)
        except Exception:  # noqa: BLE001 - prompts are a convenience; the answers are what is rated
            return {}
        return {i: p if isinstance(p, str) else "\n\n".join(f"[{m['role']}] {m['content']}" for m in p)
                for i, p in prompts.items()}

    def next_pair(self, rater: str, a: str, b: str, task: str) -> tuple[str, str, str] | None:
        """(token, item, left side) of the next item this rater has not rated, in a fixed shuffled order."""
        common = sorted(set(self.rows(a, task)) & set(self.rows(b, task)),
                        key=lambda i: hashlib.sha1(f"{a}|{b}|{task}|{i}".encode()).hexdigest())
        with self._db() as db:
            done = {r[0] for r in db.execute("SELECT item FROM ratings WHERE rater=? AND a=? AND b=? AND task=?",
                                             (rater, a, b, task))}
            todo = [i for i in common if i not in done]
            if not todo:
                return None
            token, left = secrets.token_urlsafe(16), secrets.choice(("a", "b"))
            db.execute("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)", (token, rater, a, b, task, todo[0], left))
        return token, todo[0], left

    def record(self, token: str, choice: str) -> dict[str, str]:
        """Store the rating of a pending pair (``choice``: left / right / tie); returns its context."""
        if choice not in ("left", "right", "tie"):
            raise HTTPException(400, f"choice must be left, right or tie, got {choice!r}")
        with self._db() as db:
            row = db.execute("SELECT rater, a, b, task, item, left_side FROM pending WHERE token=?", (token,)).fetchone()
            if row is None:
                raise HTTPException(400, "this pair was already rated or has expired; load the page again")
            rater, a, b, task, item, left = row
            winner = "tie" if choice == "tie" else left if choice == "left" else ("b" if left == "a" else "a")
            db.execute("INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (rater, time.strftime("%Y-%m-%dT%H:%M:%S%z"), a, b, task, item, winner, left))
            db.execute("DELETE FROM pending WHERE token=?", (token,))
        return {"rater": rater, "a": a, "b": b, "task": task}

    def ratings(self, a: str, b: str, task: str) -> list[tuple[str, str, str]]:
        """(rater, item, winner) of every stored rating of this pair of runs on ``task``."""
        with self._db() as db:
            return list(db.execute("SELECT rater, item, winner FROM ratings WHERE a=? AND b=? AND task=? "
                                   "ORDER BY at", (a, b, task)))

    def judge_winners(self, b: str) -> dict[str, str]:
        """Item -> LLM judge winner (a / b / tie) from run B's pairwise ``judge`` rows (turn 1; the
        judge's A is the run, its B the baseline)."""
        path = self.resolve(b) / "eval" / "tuned" / "judge.jsonl"
        if not path.is_file():
            return {}
        mapping = {"A": "b", "B": "a", "tie": "tie"}
        return {str(r["id"]): mapping[r["winner_turn1"]] for r in read_jsonl(path)
                if r.get("winner_turn1") in mapping}


    def item_ratings(self, run: str, task: str) -> dict[str, list[str]]:
        """Item -> people's verdicts on ``run``'s answer (won / lost / tie), from every pair it was rated in."""
        out: dict[str, list[str]] = {}
        with self._db() as db:
            for a, item, winner in db.execute("SELECT a, item, winner FROM ratings WHERE task=? AND (a=? OR b=?) "
                                              "ORDER BY at", (task, run, run)):
                side = "a" if a == run else "b"
                out.setdefault(item, []).append("tie" if winner == "tie" else "won" if winner == side else "lost")
        return out

    def recipe(self, run: str) -> Any:
        """A run's recipe (None when it cannot be read)."""
        try:
            return load_config(self.resolve(run))
        except Exception:  # noqa: BLE001 - a run without a readable recipe: labels and checks are skipped
            return None

    def judge_option(self, run: str, key: str) -> Any:
        """An option of a run's ``judge`` evaluation (``baseline``, ``judge``), None when its recipe does not say."""
        cfg = self.recipe(run)
        return cfg.eval.task_options.get("judge", {}).get(key) if cfg is not None else None


def _check_judged_pair(catalog: Catalog, a: str, b: str) -> None:
    """Refuse judge verdicts of another pair: run B's judge must have compared it with run A's answers.

    Raises:
        PPIError: naming the baseline the judge used instead.
    """
    baseline = catalog.judge_option(b, "baseline")
    if baseline is None:
        return
    run_a = catalog.resolve(a)
    parts, inside = Path(baseline).parts, Path(a).parts  # a path relative to anywhere that names run A's folder
    named = any(parts[k:k + len(inside)] == inside for k in range(len(parts) - len(inside) + 1))
    if baseline == "reference" or not (named or run_a in Path(baseline).resolve().parents):
        raise PPIError(f"run {b!r}'s judge compared it with {baseline!r}, not with run {a!r}'s answers: its verdicts "
                       f"are of another pair of runs than these ratings")


VERDICT_VALUE = {"b": 1.0, "tie": 0.5, "a": 0.0}
"""B's outcome on an item, by the winner (a person's or a judge's)."""


def calibrate(catalog: Catalog, a: str, b: str, task: str, judge: dict[str, str], judge_name: str | None,
              width: float = 0.1) -> dict[str, Any]:
    """A judge calibrated on people for B's win rate over A: PPI from the judge's winner on every item
    (``judge``: item -> a / b / tie) and people's ratings of the pair, the judge-only and human-only
    estimates, the ratings an interval ``width`` wide needs, and the judge's self-preference.

    Raises:
        PPIError: no ratings, or ratings of items the judge has no verdict on (the message says which).
    """
    human: dict[str, list[float]] = {}
    for _, item, winner in catalog.ratings(a, b, task):
        human.setdefault(item, []).append(VERDICT_VALUE[winner])
    unlabeled, labeled, people, rated = labeled_split({i: VERDICT_VALUE[w] for i, w in judge.items()}, human,
                                                      f"runs {a!r} vs {b!r} on {task!r}")
    est = ppi_mean(unlabeled, labeled, people)
    models = {side: (cfg.model.name if (cfg := catalog.recipe(run)) is not None else None) for side, run in
              (("a", a), ("b", b))}
    prefs = self_preference(judge_name, models, rectifier=est["rectifier"]) if judge_name else None
    return {**est, "needed": ratings_needed(est, unlabeled, labeled, people, width), "rated": rated,
            "self_preference": prefs}


def calibrated(catalog: Catalog, a: str, b: str, task: str, width: float = 0.1) -> dict[str, Any]:
    """:func:`calibrate` with run B's own pairwise judge rows as the judge (its baseline must be run A).

    Raises:
        PPIError: no judge verdicts, judge verdicts of another pair of runs, or :func:`calibrate`'s.
    """
    judge = catalog.judge_winners(b)
    if not judge:
        raise PPIError(f"run {b!r} has no pairwise judge verdicts (eval/tuned/judge.jsonl with winner_turn1)")
    _check_judged_pair(catalog, a, b)
    name = catalog.judge_option(b, "judge")
    return calibrate(catalog, a, b, task, judge, str(name) if name else None, width)


def summary(catalog: Catalog, a: str, b: str, task: str) -> dict[str, Any]:
    """B's win rate over A (a tie counts half) with its CI, counts, per rater, and kappa against the judge."""
    rated = catalog.ratings(a, b, task)
    values = [VERDICT_VALUE[w] for _, _, w in rated]
    out: dict[str, Any] = {"n": len(rated), "b_wins": sum(w == "b" for *_, w in rated),
                           "a_wins": sum(w == "a" for *_, w in rated), "ties": sum(w == "tie" for *_, w in rated),
                           "b_win_rate": proportion_score(values),
                           "raters": sorted({r for r, _, _ in rated})}
    judge = catalog.judge_winners(b)
    pairs = [(w, judge[item]) for _, item, w in rated if item in judge]
    if len(pairs) >= 2:
        table = np.zeros((3, 3))
        for human, llm in pairs:
            table[CHOICES.index(human), CHOICES.index(llm)] += 1
        kappa = cohens_kappa(table)
        out["judge_agreement"] = {"n": len(pairs), "kappa": float(kappa.kappa),
                                  "ci": [float(kappa.kappa_low), float(kappa.kappa_upp)],
                                  "raw_agreement": float(np.trace(table) / table.sum())}
    if judge:
        try:
            out["calibrated"] = calibrated(catalog, a, b, task)
        except PPIError as e:
            out["calibration_error"] = str(e)
    return out


def build_app(root: str | Path) -> FastAPI:
    """The app over the runs folder ``root``."""
    catalog = Catalog(root)
    app = FastAPI(title="tunelab ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.catalog = catalog

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> HTMLResponse:
        page = _page("error", f'<p class="missing">{_e(exc.detail)}</p>')
        page.status_code = exc.status_code
        return page

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> HTMLResponse:
        page = _page("error", f'<p class="missing">{_e(type(exc).__name__)}: {_e(exc)}</p>')
        page.status_code = 500
        return page

    @app.get("/")
    def index(q: str = "") -> HTMLResponse:
        entries = catalog.entries(q)
        runs = [e["path"] for e in entries if e["kind"] == "run"]
        rows = "".join(
            f'<tr><td><a href="/report?{urlencode({"path": e["path"]})}">{_e(e["path"])}</a></td><td>{e["kind"]}</td>'
            f'<td>{time.strftime("%Y-%m-%d %H:%M", time.localtime(e["mtime"]))}</td><td>{_e(e["scores"])}</td></tr>'
            for e in entries)
        options = "".join(f"<option>{_e(r)}</option>" for r in runs)
        body = (f'<form method="get"><input name="q" value="{_e(q)}" placeholder="filter"> '
                f'<button type="submit">filter</button></form>'
                f"<table><tr><th>folder</th><th>kind</th><th>modified</th><th>scores (tuned)</th></tr>{rows}</table>"
                f'<h2>Compare two runs</h2><form method="get" action="/compare">A <select name="a">{options}</select> '
                f'B <select name="b">{options}</select> task <input name="task" value="arith"> '
                f'<button type="submit">compare</button></form>')
        return _page(f"tunelab: {catalog.root}", body)

    @app.get("/report")
    def report(path: str) -> FileResponse:
        folder = catalog.resolve(path)
        target = folder / "report.html"
        if not target.is_file():
            if (folder / "sweep.json").is_file():
                sweep_report(json.loads((folder / "sweep.json").read_text()))
            else:
                run_report(folder)
        return FileResponse(target, media_type="text/html")

    @app.get("/compare")
    def compare(a: str, b: str, task: str) -> HTMLResponse:
        rows_a, rows_b, prompts = catalog.rows(a, task), catalog.rows(b, task), catalog.prompts(a, task)
        common = [i for i in rows_a if i in rows_b]
        cells = "".join(
            f"<tr><td>{_e(i)}</td><td><pre>{_e(prompts.get(i, ''))}</pre></td>"
            f"<td><pre>{_e(rows_a[i].get('completion', ''))}</pre>{_e(rows_a[i].get('correct', ''))}</td>"
            f"<td><pre>{_e(rows_b[i].get('completion', ''))}</pre>{_e(rows_b[i].get('correct', ''))}</td></tr>"
            for i in common)
        query = urlencode({"a": a, "b": b, "task": task})
        return _page(f"{task}: {a} vs {b}", f'<p>{len(common)} common items. <a href="/rate?{query}">rate them '
                                            f'blind</a> · <a href="/ratings?{query}">ratings</a> · <a href="/items?'
                                            f'{urlencode({"run": a, "other": b, "task": task})}">items, diffed</a></p>'
                                            f"<table><tr><th>id</th><th>prompt</th><th>A</th><th>B</th></tr>{cells}</table>")

    @app.get("/rate")
    def rate(request: Request, a: str, b: str, task: str, rater: str = "") -> HTMLResponse:
        rater = rater or request.cookies.get("tunelab_rater", "")
        query = {"a": a, "b": b, "task": task}
        if not rater:
            return _page("who is rating?", f'<form method="get">{_hidden(query)}rater id '
                                           f'<input name="rater" required> <button type="submit">start</button></form>')
        pair = catalog.next_pair(rater, a, b, task)
        if pair is None:
            return _page("all rated", f'<p>{_e(rater)} has rated every item. '
                                      f'<a href="/ratings?{urlencode(query)}">see the ratings</a></p>')
        token, item, left = pair
        rows = {"a": catalog.rows(a, task)[item], "b": catalog.rows(b, task)[item]}
        first, second = rows[left], rows["b" if left == "a" else "a"]
        prompt = catalog.prompts(a, task).get(item, "(prompt not available)")
        done = sum(r == rater for r, _, _ in catalog.ratings(a, b, task))
        body = (f"<p>rater <b>{_e(rater)}</b> · rated {done} · item <code>{_e(item)}</code></p>"
                f"<h2>Prompt</h2><pre>{_e(prompt)}</pre>"
                f'<div class="pair"><div><h2>Answer 1</h2><pre id="answer1">{_e(first.get("completion", ""))}</pre>'
                f'</div><div><h2>Answer 2</h2><pre id="answer2">{_e(second.get("completion", ""))}</pre></div></div>'
                f'<form method="post" action="/rate"><input type="hidden" name="token" value="{token}">'
                f'<button name="choice" value="left" id="pick-1">1 is better</button>'
                f'<button name="choice" value="tie" id="pick-tie">tie</button>'
                f'<button name="choice" value="right" id="pick-2">2 is better</button></form>')
        page = _page(f"blind rating: {task}", body)
        page.set_cookie("tunelab_rater", rater, samesite="strict")
        return page

    @app.post("/rate")
    def rated(token: str = Form(...), choice: str = Form(...)) -> RedirectResponse:
        ctx = catalog.record(token, choice)
        return RedirectResponse("/rate?" + urlencode(ctx), status_code=303)

    @app.get("/ratings")
    def ratings(a: str, b: str, task: str) -> HTMLResponse:
        s = summary(catalog, a, b, task)
        rate_ = s["b_win_rate"]
        body = (f'<p id="n-ratings">{s["n"]} ratings by {len(s["raters"])} rater(s): B wins {s["b_wins"]}, '
                f'A wins {s["a_wins"]}, ties {s["ties"]}</p>'
                f"<p>B's win rate over A (a tie counts half): {rate_['value']:.3f} "
                f"[{rate_['ci'][0]:.3f}, {rate_['ci'][1]:.3f}] (95% CI)</p>")
        if "judge_agreement" in s:
            j = s["judge_agreement"]
            body += (f"<p>Agreement with the LLM judge on {j['n']} items: Cohen's kappa {j['kappa']:.3f} "
                     f"[{j['ci'][0]:.3f}, {j['ci'][1]:.3f}], raw agreement {j['raw_agreement']:.3f}</p>")
        else:
            body += '<p class="missing">no LLM judge verdicts on these items (run B has no pairwise judge rows)</p>'
        body += _calibration_html(s)
        return _page(f"ratings: {task}, {a} vs {b}", body)

    @app.get("/items")
    def items(run: str, task: str, other: str = "", kind: str = "", changed: str = "") -> HTMLResponse:
        return _page(f"{task}: items of {run}" + (f" vs {other}" if other else ""),
                     _items_html(catalog, run, task, other, kind, bool(changed)))

    return app


def _ci(score: dict[str, Any]) -> str:
    """``value [lo, hi]``."""
    return f"{score['value']:.3f} [{score['ci'][0]:.3f}, {score['ci'][1]:.3f}]"


def _calibration_html(s: dict[str, Any]) -> str:
    """The ratings page's section on the judge calibrated on people."""
    if "calibration_error" in s:
        return (f'<h2>The judge calibrated on people</h2><p class="missing" id="calibration">'
                f'{_e(s["calibration_error"])}</p>')
    if "calibrated" not in s:
        return ""
    c, need = s["calibrated"], s["calibrated"]["needed"]
    rows = "".join(f"<tr><td>{name}</td><td>{_ci(c[key])}</td><td>{n}</td></tr>" for name, key, n in (
        ("PPI: every judge verdict, corrected by people", "ppi", f"{c['N']} judged + {c['n']} rated"),
        ("people only", "human_only", f"{c['n']} rated"),
        ("the judge only (its bias not corrected)", "judge_only", f"{c['N'] + c['n']} judged")))
    plan = (f"An interval {need['width']:.2f} wide needs {need['ppi']} rated items with the judge, "
            f"{need['human_only']} without it" if need.get("ppi") else need.get("note", ""))
    out = (f"<h2>The judge calibrated on people</h2><table id=\"calibration\"><tr><th>B's win rate over A, "
           f"estimated from</th><th>value [95% CI]</th><th>items</th></tr>{rows}</table>"
           f"<p>The judge's bias (people minus the judge on the rated items): {_ci(c['rectifier'])}; "
           f"power-tuning weight {c['lam']:.2f}. {_e(plan)}.</p>")
    pref = c.get("self_preference")
    if pref:
        said = (f"it favours its own family's answers by {_ci(pref['measured'])} over people" if pref.get("measured")
                else f"not measured: {pref.get('why')}")
        out += f"<p>Self-preference (judge family {_e(pref['judge_family'])}): {_e(said)}.</p>"
    return out


def _kind(row: dict[str, Any]) -> str:
    """An item's failure kind (``-`` when it has none)."""
    return str(row.get("failure") or "-")


def _score_of(row: dict[str, Any] | None) -> float | None:
    """An item's score (``score``, else ``correct``, else a judge's ``rating``)."""
    for key in ("score", "correct", "rating"):
        if row and isinstance(row.get(key), (int, float)):
            return float(row[key])
    return None


def _answer(row: dict[str, Any]) -> str:
    """What the model wrote: every turn of an episode, else the completion."""
    answers = row.get("answers")
    return "\n---\n".join(map(str, answers)) if isinstance(answers, list) and answers else str(row.get("completion", ""))


def _rationale(row: dict[str, Any]) -> str:
    """The judge's words on an item (every judgement's raw reply)."""
    parts = []
    for j in row.get("judgements") or []:
        if isinstance(j, dict):
            parts += [str(j[k]) for k in ("raw", "raw_ab") if j.get(k)]
    return "\n---\n".join(parts)


def _items_html(catalog: Catalog, run: str, task: str, other: str, kind: str, changed: bool) -> str:
    """The per-item table of a run, filtered by failure kind; with ``other``, diffed against it."""
    rows, prompts = catalog.rows(run, task), catalog.prompts(run, task)
    others = catalog.rows(other, task) if other else {}
    people = catalog.item_ratings(run, task)
    kinds = sorted({_kind(r) for r in rows.values()})
    if kind and kind not in kinds:
        raise HTTPException(400, f"no item of {run!r} on {task!r} has failure kind {kind!r}; kinds: {', '.join(kinds)}")
    shown = [i for i, r in rows.items() if (not kind or _kind(r) == kind)
             and (not changed or (i in others and _score_of(r) != _score_of(others[i])))]
    base = {"run": run, "task": task, **({"other": other} if other else {})}
    links = " · ".join(f'<a href="/items?{urlencode(base | ({"kind": k} if k else {}))}" class="kind">'
                       f"{_e(k or 'all')}</a> ({sum(_kind(r) == k for r in rows.values()) if k else len(rows)})"
                       for k in ["", *kinds])
    out = f'<p id="filters">failure kind: {links}</p>'
    if other:
        both = [i for i in rows if i in others]
        moves: dict[tuple[Any, Any], int] = {}
        for i in both:
            key = (_score_of(rows[i]), _score_of(others[i]))
            moves[key] = moves.get(key, 0) + 1
        table = "".join(f"<tr><td>{_e(x)}</td><td>{_e(y)}</td><td>{n}</td></tr>"
                        for (x, y), n in sorted(moves.items(), key=lambda kv: -kv[1]))
        toggle = urlencode(base | ({"kind": kind} if kind else {}) | ({} if changed else {"changed": "1"}))
        out += (f'<p>{len(both)} items in both runs; <a id="changed" href="/items?{toggle}">'
                f'{"all items" if changed else "only the items whose score changed"}</a></p>'
                f'<table id="moves"><tr><th>score in {_e(run)}</th><th>score in {_e(other)}</th><th>items</th></tr>'
                f"{table}</table>")
    cells = []
    for i in shown:
        r = rows[i]
        cell = (f'<tr class="item"><td>{_e(i)}</td><td><pre>{_e(prompts.get(i, ""))}</pre></td>'
                f"<td><pre>{_e(_answer(r))}</pre></td><td>{_e(_score_of(r))}</td><td>{_e(_kind(r))}</td>"
                f"<td><pre>{_e(_rationale(r)[:1500])}</pre></td><td>{_e(', '.join(people.get(i, [])))}</td>")
        if other:
            o = others.get(i, {})
            cell += f"<td><pre>{_e(_answer(o))}</pre></td><td>{_e(_score_of(o))}</td><td>{_e(_kind(o))}</td>"
        cells.append(cell + "</tr>")
    head = ("<tr><th>id</th><th>prompt</th><th>answer</th><th>score</th><th>failure</th><th>judge</th><th>people</th>"
            + (f"<th>answer of {_e(other)}</th><th>score</th><th>failure</th>" if other else "") + "</tr>")
    return out + f'<p id="shown">{len(shown)} of {len(rows)} items shown</p><table id="items">{head}{"".join(cells)}</table>'


def _hidden(fields: dict[str, str]) -> str:
    """Hidden form inputs."""
    return "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items())


class UIServer(AppServer):
    """The app bound to a socket (:class:`tunelab.web.AppServer`); :meth:`serve_forever` or
    :func:`running_ui` (a background thread)."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 8501) -> None:
        app = build_app(root)
        super().__init__(host, port)
        self.mount(app, graceful_shutdown=2)


@contextlib.contextmanager
def running_ui(root: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[UIServer]:
    """The UI in a background thread for the duration of a ``with`` block."""
    with in_background(UIServer(root, host, port), "tunelab-ui") as server:
        yield server


def serve_ui(root: str | Path, host: str = "127.0.0.1", port: int = 8501) -> None:
    """Serve the UI until Ctrl-C (blocking)."""
    server = UIServer(root, host, port)
    print(f"[tunelab] ui over {Path(root).resolve()} at {server.url} (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
