"""The calibration set that MoEfication and router training see.

Default (DESIGN.md, "Model"): one fixed set, the same for every evaluation — MMLU test
questions of :data:`dmoe.data.CALIBRATION_SUBJECTS` (non-medical subjects the default
experiments never evaluate), each as ``format_prompt(question) + " " + correct choice``
tokenised the way the runtime tokenises a packed question (context and answer encoded
separately, no special tokens). Questions are taken round-robin over the subjects, in the
order of the MMLU test split, until :data:`DEFAULT_CALIBRATION_TOKENS` tokens are
collected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch

__all__ = [
    "DEFAULT_CALIBRATION_TOKENS",
    "MAX_TOKENS_PER_TEXT",
    "default_calibration_texts",
    "calibration_spec",
    "tokenize_calibration",
    "as_id_tensors",
]

DEFAULT_CALIBRATION_TOKENS = 10_000
MAX_TOKENS_PER_TEXT = 512


def default_calibration_texts() -> list[tuple[str, str]]:
    """``(context, answer)`` pairs of the calibration subjects, round-robin over subjects."""
    from dmoe.data import CALIBRATION_SUBJECTS, format_prompt, load_mmlu

    per_subject = [load_mmlu(subject) for subject in CALIBRATION_SUBJECTS]
    out: list[tuple[str, str]] = []
    for i in range(max(len(q) for q in per_subject)):
        for questions in per_subject:
            if i < len(questions):
                q = questions[i]
                out.append((format_prompt(q), " " + q.choices[q.answer]))
    return out


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def as_id_tensors(ids: Sequence) -> list[torch.Tensor]:
    """Calibration token ids as a list of 1-D LongTensors (accepts tensors or int lists)."""
    out = []
    for seq in ids:
        t = torch.as_tensor(seq).long().flatten()
        if t.numel() > 0:
            out.append(t)
    if not out:
        raise ValueError("calibration_ids must contain at least one non-empty sequence")
    return out


def calibration_spec(
    texts: Sequence[str] | Sequence[tuple[str, str]] | None,
    ids: Sequence | None,
    *,
    max_tokens: int,
) -> dict:
    """A JSON-able description of the calibration set for the cache key (content hashes)."""
    if ids is not None:
        seqs = as_id_tensors(ids)
        h = hashlib.sha256()
        for t in seqs:
            h.update(len(t).to_bytes(8, "little"))
            h.update(t.numpy().astype("<i8").tobytes())
        return {"kind": "ids", "sha256": h.hexdigest(), "num_sequences": len(seqs)}
    if texts is None:
        from dmoe.data import CALIBRATION_SUBJECTS

        texts = default_calibration_texts()
        return {
            "kind": "mmlu",
            "subjects": list(CALIBRATION_SUBJECTS),
            "sha256": _sha([list(t) for t in texts]),
            "max_tokens": int(max_tokens),
            "max_tokens_per_text": MAX_TOKENS_PER_TEXT,
        }
    items = [list(t) if isinstance(t, tuple) else t for t in texts]
    return {
        "kind": "texts",
        "sha256": _sha(items),
        "max_tokens": int(max_tokens),
        "max_tokens_per_text": MAX_TOKENS_PER_TEXT,
    }


def tokenize_calibration(
    texts: Sequence[str] | Sequence[tuple[str, str]], tokenizer, *, max_tokens: int = DEFAULT_CALIBRATION_TOKENS
) -> list[torch.Tensor]:
    """Tokenise texts (or ``(context, continuation)`` pairs) until ``max_tokens`` are collected.

    No special tokens are added; each text is cut at :data:`MAX_TOKENS_PER_TEXT` tokens.
    """
    if tokenizer is None:
        raise ValueError("calibration texts need a tokenizer; pass calibration_ids instead")
    out: list[torch.Tensor] = []
    total = 0
    for item in texts:
        parts = item if isinstance(item, (tuple, list)) else (item,)
        ids: list[int] = []
        for part in parts:
            ids.extend(int(i) for i in tokenizer(part, add_special_tokens=False)["input_ids"])
        ids = ids[:MAX_TOKENS_PER_TEXT]
        if not ids:
            continue
        out.append(torch.tensor(ids, dtype=torch.long))
        total += len(ids)
        if total >= max_tokens:
            break
    if not out:
        raise ValueError("the calibration texts produced no tokens")
    return out
