"""Runs, sweeps and the data and eval plumbing around them.

The runner is the lowest layer that sees both the eval task registry (:mod:`tunelab.eval.tasks`)
and the environments (:mod:`tunelab.envs`), so it is where the environments' eval tasks
(``agent_<env>``, which recipes, ``tunelab eval`` and ``tunelab ls`` name) are added to the
registry: the explicit :func:`tunelab.envs.register_agent_tasks` call below. PromptIntern's
``promptintern`` data transform (:mod:`tunelab.promptintern`, a package above the data layer) is
added to the transform registry the same way: :func:`tunelab.promptintern.register_transform`.
"""

from tunelab.envs import register_agent_tasks
from tunelab.promptintern import register_transform

register_agent_tasks()
register_transform()
