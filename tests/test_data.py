"""MMLU loading and tree-packed multiple-choice scoring."""

from __future__ import annotations

import collections

import pytest
import torch

from dmoe.data import (
    CALIBRATION_SUBJECTS,
    MEDICAL_SUBJECTS,
    format_prompt,
    list_subjects,
    load_mmlu,
    option_logliks,
    pack_question,
    resolve_subjects,
)


def test_full_test_split_is_loaded_without_header_rows():
    qs = load_mmlu("all")
    assert len(qs) == 14042  # the MMLU test split
    counts = collections.Counter(q.subject for q in qs)
    assert len(counts) == 57
    assert counts["anatomy"] == 135
    assert counts["moral scenarios"] == 895
    assert counts["elementary mathematics"] == 378
    assert counts["college mathematics"] == 100
    assert not any(q.question == "question" for q in qs)
    assert all(q.answer in range(4) and len(q.choices) == 4 for q in qs)


def test_subject_names_and_groups():
    assert resolve_subjects(None) == ["anatomy"]
    assert resolve_subjects("Clinical_Knowledge") == ["clinical knowledge"]
    assert resolve_subjects("anatomy, virology") == ["anatomy", "virology"]
    assert resolve_subjects(["medical"]) == list(MEDICAL_SUBJECTS)
    assert len(resolve_subjects("all")) == 57
    assert set(CALIBRATION_SUBJECTS) <= set(list_subjects())
    assert not set(CALIBRATION_SUBJECTS) & set(MEDICAL_SUBJECTS)


def test_limit_and_order():
    qs = load_mmlu(["anatomy", "virology"], limit=3)
    assert [q.subject for q in qs] == ["anatomy"] * 3 + ["virology"] * 3
    assert [q.index for q in qs[:3]] == [0, 1, 2]


@pytest.mark.parametrize("bad", ["anatomyy", "", " , "])
def test_unknown_subject_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="`subjects`"):
        load_mmlu(bad)


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit(limit):
    with pytest.raises(ValueError, match="`limit`"):
        load_mmlu("anatomy", limit=limit)


def test_prompt_format():
    q = load_mmlu("anatomy", limit=1)[0]
    p = format_prompt(q)
    assert p.startswith("The following is a question about anatomy.")
    assert p.endswith("\nAnswer:")


def _separate_logliks(model, tokenizer, q):
    """Reference: four ordinary causal forward passes, one per option."""
    ctx = tokenizer(format_prompt(q), add_special_tokens=False)["input_ids"]
    out = []
    for choice in q.choices:
        opt = tokenizer(" " + choice.strip(), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + opt])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        out.append(sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(opt)))
    return torch.tensor(out, dtype=torch.float64)


def test_packed_query_equals_four_separate_passes(tiny_llama, tiny_tokenizer):
    model = tiny_llama
    for q in load_mmlu("anatomy", limit=4):
        packed = pack_question(tiny_tokenizer, q)
        assert packed.num_tokens == packed.attention_mask.shape[0]
        with torch.no_grad():
            logits = model(
                packed.input_ids[None],
                position_ids=packed.positions[None],
                attention_mask=packed.attention_mask[None, None],
            ).logits[0]
        got = option_logliks(logits, packed)
        ref = _separate_logliks(model, tiny_tokenizer, q)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
        # only the scored rows are needed
        torch.testing.assert_close(option_logliks(logits[packed.score_rows], packed), got)


def test_pack_structure(tiny_tokenizer):
    q = load_mmlu("anatomy", limit=1)[0]
    p = pack_question(tiny_tokenizer, q)
    c = p.context_len
    m = p.attention_mask
    assert m[:c, :c].equal(torch.tril(torch.ones(c, c, dtype=torch.bool)))
    (s0, e0), (s1, e1) = p.option_spans[:2]
    assert not m[s1:e1, s0:e0].any()  # options never see each other
    assert m[s1:e1, :c].all()
    assert p.positions[s1].item() == c and p.positions[s0].item() == c
    assert p.score_rows.numel() == p.score_targets.numel() == sum(e - s for s, e in p.option_spans)


def test_option_logliks_rejects_wrong_rows(tiny_tokenizer):
    p = pack_question(tiny_tokenizer, load_mmlu("anatomy", limit=1)[0])
    with pytest.raises(ValueError, match="`logits`"):
        option_logliks(torch.zeros(3, 10), p)
