"""``instruct_ood_unseen``: the ``instruct`` family's out-of-distribution items that combine a constraint-type
pair held out of evolution (:data:`tunelab.data.tasks.instruct.HELD_OUT_PAIRS`).

An evolution study that sets ``hold_out_pairs`` never trains on these combinations, so its score here is
generalisation to combinations never evolved into (Evol-Instruct's open question), not their reproduction;
``instruct_ood`` scores all combinations, seen ones included.
"""

from __future__ import annotations

from tunelab.data.tasks.base import TASK_FAMILIES
from tunelab.eval.tasks.base import EVAL_TASKS, FamilyTask


@EVAL_TASKS.register("instruct_ood_unseen")
class InstructUnseenPairs(FamilyTask):
    """``instruct_ood`` restricted to items holding a held-out constraint-type pair (exact verifier)."""

    def __init__(self) -> None:
        super().__init__(TASK_FAMILIES.get("instruct")(pairs="held_out"), "ood")
        self.name = "instruct_ood_unseen"
