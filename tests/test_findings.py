"""tunelab sweep report: minimum detectable effect, verdicts on claims, the findings.md section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_without_shared_data

from tunelab.cli import main
from tunelab.config import ConfigError
from tunelab.report.findings import judge, minimum_detectable_effect
from tunelab.runner.sweep import run_sweep
from tunelab.runner.sweep_file import load_sweep

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["train.max_steps=4", "train.save_every=2", "data.sources.0.count=64", "data.heldout=4",
             "eval.tasks=[arith, perplexity]", "eval.task_options.perplexity.sources=arith", "eval.limit=8",
             "eval.max_new_tokens=8"]


def test_mde_matches_the_textbook_paired_t_design() -> None:
    # Cohen (1988) / G*Power: a paired t-test needs 34 pairs to detect d = 0.5 at alpha 0.05 (two-sided)
    # with 80% power; with 34 differences of standard deviation 1 the MDE is therefore ~0.5.
    rng = np.random.default_rng(0)
    x = rng.standard_normal(34)
    x = (x - x.mean()) / x.std(ddof=1)  # sd exactly 1
    assert minimum_detectable_effect(list(x)) == pytest.approx(0.5, abs=0.01)
    assert minimum_detectable_effect(list(3 * x)) == pytest.approx(1.5, abs=0.03)  # in the metric's units
    assert minimum_detectable_effect(list(x), n_tests=3) > 0.55  # alpha / 3: a stricter test sees less
    assert math.isnan(minimum_detectable_effect([0.1, 0.1, 0.1])) and math.isnan(minimum_detectable_effect([1.0]))


@pytest.mark.parametrize(("direction", "delta", "ci", "p", "mde", "effect", "expected"), [
    ("better", 0.08, (0.02, 0.14), 0.01, 0.06, None, "replicates"),
    ("better", -0.08, (-0.14, -0.02), 0.01, 0.06, None, "does not replicate: significant in the opposite"),
    ("worse", -0.08, (-0.14, -0.02), 0.01, 0.06, None, "replicates"),
    ("better", 0.01, (-0.05, 0.07), 0.7, 0.06, None, "inconclusive at this power"),
    ("better", 0.01, (-0.05, 0.07), 0.7, 0.06, 0.10, "does not replicate: no effect although the design"),
    ("better", 0.01, (-0.05, 0.07), 0.7, 0.06, 0.03, "inconclusive at this power"),
    ("better", 0.08, (0.02, 0.14), 0.2, 0.06, None, "inconclusive at this power"),  # Holm took it away
    # two-sided (a claimed interaction whose sign no source predicts): either sign replicates
    ("either", -0.08, (-0.14, -0.02), 0.01, 0.06, 0.05, "replicates (two-sided): -0.080"),
    ("either", 0.08, (0.02, 0.14), 0.01, 0.06, 0.05, "replicates (two-sided): +0.080"),
    ("either", 0.01, (-0.05, 0.07), 0.7, 0.06, 0.10, "does not replicate: no effect of either sign"),
    ("either", 0.01, (-0.05, 0.07), 0.7, 0.06, 0.03, "inconclusive at this power"),
])
def test_verdicts(direction, delta, ci, p, mde, effect, expected) -> None:
    assert judge(direction, {"delta": delta, "ci": ci, "p_value": p}, p, mde, effect).startswith(expected)


@pytest.mark.parametrize(("delta", "ci", "p_diff", "p_tost", "expected"), [
    (0.005, (-0.02, 0.03), 0.7, 0.01, "replicates: equivalent within +-0.050 (TOST)"),
    (0.03, (0.01, 0.05), 0.001, 0.01, "replicates"),  # a significant but trivial difference is still "equal"
    (0.005, (-0.02, 0.03), 0.7, 0.3, "inconclusive at this power"),  # CI inside the margin is not enough
    (-0.1, (-0.15, -0.05), 0.001, 0.9, "does not replicate: a difference of -0.100"),
    (-0.1, (-0.15, -0.05), 0.04, 0.9, "inconclusive at this power"),  # 0.04 > 0.05 / 2 claims (Bonferroni)
])
def test_equal_claims_are_judged_by_tost(delta, ci, p_diff, p_tost, expected) -> None:
    assert judge("equal", {"delta": delta, "ci": ci, "p_value": p_diff}, p_tost, 0.04, 0.05, n_claims=2
                 ).startswith(expected)


def test_tost_is_the_larger_of_two_one_sided_t_tests() -> None:
    from scipy import stats as sps

    from tunelab.report.findings import equivalence_p

    rng = np.random.default_rng(1)
    a = list(rng.normal(0.5, 0.2, 60))
    b = [x + d for x, d in zip(a, rng.normal(0.01, 0.05, 60))]
    d = np.subtract(b, a)
    for margin in (0.005, 0.02, 0.05):
        lower = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
        upper = sps.ttest_1samp(d, margin, alternative="less").pvalue
        assert equivalence_p(a, b, margin) == pytest.approx(max(lower, upper), rel=1e-9)
    assert equivalence_p(a, b, 0.05) < 0.05 < equivalence_p(a, b, 0.005)
    assert equivalence_p([0, 1], [0, 1], 0.01) == 0.0 and equivalence_p([0, 0], [1, 1], 0.5) == 1.0


def test_seed_test_is_paired_by_seed_and_one_sided() -> None:
    from scipy import stats as sps

    from tunelab.report.findings import seed_test

    versus = {0: 0.50, 1: 0.70, 2: 0.60}
    arm = {2: 0.64, 0: 0.53, 1: 0.72}  # always a little better on the same seed, seeds apart a lot
    better = seed_test(versus, arm, "better")
    assert better["seeds"] == [0, 1, 2] and better["delta"] == pytest.approx(0.03)
    assert better["p_value"] == pytest.approx(sps.ttest_rel([0.53, 0.72, 0.64], [0.5, 0.7, 0.6],
                                                            alternative="greater").pvalue)
    assert better["p_value"] < 0.05 < sps.ttest_ind([0.53, 0.72, 0.64], [0.5, 0.7, 0.6]).pvalue  # pairing matters
    assert seed_test(versus, arm, "worse")["p_value"] == pytest.approx(1 - better["p_value"])
    assert seed_test({0: 1.0}, {0: 0.5}, "better") is None and seed_test(versus, versus, "equal") is None
    from tunelab.report.findings import seed_note

    assert seed_note({0: 1.0}, {0: 0.5}) == "too few seeds for a seed-level test"
    assert seed_note({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}).startswith("every seed's difference is -0.100")


def test_mde_is_nan_below_the_exact_tests_item_minimum() -> None:
    x = [0.0, 1.0, -1.0, 1.0, 0.0]  # 5 items: the exact tests cannot reach p < 0.05 (min_items_for_verdict: 6)
    assert math.isnan(minimum_detectable_effect(x))
    assert not math.isnan(minimum_detectable_effect(x + [1.0]))
    assert math.isnan(minimum_detectable_effect(x + [1.0], n_tests=2))  # alpha 0.025 needs 7


def _spec(tmp_path: Path, **extra) -> Path:
    spec = {"recipe": str(ROOT / "recipes" / "tiny.yaml"), "overrides": OVERRIDES,
            "factors": {"rank": {"method.r": [2, 4]}}, "seeds": 2, "out": str(tmp_path / "out"),
            "question": "Does rank 4 beat rank 2?", "pilot_range": [0.0, 1.0],  # a random tiny model scores 0
            "hypotheses": [{"claim": "rank 4 lowers the loss", "task": "perplexity", "arm": "rank=4",
                            "direction": "better", "effect": 0.01, "source": "a test"},
                           {"claim": "rank does not move accuracy", "task": "arith", "arm": "rank=4",
                            "direction": "equal", "effect": 0.5, "source": "a test"}], **extra}
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(("hypothesis", "message"), [
    ({"claim": "x", "task": "arith", "arm": "rank=8"}, "rank='8' names no level"),
    ({"claim": "x", "task": "arith", "arm": "depth=2"}, "depth='2' names no level"),
    ({"claim": "x", "task": "arith", "arm": "rank=4", "source": "s"}, "'effect' is required: the paper's effect"),
    ({"claim": "x", "task": "arith", "arm": "rank=4", "effect": 0.1}, "'source' is required"),
    ({"claim": "x", "task": "arith", "arm": "rank=4", "direction": "up"}, "direction: 'up'"),
    ({"claim": "x", "arm": "rank=4"}, "'task' is required"),
    ({"claim": "x", "task": "arith", "arm": "rank=4", "size": 3}, "unknown key(s) size"),
    ({"claim": "x", "task": "arith", "arm": "rank=4", "direction": "equal"}, "needs 'effect', the equivalence margin"),
    ({"claim": "x", "task": "arith", "arm": "rank=4", "effect": -0.1}, "effect: must be a positive number"),
])
def test_bad_hypotheses_fail_naming_the_file(tmp_path: Path, hypothesis: dict, message: str) -> None:
    path = _spec(tmp_path, hypotheses=[hypothesis])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_sweep(path)
    assert f"{path}: hypotheses[0]" in str(e.value)


def test_sweep_report_writes_the_study_section(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _spec(tmp_path)
    result = run_sweep(path, backend="inline", quiet=True)
    folder = Path(result["folder"])
    capsys.readouterr()
    assert main(["sweep", "report", str(folder), "--json"]) == 0
    study = json.loads(capsys.readouterr().out)
    loss, acc = study["hypotheses"]
    assert (loss["arm"], loss["versus"], loss["items"]) == ("rank=4", "rank=2", 8)
    # the paired difference is the one sweep.json holds against the baseline, the p Holm-adjusted over 2 claims
    vs = result["tasks"]["perplexity"]["arms"]["rank=4"]["vs_baseline"]
    assert loss["test"]["delta"] == pytest.approx(vs["delta"]) and loss["p_holm"] >= loss["test"]["p_value"]
    assert loss["verdict"].startswith(judge("better", loss["test"], loss["p_holm"], loss["mde"], None))
    assert len(loss["seed_scores"]["arm"]) == 2 and acc["direction"] == "equal" and acc["effect"] == 0.5
    assert main(["sweep", "report", str(folder), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert text == (Path(study["records"]).parent / "findings.md").read_text()
    assert "**Question.** Does rank 4 beat rank 2?" in text and "runs recorded: 4/4" in text
    assert "| rank 4 lowers the loss | perplexity | rank=4 vs rank=2 |" in text
    assert "| rank=2 | 2 |" in text
    assert main(["sweep", "report", str(folder)]) == 0 and "rank 4 lowers the loss" in capsys.readouterr().out
    assert main(["sweep", "report", str(tmp_path)]) == 2 and "not a sweep folder" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted([*(ROOT / "experiments").glob("*.yaml"), *(ROOT / "recipes" / "sweeps").glob("*.yaml")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_study_file_plans(path: Path) -> None:
    """Each sweep file's factors, baseline and hypotheses are valid; a run may only wait for a data file
    of the shared datasets ($TUNELAB_DATA_DIR) named in the file's header."""
    try:
        sweep = load_sweep(path)
    except ConfigError as e:
        skip_without_shared_data(str(e))
        assert "data file" in str(e) and "not found" in str(e), e
        missing = str(e).split("data file '")[1].split("'")[0]
        assert Path(missing).name in path.read_text(), f"{path}: its header should say how to make {missing}"
        return
    assert sweep.runs and all(h["arm"] != h["versus"] for h in sweep.hypotheses)


