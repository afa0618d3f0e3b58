"""Held-out text for perplexity: question text of MMLU subjects neither evaluated nor used
for router calibration.

The perplexity of a policy (issue 7, item 6) is measured on text the routers never saw and
that the multiple-choice evaluation does not score. :data:`PERPLEXITY_SUBJECTS` is the
fixed default list: eight non-medical subjects outside :data:`~dmoe.data.CALIBRATION_SUBJECTS`
whose questions are running prose (the three history subjects carry passages of several
hundred words). When a run evaluates one of them, it is replaced by the first subjects of
the remaining MMLU subjects in alphabetical order that are neither evaluated nor calibration
subjects, so the list stays disjoint from both and is the same for the same evaluated
subjects.
"""

from __future__ import annotations

from typing import Iterable

from .mmlu import CALIBRATION_SUBJECTS, list_subjects, load_mmlu, resolve_subjects

__all__ = ["MIN_TEXT_CHARS", "PERPLEXITY_SUBJECTS", "heldout_subjects", "heldout_texts"]

#: Default held-out subjects for perplexity (disjoint from the medical and calibration sets).
PERPLEXITY_SUBJECTS: tuple[str, ...] = (
    "high school european history",
    "high school us history",
    "high school world history",
    "prehistory",
    "philosophy",
    "jurisprudence",
    "astronomy",
    "logical fallacies",
)

#: Questions shorter than this [characters] are skipped (too little text to predict).
MIN_TEXT_CHARS = 100


def heldout_subjects(exclude: Iterable[str] = ()) -> list[str]:
    """The held-out subjects for a run that evaluates ``exclude``.

    Parameters
    ----------
    exclude : iterable of str
        Evaluated subjects (any form :func:`dmoe.data.resolve_subjects` accepts, groups too).

    Returns
    -------
    list of str
        :data:`PERPLEXITY_SUBJECTS` minus ``exclude``, topped up to the same length with the
        other MMLU subjects in alphabetical order that are neither in ``exclude`` nor in
        :data:`~dmoe.data.CALIBRATION_SUBJECTS`. Empty when no such subject is left (e.g. a
        run over all subjects).

    Raises
    ------
    ValueError
        If ``exclude`` names an unknown subject.
    """
    excl = list(exclude)
    banned = set(resolve_subjects(excl) if excl else []) | set(CALIBRATION_SUBJECTS)
    chosen = [s for s in PERPLEXITY_SUBJECTS if s not in banned]
    for s in list_subjects():
        if len(chosen) >= len(PERPLEXITY_SUBJECTS):
            break
        if s not in banned and s not in chosen:
            chosen.append(s)
    return chosen


def heldout_texts(num_texts: int, *, exclude: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """``num_texts`` held-out question texts, taken round-robin over :func:`heldout_subjects`.

    Text ``k`` is the ``k // S``-th question (in MMLU test order) with at least
    :data:`MIN_TEXT_CHARS` characters of subject ``k mod S`` (S held-out subjects); a
    subject that runs out is skipped. The text is the question alone (no choices, no prompt).

    Parameters
    ----------
    num_texts : int, >= 0
    exclude : iterable of str
        Evaluated subjects (never used).

    Returns
    -------
    (texts, subjects) : list of str, list of str
        The texts and the subject each comes from, both of length ``num_texts``.

    Raises
    ------
    ValueError
        If ``num_texts`` is not a non-negative integer, no held-out subject is left while
        ``num_texts > 0``, or the held-out subjects hold fewer than ``num_texts`` texts.
    """
    if isinstance(num_texts, bool) or not isinstance(num_texts, int) or num_texts < 0:
        raise ValueError(f"`num_texts` must be a non-negative integer, got {num_texts!r}")
    if num_texts == 0:
        return [], []
    subjects = heldout_subjects(exclude)
    if not subjects:
        raise ValueError(
            "`num_texts`: no MMLU subject is left for held-out text (every subject is evaluated or "
            "used for router calibration); ask for 0 texts"
        )
    pools = [[q.question.strip() for q in load_mmlu(s) if len(q.question.strip()) >= MIN_TEXT_CHARS] for s in subjects]
    texts: list[str] = []
    names: list[str] = []
    depth = 0
    while len(texts) < num_texts and any(depth < len(p) for p in pools):
        for s, pool in zip(subjects, pools):
            if depth < len(pool) and len(texts) < num_texts:
                texts.append(pool[depth])
                names.append(s)
        depth += 1
    if len(texts) < num_texts:
        raise ValueError(
            f"`num_texts` = {num_texts} exceeds the {len(texts)} held-out texts of {', '.join(subjects)}"
        )
    return texts, names
