"""What the command modules share: the shape of their command tables, recipe overrides, ``key=value`` options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import yaml

from tunelab.config import ConfigError

Commands = dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], Any]]]
"""command name -> (the function that runs it, what adds its arguments to its parser); help comes from
the function's docstring."""


def add_overrides(p: argparse.ArgumentParser) -> None:
    """The trailing ``key.sub=value`` recipe overrides of a command."""
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (values parsed as YAML)")


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"option {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    return key, yaml.safe_load(raw)