def test_two_by_two_interaction_is_the_item_difference_in_differences(tmp_path: Path) -> None:
    from tunelab.io import read_jsonl
    from tunelab.report.findings import report
    from tunelab.runner.plan import plan

    claimed = {"claim": "dropout helps more at rank 4", "task": "perplexity", "effect": 0.5, "source": "a test"}
    path = _spec(tmp_path, seeds=2, hypotheses=[], interaction=claimed, factors={
        "rank": {"method.r": [2, 4]},
        "vld": {"off": {"regularizers": []}, "on": {"regularizers": [{"name": "very_large_dropout", "p": 0.9}]}}})
    before = plan(load_sweep(path))["interaction"]  # no pilot, and a loss: no worst case to assume
    assert math.isnan(before["item_sd"]) and before["item_sd_from"].startswith("unknown") \
        and before["claim"] == claimed["claim"]
    run_sweep(path, backend="inline", quiet=True)
    study = report(path)
    inter = study["interactions"]["perplexity"]
    sweep = study["_sweep"]
    loss: dict = {}  # cell -> item -> negated loss, averaged over the seeds
    for p in sweep.runs:
        rows = read_jsonl(Path(p.cfg.out) / p.name / "eval" / "tuned" / "perplexity.jsonl")
        cell = loss.setdefault((p.arm.levels["rank"], p.arm.levels["vld"]), {})
        for r in rows:
            cell[r["id"]] = cell.get(r["id"], 0.0) - r["loss"] / len(sweep.seeds)
    ids = sorted(loss[("2", "off")])
    did = [(loss[("4", "on")][i] - loss[("4", "off")][i]) - (loss[("2", "on")][i] - loss[("2", "off")][i]) for i in ids]
    assert inter["items"] == len(ids) == 8 and inter["delta"] == pytest.approx(float(np.mean(did)))
    assert inter["ci"][0] <= inter["delta"] <= inter["ci"][1] and 0 <= inter["p_value"] <= 1
    assert "vld effect at rank=4" in inter["contrast"]
    # the claimed interaction: judged on that difference in differences, the per-seed one beside it
    claim = study["interaction_claim"]
    assert claim["test"] == inter and claim["verdict"].startswith(judge("better", inter, inter["p_value"], inter["mde"], 0.5))
    seed_did = []
    for seed in sweep.seeds:
        run = {(p.arm.levels["rank"], p.arm.levels["vld"]): -next(r for r in study["_records"] if r["name"] == p.name)
               ["results"]["perplexity"]["tuned"]["value"] for p in sweep.runs if p.seed == seed}
        seed_did.append((run[("4", "on")] - run[("4", "off")]) - (run[("2", "on")] - run[("2", "off")]))
    if "seed_test" in claim:
        assert claim["seed_test"]["delta"] == pytest.approx(float(np.mean(seed_did)))
    else:  # every seed the same difference in differences: said, with that difference
        assert float(np.ptp(seed_did)) == 0.0 and f"{seed_did[0]:+.3f}" in claim["seed_note"]
    after = plan(load_sweep(path))["interaction"]
    assert after["item_sd_from"] == "records of the four cells" and after["items"] == 8
    assert after["item_sd"] == pytest.approx(float(np.std(did, ddof=1)))
    from tunelab.report.findings_doc import markdown

    text = markdown(study)
    assert "Interaction on items (difference in differences" in text
    assert "**Interaction under test** (perplexity" in text and "dropout helps more at rank 4" in text


