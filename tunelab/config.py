"""Recipes: YAML + ``a.b=c`` overrides -> typed, validated dataclasses.

The dataclass fields below *are* the recipe keys; their attribute docstrings are the
reference (``tunelab validate --help`` points here). Unknown keys and wrong types fail
before any work, naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_METHOD = "lora"
"""The method a recipe, a run folder or ``build_method`` gets when none is named."""


class ConfigError(ValueError):
    """A recipe problem; the message names the file, the key and what is valid."""


# ----------------------------------------------------------------------------- schema


def bound(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
          le: float | None = None) -> dict[str, Any]:
    """Field metadata: the range a numeric key must lie in (checked by :func:`from_dict`, so a
    recipe with an out-of-range value fails at load time naming the key)."""
    return {"bound": (gt, ge, lt, le)}


def _out_of_range(value: Any, limits: tuple) -> str | None:
    """The requirement ``value`` breaks (e.g. ``must be > 0``), or None."""
    gt, ge, lt, le = limits
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    ok = ((gt is None or value > gt) and (ge is None or value >= ge) and (lt is None or value < lt)
          and (le is None or value <= le))
    if ok:
        return None
    low = f"({gt}" if gt is not None else f"[{ge}" if ge is not None else None
    high = f"{lt})" if lt is not None else f"{le}]" if le is not None else None
    if low and high:
        return f"must be in {low}, {high}"
    return f"must be {'>' if gt is not None else '>=' if ge is not None else '<' if lt is not None else '<='} " \
           f"{next(x for x in limits if x is not None)}"




@dataclass
class ModelConfig:
    name: str = "tiny"
    """Alias (see ``tunelab ls models``), hub id, or local HF directory."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when ``name`` is a hub id."""
    trust_remote_code: bool = False
    """Allow custom modelling code from the hub. Off unless the recipe turns it on."""
    attn_implementation: str = "sdpa"
    """``sdpa`` | ``eager`` | ``flash_attention_2`` (GPU)."""
    dropout: float | None = None
    """Override the base model's attention/hidden dropout rates (None keeps its own)."""
    chat_template: str | None = None
    """A Jinja chat template to use instead of the tokenizer's (base models get a default)."""


