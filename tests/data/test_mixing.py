"""Mixing: realised fractions match targets up to rounding, seeded, no silent upsampling."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from tunelab.config import DataConfig
from tunelab.data.formats import DataError
from tunelab.data.mixing import apportion, mix
from tunelab.types import Sample


def pool(name: str, n: int, words: int = 3) -> list[Sample]:
    msgs = lambda i: [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": " ".join(["w"] * words)}]  # noqa: E731
    return [Sample(msgs(i), {"source": name, "id": f"{name}-{i}"}) for i in range(n)]


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report["sources"]}


def assert_within_rounding(report: dict[str, Any]) -> None:
    total = report["total"]
    for row in report["sources"]:
        assert abs(row["examples"] - row["target_fraction"] * total) < 1.0, row


def test_apportion_sums_and_rounds() -> None:
    q = apportion(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert sum(q.values()) == 10 and sorted(q.values()) == [3, 3, 4]


def test_concat_takes_everything() -> None:
    pools = {"a": pool("a", 7), "b": pool("b", 3)}
    mixed, report = mix(pools, DataConfig(strategy="concat"), {}, {})
    assert Counter(s.source for s in mixed) == {"a": 7, "b": 3}
    assert by_name(report)["a"]["target_fraction"] == pytest.approx(0.7)
    assert report["strategy"] == "concat" and report["seed"] == 0


def test_proportional_exact_and_no_repeats() -> None:
    pools = {"a": pool("a", 1000), "b": pool("b", 1000), "c": pool("c", 1000)}
    mixed, report = mix(pools, DataConfig(strategy="proportional"), {"a": 5, "b": 3, "c": 2}, {})
    rows = by_name(report)
    assert [rows[n]["examples"] for n in "abc"] == [1000, 600, 400]
    assert rows["b"]["realized_fraction"] == pytest.approx(0.3)
    assert len({s.meta["id"] for s in mixed}) == len(mixed)  # nothing repeated
    assert all(r["repeated"] == 0 and r["removed"] == {} for r in report["sources"])


def test_proportional_shrinks_total_for_a_small_source() -> None:
    pools = {"big": pool("big", 1000), "small": pool("small", 37)}
    mixed, report = mix(pools, DataConfig(strategy="proportional"), {"big": 0.7, "small": 0.3}, {})
    rows = by_name(report)
    assert rows["small"]["examples"] <= 37 and rows["big"]["examples"] <= 1000
    assert report["total"] == len(mixed) > 100
    assert_within_rounding(report)
    assert len({s.meta["id"] for s in mixed}) == len(mixed)


def test_total_too_large_without_upsample_is_an_error() -> None:
    pools = {"big": pool("big", 1000), "small": pool("small", 20)}
    cfg = DataConfig(strategy="proportional", total=500)
    with pytest.raises(DataError, match=r"'small'.*only 20.*upsample: true"):
        mix(pools, cfg, {"big": 0.5, "small": 0.5}, {})


def test_upsample_repeats_and_reports() -> None:
    pools = {"big": pool("big", 1000), "small": pool("small", 20)}
    cfg = DataConfig(strategy="proportional", total=501, upsample=True)
    mixed, report = mix(pools, cfg, {"big": 0.5, "small": 0.5}, {})
    rows = by_name(report)
    assert len(mixed) == 501 and rows["small"]["repeated"] == rows["small"]["examples"] - 20 > 200
    assert rows["big"]["repeated"] == 0
    assert_within_rounding(report)
    counts = Counter(s.meta["id"] for s in mixed if s.source == "small")
    assert set(counts) == {f"small-{i}" for i in range(20)} and max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_temperature_fractions(temperature: float) -> None:
    sizes = {"a": 900, "b": 90, "c": 10}
    pools = {n: pool(n, k) for n, k in sizes.items()}
    cfg = DataConfig(strategy="temperature", temperature=temperature)
    _, report = mix(pools, cfg, {}, {})
    z = sum(k ** (1 / temperature) for k in sizes.values())
    for n, row in by_name(report).items():
        assert row["target_fraction"] == pytest.approx(sizes[n] ** (1 / temperature) / z)
        assert row["examples"] <= sizes[n]
    assert_within_rounding(report)


def test_fixed_counts_and_upsample() -> None:
    pools = {"a": pool("a", 50), "b": pool("b", 10)}
    mixed, report = mix(pools, DataConfig(strategy="fixed"), {}, {"a": 30, "b": None})
    assert Counter(s.source for s in mixed) == {"a": 30, "b": 10}
    assert by_name(report)["a"]["target_fraction"] == pytest.approx(0.75)
    with pytest.raises(DataError, match=r"'b': count=25 but only 10.*upsample"):
        mix(pools, DataConfig(strategy="fixed"), {}, {"a": 30, "b": 25})
    _, up = mix(pools, DataConfig(strategy="fixed", upsample=True), {}, {"a": 30, "b": 25})
    assert by_name(up)["b"]["repeated"] == 15 and by_name(up)["b"]["examples"] == 25


def test_seed_determinism_and_change() -> None:
    pools = {"a": pool("a", 200), "b": pool("b", 200)}
    run = lambda seed: [s.meta["id"] for s in mix(pools, DataConfig(seed=seed), {"a": 2, "b": 1}, {})[0]]  # noqa: E731
    assert run(0) == run(0)
    assert run(0) != run(1)
    assert sorted(run(0)) != sorted(run(1))  # the selected examples change too, not only the order


def test_token_unit_fractions() -> None:
    pools = {"short": pool("short", 400, words=2), "long": pool("long", 400, words=40)}

    def count(s: Sample) -> int:
        return sum(len(m["content"].split()) for m in s.messages)

    cfg = DataConfig(strategy="proportional", unit="tokens")
    mixed, report = mix(pools, cfg, {"short": 0.5, "long": 0.5}, {}, count_tokens=count)
    rows = by_name(report)
    max_len = max(count(s) for p in pools.values() for s in p)
    for row in rows.values():
        assert abs(row["realized_token_fraction"] - 0.5) <= max_len / report["total_tokens"]
        assert row["tokens"] == sum(count(s) for s in mixed if s.source == row["name"])
    assert rows["short"]["examples"] > 5 * rows["long"]["examples"]  # equal tokens, unequal examples
    assert math.isclose(sum(r["realized_fraction"] for r in rows.values()), 1.0)
    with pytest.raises(DataError, match="count_tokens"):
        mix(pools, cfg, {"short": 1, "long": 1}, {})


def test_token_unit_total_and_upsample() -> None:
    pools = {"a": pool("a", 100, words=9), "b": pool("b", 5, words=9)}  # 10 tokens per sample

    def count(s: Sample) -> int:
        return sum(len(m["content"].split()) for m in s.messages)

    cfg = DataConfig(strategy="proportional", unit="tokens", total=400)
    with pytest.raises(DataError, match=r"200 tokens of source 'b'.*only 50.*upsample"):
        mix(pools, cfg, {"a": 1, "b": 1}, {}, count_tokens=count)
    cfg.upsample = True
    _, report = mix(pools, cfg, {"a": 1, "b": 1}, {}, count_tokens=count)
    rows = by_name(report)
    assert rows["a"]["tokens"] == rows["b"]["tokens"] == 200 and rows["b"]["repeated"] == 15


def test_report_shape_without_counter() -> None:
    _, report = mix({"a": pool("a", 4)}, DataConfig(), {}, {})
    assert set(report) >= {"strategy", "unit", "seed", "sources"}
    row = report["sources"][0]
    assert set(row) == {"name", "target_fraction", "available", "examples", "tokens", "realized_fraction",
                        "realized_token_fraction", "repeated", "removed"}
    assert row["tokens"] is None and row["realized_token_fraction"] is None


def test_empty_source_with_weight_is_an_error() -> None:
    with pytest.raises(DataError, match="'b' has no examples"):
        mix({"a": pool("a", 4), "b": []}, DataConfig(), {"a": 1, "b": 1}, {})
