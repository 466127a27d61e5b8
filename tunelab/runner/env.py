"""env.json: what machine, which libraries, which precision and why."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

from tunelab.device import cpu_flags, cpu_name
from tunelab.train.speed import allocator

PACKAGES = ("tunelab", "torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "trl")


def environment(precision: str | None = None, precision_info: dict | None = None) -> dict[str, Any]:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    flags = cpu_flags()
    env = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_name(),
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
        "mkldnn_bf16": bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": versions, "allocator": allocator(),
    }
    if precision:
        env["precision"] = precision
        env["precision_decision"] = precision_info or {}
    return env