@dataclass
class SourceConfig:
    name: str
    """The provenance tag carried by every example of this source."""
    task: str | None = None
    """A built-in task family (``tunelab ls tasks``); examples are generated in code."""
    path: str | None = None
    """A local JSON/JSONL/Parquet file (relative: against $TUNELAB_DATA_DIR, then the recipe folder), or a
    glob pattern (``trajs_*.json``): every match, in sorted order, is one source."""
    hub: str | None = None
    """A ``datasets`` hub id (needs network)."""
    generate: dict[str, Any] | None = None
    """Data tunelab makes, instead of a file a manual step must create: ``{kind: ..., **options}`` with
    ``kind`` one of ``drill`` (the calculator drill's paired pool: ``tasks``, ``seed``; no model, seconds),
    ``sample`` (what ``tunelab sample`` writes: ``env``, ``model`` (alias, folder, run folder or URL),
    ``env_options``, ``attempts``, ``limit``, ``temperature``, ``max_steps``, ``max_new_tokens``, ``seed``,
    ``backend``, ``batch_size``, ``max_live``) or ``evolve`` (what ``tunelab evolve`` writes: the keys of the
    ``evolve:`` recipe section but ``out``). Checked by ``tunelab validate`` without doing any work; built
    once, when a run first needs it, into ``<TUNELAB_CACHE>/generated/<kind>-<key>.jsonl`` (the key: a
    digest of the options, the code that makes the rows and the weights or files they come from) and
    reused by every later run with the same key; then read as if ``path`` named that file
    (:mod:`tunelab.runner.generated`)."""
    split: str = "train"
    """Split of the task family or hub dataset."""
    format: str = "auto"
    """``messages`` | ``alpaca`` | ``sharegpt`` | ``prompt_completion`` | ``gsm8k`` | ``humaneval`` | ``mbpp`` | ``dolly`` | ``auto``."""
    fields: dict[str, str] = field(default_factory=dict)
    """Field mapping, e.g. ``{instruction: question, output: answer}``."""
    system: str | None = None
    """A system prompt to prepend to every sample of this source."""
    weight: float = field(default=1.0, metadata=bound(ge=0))
    """Mixture weight (fractions are normalised over sources)."""
    count: int | None = field(default=None, metadata=bound(ge=1))
    """Examples to take (``fixed`` strategy) or to generate (task families)."""
    max_examples: int | None = None
    """Cap on examples loaded from this source (seeded, before transforms; the ``cap`` transform caps after filters)."""
    on_error: Literal["fail", "skip"] = "fail"
    """Malformed rows: fail before training (file, row, field named) or skip and count them."""
    options: dict[str, Any] = field(default_factory=dict)
    """Task-family options (e.g. ``{allow_unsandboxed: true}``), or ``load_dataset`` keyword arguments for hub sources;
    ``format: nat_react`` files take ``questions`` (the file whose ``id`` rows hold the question text)."""


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    """The data sources and their weights."""
    strategy: Literal["concat", "proportional", "temperature", "fixed"] = "proportional"
    """How sources are mixed (see the data issue and README)."""
    unit: Literal["examples", "tokens"] = "examples"
    """What the mixture fractions count."""
    temperature: float = field(default=1.0, metadata=bound(gt=0))
    """For ``temperature``: p_i proportional to n_i^(1/T)."""
    total: int | None = None
    """Size of the mixture, in examples (tokens when ``unit: tokens``); default: as many as the fractions allow without repeats. Ignored by ``concat``."""
    upsample: bool = False
    """Allow repeating examples of a small source to reach its fraction (reported)."""
    transforms: list[dict[str, Any]] = field(default_factory=list)
    """Curation steps applied in order, each ``{name: ..., **params}``."""
    max_length: int = field(default=512, metadata=bound(ge=1))
    """Tokens per training sequence."""
    packing: bool = True
    """Pack samples into rows of ``max_length`` (attention never crosses samples)."""
    truncation: Literal["right", "drop"] = "right"
    """Over-long samples: cut on the right or drop them (counted)."""
    heldout: int = field(default=32, metadata=bound(ge=0))
    """Held-out examples per source for held-out loss (taken before mixing)."""
    seed: int = 0
    """Seed for sampling, mixing and shuffling."""


