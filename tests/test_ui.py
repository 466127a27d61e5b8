"""tunelab ui: the run list, reports, side-by-side answers, blind rating stored durably, agreement with a judge."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

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


def test_a_person_rates_five_pairs_in_a_real_browser(runs: Path, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    artifacts = Path(os.environ.get("TUNELAB_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    query = urlencode({"a": "run-a", "b": "run-b", "task": "arith"})
    try:
        with running_ui(runs) as ui:
            browser.get(f"{ui.url}/rate?{query}")
            browser.find_element(By.NAME, "rater").send_keys("bob")
            _click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            for k in range(5):
                assert f"rated {k}" in browser.page_source
                if k == 0:
                    browser.save_screenshot(str(artifacts / "ui-rating.png"))
                _click_and_wait(browser, browser.find_element(By.ID, ("pick-1", "pick-2", "pick-tie")[k % 3]))
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


def _click_and_wait(browser, element) -> None:
    """Click and wait until the page it was on has been replaced (the form's navigation finished)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    element.click()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(element))
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState") == "complete")
