"""Quality against the full model on a tiny random MoE: agreement, KL, perplexity, held-out text."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax
from scipy.stats import entropy

from dmoe.data import (
    CALIBRATION_SUBJECTS,
    MEDICAL_SUBJECTS,
    PERPLEXITY_SUBJECTS,
    heldout_subjects,
    heldout_texts,
    list_subjects,
    load_mmlu,
    pack_question,
    pack_text,
    resolve_subjects,
)
from dmoe.experiments.stats import bootstrap_ratio_interval
from dmoe.policies import Dense, JESAPolicy, TopK
from dmoe.runtime import (
    DMoERuntime,
    evaluate_perplexity,
    evaluate_policy,
    full_reference,
    full_text_nll,
    perplexity,
    token_kl,
)
from dmoe.system import SystemConfig

from conftest import make_tiny_moe

K = 4
SYSTEM = SystemConfig(num_nodes=K, num_subcarriers=16)


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama):
    # a random (non-contiguous) partition of every layer's neurons into K experts
    return make_tiny_moe(tiny_llama, K, seed=2)


@pytest.fixture(scope="module")
def queries(tiny_tokenizer):
    return [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=6)]


@pytest.fixture(scope="module")
def reference(tiny_moe, queries):
    return full_reference(tiny_moe, queries)


@pytest.fixture(scope="module")
def dense_result(tiny_moe, queries, reference):
    return evaluate_policy(tiny_moe, queries, Dense(), system=SYSTEM, seed=3, progress=False, reference=reference)


@pytest.fixture(scope="module")
def texts(tiny_tokenizer):
    raw, _ = heldout_texts(5, exclude=["anatomy"])
    return [pack_text(tiny_tokenizer, t, max_tokens=40) for t in raw]


# ----------------------------------------------------------------- token_kl
def test_token_kl_matches_scipy_and_is_stable():
    rng = np.random.default_rng(0)
    for scale in (0.1, 1.0, 30.0, 1000.0):
        p = torch.from_numpy(rng.normal(size=(7, 50)) * scale).float()
        q = torch.from_numpy(rng.normal(size=(7, 50)) * scale).float()
        got = token_kl(p, q).numpy()
        pd, qd = p.double().numpy(), q.double().numpy()
        # KL(p || q) = sum p (log p - log q), log-probabilities in float64
        direct = (softmax(pd, axis=1) * (log_softmax(pd, axis=1) - log_softmax(qd, axis=1))).sum(axis=1)
        assert np.all(np.isfinite(got)) and np.all(got >= 0)
        np.testing.assert_allclose(got, np.maximum(direct, 0), rtol=1e-9, atol=1e-12)
        if scale <= 30:  # scipy's entropy normalises probabilities, fine away from underflow
            np.testing.assert_allclose(got, entropy(softmax(pd, axis=1), softmax(qd, axis=1), axis=1),
                                       rtol=1e-7, atol=1e-12)
    x = torch.randn(3, 11)
    assert torch.all(token_kl(x, x) == 0)
    assert torch.all(token_kl(x, x + 5.0) < 1e-12)  # a shift leaves the distribution unchanged


def test_token_kl_two_point_closed_form():
    # p = (a, 1-a), q = (b, 1-b) from logits (log a, log(1-a)), ...
    a, b = 0.8, 0.3
    p = torch.tensor([[np.log(a), np.log(1 - a)]])
    q = torch.tensor([[np.log(b), np.log(1 - b)]])
    expected = a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    assert token_kl(p, q).item() == pytest.approx(expected, rel=1e-6)


def test_token_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="`full_logits`"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="finite"):
        token_kl(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2))


def test_perplexity_formula_and_errors():
    assert perplexity([2.0, 4.0], [2, 4]) == pytest.approx(np.exp(1.0))
    with pytest.raises(ValueError, match="`token_counts`"):
        perplexity([1.0], [0])
    with pytest.raises(ValueError, match="same length"):
        perplexity([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="`nll_sums`"):
        perplexity([np.inf], [3])


# ------------------------------------------------------- against the runtime
def test_dense_policy_agrees_with_full_model(dense_result, reference):
    res = dense_result
    assert res.agreement == 1.0
    assert np.array_equal(res.full_choices, reference.choices)
    # the runtime's K slices summed equal the dense FFN up to float32 rounding
    assert 0.0 <= res.mean_kl < 1e-9
    summary = res.summary()
    assert summary["agreement"] == 1.0 and summary["mean_kl"] == res.mean_kl and summary["perplexity"] is None


def test_reference_is_computed_when_not_given(tiny_moe, queries, reference):
    a = evaluate_policy(tiny_moe, queries, TopK(1), system=SYSTEM, seed=0, progress=False)
    b = evaluate_policy(tiny_moe, queries, TopK(1), system=SYSTEM, seed=0, progress=False, reference=reference)
    assert a.agreement == b.agreement and a.mean_kl == b.mean_kl


@pytest.mark.parametrize("policy", [TopK(1), TopK(2), JESAPolicy(0.8, 2)], ids=lambda p: p.name)
def test_sparse_policy_kl_equals_direct_computation(tiny_moe, queries, reference, dense_result, policy):
    res = evaluate_policy(tiny_moe, queries, policy, system=SYSTEM, seed=3, progress=False, reference=reference)
    dense = dense_result
    # the random tiny model has small logits, so KLs are small; a sparse policy's is far above rounding
    assert res.mean_kl > 1e-6 and res.mean_kl > 1e3 * dense.mean_kl
    # redo the same rounds with the selections recorded, recompute every quantity directly
    rt = DMoERuntime(tiny_moe, policy, system=SYSTEM, seed=3, record_selection=True)
    kl_sum, n_rows, agree = 0.0, 0, []
    for b in range(0, len(queries), K):
        batch = queries[b : b + K]
        out = rt.run_round(batch)
        for q, sel in zip(batch, out.selections):
            with torch.no_grad():
                full = tiny_moe.forward_masked(q.input_ids, positions=q.positions, attention_mask=q.attention_mask)
                pol = tiny_moe.forward_masked(q.input_ids, positions=q.positions, attention_mask=q.attention_mask,
                                              selection=torch.from_numpy(sel))
            f = full[q.score_rows].double().numpy()
            g = pol[q.score_rows].double().numpy()
            kl_sum += entropy(softmax(f, axis=1), softmax(g, axis=1), axis=1).sum()
            n_rows += f.shape[0]

            def choice(lg):
                lp = log_softmax(lg, axis=1)[np.arange(len(q.score_targets)), q.score_targets.numpy()]
                return int(np.argmax(np.bincount(q.score_option.numpy(), weights=lp, minlength=4)))

            agree.append(choice(f) == choice(g))
    assert res.mean_kl == pytest.approx(kl_sum / n_rows, rel=1e-4)
    assert res.agreement == pytest.approx(np.mean(agree))
    assert res.kl_per_question.shape == (len(queries),) and np.all(res.kl_per_question >= 0)
    assert res.mean_kl == pytest.approx(np.average(res.kl_per_question, weights=res.scored_tokens))


def test_reference_must_fit_queries(tiny_moe, queries, reference):
    with pytest.raises(ValueError, match="`reference`"):
        evaluate_policy(tiny_moe, queries[:3], Dense(), system=SYSTEM, progress=False, reference=reference)
    swapped = full_reference(tiny_moe, queries[1:] + queries[:1])
    if any(a.shape != b.shape for a, b in zip(swapped.logits, reference.logits)):
        with pytest.raises(ValueError, match="`reference` question"):
            evaluate_policy(tiny_moe, queries, Dense(), system=SYSTEM, progress=False, reference=swapped)


def test_dense_perplexity_equals_forward_masked(tiny_moe, texts):
    nll, tokens = evaluate_perplexity(tiny_moe, texts, Dense(), system=SYSTEM, seed=0)
    total, count = 0.0, 0
    for t in texts:
        with torch.no_grad():
            lg = tiny_moe.forward_masked(t.input_ids, selection=None).double().numpy()
        ids = t.input_ids.numpy()
        total -= log_softmax(lg[:-1], axis=1)[np.arange(len(ids) - 1), ids[1:]].sum()
        count += len(ids) - 1
    assert tokens.sum() == count
    assert perplexity(nll, tokens) == pytest.approx(np.exp(total / count), rel=1e-5)
    np.testing.assert_allclose(full_text_nll(tiny_moe, texts), nll, rtol=1e-5)


def test_perplexity_run_does_not_touch_the_mmlu_ledger(tiny_moe, queries, reference, texts):
    pol = JESAPolicy(0.8, 2)
    a = evaluate_policy(tiny_moe, queries, pol, system=SYSTEM, seed=1, progress=False, reference=reference)
    b = evaluate_policy(tiny_moe, queries, pol, system=SYSTEM, seed=1, progress=False, reference=reference,
                        texts=texts)
    assert a.perplexity is None and b.perplexity is not None and b.perplexity > 1.0
    assert a.energy_j == b.energy_j and a.num_tokens == b.num_tokens
    np.testing.assert_array_equal(a.per_layer.tokens, b.per_layer.tokens)
    np.testing.assert_array_equal(a.selection_counts, b.selection_counts)
    assert b.summary()["perplexity_tokens"] == sum(t.num_tokens - 1 for t in texts)
    # sparser policies predict held-out text worse than the full model
    full = perplexity(full_text_nll(tiny_moe, texts), b.text_tokens)
    top1 = evaluate_perplexity(tiny_moe, texts, TopK(1), system=SYSTEM, seed=1)
    assert perplexity(*top1) != pytest.approx(full, rel=1e-6)


# --------------------------------------------------------------- held-out text
@pytest.mark.parametrize(
    "evaluated",
    [["anatomy"], list(MEDICAL_SUBJECTS), [PERPLEXITY_SUBJECTS[0]], list(PERPLEXITY_SUBJECTS),
     list(PERPLEXITY_SUBJECTS[:3]) + ["abstract algebra"], ["philosophy", "virology"]],
)
def test_heldout_subjects_never_overlap_evaluation_or_calibration(evaluated):
    chosen = heldout_subjects(evaluated)
    assert len(chosen) == len(PERPLEXITY_SUBJECTS) == len(set(chosen))
    assert not set(chosen) & set(evaluated) and not set(chosen) & set(CALIBRATION_SUBJECTS)
    assert chosen == heldout_subjects(evaluated)  # deterministic
    texts, subjects = heldout_texts(20, exclude=evaluated)
    assert len(texts) == 20 and set(subjects) <= set(chosen)
    evaluated_text = {q.question.strip() for q in load_mmlu(evaluated)}
    assert not set(texts) & evaluated_text


def test_heldout_subjects_for_every_single_subject():
    for s in list_subjects():
        chosen = heldout_subjects([s])
        assert s not in chosen and not set(chosen) & set(CALIBRATION_SUBJECTS)
    # the default list itself is disjoint from the medical and calibration subjects
    assert not set(PERPLEXITY_SUBJECTS) & (set(MEDICAL_SUBJECTS) | set(CALIBRATION_SUBJECTS))
    assert set(PERPLEXITY_SUBJECTS) <= set(list_subjects())


def test_heldout_texts_edge_cases():
    assert heldout_texts(0) == ([], [])
    assert heldout_subjects(["all"]) == []
    with pytest.raises(ValueError, match="`num_texts`"):
        heldout_texts(1, exclude=["all"])
    with pytest.raises(ValueError, match="`num_texts`"):
        heldout_texts(-1)
    rest = [s for s in list_subjects() if s not in CALIBRATION_SUBJECTS and s != "astronomy"]
    assert heldout_subjects(resolve_subjects(rest)) == ["astronomy"]
    with pytest.raises(ValueError, match="exceeds"):
        heldout_texts(10_000, exclude=rest)
    t1, s1 = heldout_texts(9)
    assert s1[:8] == list(PERPLEXITY_SUBJECTS) and s1[8] == PERPLEXITY_SUBJECTS[0]
    assert all(len(t) >= 100 for t in t1)


def test_pack_text(tiny_tokenizer):
    t = pack_text(tiny_tokenizer, "The mitochondria is the powerhouse of the cell.", max_tokens=6)
    assert t.num_tokens == 6 and t.score_rows.tolist() == list(range(5))
    assert torch.equal(t.score_targets, t.input_ids[1:])
    assert torch.equal(t.attention_mask, torch.tril(torch.ones(6, 6, dtype=torch.bool)))
    with pytest.raises(ValueError, match="`text`"):
        pack_text(tiny_tokenizer, "")
    with pytest.raises(ValueError, match="`max_tokens`"):
        pack_text(tiny_tokenizer, "abc", max_tokens=1)


def test_bootstrap_ratio_interval():
    rng = np.random.default_rng(0)
    w = rng.integers(1, 20, 200).astype(float)
    x = w * rng.normal(2.0, 0.5, 200)
    lo, hi = bootstrap_ratio_interval(x, w, seed=1)
    assert lo < x.sum() / w.sum() < hi and hi - lo < 0.3
    assert bootstrap_ratio_interval([3.0], [2.0]) == (1.5, 1.5)
    with pytest.raises(ValueError, match="`denominators`"):
        bootstrap_ratio_interval([1.0, 2.0], [1.0, 0.0])


@pytest.mark.parametrize("ppl_texts, needle", [(-1, "non-negative"), (True, "non-negative"), (100_000, "exceeds")])
def test_main_job_rejects_bad_ppl_texts_before_loading_a_model(ppl_texts, needle, tmp_path):
    from dmoe.main_job import run_main_job

    with pytest.raises(ValueError, match=f"`ppl_texts`.*{needle}"):
        run_main_job(limit=1, policies=["Top-1"], ppl_texts=ppl_texts, cache_dir=str(tmp_path / "c"), log=lambda *_: None)
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------ a real MoE family
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_native_top_k_is_the_full_model_of_a_real_moe(family, tmp_path, tiny_tokenizer):
    """For a transformers MoE the full model is its own top-k routing: Top-k at the native
    k agrees with it exactly (KL at float rounding), Top-1 moves away from it."""
    from test_hf_moe import save_tiny_moe

    from dmoe.model import load_expert_model
    from dmoe.system import default_num_subcarriers

    save_tiny_moe(family, tmp_path / family)
    model = load_expert_model(str(tmp_path / family))
    k = model.num_experts
    system = SystemConfig(num_nodes=k, num_subcarriers=default_num_subcarriers(k))
    qs = [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=k)]
    texts = [pack_text(tiny_tokenizer, t, max_tokens=24) for t in heldout_texts(3, exclude=["anatomy"])[0]]
    ref = full_reference(model, qs)
    native = evaluate_policy(model, qs, TopK(model.native_top_k), system=system, progress=False, reference=ref,
                             texts=texts)
    top1 = evaluate_policy(model, qs, TopK(1), system=system, progress=False, reference=ref)
    assert native.agreement == 1.0 and native.mean_kl < 1e-9
    assert top1.mean_kl > 1e-5 and top1.mean_kl > 1e3 * native.mean_kl
    full_ppl = perplexity(full_text_nll(model, texts), native.text_tokens)
    assert native.perplexity == pytest.approx(full_ppl, rel=1e-5)
