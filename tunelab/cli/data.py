"""``tunelab data``, ``sample`` and ``evolve``: the data a recipe trains on, sampled trajectories and
evolved instructions."""

from __future__ import annotations

import argparse
import json
import sys

from tunelab.cli.common import Commands, add_overrides, parse_option
from tunelab.envs.base import get_env
from tunelab.envs.sample import check_sample_args
from tunelab.envs.sample import sample as sample_trajectories
from tunelab.evolve import EvolveError, evolve, inspect_evolved, is_evolved, load_evolve_config
from tunelab.evolve.config import parse_operator_flag, parse_prices
from tunelab.evolve.estimate import estimate as estimate_evolve
from tunelab.evolve.operators import describe_operators
from tunelab.evolve.seeds import load_seeds
from tunelab.generate.build import BACKENDS, build_generator
from tunelab.report.data_report import inspect_recipe


def cmd_data(a: argparse.Namespace) -> int:
    """Inspect the realised data of a recipe: mixture, samples with loss masks, length histograms."""

    if is_evolved(a.recipe):  # an Evol-Instruct dataset: items beside their parents
        return inspect_evolved(a.recipe, a.samples, a.json)
    return inspect_recipe(a.recipe, a.overrides, as_json=a.json, n_samples=a.samples)


def cmd_sample(a: argparse.Namespace) -> int:
    """Sample agent trajectories: N attempts per task through an environment, verified, resumable."""

    options = dict(parse_option(o) for o in a.env_option)
    env = get_env(a.env, **options)
    settings = {"attempts": a.attempts, "limit": a.limit, "temperature": a.temperature, "max_steps": a.max_steps,
                "max_new_tokens": a.max_new_tokens, "max_live": a.max_live}
    check_sample_args(**settings)  # before the model loads or the output file is touched
    generator = build_generator(a.model, backend=a.backend, batch_size=a.batch_size, progress=False)
    summary = sample_trajectories(env, a.env, generator, a.out, seed=a.seed, **settings)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_evolve(a: argparse.Namespace) -> int:
    """Evol-Instruct: rewrite seed instructions for rounds, eliminate failed evolutions, answer; a dataset with lineage.

    SEEDS is an instruction file, task:instruct (programmatic operators: --evolver programmatic), or a
    recipe YAML with an ``evolve:`` section. A killed run continues where it stopped when rerun.
    """

    if a.list_operators:
        print(describe_operators())
        return 0
    recipe = a.seeds if a.seeds.endswith((".yaml", ".yml")) else None
    cfg = load_evolve_config(recipe, a.overrides, seeds=None if recipe else a.seeds, evolver=a.evolver,
                             answerer=a.answerer, judge=a.judge, rounds=a.rounds, out=a.out, limit=a.limit,
                             operators=parse_operator_flag(a.operators), seed=a.seed, concurrency=a.concurrency,
                             backend=a.backend, prices=parse_prices(a.prices), progress=False if a.quiet else None,
                             require_out=not a.estimate)
    if a.estimate:
        print(json.dumps(estimate_evolve(cfg, load_seeds(cfg.seeds, cfg.limit, cfg.seed, cfg.recipe_dir)), indent=1))
        return 0
    try:
        report = evolve(cfg, say=lambda m: print(m, file=sys.stderr))
    except EvolveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[tunelab] dataset: {report['dataset']} ({report['dataset_rows']} rows); "
          f"report: {cfg.folder / 'report.json'}")
    return 0


COMMANDS: Commands = {
    "data": (cmd_data, lambda p: (
        p.add_argument("action", choices=["inspect"]), p.add_argument("recipe"), add_overrides(p),
        p.add_argument("--json", action="store_true", help="print only the mixture report as JSON"),
        p.add_argument("--samples", type=int, default=3, help="samples to render with their loss mask"))),
    "sample": (cmd_sample, lambda p: (
        p.add_argument("env", help="an environment (tunelab ls envs)"),
        p.add_argument("--model", required=True, help="model name/dir, run folder or http://host:port/v1#name"),
        p.add_argument("--backend", default="auto", choices=BACKENDS),
        p.add_argument("--attempts", type=int, default=4, help="attempts per task"),
        p.add_argument("--limit", type=int, default=20, help="tasks"),
        p.add_argument("--temperature", type=float, default=0.8),
        p.add_argument("--max-steps", type=int, default=6),
        p.add_argument("--max-new-tokens", type=int, default=128),
        p.add_argument("--batch-size", type=int, default=16),
        p.add_argument("--max-live", type=int, default=256,
                       help="attempts advanced together (a finished one is written and replaced at once)"),
        p.add_argument("--seed", type=int, default=0),
        p.add_argument("--env-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an environment option, e.g. source=gsm8k"),
        p.add_argument("--out", required=True, help="trajectories JSONL (appended; a rerun resumes)"))),
    "evolve": (cmd_evolve, lambda p: (
        p.add_argument("seeds", nargs="?", default="",
                       help="instruction file, task:instruct, or a recipe with an evolve: section"),
        add_overrides(p),
        p.add_argument("--evolver", help="model name/dir, run folder, http://host:port/v1#name, or programmatic"),
        p.add_argument("--answerer", help="who answers (default: the evolver)"),
        p.add_argument("--judge", help="who judges Equal / Not Equal (default: the evolver)"),
        p.add_argument("--rounds", type=int, help="evolution rounds (default 2)"),
        p.add_argument("--out", help="dataset JSONL (work folder: <out>.evolve/)"),
        p.add_argument("--limit", type=int, help="seeds to use (the first N)"),
        p.add_argument("--operators", help="a,b (uniform) or a=2,b=1 (weights); --list-operators"),
        p.add_argument("--seed", type=int), p.add_argument("--concurrency", type=int),
        p.add_argument("--backend", choices=BACKENDS),
        p.add_argument("--prices", help="per million tokens: YAML file or inline {evolver: {input: 0.15, output: 0.6}}"),
        p.add_argument("--estimate", action="store_true", help="print the token and cost estimate and stop"),
        p.add_argument("--list-operators", action="store_true", help="list the operators and stop"),
        p.add_argument("--quiet", action="store_true", help="no progress bars"))),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
