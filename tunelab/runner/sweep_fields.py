"""The fields of a sweep file, each parsed and checked: factor levels, arm labels, the claims under test
(``hypotheses``), ``differences``, ``pilot_range``, ``pool_range`` and ``assume``.

Each parser raises :class:`~tunelab.config.ConfigError` naming the sweep file and the field;
:func:`tunelab.runner.sweep_file.load_sweep` gathers every problem before it reports them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from tunelab.config import ConfigError

HYPOTHESIS_KEYS = ("claim", "task", "arm", "versus", "versus_task", "direction", "effect", "source")


ENSEMBLE = "ensemble"


def levels_label(levels: dict[str, str]) -> str:
    """An arm's label from its levels: ``factor=level`` pairs, e.g. ``rank=4,vld=off``."""
    return ",".join(f"{f}={lv}" for f, lv in levels.items())


def value_label(value: Any) -> str:
    """A level label for a value (compact YAML for lists and mappings)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def parse_levels(where: str, name: str, spec: Any) -> dict[str, dict[str, Any]]:
    """A factor's levels (label -> {key: value}) from its three accepted forms."""
    if isinstance(spec, list):  # a list of {key: value} levels
        if not spec or not all(isinstance(lv, dict) and lv for lv in spec):
            raise ConfigError(f"{where}: factor {name!r} must list at least one level, each a mapping of keys")
        return {",".join(value_label(v) for v in lv.values()): dict(lv) for lv in spec}
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: factor {name!r} is empty; give {{key: [values]}} or named levels")
    if all(isinstance(v, list) for v in spec.values()):  # {key: [values], ...}: paired keys
        lengths = {len(v) for v in spec.values()}
        if lengths == {0}:
            raise ConfigError(f"{where}: factor {name!r} is empty (no values)")
        if len(lengths) != 1:
            raise ConfigError(f"{where}: factor {name!r}: paired keys need as many values each, got "
                              + ", ".join(f"{k}: {len(v)}" for k, v in spec.items()))
        n = lengths.pop()
        return {",".join(value_label(spec[k][i]) for k in spec): {k: spec[k][i] for k in spec} for i in range(n)}
    if all(isinstance(v, dict) for v in spec.values()):  # {label: {key: value}}
        return {str(label): dict(lv) for label, lv in spec.items()}
    raise ConfigError(f"{where}: factor {name!r}: give {{key: [values]}} (paired keys vary together) "
                      "or named levels {label: {key: value}}")


def parse_arm_label(where: str, given: Any, factors: dict[str, dict[str, Any]], baseline: dict[str, str]) -> str:
    """An arm's label from ``factor=level,...`` or a mapping ``{factor: level}`` (for labels with
    commas); factors not named take the baseline's level. ``ensemble(<arm>)`` names the ensemble of
    that arm's seeds (mean class probabilities on multiple-choice tasks; :mod:`tunelab.report.findings`)."""
    if isinstance(given, str) and given.strip().startswith(ENSEMBLE + "(") and given.strip().endswith(")"):
        inner = given.strip()[len(ENSEMBLE) + 1 : -1]
        return f"{ENSEMBLE}({parse_arm_label(where, inner, factors, baseline)})"
    levels = dict(baseline)
    if isinstance(given, dict):
        pairs = [(str(f), str(lv)) for f, lv in given.items()]
    else:
        pairs = [(f.strip(), lv.strip()) for f, _, lv in (p.partition("=") for p in str(given).split(",")) if f.strip()]
    for f, lv in pairs:
        if f not in factors or lv not in factors[f]:
            raise ConfigError(f"{where}: {f}={lv!r} names no level: give factor=level "
                              f"(factors: {', '.join(f'{k}: {list(v)}' for k, v in factors.items())})")
        levels[f] = lv
    return levels_label(levels)


def parse_differences(path: Path, spec: Any) -> list[str]:
    """``differences:``: a list of sentences (or one)."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise ConfigError(f"{path}: differences: give a list of sentences, got {spec!r}")
    return [x.strip() for x in items]


def parse_pool_range(path: Path, spec: Any) -> dict[str, tuple[float, float]]:
    """``pool_range: {source: [lo, hi]}``: each with 0 <= lo < hi <= 1."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: pool_range: give {{source: [low, high]}}, got {spec!r}")
    return {str(src): parse_pilot_range(path, value)["default"] for src, value in spec.items()}


def parse_pilot_range(path: Path, spec: Any) -> dict[str, tuple[float, float]]:
    """``pilot_range: [lo, hi]`` (every gated task) or ``{task: [lo, hi], default: [lo, hi]}``, each with
    0 <= lo < hi <= 1; returned as ``{task or "default": (lo, hi)}``."""
    def one(where: str, value: Any) -> tuple[float, float]:
        ok = (isinstance(value, (list, tuple)) and len(value) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
              and 0 <= value[0] < value[1] <= 1)
        if not ok:
            raise ConfigError(f"{path}: {where}: give [low, high] with 0 <= low < high <= 1, got {value!r}")
        return float(value[0]), float(value[1])

    if isinstance(spec, dict):
        out = {str(task): one(f"pilot_range.{task}", value) for task, value in spec.items()}
        out.setdefault("default", (0.2, 0.8))
        return out
    return {"default": one("pilot_range", spec)}


