"""``instructions`` task: open-ended answers to an instruction file, kept for a judge (no verifier).

WizardLM's own evaluation (Xu et al. 2023) is its test set of 218 instructions labelled with a skill and a
difficulty (1-10), answered by each model and compared pairwise; Vicuna-80, AlpacaEval and Self-Instruct's
user-oriented set are read the same way. This task answers such a file and scores nothing but the
answer's length: who answered better is a judge's call, made afterwards on the answers pair by pair
(``tunelab judge RUN_A RUN_B --task instructions``, or a study's ``judged:`` section: ``tunelab sweep
judge FILE``), with both orders shown and the length difference reported.

Rows: ``value`` and ``words`` (the answer's length in words), ``chars``; the item's ``skill`` and
``difficulty`` where the file gives them. The aggregate is the mean answer length in words with a
bootstrap CI (``answer_words``) and the share of answers that are empty.

Instruction files: any JSONL/JSON whose rows give an instruction as ``instruction`` / ``Instruction``,
``prompt``, ``question`` or ``messages`` (plus ``input`` or the first of ``instances``), as the
Evol-Instruct seeds are read (:func:`tunelab.data.instruction_rows.parse_seed`); errors name the file, row and field.
"""

from __future__ import annotations

from typing import Any

from tunelab.data.instruction_rows import parse_seed
from tunelab.data.sources import read_rows, resolve_data_path, row_where
from tunelab.eval.stats import bootstrap_ci, proportion_score
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask
from tunelab.io import DataError

DEFAULT_FILE = "wizardlm_testset/WizardLM_testset.jsonl"


def _lower_keys(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its keys lower-cased (WizardLM's file spells them ``Instruction``, ``Skill``, ``Difficulty``);
    a key given in both spellings keeps the lower-case one."""
    out = {str(k).lower(): v for k, v in row.items()}
    out.update({k: v for k, v in row.items() if isinstance(k, str) and k == k.lower()})
    return out


@EVAL_TASKS.register("instructions")
class InstructionsTask(EvalTask):
    """Open-ended answers to an instruction file (default: the WizardLM test set), for a judge: length only.

    Options:
        file: The instruction file, or a list of them read one after another (relative to
            ``$TUNELAB_DATA_DIR``, else the current folder); with several files each id is prefixed with
            its file's name (``WizardLM_testset:12``) and an instruction already read from an earlier file
            is left out (normalised text).
        min_difficulty: Only items of at least this difficulty (rows with a ``difficulty`` field).
        exclude_skills: Leave out rows whose skill (``skill``, ``category`` or ``dataset`` field) is one of
            these (AlpacaEval's ``selfinstruct`` part when a study trains on Self-Instruct's instructions).
    """

    primary = "answer_words"
    max_new_tokens = 256

    def __init__(self, file: str | list[str] = DEFAULT_FILE, min_difficulty: int | None = None,
                 exclude_skills: list[str] | None = None) -> None:
        files = [file] if isinstance(file, str) else list(file or [])
        if not files or not all(isinstance(f, str) and f for f in files):
            raise ValueError(f"instructions: file must be a path or a list of paths, got {file!r}")
        skills = [exclude_skills] if isinstance(exclude_skills, str) else list(exclude_skills or [])
        if not all(isinstance(k, str) for k in skills):
            raise ValueError(f"instructions: exclude_skills must be a list of names, got {exclude_skills!r}")
        self.files, self.min_difficulty, self.exclude_skills = files, min_difficulty, set(skills)

    def load(self) -> list[dict[str, Any]]:
        """Every instruction of the files: ``{id, instruction, skill, difficulty}``.

        Raises:
            DataError: a missing file, a row without an instruction or with a bad field (file:line and
                field), a duplicate id, or no row left.
        """
        out: list[dict[str, Any]] = []
        ids: dict[str, str] = {}
        texts: set[str] = set()
        for file in self.files:
            for row in self._load_one(file, prefix=len(self.files) > 1):
                if row["id"] in ids:
                    raise DataError(f"{file}: id {row['id']!r} is also an id of {ids[row['id']]} (files with the "
                                    "same name, or a file listed twice)")
                ids[row["id"]] = file
                key = " ".join(row["instruction"].lower().split())
                if key in texts:  # the same instruction in two files (Vicuna's questions are in both test sets)
                    continue
                texts.add(key)
                out.append(row)
        if not out:
            raise DataError(f"{', '.join(self.files)}: no instruction left after the filters (min_difficulty "
                            f"{self.min_difficulty}, exclude_skills {sorted(self.exclude_skills)})")
        return out

    def _load_one(self, file: str, prefix: bool) -> list[dict[str, Any]]:
        """The rows of one file that pass the filters (ids prefixed with the file's stem when ``prefix``)."""
        path = resolve_data_path(file, None)
        stem = path.name.split(".")[0]
        out, seen = [], set()
        for n, row in read_rows(path):
            where = row_where(path, n)
            if isinstance(row, Exception):
                raise row
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a mapping, got {type(row).__name__}")
            low = _lower_keys(row)
            seed = parse_seed(where, low, n)
            if seed["id"] in seen:
                raise DataError(f"{where}: field 'id': duplicate id {seed['id']!r}")
            seen.add(seed["id"])
            difficulty = low.get("difficulty")
            if difficulty is not None and (isinstance(difficulty, bool) or not isinstance(difficulty, int | float)):
                raise DataError(f"{where}: field 'difficulty': expected a number, got {difficulty!r}")
            skill = str(low.get("skill") or low.get("category") or low.get("dataset") or "")
            if skill in self.exclude_skills:
                continue
            out.append({"id": f"{stem}:{seed['id']}" if prefix else seed["id"], "instruction": seed["instruction"],
                        "skill": skill, "difficulty": difficulty})
        if self.min_difficulty is not None:
            out = [r for r in out if r["difficulty"] is not None and r["difficulty"] >= self.min_difficulty]
        return out

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        """The first ``limit`` instructions (the files' own order: a fixed set, ``seed`` unused)."""
        rows = self.load()[: limit or None]
        return [EvalItem(r["id"], [{"role": "user", "content": r["instruction"]}],
                         {"question": r["instruction"], "skill": r["skill"], "difficulty": r["difficulty"]})
                for r in rows]

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        """The answer's length (no verifier: a judge compares answers afterwards)."""
        text = completions[0] if completions else ""
        words = len(text.split())
        row: dict[str, Any] = {"value": float(words), "words": words, "chars": len(text)}
        if item.meta.get("skill"):
            row["skill"] = item.meta["skill"]
        if item.meta.get("difficulty") is not None:
            row["difficulty"] = item.meta["difficulty"]
        return row

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        """Mean answer length in words (bootstrap CI) and the share of empty answers."""
        return {"answer_words": bootstrap_ci([float(r["words"]) for r in rows]),
                "empty_answer": proportion_score([int(r["words"] == 0) for r in rows])}
