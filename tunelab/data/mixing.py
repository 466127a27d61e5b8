"""Mixing sources into one training set by seeded quotas (not independent random draws).

Instruction mixing (Wang et al. 2023, "Demystifying Instruction Mixing for Fine-tuning Large Language
Models", arXiv 2312.10793) mixes NLP-task, code and chat sources at fixed counts per included source:
``strategy: fixed`` with one ``count`` per source, the built-in families ``nlp``, ``code`` and
``instruct`` (:mod:`tunelab.data.tasks`) as its P, C and A.

Strategies (``data.strategy``):

- ``concat``: every example of every source (``total`` is ignored).
- ``proportional``: target fractions are the normalised ``weight`` s, counted in examples or,
  with ``unit: tokens``, in tokens.
- ``temperature``: p_i proportional to n_i^(1/T) with n_i the pool size (T=1: by size;
  large T: towards uniform), as in multilingual / multi-task sampling (Arivazhagan et al., 2019).
- ``fixed``: ``count`` examples per source (all of it when unset).

Fractions become integer quotas by largest remainder, so the realised fractions equal the
targets up to rounding. Without ``upsample`` no example is repeated: when no ``total`` is
set the mixture shrinks until every source can fill its quota; when ``total`` is set and a
source is too small, :class:`DataError` says which and suggests ``upsample: true``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from tunelab.config import DataConfig
from tunelab.data.formats import DataError
from tunelab.types import Sample

TokenCounter = Callable[[Sample], int]


# ----------------------------------------------------------------------------- targets and quotas


def target_fractions(
    cfg: DataConfig, sizes: dict[str, int], weights: dict[str, float], counts: dict[str, int | None]
) -> dict[str, float]:
    """The share of the mixture each source should have, by strategy (sums to 1)."""
    if cfg.strategy == "concat":
        raw = {n: float(k) for n, k in sizes.items()}
    elif cfg.strategy == "proportional":
        raw = {n: float(weights.get(n, 1.0)) for n in sizes}
        if any(w < 0 for w in raw.values()):
            raise DataError(f"mixture weights must be >= 0, got {raw}")
    elif cfg.strategy == "temperature":
        if cfg.temperature <= 0:
            raise DataError(f"data.temperature must be > 0, got {cfg.temperature}")
        raw = {n: k ** (1.0 / cfg.temperature) if k else 0.0 for n, k in sizes.items()}
    elif cfg.strategy == "fixed":
        raw = {n: float(_fixed_count(n, sizes, counts)) for n in sizes}
    else:
        raise DataError(f"unknown strategy {cfg.strategy!r}; valid: concat, proportional, temperature, fixed")
    total = sum(raw.values())
    if total <= 0:
        raise DataError(f"nothing to mix: every source is empty or has weight 0 ({cfg.strategy})")
    return {n: r / total for n, r in raw.items()}


def _fixed_count(name: str, sizes: dict[str, int], counts: dict[str, int | None]) -> int:
    count = counts.get(name)
    return sizes[name] if count is None else count


def apportion(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Integer quotas summing to ``total`` closest to ``total * fraction`` (largest remainder)."""
    exact = {n: total * p for n, p in fractions.items()}
    quotas = {n: math.floor(x + 1e-9) for n, x in exact.items()}
    left = total - sum(quotas.values())
    order = sorted(fractions, key=lambda n: (-(exact[n] - quotas[n]), list(fractions).index(n)))
    for name in order[:left]:
        quotas[name] += 1
    return quotas


def _short_error(name: str, need: float, have: int, total: float, frac: float, unit: str) -> DataError:
    return DataError(
        f"data.total={total:g} {unit} needs {need:g} {unit} of source {name!r} (fraction {frac:.3f}) "
        f"but it has only {have:g}; lower data.total, change the weights, or set data.upsample: true "
        f"to repeat its examples (repeats are reported)"
    )


