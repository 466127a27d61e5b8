"""Environments with verifiers and trajectory sampling (``tunelab ls envs``, ``tunelab sample``).

Each module registers its environment with ``@ENVS.register``; see :mod:`tunelab.envs.base`.
Every environment is also an eval task, ``agent_<env>`` (:mod:`tunelab.envs.agent`), once
:func:`register_agent_tasks` is called: the eval layer sits below this one and cannot find them
itself, so the runner (:mod:`tunelab.runner`, the lowest layer that sees both) calls it.
Importing this package registers nothing in the eval task registry.
"""

from tunelab.envs.agent import register_agent_tasks
from tunelab.envs.base import ENVS, Environment, EnvTask, get_env

__all__ = ["ENVS", "EnvTask", "Environment", "get_env", "register_agent_tasks"]