@pytest.mark.parametrize(("interaction", "message"), [
    ({"claim": "x", "task": "arith", "effect": 0.1}, "'source' is required"),
    ({"claim": "x", "task": "arith", "source": "s"}, "effect: must be a positive number"),
    ({"claim": "x", "task": "arith", "effect": 0.1, "source": "s", "direction": "equal"}, "is not better, worse or either"),
    ({"claim": "x", "task": "arith", "effect": 0.1, "source": "s", "arm": "rank=4"}, "unknown key(s) arm"),
])
def test_a_bad_interaction_claim_fails_naming_the_file(tmp_path: Path, interaction: dict, message: str) -> None:
    two_by_two = {"rank": {"method.r": [2, 4]}, "lr": {"train.lr": [1e-3, 1e-2]}}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_sweep(_spec(tmp_path, hypotheses=[], factors=two_by_two, interaction=interaction))
    assert f"{tmp_path / 'study.yaml'}: interaction" in str(e.value)
    with pytest.raises(ConfigError, match="needs a 2 x 2 design"):
        load_sweep(_spec(tmp_path, hypotheses=[], interaction={"claim": "x", "task": "arith", "effect": 0.1, "source": "s"}))


def test_a_claim_may_score_the_comparison_arm_on_another_task_over_the_same_items():
    """``versus_task``: PromptIntern's bare query (task Q) against full-prompt fine-tuning read with the full
    prompt (task F), paired on the items both regimes share."""
    from types import SimpleNamespace

    from tunelab.report.findings import hypotheses

    h = {"claim": "bare matches full", "task": "Q", "arm": "a=pi", "versus": "a=full", "versus_task": "F",
         "direction": "better", "effect": 0.1, "source": "test"}
    ids = [f"i{k}" for k in range(60)]
    items = {"Q": {"a=pi": {i: [1.0] for i in ids}, "a=full": {i: [0.0] for i in ids}},
             "F": {"a=full": {i: [1.0 if k % 2 else 0.0] for k, i in enumerate(ids)}}}
    row = hypotheses(SimpleNamespace(hypotheses=[h]), [], items)[0]
    assert row["items"] == 60 and abs(row["test"]["delta"] - 0.5) < 1e-9  # against F's 0.5, not Q's 0.0


