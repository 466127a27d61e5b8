"""The ``evolve:`` recipe section: every key of an Evol-Instruct run, with its default.

``tunelab evolve SEEDS --evolver ... --rounds 2 --out FILE`` sets the common keys from flags; a recipe
(``tunelab evolve recipes/evolve.yaml``) holds the whole section, and ``key=value`` overrides (values
parsed as YAML) change any key. The dataclass fields below *are* the keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tunelab.config import ConfigError, apply_override, bound, from_dict, read_yaml_mapping

PROGRAMMATIC = "programmatic"
"""The evolver / judge / answerer spec of the ``instruct`` family's programmatic operators (no model)."""


@dataclass
class EliminatorConfig:
    """The eliminator (WizardLM, Xu et al. 2023, section 3.3): four rules, each on or off, plus a
    sanity rule against degenerate instructions and, for the ``instruct`` family, a verifier rule."""

    no_information_gain: bool = True
    """Rule 1: a judge says the evolved instruction is ``Equal`` to its parent (no information gain)."""
    sorry_short: bool = True
    """Rule 2: the answer contains "sorry" and has at most ``sorry_max_words`` words."""
    sorry_max_words: int = field(default=80, metadata=bound(ge=0))
    """Word limit of rule 2."""
    stopwords_only: bool = True
    """Rule 3: the answer is only punctuation and stop words (an empty answer included)."""
    copied_prompt: bool = True
    """Rule 4: the evolved instruction copies words of the rewriting prompt (``copy_phrases``)."""
    copy_phrases: list[str] = field(default_factory=list)
    """Extra phrases for rule 4, besides WizardLM's and each operator's own markers (case-insensitive)."""
    degenerate: bool = True
    """Not in the paper: an instruction with fewer than ``min_words`` words, or mostly not letters
    (what a broken evolver returns), is eliminated before it is judged or answered."""
    min_words: int = field(default=3, metadata=bound(ge=0))
    """Fewest words of an evolved instruction (``degenerate``)."""
    unverified: bool = True
    """Not in the paper: for ``instruct`` items with a model answerer, an answer that fails the
    item's checkable constraints is eliminated."""


@dataclass
class EvolveConfig:
    """One Evol-Instruct run: seeds -> ``rounds`` of evolution -> a dataset with lineage."""

    seeds: str = ""
    """An instruction file (JSONL/JSON; fields ``instruction`` [+ ``input``/``instances``], ``prompt``,
    ``question`` or ``messages``; relative: against $TUNELAB_DATA_DIR, then the current folder), or
    ``task:instruct`` (the built-in family's train split, for the programmatic operators)."""
    out: str = ""
    """The dataset JSONL written at the end (kept items of every generation, seeds included); the
    work folder ``<out without .jsonl>.evolve/`` holds items.jsonl, the cache, ledger and report."""
    evolver: str = ""
    """Who rewrites: a model name/dir, a run folder, ``http(s)://host:port/v1#model``, or
    ``programmatic`` (the ``instruct`` family's operators, no model)."""
    answerer: str = ""
    """Who answers the evolved instructions (same kinds; ``programmatic``: the family's reference
    answer). Default: the evolver."""
    judge: str = ""
    """Who judges rule 1 (``Equal`` / ``Not Equal``). Default: the evolver."""
    rounds: int = field(default=2, metadata=bound(ge=1))
    """Evolution rounds (every item of the pool is evolved once per round)."""
    limit: int | None = field(default=None, metadata=bound(ge=1))
    """Seeds to use (the first N of the file; None: all)."""
    operators: list[str] | dict[str, float] = field(default_factory=list)
    """Operator names (picked uniformly) or ``{name: weight}``; default: every operator of the
    evolver's kind (``tunelab evolve --list-operators``)."""
    hold_out_pairs: bool = False
    """Programmatic evolver: never combine the constraint-type pairs ``instruct_ood_unseen`` scores
    (:data:`tunelab.data.tasks.instruct.HELD_OUT_PAIRS`): a test of generalisation, not reproduction."""
    keep_rounds: list[int] | None = None
    """Only the kept items of these rounds form the dataset (a rounds curve: ``[2]`` is round 2's evolutions
    alone); None: every round's (and the seeds with ``include_seeds``)."""
    include_seeds: bool = True
    """Put the seeds (round 0) into the final dataset with the evolved items."""
    roots_kept_in: list[int] | None = None
    """Only the generations of seeds that have a kept item in these rounds (``[1]`` with ``keep_rounds: [0]``:
    the seeds whose evolution survived, matched root for root to an arm of their round-1 evolutions)."""
    answer_seeds: bool = False
    """Answer seeds with the answerer even when the seed file has an output."""
    seed: int = 0
    """Seed of operator choices, sampling and programmatic rendering."""
    temperature: float = field(default=0.7, metadata=bound(ge=0))
    """Sampling temperature of the evolver (the judge is greedy)."""
    answer_temperature: float = field(default=0.0, metadata=bound(ge=0))
    """Sampling temperature of the answerer."""
    max_new_tokens: int = field(default=192, metadata=bound(ge=1))
    """Token budget of one evolution."""
    answer_max_new_tokens: int = field(default=256, metadata=bound(ge=1))
    """Token budget of one answer."""
    backend: Literal["auto", "hf", "openai", "vllm"] = "auto"
    """Generator backend for every role (``auto``: ``openai`` for a URL, else ``hf``)."""
    concurrency: int = field(default=8, metadata=bound(ge=1))
    """Requests in flight (servers) or rows decoded together (local models)."""
    chunk: int = field(default=32, metadata=bound(ge=1))
    """Items carried through evolve -> judge -> answer -> eliminate before their rows are written."""
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    """Price per million tokens by role or model spec: ``{evolver: {input: 0.15, output: 0.6}}``."""
    eliminator: EliminatorConfig = field(default_factory=EliminatorConfig)
    """The elimination rules."""
    near_dup_threshold: float = field(default=0.8, metadata=bound(gt=0, le=1))
    """Jaccard similarity at which two instructions of a generation count as near duplicates (MinHash)."""
    progress: bool = True
    """Show progress bars."""
    recipe_dir: str | None = None
    """Folder of the recipe (set by the loader): a recipe's relative ``seeds`` file (after
    $TUNELAB_DATA_DIR) and ``out`` resolve against it."""

    @property
    def folder(self) -> Path:
        """The work folder beside ``out``."""
        out = Path(self.out)
        stem = out.name[:-6] if out.name.endswith(".jsonl") else out.name
        return out.with_name(stem + ".evolve")