def _check_nonempty(fractions: dict[str, float], sizes: dict[str, int]) -> None:
    for name, p in fractions.items():
        if p > 0 and sizes[name] == 0:
            raise DataError(f"source {name!r} has no examples (after filters) but a target fraction {p:.3f}")


def example_quotas(cfg: DataConfig, fractions: dict[str, float], sizes: dict[str, int]) -> dict[str, int]:
    """Examples to take per source for the fraction strategies (``unit: examples``)."""
    _check_nonempty(fractions, sizes)
    active = {n: p for n, p in fractions.items() if p > 0}
    if cfg.total is not None:
        quotas = apportion(cfg.total, fractions)
        short = [n for n in active if quotas[n] > sizes[n]]
        if short and not cfg.upsample:
            n = short[0]
            raise _short_error(n, quotas[n], sizes[n], cfg.total, fractions[n], "examples")
        return quotas
    if cfg.upsample:
        return apportion(sum(sizes.values()), fractions)
    total = math.floor(min(sizes[n] / p for n, p in active.items()) + 1e-9)
    quotas = apportion(total, fractions)
    while any(quotas[n] > sizes[n] for n in active):  # rounding can push one over by one
        total -= 1
        quotas = apportion(total, fractions)
    return quotas


def fixed_quotas(cfg: DataConfig, sizes: dict[str, int], counts: dict[str, int | None]) -> dict[str, int]:
    """``count`` examples per source; asking for more than a source has needs ``upsample``."""
    quotas = {n: _fixed_count(n, sizes, counts) for n in sizes}
    for name, q in quotas.items():
        if q > sizes[name] and not cfg.upsample:
            raise DataError(
                f"source {name!r}: count={q} but only {sizes[name]} examples are available; "
                f"lower count or set data.upsample: true to repeat its examples (repeats are reported)"
            )
        if q > 0 and sizes[name] == 0:
            raise DataError(f"source {name!r}: count={q} but it has no examples (after filters)")
    return quotas


# ----------------------------------------------------------------------------- drawing


def draw_examples(pool: list[Sample], quota: int, rng: random.Random) -> tuple[list[Sample], int]:
    """``quota`` samples: whole seeded passes over ``pool``, then a seeded remainder.

    Returns:
        The samples and how many of them are repeats.
    """
    if not pool:
        return [], 0
    passes, rest = divmod(quota, len(pool))
    out: list[Sample] = []
    for _ in range(passes):
        order = list(pool)
        rng.shuffle(order)
        out += order
    out += rng.sample(pool, rest)
    return out, max(0, quota - len(pool))


def draw_tokens(
    pool: list[Sample], tokens: list[int], budget: float, rng: random.Random, allow_repeat: bool
) -> tuple[list[Sample], int]:
    """Samples in seeded order until their tokens come nearest to ``budget``.

    A sample is taken while it brings the running total closer to the budget; without
    ``allow_repeat`` the pool is walked once, with it the walk restarts on a new order.
    """
    out: list[Sample] = []
    running, taken = 0, 0
    while True:
        order = list(range(len(pool)))
        rng.shuffle(order)
        for i in order:
            if running + tokens[i] / 2 >= budget:
                return out, max(0, taken - len(pool))
            out.append(pool[i])
            running += tokens[i]
            taken += 1
        if not allow_repeat or not pool or sum(tokens) == 0:
            return out, max(0, taken - len(pool))


def token_budgets(cfg: DataConfig, fractions: dict[str, float], pool_tokens: dict[str, int]) -> dict[str, float]:
    """Tokens to take per source for the fraction strategies with ``unit: tokens``.

    With ``unit: tokens`` a given ``total`` counts tokens.
    """
    _check_nonempty(fractions, pool_tokens)
    active = {n: p for n, p in fractions.items() if p > 0}
    if cfg.total is not None:
        total = float(cfg.total)
        for n, p in active.items():
            if p * total > pool_tokens[n] and not cfg.upsample:
                raise _short_error(n, round(p * total), pool_tokens[n], total, p, "tokens")
    elif cfg.upsample:
        total = float(sum(pool_tokens.values()))
    else:
        total = min(pool_tokens[n] / p for n, p in active.items())
    return {n: p * total for n, p in fractions.items()}