def test_failure_kinds_are_averaged_per_arm_and_a_kind_a_run_never_met_counts_zero():
    from types import SimpleNamespace

    from tunelab.report.findings import failure_kinds

    def rec(arm: str, kinds: dict[str, float]) -> dict:
        scores = {"success": {"value": 1 - sum(kinds.values()), "ci": [0, 1], "n": 10},
                  **{f"failure/{k}": {"value": v, "ci": [0, 1], "n": 10, "count": int(10 * v)} for k, v in kinds.items()}}
        return {"arm": SimpleNamespace(label=arm), "results": {
            "agent_calculator": {"metric": "success", "tuned_all": scores},
            "arith": {"metric": "accuracy", "tuned_all": {"accuracy": {"value": 0.5, "ci": [0, 1], "n": 10}}},
            "run": {"train": {}}}}

    out = failure_kinds([rec("a", {"wrong_answer": 0.2, "malformed": 0.1}), rec("a", {"wrong_answer": 0.4}),
                         rec("b", {"step_limit": 0.3})])
    assert set(out) == {"agent_calculator"}  # a task without failure scores is left out
    assert out["agent_calculator"]["a"] == pytest.approx({"malformed": 0.05, "step_limit": 0.0, "wrong_answer": 0.3})
    assert out["agent_calculator"]["b"] == pytest.approx({"malformed": 0.0, "step_limit": 0.3, "wrong_answer": 0.0})