def load_evolve_config(recipe: str | Path | None = None, overrides: list[str] | None = None, *,
                       require_out: bool = True, **values: Any) -> EvolveConfig:
    """The ``evolve:`` section of ``recipe`` (or the defaults), then ``values`` (flags that are not
    None), then ``overrides`` (``key=value`` or ``evolve.key=value``); checked, with errors naming
    the recipe and the key. ``require_out=False``: ``out`` may be missing (an estimate writes nothing).

    Raises:
        ConfigError: A missing recipe, invalid YAML, an unknown key or a wrong type or range.
    """
    tree: dict[str, Any] = {}
    where = "evolve"
    if recipe is not None:
        path = Path(recipe)
        doc = read_yaml_mapping(path, "recipe")
        if not isinstance(doc.get("evolve", {}), dict):
            raise ConfigError(f"{path}: expected a mapping with an 'evolve:' section")
        tree = dict(doc.get("evolve") or {})
        where = f"{path}: evolve"
        if isinstance(tree.get("out"), str) and not Path(tree["out"]).is_absolute():
            tree["out"] = str((path.resolve().parent / tree["out"]).resolve())
        tree.setdefault("recipe_dir", str(path.resolve().parent))
    tree.update({k: v for k, v in values.items() if v is not None})
    wrapped = {"evolve": tree}
    for ov in overrides or []:
        apply_override(wrapped, ov if ov.startswith("evolve.") else f"evolve.{ov}")
    try:
        cfg = from_dict(EvolveConfig, wrapped["evolve"], "evolve")
    except ConfigError as e:
        raise ConfigError(f"{where.split(':')[0]}: {e}" if recipe else str(e)) from None
    cfg.answerer = cfg.answerer or cfg.evolver
    cfg.judge = cfg.judge or cfg.evolver
    missing = [k for k in ("seeds", "evolver", "out")[: 3 if require_out else 2] if not getattr(cfg, k)]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)} (give them as arguments or in the recipe)")
    return cfg


def parse_prices(text: str | None) -> dict[str, dict[str, float]] | None:
    """``--prices``: a YAML/JSON file or inline YAML, ``{role or model: {input: $, output: $}}`` per
    million tokens (None: not given).

    Raises:
        ConfigError: Not a mapping of ``{input, output}`` numbers.
    """
    if text is None:
        return None
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        prices = yaml.safe_load(source)
    except yaml.YAMLError as e:
        raise ConfigError(f"--prices: invalid YAML: {e}") from None
    ok = isinstance(prices, dict) and all(
        isinstance(v, dict) and set(v) <= {"input", "output"}
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v.values()) for v in prices.values())
    if not ok:
        raise ConfigError(f"--prices: expected {{role or model: {{input: N, output: N}}}} per million tokens, got {text!r}")
    return prices


def parse_operator_flag(text: str | None) -> list[str] | dict[str, float] | None:
    """``--operators``: ``a,b`` (uniform) or ``a=2,b=1`` (weights); None: not given.

    Raises:
        ConfigError: A weight that is not a number.
    """
    if not text:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not any("=" in p for p in parts):
        return parts
    weights: dict[str, float] = {}
    for p in parts:
        name, _, w = p.partition("=")
        try:
            weights[name.strip()] = float(w or 1)
        except ValueError:
            raise ConfigError(f"--operators: weight of {name!r} must be a number, got {w!r}") from None
    return weights
