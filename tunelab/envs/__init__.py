"""Environments with verifiers and trajectory sampling (``tunelab ls envs``, ``tunelab sample``).

Each module registers its environment with ``@ENVS.register``; see :mod:`tunelab.envs.base`.
Importing this package also registers every environment as an eval task, ``agent_<env>``
(:mod:`tunelab.envs.agent`): the eval layer sits below this one and cannot find them itself.
"""

from tunelab.envs.agent import register_agent_tasks
from tunelab.envs.base import ENVS, Environment, EnvTask, get_env

register_agent_tasks()

__all__ = ["ENVS", "EnvTask", "Environment", "get_env"]