def test_inference_costs_per_regime_are_averaged_per_arm_with_the_untrained_row_from_the_base():
    from types import SimpleNamespace

    from tunelab.eval.regimes import UNTRAINED
    from tunelab.report.findings import inference_costs
    from tunelab.report.findings_doc import markdown

    def table(tokens_full: float, secs: float, batch1: float | None) -> dict:
        full = {"input_tokens": {"value": tokens_full, "ci": [0, 1], "n": 5}, "seconds_per_item": secs,
                "latency_batch1_s": None if batch1 is None else {"value": batch1, "ci": [0, 1], "n": 3}}
        query = {"input_tokens": {"value": 20.0, "ci": [0, 1], "n": 5}, "token_saving": 1 - 20.0 / tokens_full,
                 "seconds_per_item": secs / 4, "latency_batch1_s": None}
        return {"arith_rules": {"full": full, "query": query}}

    amd = {"cpu": "AMD EPYC 9B14", "precision": "bf16"}
    intel = {"cpu": "Intel(R) Xeon(R) Processor", "precision": "bf16"}

    def rec(arm: str, tuned: dict, host: dict = amd) -> dict:
        return {"arm": SimpleNamespace(label=arm), "record": {"host": host},
                "results": {"run": {"train": {}, "regimes": {"base": table(400.0, 0.8, 2.0), "tuned": tuned}}}}

    out = inference_costs([rec("pi", table(400.0, 0.4, 1.0)), rec("pi", table(400.0, 0.6, None)),
                           rec("full", table(400.0, 1.0, 3.0)), rec("pi", table(400.0, 0.1, 0.2), intel),
                           {"arm": SimpleNamespace(label="x"), "results": {"run": {"train": {}}}}])
    cells = out["arith_rules"]
    on_amd, on_intel = "AMD EPYC 9B14 / bf16", "Intel(R) Xeon(R) Processor / bf16"
    assert cells[("pi", "full", on_amd)] == pytest.approx({"input_tokens": 400.0, "seconds_per_item": 0.5,
                                                           "latency_batch1_s": 1.0})  # a run without it is not a zero
    # seconds are averaged within a host only: the faster host's run is its own row, not pulled into AMD's mean
    assert cells[("pi", "full", on_intel)]["seconds_per_item"] == pytest.approx(0.1)
    assert cells[("pi", "query", on_amd)]["token_saving"] == pytest.approx(0.95)
    assert cells[(UNTRAINED, "full", on_amd)]["latency_batch1_s"] == pytest.approx(2.0)
    assert cells[(UNTRAINED, "full", on_intel)]["latency_batch1_s"] == pytest.approx(2.0)
    assert not any(k[0] == "x" for k in cells)  # a run without regimes adds nothing
    assert inference_costs([{"arm": SimpleNamespace(label="a"), "results": {"run": {}}}]) == {}
    study = {"name": "s", "question": "", "_sweep": SimpleNamespace(differences=[]), "tasks": {}, "hypotheses": [],
             "diagnostics": {}, "inference_costs": out, "_items": {}}
    from unittest import mock
    with mock.patch("tunelab.report.findings_doc._design", return_value=[]), \
            mock.patch("tunelab.report.findings_doc._plan_lines", return_value=[]):
        text = markdown(study)
    assert "**Inference cost on arith_rules**" in text
    assert f"| pi | query | {on_amd} | 20.0 | 95.0% | 0.125 | - |" in text
    assert f"| pi | full | {on_intel} | 400.0 | - | 0.100 | 0.200 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "bf16" in line]
    assert [on_amd in line for line in rows] == [True] * 6 + [False] * 4  # grouped by host


