"""tunelab ui: the run list, reports, side-by-side answers, blind rating stored durably, agreement with a judge."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

from tunelab.runner.run import run
from tunelab.ui import Catalog, running_ui, summary

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"
FAST = ["train.max_steps=3", "data.sources.0.count=32", "data.heldout=0", "eval.tasks=[arith]", "eval.limit=6",
        "eval.max_new_tokens=8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ui") / "runs"
    run(TINY, FAST + ["name=run-a"], out=str(root), quiet=True)
    run(TINY, FAST + ["name=run-b", "train.lr=0.01"], out=str(root), quiet=True)
    return root


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_pages_list_runs_compare_and_refuse_bad_paths(runs: Path) -> None:
    with running_ui(runs) as ui:
        status, page = _get(ui.url + "/")
        assert status == 200 and "run-a" in page and "run-b" in page and "arith:" in page
        status, page = _get(ui.url + "/?q=run-b")
        assert "run-b" in page and "run-a</a>" not in page
        status, page = _get(ui.url + "/report?path=run-a")
        assert status == 200 and "Training curves" in page
        status, page = _get(ui.url + "/compare?" + urlencode({"a": "run-a", "b": "run-b", "task": "arith"}))
        assert status == 200 and "6 common items" in page and "[user]" in page  # prompts rebuilt from the recipe
        for bad in ("/report?path=../..", "/report?path=nope", "/compare?a=run-a&b=run-b&task=nope",
                    "/rate?a=run-a&b=run-b&task=arith&rater=x&junk=1", "/ratings"):
            status, page = _get(ui.url + bad)
            assert "Traceback" not in page, bad
        assert _get(ui.url + "/report?path=../..")[0] == 400 and _get(ui.url + "/report?path=nope")[0] == 404


def test_blind_ratings_are_stored_and_aggregated_with_judge_agreement(runs: Path) -> None:
    catalog = Catalog(runs)
    lefts = {}
    for _ in range(6):
        token, item, left = catalog.next_pair("alice", "run-a", "run-b", "arith")
        lefts[item] = left
        catalog.record(token, "left")  # alice always picks answer 1, whichever run wrote it
    assert catalog.next_pair("alice", "run-a", "run-b", "arith") is None
    rated = catalog.ratings("run-a", "run-b", "arith")
    assert len(rated) == 6 and len({i for _, i, _ in rated}) == 6
    # "answer 1" is stored as the run the hidden side put there
    assert {i: w for _, i, w in rated} == lefts
    with pytest.raises(Exception, match="already rated"):
        catalog.record(token, "tie")
    judge = runs / "run-b" / "eval" / "tuned" / "judge.jsonl"
    judge.write_text("".join(json.dumps({"id": i, "winner_turn1": "A" if w == "b" else "B"}) + "\n"
                             for _, i, w in rated))  # a judge that agrees with alice on every item
    s = summary(catalog, "run-a", "run-b", "arith")
    assert s["n"] == 6 and s["b_wins"] + s["a_wins"] == 6 and s["judge_agreement"]["raw_agreement"] == 1.0
    assert s["b_win_rate"]["value"] == pytest.approx(s["b_wins"] / 6)
    judge.unlink()
    assert Catalog(runs).ratings("run-a", "run-b", "arith") == rated  # durable across restarts


def _chromium(tmp_path: Path, width: int = 1200):
    """Headless Debian Chromium driven by Selenium, and the folder for screenshots (skips without them)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    artifacts = Path(os.environ.get("TUNELAB_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts), artifacts


def test_a_person_rates_five_pairs_in_a_real_browser(runs: Path, tmp_path: Path) -> None:
    browser, artifacts = _chromium(tmp_path)
    from selenium.webdriver.common.by import By

    query = urlencode({"a": "run-a", "b": "run-b", "task": "arith"})
    try:
        with running_ui(runs) as ui:
            browser.get(f"{ui.url}/rate?{query}")
            browser.find_element(By.NAME, "rater").send_keys("bob")
            _click_and_wait(browser, lambda: browser.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            for k in range(5):
                assert f"rated {k}" in browser.page_source
                if k == 0:
                    browser.save_screenshot(str(artifacts / "ui-rating.png"))
                _click_and_wait(browser, lambda k=k: browser.find_element(By.ID, ("pick-1", "pick-2", "pick-tie")[k % 3]))
            # a reload shows the next unrated item; the ratings page counts five
            browser.refresh()
            assert "rated 5" in browser.page_source
        with running_ui(runs) as ui:  # a fresh server finds them stored
            browser.get(f"{ui.url}/ratings?{query}")
            text = browser.find_element(By.ID, "n-ratings").text
            assert "by" in text and Catalog(runs).ratings("run-a", "run-b", "arith")
            assert sum(r == "bob" for r, _, _ in Catalog(runs).ratings("run-a", "run-b", "arith")) == 5
            browser.save_screenshot(str(artifacts / "ui-ratings.png"))
    finally:
        browser.quit()


def _click_and_wait(browser, locate) -> None:
    """Click the element ``locate()`` finds and wait until the page it was on has been replaced (the form's
    navigation finished). An element whose page was swapped between finding and clicking (chromium: "Node
    with given id does not belong to the document") is found again, up to three times; the click never
    reached the page then, so nothing is submitted twice. The same chromium error while waiting means the
    page was replaced: the wait is over."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    for attempt in range(3):
        element = locate()
        try:
            element.click()
            break
        except (StaleElementReferenceException, WebDriverException) as e:
            if attempt == 2 or not (isinstance(e, StaleElementReferenceException)
                                    or "does not belong to the document" in str(e)):
                raise
            time.sleep(0.2)

    def replaced(_) -> bool:  # selenium's staleness_of, also reading chromium's "does not belong" as stale
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise

    WebDriverWait(browser, 30).until(replaced)
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState") == "complete")


def _fake_runs(root: Path, n: int = 120) -> Catalog:
    """Two run folders with agent rows (failure kinds) and run B's pairwise judge verdicts on every item."""
    import numpy as np

    rng = np.random.default_rng(0)
    for name, p in (("run-a", 0.4), ("run-b", 0.6)):
        tuned = root / name / "eval" / "tuned"
        tuned.mkdir(parents=True)
        rows = []
        for i in range(n):
            ok = bool(rng.random() < p)
            rows.append({"id": f"q{i}", "correct": int(ok), "score": float(ok),
                         "failure": None if ok else ("wrong_answer" if i % 3 else "malformed_action"),
                         "completion": f"{name} answer {i}", "answers": [f"{name} step {i}", f"{name} finish {i}"],
                         "judgements": [{"raw": f"verdict on q{i}: [[A]]"}]})
        (tuned / "agent_calculator.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Catalog(root)


def _rate(catalog: Catalog, a: str, b: str, task: str, verdicts: dict[str, str], rater: str = "carol") -> None:
    with catalog._db() as db:
        for item, winner in verdicts.items():
            db.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (rater, "t", a, b, task, item, winner, "a"))


def test_the_judge_is_calibrated_on_people_with_ppi(tmp_path: Path) -> None:
    """Judge verdicts on 120 items, people's on 40: the ratings page's PPI figures are ppi_mean's on the
    same arrays; ratings of items the judge never saw, or a judge of another pair, are refused clearly."""
    import numpy as np

    from tunelab.eval.ppi import ppi_mean

    catalog = _fake_runs(tmp_path)
    rng = np.random.default_rng(1)
    people = {f"q{i}": str(rng.choice(["a", "b", "tie"], p=[0.4, 0.5, 0.1])) for i in range(40)}
    judge = {f"q{i}": people.get(f"q{i}", "b") if rng.random() < 0.8 else "b" for i in range(120)}
    to_judge = {"b": "A", "a": "B", "tie": "tie"}  # the judge's A is run B
    (tmp_path / "run-b" / "eval" / "tuned" / "judge.jsonl").write_text(
        "".join(json.dumps({"id": i, "winner_turn1": to_judge[w]}) + "\n" for i, w in judge.items()))
    s = summary(catalog, "run-a", "run-b", "agent_calculator")
    assert "calibration_error" in s and "no human ratings; rate some items first" in s["calibration_error"]
    _rate(catalog, "run-a", "run-b", "agent_calculator", people)
    c = summary(catalog, "run-a", "run-b", "agent_calculator")["calibrated"]
    value = {"b": 1.0, "tie": 0.5, "a": 0.0}
    rated = sorted(people)
    expected = ppi_mean([value[judge[i]] for i in sorted(judge) if i not in people], [value[judge[i]] for i in rated],
                        [value[people[i]] for i in rated])
    assert c["n"] == 40 and c["N"] == 80 and c["ppi"] == expected["ppi"] and c["rated"] == rated
    assert c["ppi"]["ci"][1] - c["ppi"]["ci"][0] < c["human_only"]["ci"][1] - c["human_only"]["ci"][0]
    assert c["needed"]["width"] == 0.1 and c["needed"]["human_only"] > 0
    with running_ui(tmp_path) as ui:
        status, page = _get(ui.url + "/ratings?" + urlencode({"a": "run-a", "b": "run-b", "task": "agent_calculator"}))
        assert status == 200 and 'id="calibration"' in page and "80 judged + 40 rated" in page
    _rate(catalog, "run-a", "run-b", "agent_calculator", {"elsewhere-1": "a", "elsewhere-2": "b"}, rater="dan")
    s = summary(catalog, "run-a", "run-b", "agent_calculator")
    assert "2 rated items have no judge verdict" in s["calibration_error"] and "another pair of runs" in s["calibration_error"]
    with catalog._db() as db:
        db.execute("DELETE FROM ratings WHERE rater='dan'")
    (tmp_path / "run-b" / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "smollm2-135m-instruct"},
         "eval": {"task_options": {"judge": {"baseline": "runs/run-c/eval/tuned/judge.jsonl", "judge": "qwen2.5-7b"}}}}))
    s = summary(catalog, "run-a", "run-b", "agent_calculator")
    assert "compared it with 'runs/run-c/eval/tuned/judge.jsonl', not with run 'run-a'" in s["calibration_error"]
    (tmp_path / "run-b" / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "smollm2-135m-instruct"},
         "eval": {"task_options": {"judge": {"baseline": "runs/run-a/eval/tuned/judge.jsonl", "judge": "smollm2-1.7b"}}}}))
    pref = summary(catalog, "run-a", "run-b", "agent_calculator")["calibrated"]["self_preference"]
    assert pref["judge_family"] == "smollm" and pref["own"] == ["b"] and pref["measured"]["n"] == 40