@dataclass
class TrainConfig:
    max_steps: int = field(default=100, metadata=bound(ge=1))
    """Optimizer steps."""
    batch_size: int = field(default=8, metadata=bound(ge=1))
    """Sequences (packed rows, or samples without packing) per micro-batch."""
    grad_accum: int = field(default=1, metadata=bound(ge=1))
    """Micro-batches per optimizer step (loss normalised by target tokens over all of them)."""
    lr: float = field(default=3.0e-4, metadata=bound(gt=0))
    """Peak learning rate."""
    weight_decay: float = field(default=0.0, metadata=bound(ge=0))
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_ratio: float = field(default=0.05, metadata=bound(ge=0, lt=1))
    """Linear warm-up as a fraction of ``max_steps``."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warm-up."""
    min_lr_ratio: float = field(default=0.0, metadata=bound(ge=0, le=1))
    """Final LR as a fraction of the peak."""
    max_grad_norm: float = field(default=1.0, metadata=bound(ge=0))
    """Gradient clipping (0 disables)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto`` picks bf16 only where this host runs it fast; recorded in env.json."""
    seed: int = 0
    """Seed for initialisation, dropout and data order."""
    save_every: int = 50
    """Checkpoint every N steps (0: only at the end and on Ctrl-C)."""
    eval_every: int = 0
    """Held-out loss per source every N steps (0: only at the end)."""
    log_every: int = 1
    """Write a metrics row every N steps."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute each layer's activations in backward (less memory, slower steps). ``auto``: on for
    objectives with several sequences per example whose step is not cut into passes (KTO; pairs and
    GRPO/RLOO with ``tokens_per_pass: null``), where activations dominate memory, off otherwise and in
    compiled runs (``tunelab.train.speed``; the decision is in the run's ``env.json``)."""
    tokens_per_pass: int | Literal["auto"] | None = field(default="auto", metadata=bound(ge=1))
    """Most batch positions (rows x the widest row, padding included) one forward-backward pass holds: each
    micro-batch is cut into consecutive passes within it (a row wider than it passes alone), their
    gradients accumulated, so the step's loss and gradient are unchanged and activation memory is bounded
    without recomputation. None: one pass per micro-batch. ``auto``: 1024 for objectives with several
    sequences per example whose examples are independent (DPO, IPO, ORPO, SimPO pairs; GRPO/RLOO's
    episodes), none otherwise (``tunelab.train.speed``; the decision is in the run's ``env.json``).
    Objectives whose loss couples a micro-batch's examples (KTO's batch KL estimate) refuse a number."""
    trim_heap: bool | Literal["auto"] = "auto"
    """Give the heap's free pages back to the operating system (glibc's ``malloc_trim``, or jemalloc's purge of
    every arena where the ``tunelab`` command runs on jemalloc) after sampling and
    after each optimizer step, so that sampling and training do not each keep the other's freed blocks.
    ``auto``: off (measured on GRPO: 29% fewer steps/s for 4% less peak memory; ``tunelab.train.speed``; the
    decision is in the run's ``env.json``)."""
    compile: bool | Literal["auto"] = "auto"
    """``torch.compile`` each decoder layer and the LM-head cross-entropy; on CPU the layers also train
    with ``tunelab_cpu`` attention (flash forward, matmul backward). SmolLM2 LoRA, bf16: ~2x faster steps
    after ~70 s of compiling. ``auto``: on where it pays and is tested (``tunelab.train.speed``; the
    decision and its reasons are in the run's ``env.json``)."""
    threads: int | None = None
    """torch intra-op threads (None: torch's default)."""
    profile_steps: int = field(default=0, metadata=bound(ge=0))
    """Profile this many optimizer steps with ``torch.profiler`` (0: none): ``<run>/profile/`` gets the
    step's seconds by category of operator (matmuls and their GFLOP/s, attention, compiled fused kernels,
    the optimizer, copies, Python outside operators), the operator table and a timeline
    (``tunelab.train.profile``); ``results.json`` keeps the summary. The profiled steps run slower."""
    profile_after: int = field(default=3, metadata=bound(ge=0))
    """Steps before the profiled ones (the first steps compile and warm up)."""
    keep_checkpoints: int = 2
    """How many of the newest step checkpoints to keep (0: keep all)."""
    loss_chunk: int | Literal["auto"] = field(default="auto", metadata=bound(ge=1))
    """Target positions per chunk of the LM-head + cross-entropy (bounds logits memory). ``auto``: 2048 at a
    49,152-word vocabulary (SmolLM2's), proportionally fewer for larger ones (384 for Gemma 3's 262,144), so
    a chunk's logits take the same memory whatever the vocabulary (``tunelab.train.loss.head_chunk``)."""
    select_best: bool = False
    """Return (and save as ``final/``) the trainable weights of the held-out evaluation with the lowest
    ``best_metric`` instead of the last step's; evaluations run every ``eval_every`` steps and at the last
    step (needs ``eval_every > 0`` and ``data.heldout > 0``). Keeps a CPU copy of the best trainable state."""
    weight_average: float = field(default=0.0, metadata=bound(ge=0, lt=1))
    """Weight averaging (Arpit et al. 2022; the baseline of Zhang & Bottou 2024): the decay of an
    exponential moving average of the trainable weights, updated after every step (0: off; 0.99 averages
    about the last 100 steps). Held-out evaluations, ``select_best`` and the final model use the average."""
    best_metric: str = "heldout_loss"
    """What ``select_best`` and early stopping compare (lower is better): ``heldout_loss`` or ``heldout_loss/<source>``."""
    early_stopping_patience: int = 0
    """Stop when ``best_metric`` has not improved for this many evaluations in a row (0: never stop early;
    needs ``eval_every > 0`` and ``data.heldout > 0``)."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers (accelerate's) that receive the flattened config and every metrics row:
    ``tensorboard`` (under ``<run>/trackers/tunelab``), ``mlflow`` (``$MLFLOW_TRACKING_URI``, else a file
    store in ``<run>/trackers/mlruns``), ``wandb`` (its own environment variables), ... or ``all`` installed."""


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)
    """Evaluation tasks (``tunelab ls tasks``)."""
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Constructor options per task, e.g. ``{gsm8k: {fewshot: 5}, judge: {mode: single, turns: 2}}``
    (as ``tunelab eval --task-option gsm8k.fewshot=5``; override with ``eval.task_options.gsm8k.fewshot=5``).
    Each key must be a task of ``tasks``; an option the task does not take fails, listing the accepted ones."""
    limit: int | None = field(default=200, metadata=bound(ge=1))
    """Items per task (None: all)."""
    task_limits: dict[str, int] = field(default_factory=dict)
    """Items of the tasks named here, in place of ``limit`` (``{nlp: 2000}``: a cheap short-answer task buys
    power with more items while long generations stay at ``limit``); each key must be a task of ``tasks``."""

    def items_for(self, task: str) -> int | None:
        """Items of ``task`` (a conditioning variant ``task@signal`` counts as its task): its ``task_limits``
        entry, else ``limit``."""
        return self.task_limits.get(task.split("@")[0], self.limit)
    baseline: bool = True
    """Also evaluate the untrained model on the same items (base vs tuned)."""
    max_new_tokens: int = field(default=256, metadata=bound(ge=1))
    """Generation budget per item."""
    batch_size: int = field(default=16, metadata=bound(ge=1))
    """Prompts per generation batch."""
    merge_adapters: bool = False
    """Evaluate the fine-tuned model with its adapters folded into its weights (methods that merge: LoRA,
    DoRA, IA3), as ``tunelab export --merge`` serves it: plain matmuls at every decode step instead of the
    adapters' extra ones. The merged weights are rounded at the run's precision, which can move a few
    answers, so it is off by default and a study sets it for all its runs or none."""
    latency_items: int = field(default=0, metadata=bound(ge=0))
    """Per generation task, this many of its items generated again one at a time and timed:
    ``latency_batch1_s`` in its scores (seconds per item at batch 1, what one user's request waits;
    the task's own seconds are the batched pass). 0: not measured."""
    temperature: float = field(default=0.0, metadata=bound(ge=0))
    """0 = greedy."""
    samples: int = field(default=1, metadata=bound(ge=1))
    """Completions per item (pass@k, maj@k)."""
    seed: int = 1234
    """Seed for held-out item generation and sampling."""
    signals: list[str] = field(default_factory=list)
    """A NAT run (``nat`` transform, ``mode: nat``) is evaluated asking for success; also ask for each of these
    (``failure``, ``none``): tasks ``<task>@<signal>``, the conditioning check (a NAT model asked for failure
    should fail more). Ignored by runs without a NAT signal."""
    backend: str = "hf"
    """Generator backend: ``hf`` | ``openai`` | ``vllm``."""


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to fine-tune (a string is shorthand for ``model.name``)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Sources, mixture, curation, tokenisation."""
    method: dict[str, Any] = field(default_factory=lambda: {"name": DEFAULT_METHOD})
    """``{name: ..., **params}``; see ``tunelab ls methods``."""
    regularizers: list[dict[str, Any]] = field(default_factory=list)
    """Each ``{name: ..., **params}``."""
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "sft"})
    """``{name: ..., **params}``: what training minimises (``sft``; ``dpo``, ``kto``, ``orpo``, ``simpo``
    on preference data); see ``tunelab ls objectives``."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """What to evaluate after training."""
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    """Each ``{name: ..., **params}`` (``tunelab ls diagnostics``): run after training (and, for
    ``grad_interference``, during it); results in ``<run>/diagnostics/`` and the report."""
    evolve: dict[str, Any] = field(default_factory=dict)
    """Evol-Instruct settings read by ``tunelab evolve RECIPE`` (keys: ``tunelab.evolve.config.EvolveConfig``);
    ``tunelab run`` ignores them: it trains on the file they produce, named as a data source."""
    name: str | None = None
    """Run name (default: derived from the recipe name and a hash of the config)."""
    out: str = "runs"
    """Folder under which the run folder is created."""
    recipe_dir: str | None = None
    """Folder of the recipe file (set by the loader; relative data paths resolve against it)."""


# ----------------------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: got {value!r}; valid choices: {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1] if args else Any, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "3e-4" as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    if cls is ModelConfig and isinstance(data, str):
        data = {"name": data}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key {path!r}; valid keys: {', '.join(fields)}")
        kwargs[key] = _coerce(value, hints[key], path)
        limits = fields[key].metadata.get("bound")
        if limits and (problem := _out_of_range(kwargs[key], limits)):
            raise ConfigError(f"{path}: {problem}, got {kwargs[key]}")
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where or 'recipe'}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-able data."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def parse_params(cls: type, spec: dict[str, Any], where: str) -> Any:
    """Validate a component's ``{name: ..., **params}`` against its Params dataclass."""
    params = {k: v for k, v in spec.items() if k != "name"}
    return from_dict(cls, params, where)


# ----------------------------------------------------------------------------- overrides


def apply_override(tree: dict[str, Any], dotted: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML; list items by index)."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.sub=value")
    key, raw = dotted.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    if len(parts) == 2 and parts[0] in ("method", "objective") and parts[1] == "name" \
            and (tree.get(parts[0]) or {}).get("name") != value:
        tree[parts[0]] = {"name": value}  # another method/objective: its own defaults, not the recipe's params
        return
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        nxt_is_index = parts[i + 1].isdigit()
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part == "model" and isinstance(node.get(part), str):
            node[part] = {"name": node[part]}
        node = node.setdefault(part, [] if nxt_is_index else {})
    last = parts[-1]
    if isinstance(node, list):
        idx = int(last)
        if idx >= len(node):
            raise ConfigError(f"override {key!r}: index {idx} out of range (list has {len(node)} items)")
        node[idx] = value
    else:
        node[last] = value