def test_resources_keep_a_row_per_host_when_a_study_spans_hosts():
    from types import SimpleNamespace

    from tunelab.report.findings import resources

    def rec(arm: str, cpu: str, step_s: float) -> dict:
        return {"arm": SimpleNamespace(label=arm), "record": {"host": {"cpu": cpu, "precision": "bf16"},
                                                              "peak_mem_mb": 100.0, "seconds": 60.0},
                "results": {"run": {"train": {"median_step_seconds": step_s, "final_loss": 0.5}}}}

    one = resources([rec("b", "AMD", 2.0), rec("a", "AMD", 1.0), rec("a", "AMD", 3.0)])
    assert list(one) == ["b", "a"]  # one host: one row per arm, in the records' order
    assert one["a"]["median_step_seconds"] == pytest.approx(2.0)
    two = resources([rec("b", "AMD", 2.0), rec("a", "Intel", 1.0), rec("a", "AMD", 1.5)])
    assert list(two) == ["b on AMD / bf16", "a on AMD / bf16", "a on Intel / bf16"]  # never averaged across
    assert two["a on Intel / bf16"]["median_step_seconds"] == pytest.approx(1.0)


def test_gradient_interference_is_set_beside_each_arms_effects(tmp_path: Path) -> None:
    """A mixing study's mechanism table: per arm the sources' gradient cosine and conflict share (from the
    runs' grad_interference diagnostic) beside every task's delta against the baseline."""
    from tunelab.report import findings as findings_mod
    from tunelab.report import findings_doc

    spec = {"recipe": str(ROOT / "recipes" / "tiny.yaml"), "name": "mix_toy",
            "overrides": ["train.max_steps=4", "train.save_every=0", "data.heldout=0", "eval.tasks=[arith]",
                          "eval.limit=8", "eval.max_new_tokens=8", "diagnostics=[{name: grad_interference, every: 2}]"],
            "factors": {"mix": {"A": {"data.sources": [{"name": "arith", "task": "arith", "count": 32}]},
                                "AC": {"data.sources": [{"name": "arith", "task": "arith", "count": 32},
                                                        {"name": "code", "task": "code", "count": 32}]}}},
            "seeds": 1, "out": str(tmp_path / "out"), "records": str(tmp_path / "studies" / "mix_toy" / "records"),
            "pilot_range": [0.0, 1.0],
            "hypotheses": [{"claim": "code helps", "task": "arith", "arm": "mix=AC", "effect": 0.1, "source": "a test"}]}
    path = tmp_path / "mix.yaml"
    path.write_text(json.dumps(spec))
    run_sweep(path, backend="inline", quiet=True)
    study = findings_mod.report(path)
    grad = study["diagnostics"]["grad_interference"]
    assert "cosine.arith~code" in grad["mix=AC"] and "cosine.arith~code" not in grad["mix=A"]
    text = findings_doc.markdown(study)
    assert "**Gradient interference beside the effects**" in text
    delta = study["tasks"]["arith"]["arms"]["mix=AC"]["vs_baseline"]["delta"]
    section = text.split("**Gradient interference beside the effects**")[1].split("\n\n")[1].splitlines()
    assert section[0] == ("| arm | conflict arith~code | cosine arith~code | mean_conflict_rate | delta arith |")
    row = next(line for line in section if line.startswith("| mix=AC | "))
    assert row == (f"| mix=AC | {grad['mix=AC']['conflict.arith~code']:.3f} | {grad['mix=AC']['cosine.arith~code']:.3f}"
                   f" | {grad['mix=AC']['mean_conflict_rate']:.3f} | {delta:+.3f} |")
    assert next(line for line in section if line.startswith("| mix=A | ")) == "| mix=A | - | - | - | - |"


