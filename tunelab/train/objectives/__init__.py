"""Training objectives (``objective:`` in a recipe; ``tunelab ls objectives``): SFT's token loss and
the preference objectives DPO, IPO, SimPO, KTO and ORPO (one module each, named after its paper) and
``choice_head`` (a classifier head), all in the one loop."""

from tunelab.train.objectives.base import (
    DEFAULT_OBJECTIVE,
    OBJECTIVES,
    Objective,
    build_objective,
    reference_logps,
    seq_logps,
    set_reference,
)

__all__ = ["DEFAULT_OBJECTIVE", "OBJECTIVES", "Objective", "build_objective", "reference_logps",
           "seq_logps", "set_reference"]