# ----------------------------------------------------------------------------- mix


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def mix(
    pools: dict[str, list[Sample]],
    cfg: DataConfig,
    weights: dict[str, float],
    counts: dict[str, int | None],
    count_tokens: TokenCounter | None = None,
) -> tuple[list[Sample], dict[str, Any]]:
    """Mix per-source pools into one seeded, shuffled training list.

    Args:
        pools: Source name -> its samples (after transforms), in a stable order.
        cfg: ``strategy``, ``unit``, ``temperature``, ``total``, ``upsample`` and ``seed``.
        weights: Source name -> mixture weight (``proportional``; missing = 1).
        counts: Source name -> examples to take (``fixed``; None = all).
        count_tokens: Tokens of one sample; required for ``unit: tokens``, and fills the
            token columns of the report when given.

    Returns:
        The mixture and a report ``{"strategy", "unit", "seed", "total", "total_tokens",
        "sources": [{"name", "target_fraction", "available", "examples", "tokens",
        "realized_fraction", "realized_token_fraction", "repeated", "removed"}]}``
        (``removed`` is left empty for the caller to fill).

    Raises:
        DataError: Impossible quotas (a source too small for ``total`` without upsample,
            an empty source with a positive share, no tokenizer for ``unit: tokens``).
    """
    if cfg.unit == "tokens" and count_tokens is None:
        raise DataError("data.unit: tokens needs a token counter (count_tokens)")
    sizes = {n: len(p) for n, p in pools.items()}
    fractions = target_fractions(cfg, sizes, weights, counts)
    rngs = {n: random.Random(f"mix/{cfg.seed}/{n}") for n in pools}
    picked: dict[str, tuple[list[Sample], int]] = {}
    if cfg.unit == "tokens" and cfg.strategy in ("proportional", "temperature"):
        tokens = {n: [count_tokens(s) for s in p] for n, p in pools.items()}  # type: ignore[misc]
        budgets = token_budgets(cfg, fractions, {n: sum(t) for n, t in tokens.items()})
        for n, pool in pools.items():
            picked[n] = draw_tokens(pool, tokens[n], budgets[n], rngs[n], cfg.upsample)
    else:
        if cfg.strategy == "concat":
            quotas = dict(sizes)
        elif cfg.strategy == "fixed":
            quotas = fixed_quotas(cfg, sizes, counts)
        else:
            quotas = example_quotas(cfg, fractions, sizes)
        for n, pool in pools.items():
            picked[n] = draw_examples(pool, quotas[n], rngs[n])
    mixture = [s for chosen, _ in picked.values() for s in chosen]
    random.Random(f"mix/{cfg.seed}").shuffle(mixture)
    return mixture, _report(cfg, pools, fractions, picked, count_tokens)


def _report(
    cfg: DataConfig,
    pools: dict[str, list[Sample]],
    fractions: dict[str, float],
    picked: dict[str, tuple[list[Sample], int]],
    count_tokens: TokenCounter | None,
) -> dict[str, Any]:
    n_total = sum(len(chosen) for chosen, _ in picked.values())
    toks = {n: sum(map(count_tokens, chosen)) for n, (chosen, _) in picked.items()} if count_tokens else None
    t_total = sum(toks.values()) if toks else None
    rows = []
    for name, (chosen, repeated) in picked.items():
        rows.append({
            "name": name,
            "target_fraction": fractions[name],
            "available": len(pools[name]),
            "examples": len(chosen),
            "tokens": toks[name] if toks else None,
            "realized_fraction": _share(len(chosen), n_total),
            "realized_token_fraction": _share(toks[name], t_total) if toks and t_total is not None else None,
            "repeated": repeated,
            "removed": {},
        })
    return {
        "strategy": cfg.strategy, "unit": cfg.unit, "seed": cfg.seed,
        "total": n_total, "total_tokens": t_total, "sources": rows,
    }