BUILTIN_RECIPES = Path(__file__).resolve().parent / "recipes"
"""The recipes shipped in the package (``tunelab/recipes``; in a checkout a link to the top-level ``recipes/``)."""


def builtin_recipes() -> dict[str, Path]:
    """The built-in recipes, ``{name: path}`` (``quickstart``, ``tiny``, ``lora`` ...)."""
    if not BUILTIN_RECIPES.is_dir():
        return {}
    return {p.stem: p for p in sorted(BUILTIN_RECIPES.glob("*.yaml"))}


def resolve_recipe(path: str | Path) -> Path:
    """The recipe file ``path`` names: an existing file as given, else a built-in recipe by name
    (``quickstart`` or ``quickstart.yaml``: ``tunelab/recipes/quickstart.yaml``).

    Raises:
        ConfigError: Neither; the message lists the built-in names.
    """
    p = Path(path)
    if p.is_file():
        return p
    builtin = builtin_recipes()
    if p.name == str(path) and p.suffix in ("", ".yaml", ".yml"):  # a bare name, not a path with folders
        stem = p.stem if p.suffix else p.name
        if stem in builtin:
            return builtin[stem]
    names = ", ".join(builtin) or "none (the package has no recipes folder)"
    raise ConfigError(f"recipe not found: {path} (not a file, nor a built-in recipe name; built-in: {names})")


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds (empty file: {}).

    Raises:
        ConfigError: the file is missing, is not valid YAML, or holds something other than a mapping
            (the message names the file and says it should be ``what``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys")
    return doc


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a recipe (or the defaults when ``path`` is None) with overrides applied.

    ``path`` is a recipe file, or the name of a built-in recipe (:func:`resolve_recipe`)."""
    tree: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = resolve_recipe(path)
        tree = read_yaml_mapping(path, "recipe")
        where = str(path)
    for ov in overrides or []:
        apply_override(tree, ov)
    try:
        cfg = from_dict(RunConfig, tree)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if path is not None and cfg.recipe_dir is None:
        cfg.recipe_dir = str(Path(path).resolve().parent)
    return cfg


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------- run folders


def is_run(path: str | Path, need: str = "final") -> bool:
    """Whether ``path`` is a run folder (its resolved ``config.yaml``): the one check of every command.
    ``need``: ``"final"`` a finished run (``final/`` weights), ``"results"`` an evaluated one
    (``results.json``), ``"config"`` any run, finished or not."""
    p = Path(path)
    extra = {"final": "final", "results": "results.json", "config": "config.yaml"}[need]
    return (p / "config.yaml").is_file() and ((p / extra).is_dir() if need == "final" else (p / extra).is_file())


def run_config(model: str | Path) -> RunConfig | None:
    """The RunConfig of a finished run folder (:func:`is_run`); ``None`` for a model name or other folder."""
    return load_config(model) if is_run(model) else None


def load_config(run_dir: str | Path) -> RunConfig:
    """The resolved RunConfig a run folder was made with (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.yaml)")
    return from_dict(RunConfig, yaml.safe_load(path.read_text()))

