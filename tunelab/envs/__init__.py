"""Environments with verifiers and trajectory sampling (``tunelab ls envs``, ``tunelab sample``).

Each module registers its environment with ``@ENVS.register``; see :mod:`tunelab.envs.base`.
"""

from tunelab.envs.base import ENVS, Environment, EnvTask, get_env

__all__ = ["ENVS", "EnvTask", "Environment", "get_env"]
