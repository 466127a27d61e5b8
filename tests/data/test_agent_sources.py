"""Agent datasets as trajectories (NAT StrategyQA, FireAct HotpotQA, Glaive function calling, QA sets):
inline fixtures for every rule, then the real files under $TUNELAB_DATA_DIR (skipped when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.config import SourceConfig
from tunelab.data.agent_formats import qa_prompt
from tunelab.data.formats import to_sample
from tunelab.data.sources import check_source, load_source
from tunelab.data.transforms.base import TransformContext, build_transforms
from tunelab.io import DataError

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TUNELAB_DATA_DIR", ROOT.parent / "shared" / "data"))


def _load(path: str | Path, fmt: str = "auto", **kw):
    return load_source(SourceConfig(name="s", path=str(path), format=fmt, **kw), None, seed=0, heldout=0)


# -- NAT (StrategyQA trajectories, the question joined by id) ------------------------------------

def _nat_row(qid: str, reward: bool, finish: str | None = "Yes") -> dict:
    turns = [{"role": "assistant", "content": "Thought: look.\nAction: search[apples]", "loss": True},
             {"role": "user", "content": "Observation:  #1: apples are fruit", "loss": False}]
    if finish:
        turns += [{"role": "assistant", "content": f"Action: finish[{finish}]", "loss": True},
                  {"role": "user", "content": "Observation: Episode finished", "loss": False}]
    info = {"reward": reward, "gt": True} | ({"pred": finish, "acc": reward} if finish else {})
    return {"conversations": turns, "info": info, "id": qid, "source": "0.7"}


@pytest.fixture
def nat_dir(tmp_path: Path) -> Path:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"id": q, "question": f"Is {q} a fruit?", "answer": True})
                                                  + "\n" for q in ("a", "b")))
    (tmp_path / "pos.json").write_text(json.dumps([_nat_row("a", True)]))
    (tmp_path / "neg.json").write_text(json.dumps([_nat_row("a", False, "No"), _nat_row("b", False, None),
                                                   _nat_row("b", False, "Maybe")]))
    return tmp_path


def test_nat_rows_become_trajectories_with_question_outcome_and_origin(nat_dir: Path) -> None:
    out = _load(nat_dir / "neg.json", "nat_react")
    first, stopped, odd = out.train
    assert first.messages[0] == {"role": "user", "content": qa_prompt("Is a a fruit?", "yesno")}
    assert [m["role"] for m in first.messages] == ["user", "assistant", "user", "assistant"]  # 'Episode finished' dropped
    assert first.messages[1]["train"] is True and "train" not in first.messages[2]  # loss flags kept on the agent's turns
    assert first.meta["outcome"] == {"success": False, "score": 0.0, "failure": "wrong_answer", "answer": "No",
                                     "gold": "Yes"}
    assert first.meta["origin"] == {"dataset": "NAT", "temperature": 0.7, "file": "neg.json"}
    assert first.meta["task_id"] == "a" and [s.meta["id"] for s in out.train] == ["a", "b", "b#2"]
    assert stopped.meta["outcome"]["failure"] == "no_answer" and odd.meta["outcome"]["failure"] == "wrong_answer"
    assert _load(nat_dir / "neg.json").train[0].messages == first.messages  # format detected


def test_a_glob_path_is_one_source_so_the_nat_ratio_sees_both_kinds(nat_dir: Path) -> None:
    out = _load(nat_dir / "*.json", "nat_react")  # pos.json and neg.json, not train.jsonl
    assert [s.meta["outcome"]["success"] for s in out.train] == [False, False, False, True]
    assert {s.meta["origin"]["file"] for s in out.train} == {"neg.json", "pos.json"}
    (t,) = build_transforms([{"name": "nat", "negatives_per_positive": 1.0}])
    kept, removed = t(out.train, TransformContext(count_tokens=len, seed=0))
    assert len(kept) == 2 and removed == {"negatives_over_ratio": 2}
    assert sorted(s.messages[0]["content"].split("? ")[-1] for s in kept) == [
        "But incorrectly solve the problem.", "Please solve the problem correctly."]
    with pytest.raises(DataError, match="no data file matches"):
        _load(nat_dir / "nothing_*.json")


def test_nat_rows_fail_clearly(nat_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "zz", "question": "?"}\n')  # no row for id "a"
    with pytest.raises(DataError, match=r"pos.json\[0\]: field 'question': missing: NAT rows hold no question"):
        _load(nat_dir / "pos.json", "nat_react", options={"questions": str(other)})
    row = _nat_row("a", True) | {"question": "Q?"}
    row["conversations"][1]["loss"] = True
    with pytest.raises(DataError, match=r"x.json\[3\]: field 'conversations\[1\].loss'"):
        to_sample(row, "nat_react", {}, "x.json[3]")
    with pytest.raises(DataError, match="info.reward"):
        to_sample(_nat_row("a", True) | {"question": "Q?", "info": {"gt": True}}, "nat_react", {}, "x.json[0]")
    src = SourceConfig(name="s", path=str(nat_dir / "pos.json"), format="nat_react", options={"questions": "nope.jsonl"})
    assert any("options.questions" in p and "nope.jsonl" in p for p in check_source(src, None))


# -- FireAct -----------------------------------------------------------------------------------

ALPACA = ("Below is an instruction that describes a task.\n\n### Instruction:\nWho wrote Hamlet?\n\n### Response:\n"
          "Thought: I need to search Hamlet.\nAction: search[Hamlet]\nObservation: Hamlet is a play\nby Shakespeare.\n"
          "Thought: It is Shakespeare.\nAction: finish[Shakespeare]\nObservation: Episode finished, reward = False\n")


def test_fireact_trajectories_text_chat_and_sft(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "Who wrote Hamlet?"},
            {"role": "assistant", "content": "Thought: I know.\nAction: finish[William Shakespeare]"},
            {"role": "user", "content": "Observation: Episode finished, reward = True"}]
    (tmp_path / "trajs.json").write_text(json.dumps({
        "7": {"reward": False, "em": False, "f1": 0.6667, "gt": "william shakespeare", "pred": "shakespeare",
              "prompt": "", "traj": ALPACA},
        "9": {"reward": True, "em": True, "f1": 1, "gt": "william shakespeare", "pred": "william shakespeare",
              "prompt": [], "traj": chat}}))
    text, listed = _load(tmp_path / "trajs.json").train  # records keyed by id; format detected
    assert [s.meta["id"] for s in (text, listed)] == ["7", "9"]
    assert [m["role"] for m in text.messages] == ["user", "assistant", "user", "assistant"]
    assert text.messages[0]["content"] == qa_prompt("Who wrote Hamlet?")
    assert text.messages[1]["content"] == "Thought: I need to search Hamlet.\nAction: search[Hamlet]"
    assert text.messages[2]["content"] == "Observation: Hamlet is a play\nby Shakespeare."  # multi-line observation
    assert text.meta["outcome"] == {"success": False, "score": 0.6667, "failure": "wrong_answer",
                                    "answer": "shakespeare", "gold": "william shakespeare"}
    assert listed.meta["outcome"]["success"] and [m["role"] for m in listed.messages] == ["user", "assistant"]
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"messages": chat}) + "\n")
    (row,) = _load(sft, "fireact").train
    assert row.meta["outcome"]["success"] is True and row.meta["origin"]["dataset"] == "FireAct"
    sft.write_text(json.dumps({"messages": chat[:2]}) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:1: field 'reward': missing"):
        _load(sft, "fireact")


# -- Glaive function calling, QA sets --------------------------------------------------------------

TOOLS = json.dumps([{"name": "get_time", "parameters": {"type": "object", "required": ["city"]}}])


def _glaive(call: str) -> dict:
    return {"conversations": [{"from": "human", "value": "Time in Oslo?"}, {"from": "function_call", "value": call},
                              {"from": "observation", "value": '{"time": "10:00"}'},
                              {"from": "gpt", "value": "It is 10:00."}], "tools": TOOLS}


def test_glaive_calls_are_checked_against_the_tools() -> None:
    good = to_sample(_glaive('{"name": "get_time", "arguments": {"city": "Oslo"}}'), "glaive", {}, "g.json[0]")
    assert [m["role"] for m in good.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert "get_time" in good.messages[0]["content"]
    assert good.meta["outcome"] == {"success": True, "score": 1.0, "failure": None, "calls": 1}
    for call in ('{"name": "get_weather", "arguments": {}}', '{"name": "get_time", "arguments": {}}', "not json"):
        bad = to_sample(_glaive(call), "glaive", {}, "g.json[0]")
        assert bad.meta["outcome"]["failure"] == "malformed_action" and bad.meta["outcome"]["score"] == 0.0
    with pytest.raises(DataError, match=r"g.json\[0\]: field 'tools': invalid JSON"):
        to_sample(_glaive("{}") | {"tools": "[{"}, "glaive", {}, "g.json[0]")


def test_qa_rows() -> None:
    s = to_sample({"id": 3, "question": "Is ice cold?", "answer": True}, "qa", {}, "q.jsonl:1")
    assert s.messages[1]["content"] == "Yes" and s.meta["answer"] == "Yes"
    s = to_sample({"question": "Who?", "answer": "Richard Strauss", "type": "bridge"}, "qa", {}, "q.json[0]")
    assert s.meta == {"answer": "Richard Strauss", "type": "bridge"}


# -- the real files ---------------------------------------------------------------------------------

REAL = [  # (path, format, trajectories, successes, failure kinds, malformed rows skipped)
    ("nat_strategyqa/strategyqa_gpt-3.5_positive.json", "nat_react", 1070, 1070, {}, 0),
    ("nat_strategyqa/strategyqa_gpt-3.5_negative.json", "nat_react", 1256, 0,
     {"wrong_answer": 1243, "no_answer": 13}, 7),
    ("fireact_hotpotqa/trajs_gpt-3.5-turbo-ft.json", "fireact", 465, 200, {"wrong_answer": 265}, 0),
    ("fireact_hotpotqa/trajs_llama-2-13b-lora.json", "fireact", 499, 172, {"wrong_answer": 327}, 0),
    ("fireact_hotpotqa/trajs_llama-2-7b-lora.json", "auto", 500, 131, {"wrong_answer": 369}, 0),
    ("fireact_hotpotqa/finetune_hotpotqa_gpt_format.jsonl", "fireact", 500, 500, {}, 0),
    ("llamafactory_demo/glaive_toolcall_en_demo.json", "glaive", 300, 300, {}, 0),
]


@pytest.mark.parametrize(("path", "fmt", "n", "wins", "failures", "skipped"), REAL, ids=[r[0] for r in REAL])
def test_real_agent_files(path: str, fmt: str, n: int, wins: int, failures: dict, skipped: int) -> None:
    if not (DATA / path).is_file():
        pytest.skip(f"{path} not in TUNELAB_DATA_DIR")
    out = _load(DATA / path, fmt, on_error="skip")
    outcomes = [s.meta["outcome"] for s in out.train]
    assert len(out.train) == n and out.removed.get("malformed", 0) == skipped
    assert sum(o["success"] for o in outcomes) == wins
    kinds = {}
    for o in outcomes:
        if o["failure"]:
            kinds[o["failure"]] = kinds.get(o["failure"], 0) + 1
    assert kinds == failures
    for s in out.train[:50]:  # trainable: the agent's turns follow the prompt, observations carry no loss
        assert s.messages[0]["role"] in ("user", "system") and any(m["role"] == "assistant" for m in s.messages)
        assert all("train" not in m for m in s.messages if m["role"] != "assistant")
        assert not any("Episode finished" in m["content"] for m in s.messages)


def test_real_qa_sets_and_the_nat_recipe_through_data_inspect(capsys) -> None:
    for path, n in (("nat_hotpotqa/dev_random_500.json", 500), ("nat_strategyqa/test_random_500.jsonl", 500)):
        if not (DATA / path).is_file():
            pytest.skip(f"{path} not in TUNELAB_DATA_DIR")
        assert len(_load(DATA / path, "qa").train) == n
    assert main(["data", "inspect", str(ROOT / "recipes" / "nat.yaml"), "--json", "model=tiny", "data.heldout=0",
                 "data.transforms.0.negatives_per_positive=0.5"]) == 0
    (src,) = json.loads(capsys.readouterr().out)["sources"]
    assert src["examples"] == 1070 + 535 and src["removed"] == {"malformed": 7, "negatives_over_ratio": 1256 - 535}


def test_nat_recipe_variants_and_the_ratio_sweep_validate(tmp_path: Path, capsys) -> None:
    from tunelab.runner.sweep_file import load_sweep

    if not (DATA / "nat_strategyqa" / "strategyqa_gpt-3.5_positive.json").is_file():
        pytest.skip("nat_strategyqa not in TUNELAB_DATA_DIR")
    recipe = str(ROOT / "recipes" / "nat.yaml")
    for variant in ([], ["data.transforms.0.mode=nut"], ["data.transforms.0.mode=positives"]):
        assert main(["validate", recipe, *variant]) == 0, capsys.readouterr().err
    sweep = load_sweep(ROOT / "recipes" / "sweeps" / "nat_ratio.yaml", out=str(tmp_path))
    cells = {(r.cfg.data.transforms[0]["mode"], r.cfg.data.transforms[0]["negatives_per_positive"], r.seed)
             for r in sweep.runs}
    assert len(sweep.runs) == len(cells) == 27 and sweep.seeds == [0, 1, 2]
    assert {c[0] for c in cells} == {"nat", "nut", "positives"} and {c[1] for c in cells} == {0.25, 0.5, 1.0}
