"""PromptIntern (Zou et al., EMNLP 2024 Findings, "PromptIntern: Saving Inference Costs by Internalizing
Recurrent Prompt during Large Language Model Fine-tuning", arXiv 2407.02211): fine-tune with a long
recurrent prompt that shrinks as training goes, so the model ends up answering the bare query.

Every prompt is split into an instruction *template*, *k few-shot examples* and the *query* (the parts
and the ``prompt_structure`` row format that carries them are data: :mod:`tunelab.data.prompt_parts`).
This package is the method's engine:

* :mod:`~tunelab.promptintern.compress`: template compression by dropping units ranked by surprisal
  (under a scorer passed in), position or a seeded random order;
* :mod:`~tunelab.promptintern.examples`: example selection by similarity to the query or seeded random;
* :mod:`~tunelab.promptintern.prompt_sets`: the built-in templates with their example pools;
* :mod:`~tunelab.promptintern.schedule`: the ``promptintern`` data transform (full prompts with parts)
  and the schedule of levels (kept template fraction, examples) over training progress;
* :mod:`~tunelab.promptintern.rows`: the training rows of every step's level (``TrainJob.rows_at``).

The transform is registered by :func:`register_transform` (called by :mod:`tunelab.runner`): the data
layer's registry sits below this package and cannot find it. Evaluation in the paper's prompt regimes
(full, compressed, bare query) is the eval task family :mod:`tunelab.eval.tasks.prompt_regimes`.
"""

from tunelab.promptintern.schedule import register_transform

__all__ = ["register_transform"]