def test_every_item_of_a_run_filtered_and_diffed_in_a_real_browser(tmp_path: Path) -> None:
    catalog = _fake_runs(tmp_path / "runs", n=30)
    _rate(catalog, "run-a", "run-b", "agent_calculator", {"q0": "b", "q1": "a"})
    rows = {name: [json.loads(x) for x in (tmp_path / "runs" / name / "eval" / "tuned" / "agent_calculator.jsonl")
                   .read_text().splitlines()] for name in ("run-a", "run-b")}
    wrong = sum(r["failure"] == "wrong_answer" for r in rows["run-a"])
    changed = sum(x["score"] != y["score"] for x, y in zip(rows["run-a"], rows["run-b"]))
    browser, artifacts = _chromium(tmp_path, width=1400)
    from selenium.webdriver.common.by import By

    try:
        with running_ui(tmp_path / "runs") as ui:
            browser.get(f"{ui.url}/items?" + urlencode({"run": "run-a", "task": "agent_calculator", "other": "run-b"}))
            assert browser.find_element(By.ID, "shown").text == "30 of 30 items shown"
            first = browser.find_elements(By.CSS_SELECTOR, "#items tr.item")[0].text
            assert "run-a step 0" in first and "run-b finish 0" in first and "verdict on q0" in first and "lost" in first  # people preferred run-b on q0
            browser.save_screenshot(str(artifacts / "ui-items.png"))
            _click_and_wait(browser, lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, "a.kind")
                                              if e.text == "wrong_answer"][0])
            assert browser.find_element(By.ID, "shown").text == f"{wrong} of 30 items shown"
            cells = [row.find_elements(By.TAG_NAME, "td")[4].text for row in
                     browser.find_elements(By.CSS_SELECTOR, "#items tr.item")]
            assert cells == ["wrong_answer"] * wrong
            _click_and_wait(browser, lambda: browser.find_element(By.ID, "changed"))
            both = sum(r["failure"] == "wrong_answer" and r["score"] != o["score"] for r, o in zip(rows["run-a"], rows["run-b"]))
            assert browser.find_element(By.ID, "shown").text == f"{both} of 30 items shown"
            browser.get(f"{ui.url}/items?" + urlencode({"run": "run-a", "task": "agent_calculator", "other": "run-b",
                                                        "changed": "1"}))
            assert browser.find_element(By.ID, "shown").text == f"{changed} of 30 items shown"
            moves = browser.find_element(By.ID, "moves").text
            assert "score in run-a" in moves
            browser.get(f"{ui.url}/items?" + urlencode({"run": "run-a", "task": "agent_calculator", "kind": "nope"}))
            assert "no item of 'run-a' on 'agent_calculator' has failure kind 'nope'" in browser.page_source
    finally:
        browser.quit()