INTERACTION_KEYS = ("claim", "task", "direction", "effect", "source")


def check_keys(where: str, spec: Any, keys: tuple[str, ...]) -> None:
    """``spec`` must be a mapping of ``keys`` only; a ConfigError naming ``where`` otherwise."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping with keys {', '.join(keys)}")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(keys)}")


def parse_interaction(path: Path, spec: Any, factors: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """``interaction: {claim, task, direction, effect, source}``: a claimed interaction of a 2 x 2 design,
    the difference in differences ``(second factor's effect at the first factor's other level) - (its
    effect at the baseline level)`` on ``task`` (higher is better, a loss negated); ``direction``
    ``better`` (default: the effect grows), ``worse``, or ``either`` (two-sided: an interaction of either
    sign, where no source predicts its direction); ``effect`` the claimed size (positive), so the plan says
    whether the design detects it. None when absent."""
    if spec is None:
        return None
    where = f"{path}: interaction"
    check_keys(where, spec, INTERACTION_KEYS)
    if len(factors) != 2 or any(len(levels) != 2 for levels in factors.values()):
        raise ConfigError(f"{where}: needs a 2 x 2 design (two factors of two levels each); the sweep has "
                          + ", ".join(f"{f} ({len(lv)} levels)" for f, lv in factors.items()))
    for key in ("claim", "task", "source"):
        if not str(spec.get(key) or "").strip():
            raise ConfigError(f"{where}: {key!r} is required")
    if spec.get("direction", "better") not in ("better", "worse", "either"):
        raise ConfigError(f"{where}: direction: {spec['direction']!r} is not better, worse or either")
    effect = spec.get("effect")
    if not isinstance(effect, (int, float)) or isinstance(effect, bool) or effect <= 0:
        raise ConfigError(f"{where}: effect: must be a positive number (the claimed difference in differences on "
                          f"the task's metric), got {effect!r}")
    return {"claim": str(spec["claim"]), "task": str(spec["task"]), "direction": spec.get("direction", "better"),
            "effect": float(effect), "source": str(spec["source"])}


ASSUME_KEYS = {"item_correlation": (0.0, 0.999), "seed_sd": (0.0, math.inf)}


def parse_assume(path: Path, spec: Any) -> dict[str, float]:
    """``assume: {item_correlation: 0.5, seed_sd: 0.02}``: the plan's stated assumptions."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: assume: must be a mapping with keys {', '.join(ASSUME_KEYS)}")
    out = {}
    for key, value in spec.items():
        if key not in ASSUME_KEYS:
            raise ConfigError(f"{path}: assume: unknown key {key!r}; valid: {', '.join(ASSUME_KEYS)}")
        lo, hi = ASSUME_KEYS[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(f"{path}: assume.{key}: must be a number in [{lo}, {hi}], got {value!r}")
        out[key] = float(value)
    return out


def parse_hypotheses(path: Path, spec: Any, factors: dict[str, dict[str, Any]], baseline: dict[str, str],
                errors: list[str] | None = None) -> list[dict[str, Any]]:
    """The validated ``hypotheses`` list: each names a task, an arm (``factor=level,...`` or a mapping
    ``{factor: level}``, for labels with commas; missing
    factors take the baseline's level), what it is compared with (default: the baseline arm), the
    predicted direction (``better``, ``worse`` or ``equal``) and the claimed effect size; ``versus_task`` scores
    the comparison arm on another task over the same items (a prompt regime: PromptIntern's bare query
    against full-prompt fine-tuning read with its full prompt; default: ``task``)."""
    out = []
    def one(i: int, h: Any) -> None:
        where = f"{path}: hypotheses[{i}]"
        check_keys(where, h, HYPOTHESIS_KEYS)
        for key in ("claim", "task", "arm"):
            if not h.get(key):
                raise ConfigError(f"{where}: {key!r} is required")
        if h.get("direction", "better") not in ("better", "worse", "equal"):
            raise ConfigError(f"{where}: direction: {h['direction']!r} is not better, worse or equal")
        arms = {key: parse_arm_label(f"{where}: {key}", h.get(key) or {}, factors, baseline) for key in ("arm", "versus")}
        effect = h.get("effect")
        if effect is not None and (not isinstance(effect, (int, float)) or isinstance(effect, bool) or effect <= 0):
            raise ConfigError(f"{where}: effect: must be a positive number (the claimed difference on the task's "
                              f"metric), got {effect!r}")
        if h.get("direction") == "equal" and effect is None:
            raise ConfigError(f"{where}: direction: equal needs 'effect', the equivalence margin (a positive number "
                              "on the task's metric: the largest difference that still counts as equal)")
        if effect is None:
            raise ConfigError(f"{where}: 'effect' is required: the paper's effect on the task's metric (e.g. 0.05 "
                              "for 5 points of accuracy), so the plan can say whether this design can detect it")
        if not str(h.get("source") or "").strip():
            raise ConfigError(f"{where}: 'source' is required: the paper (and table) the claimed effect comes from")
        if "versus_task" in h and not (isinstance(h["versus_task"], str) and h["versus_task"]):
            raise ConfigError(f"{where}: versus_task: the task the comparison arm is scored on, got {h['versus_task']!r}")
        out.append({"claim": str(h["claim"]), "task": str(h["task"]), "arm": arms["arm"], "versus": arms["versus"],
                    "versus_task": str(h.get("versus_task") or h["task"]),
                    "direction": h.get("direction", "better"), "effect": effect, "source": str(h.get("source", ""))})

    for i, h in enumerate(spec or []):
        try:
            one(i, h)
        except ConfigError as e:
            if errors is None:
                raise
            errors.append(str(e))

    return out


JUDGED_KEYS = ("task", "judge", "verdict", "subset", "claims")
JUDGED_CLAIM_KEYS = ("claim", "arm", "versus", "direction", "effect", "source")


def parse_judged(path: Path, spec: Any, factors: dict[str, dict[str, Any]], baseline: dict[str, str],
                 errors: list[str] | None = None) -> dict[str, Any] | None:
    """The validated ``judged:`` section: arms compared by an LLM judge on an open-ended task's answers
    (``tunelab sweep judge``; :mod:`tunelab.runner.judged_study`)::

        judged:
          task: instructions                  # an evaluation task every run evaluates
          judge: smollm2-135m-instruct        # a model, a run folder, or http://host:port/v1#model
          verdict: logprob                    # text (default: the judge writes its verdict) or logprob
          subset: {difficulty: 8}             # optional: also the items with meta difficulty >= 8
          claims:
            - {claim: ..., arm: data=evolved, versus: data=human, direction: better, effect: 0.079, source: ...}

    Each claim's ``effect`` is on the win rate of ``arm`` over ``versus`` above one half (ties count half);
    ``direction`` is ``better`` or ``worse`` (``versus`` defaults to the baseline arm). None without the section.
    """
    if spec is None:
        return None
    where = f"{path}: judged"
    problems: list[str] = []
    try:
        check_keys(where, spec, JUDGED_KEYS)
    except ConfigError as e:
        if errors is None:
            raise
        errors.append(str(e))
        return None
    for key in ("task", "judge"):
        if not (isinstance(spec.get(key), str) and spec[key].strip()):
            problems.append(f"{where}: {key!r} is required (a string)")
    verdict = spec.get("verdict", "text")
    if verdict not in ("text", "logprob"):
        problems.append(f"{where}: verdict: {verdict!r} is not text or logprob")
    subset = spec.get("subset") or {}
    if not isinstance(subset, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                               and not isinstance(v, bool) for k, v in subset.items()):
        problems.append(f"{where}: subset: expected {{meta field: least value}}, e.g. {{difficulty: 8}}; got {subset!r}")
        subset = {}
    claims = []
    for i, c in enumerate(spec.get("claims") or []):
        cw = f"{where}: claims[{i}]"
        try:
            check_keys(cw, c, JUDGED_CLAIM_KEYS)
            for key in ("claim", "arm"):
                if not c.get(key):
                    raise ConfigError(f"{cw}: {key!r} is required")
            if c.get("direction", "better") not in ("better", "worse"):
                raise ConfigError(f"{cw}: direction: {c['direction']!r} is not better or worse")
            arms = {key: parse_arm_label(f"{cw}: {key}", c.get(key) or {}, factors, baseline) for key in ("arm", "versus")}
            if any(a.startswith(ENSEMBLE + "(") for a in arms.values()):
                raise ConfigError(f"{cw}: an ensemble has no answers to judge; name trained arms")
            if arms["arm"] == arms["versus"]:
                raise ConfigError(f"{cw}: arm and versus are the same arm ({arms['arm']})")
            effect = c.get("effect")
            if not isinstance(effect, (int, float)) or isinstance(effect, bool) or not 0 < effect < 0.5:
                raise ConfigError(f"{cw}: effect: the claimed win rate above one half, a number in (0, 0.5); got {effect!r}")
            if not str(c.get("source") or "").strip():
                raise ConfigError(f"{cw}: 'source' is required: the paper (and table) the claimed effect comes from")
            claims.append({"claim": str(c["claim"]), "arm": arms["arm"], "versus": arms["versus"],
                           "direction": c.get("direction", "better"), "effect": float(effect),
                           "source": str(c["source"])})
        except ConfigError as e:
            problems.append(str(e))
    if not claims and not problems:
        problems.append(f"{where}: claims: name at least one pair of arms to judge")
    if problems:
        if errors is None:
            raise ConfigError("\n".join(problems))
        errors.extend(problems)
        return None
    return {"task": spec["task"].strip(), "judge": spec["judge"].strip(), "verdict": verdict,
            "subset": {k: float(v) for k, v in subset.items()}, "claims": claims}