def test_the_glance_table_lists_every_claim_with_its_runs_and_marks_unfinished_studies():
    from types import SimpleNamespace

    from tunelab.report.findings_doc import glance

    def sweep(runs, models=("smollm2-135m-instruct",)):
        return SimpleNamespace(runs=[SimpleNamespace(cfg=SimpleNamespace(model=SimpleNamespace(name=models[i % len(models)])))
                                     for i in range(runs)])

    test = {"delta": 0.118, "ci": [0.088, 0.148]}
    studies = [
        {"name": "done", "_sweep": sweep(4), "_records": [{}] * 4,
         "hypotheses": [{"claim": "A beats B", "test": test, "seed_p": 0.035, "verdict": "replicates"},
                        {"claim": "C matches B", "verdict": "not tested: no finished runs on both arms"}],
         "interaction_claim": {"claim": "A x D", "test": {"delta": -0.2, "ci": [-0.3, -0.1]},
                               "verdict": "does not replicate"},
         "judged": {"claims": [{"claim": "E wins", "test": {}, "win_rate": 0.55, "win_ci": [0.51, 0.59],
                                "seed_test": {"p_value": 0.2}, "verdict": "inconclusive"}]}},
        {"name": "running", "_sweep": sweep(9, ("smollm2-135m-instruct", "gemma3-270m")), "_records": [{}] * 4,
         "hypotheses": []},
    ]
    lines = glance(studies)
    rows = [line for line in lines if line.startswith("| [")]
    assert rows == [
        "| [done](#done) | smollm2-135m-instruct | 4/4 | A beats B | +0.118 [+0.088, +0.148] | 0.035 | replicates |",
        "| [done](#done) | smollm2-135m-instruct | 4/4 | C matches B | - | - | not tested: no finished runs on both arms |",
        "| [done](#done) | smollm2-135m-instruct | 4/4 | A x D (interaction) | -0.200 [-0.300, -0.100] | - | "
        "does not replicate |",
        "| [done](#done) | smollm2-135m-instruct | 4/4 | E wins (judged) | win rate 0.550 [0.510, 0.590] | 0.2 | "
        "inconclusive |",
        "| [running](#running) | gemma3-270m, smollm2-135m-instruct | 4/9 (interim) | (no claim under test: a descriptive study) "
        "| - | - | - |"]
    assert lines[0] == "## At a glance"
