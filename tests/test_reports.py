"""report.html for runs and sweeps: content, what is missing said plainly, and a real browser draws them."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.runner.run import run
from tunelab.runner.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"
FAST = ["train.max_steps=4", "train.eval_every=2", "data.sources.0.count=64", "data.heldout=4",
        "eval.tasks=[arith, perplexity]", "eval.task_options.perplexity.sources=arith", "eval.limit=8",
        "eval.max_new_tokens=8"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("reports")
    full = run(TINY, FAST, out=str(tmp / "runs"), quiet=True)
    bare = run(TINY, FAST[:4] + ["eval.tasks=[]", "name=bare"], out=str(tmp / "runs"), quiet=True)
    sweep = tmp / "sweep.yaml"
    sweep.write_text(json.dumps({"recipe": str(TINY), "overrides": FAST, "factors": {"rank": {"method.r": [2, 4]}},
                                 "seeds": 2, "out": str(tmp / "sweeps")}))
    result = run_sweep(sweep, backend="inline", quiet=True)
    return {"run": full / "report.html", "bare": bare / "report.html",
            "sweep": Path(result["folder"]) / "report.html"}


def test_run_report_has_curves_evaluation_and_environment(reports: dict[str, Path]) -> None:
    page = reports["run"].read_text()
    for expected in ("Training curves", 'data-plot="loss"', 'data-plot="lr"', 'data-plot="grad_norm"',
                     'data-plot="tokens_per_s"', "Evaluation", "delta tuned - base", 'data-plot="forest"',
                     "Data mixture", "Recipe (resolved)", "Environment", "trainable parameters"):
        assert expected in page, expected
    for remote in ("<script", 'src="http', 'href="http', "url(http", "@import"):  # self-contained
        assert remote not in page, remote


def test_what_is_missing_is_said(reports: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert "this run has no evaluation" in reports["bare"].read_text()
    broken = tmp_path / "broken"
    shutil.copytree(reports["run"].parent, broken)
    with (broken / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99, "loss": \n')  # a line cut by a kill
    (broken / "results.json").write_text("{not json")
    assert main(["report", str(broken)]) == 0
    page = (broken / "report.html").read_text()
    assert "unreadable line(s) skipped" in page and "results.json could not be read" in page
    assert main(["report", str(tmp_path / "nothing-here")]) == 2


def test_sweep_report_has_arms_forest_interaction_and_links(reports: dict[str, Path]) -> None:
    page = reports["sweep"].read_text()
    for expected in ("rank=2", "rank=4", "delta vs baseline", 'data-plot="forest"', 'data-plot="interaction"',
                     "ANOVA", "report.html"):
        assert expected in page, expected
    links = re.findall(r'<a href="([^"]+)">', page)
    assert len(links) == 4 and all((reports["sweep"].parent / link).is_file() for link in links)


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_reports_open_in_a_real_browser_with_every_plot_drawn(reports: dict[str, Path], tmp_path: Path) -> None:
    artifacts = Path(os.environ.get("TUNELAB_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    browser = _browser()
    try:
        for name in ("run", "bare", "sweep"):
            browser.get(reports[name].as_uri())
            sizes = browser.execute_script(
                "return [...document.querySelectorAll('figure.plot svg')].map(s => {"
                "const r = s.getBoundingClientRect(); return [r.width, r.height]; })")
            errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, (name, errors)
            if name != "bare":
                assert sizes and all(w > 100 and h > 50 for w, h in sizes), (name, sizes)
            height = browser.execute_script("return document.body.scrollHeight")
            browser.set_window_size(1200, min(height + 80, 8000))
            browser.save_screenshot(str(artifacts / f"report-{name}.png"))
            assert (artifacts / f"report-{name}.png").stat().st_size > 10_000
    finally:
        browser.quit()
