"""Regression tests of issue #8 ("exact at the edges, the same answer everywhere").

Each test reproduces one reported edge on the code before the fix (it failed there) and
pins the documented behaviour now. The property-based suite is tests/test_properties.py.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import dmoe
from dmoe.channels.rates import subcarrier_rates
from dmoe.energy import token_costs
from dmoe.system import SystemConfig
from dmoe.data import Question, pack_question
from dmoe.model.combine import renormalised_weights
from dmoe.model import HFMoEModel, MoEModel
from dmoe.optimize import SCORE_TOL, _des, _milp, allocate_subcarriers, select_experts
from dmoe.policies import policy_from_name
from dmoe.optimize._ties import canonical_best, compare_sets, exact_diff_sign, exact_sum, lex_precedes
from dmoe.optimize.feasibility import check_selection

METHODS = ("des", "enumerate", "milp", "auto")


@pytest.fixture(params=[True, False], ids=["numba", "python"])
def numba_mode(request, monkeypatch):
    monkeypatch.setattr(_des, "USE_NUMBA", request.param)
    return request.param


def _all_methods(scores, costs, thr, d):
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    return {m: select_experts(scores, costs, thr, d, method=m) for m in METHODS}


# ------------------------------------------------------------------ item 1: MILP exactness

MILP_CASES = [
    # (scores, costs, threshold, D, optimal energy, canonical selection)
    ([0.3, 0.3 - 1e-9 - 5e-11, 0.6], [1, 1, 3], 0.6, 2, 3.0, [2]),
    ([6e-10, 6e-10, 1.2e-9], [1, 1, 5], 2.1e-9, 2, 2.0, [0, 1]),
    ([0.5, 0.5, 0.5], [1, 1 + 2e-7, 1 + 1e-7], 0.5, 1, 1.0, [0]),
]


@pytest.mark.parametrize("scores, costs, thr, d, energy, chosen", MILP_CASES)
def test_milp_is_exact_on_the_reported_instances(numba_mode, scores, costs, thr, d, energy, chosen):
    res = _all_methods(scores, costs, thr, d)
    for m, r in res.items():
        assert r.energy[0] == energy, m
        assert np.flatnonzero(r.selection[0]).tolist() == chosen, m
        assert r.status[0] == "optimal"
        check_selection(r, np.atleast_2d(scores), costs, thr, d)


def test_milp_rounded_solution_is_verified_against_c1_c2_and_the_dual_bound():
    # HiGHS accepts {0, 1}, which misses C1 by 5e-11 (inside its feasibility tolerance):
    # the exact re-check rejects it, and the polish finds the optimum {2}
    t = np.array([0.3, 0.3 - 1e-9 - 5e-11, 0.6])
    x, certified, _ = _milp.highs_solve(t, np.array([1.0, 1.0, 3.0]), 0.6 - SCORE_TOL, 2)
    assert x is None or math.fsum(t[x].tolist()) >= 0.6 - SCORE_TOL
    # HiGHS's answer 1 + 1e-7 exceeds its own dual bound 1 by more than CERT_RTOL: not certified
    x, certified, dual = _milp.highs_solve(np.full(3, 0.5), np.array([1, 1 + 2e-7, 1 + 1e-7]), 0.5 - SCORE_TOL, 1)
    assert x is not None and x.sum() == 1
    assert certified == (math.fsum(np.array([1, 1 + 2e-7, 1 + 1e-7])[x].tolist()) <= dual * (1 + _milp.CERT_RTOL))
    # a well-scaled random instance is certified, and matches the canonical optimum's energy
    rng = np.random.default_rng(0)
    t = rng.dirichlet(np.ones(8))
    e = rng.uniform(0.5, 2.0, 8)
    x, certified, dual = _milp.highs_solve(t, e, 0.5, 3)
    assert x is not None and certified and math.isfinite(dual)
    ref = select_experts(t[None], e, 0.5 + SCORE_TOL, 3, method="enumerate")
    assert math.fsum(e[x].tolist()) == pytest.approx(ref.energy[0], rel=1e-9)


def test_milp_scaling_handles_huge_and_tiny_magnitudes():
    scores = np.array([[3e-12, 2e-12, 2e-12, 1e-12]])
    costs = np.array([1e12, 6e11, 6e11, 1e11])
    res = _all_methods(scores, costs, 4e-12 + SCORE_TOL, 3)
    sels = {m: np.flatnonzero(r.selection[0]).tolist() for m, r in res.items()}
    assert len({tuple(v) for v in sels.values()}) == 1, sels


# ------------------------------------------------------------------ item 2: canonical ties


def test_equal_experts_tie_to_the_lowest_indices(numba_mode):
    res = _all_methods([[0.25] * 4], np.ones(4), 0.5, 2)
    for m, r in res.items():
        assert np.flatnonzero(r.selection[0]).tolist() == [0, 1], m


def test_equal_energy_ties_go_to_the_larger_score_sum(numba_mode):
    # experts 0 and 1 cost the same; 1 has the larger score: it is the canonical choice
    res = _all_methods([[0.30001, 0.30002, 0.39997]], [1, 1, 5], 0.3, 1)
    for m, r in res.items():
        assert np.flatnonzero(r.selection[0]).tolist() == [1], m


def test_auto_gives_the_same_selection_with_and_without_numba(monkeypatch):
    rng = np.random.default_rng(3)
    # quantised scores and costs: many exact ties
    scores = rng.integers(0, 5, (200, 12)) / 8.0
    costs = rng.integers(1, 4, (200, 12)).astype(float)
    thr = rng.choice([0.25, 0.5, 0.75, 1.0], 200)
    out = []
    for flag in (True, False):
        monkeypatch.setattr(_des, "USE_NUMBA", flag)
        out.append([select_experts(scores, costs, thr, 3, method=m).selection for m in ("auto", "des")])
    for a in out[0] + out[1]:
        assert np.array_equal(a, out[0][0])
    assert np.array_equal(out[0][0], select_experts(scores, costs, thr, 3, method="enumerate").selection)


def test_zero_cost_experts_join_while_the_energy_stays_tied():
    # E = 0 for {0}, {0, 1}, {0, 2}, ...: the largest score sum with <= D experts wins
    res = _all_methods([[0.6, 0.1, 0.3, 0.2]], [0.0, 0.0, 0.0, 5.0], 0.5, 2)
    for m, r in res.items():
        assert np.flatnonzero(r.selection[0]).tolist() == [0, 2], m


@pytest.mark.parametrize("d, chosen", [(2, [0, 1]), (3, [0, 1, 3])])
def test_subnormal_costs_tie_and_break_ties_canonically(numba_mode, d, chosen):
    # E({0, 1}) = E({2, 3}) = 2e-320 exactly (subnormal), G equal: rule 3 -> {0, 1};
    # with D = 3 the zero-cost expert 3 joins (same E, larger G)
    res = _all_methods([[0.25, 0.25, 0.375, 0.125]], [1e-320, 1e-320, 2e-320, 0.0], 0.5, d)
    for m, r in res.items():
        assert np.flatnonzero(r.selection[0]).tolist() == chosen, m


def test_near_tie_instances_with_many_experts_finish():
    """Found while hunting with the property suite's near-tie generator: with energies
    compared after rounding, value dominance was not valid and the canonical search
    needed more than 3 million nodes on such tokens (K = 64, near-equal scores and costs).
    Exact comparison restores dominance: about as many nodes as the plain search."""
    near = [0.0, 1e-12, -1e-12, 5e-11, 1e-9, 2.0**-52]
    rng = np.random.default_rng(0)
    s = 0.25 * (1 + rng.choice(near, (2, 64)))
    c = 0.3 * (1 + rng.choice(near, (2, 64)))
    thr = np.array([s[q, rng.choice(64, 27, replace=False)].sum() for q in range(2)])
    out = []
    for flag in (True, False):
        _des.USE_NUMBA, old = flag, _des.USE_NUMBA
        try:
            out.append(select_experts(s, c, thr, 44, method="des", node_limit=200_000))
        finally:
            _des.USE_NUMBA = old
    assert (out[0].status == "optimal").all() and (out[1].status == "optimal").all()
    assert np.array_equal(out[0].selection, out[1].selection)
    check_selection(out[0], s, c, thr, 44)


def test_exact_sum_is_correctly_rounded_and_order_free():
    rng = np.random.default_rng(1)
    for _ in range(200):
        vals = rng.choice([0.1, 0.2, 0.3, 1e16, 1.0, 1e-16, 3.0, 7e-300], size=int(rng.integers(0, 12)))
        vals = vals * rng.choice([1.0, 1.0 + 2**-52], size=vals.size)
        pos = np.arange(vals.size)
        buf = np.zeros(vals.size + 2)
        got = exact_sum(vals, pos, vals.size, buf)
        assert got == math.fsum(vals.tolist())
        perm = rng.permutation(vals.size)
        assert exact_sum(vals, perm, vals.size, buf) == got


def test_tie_order_helpers():
    assert lex_precedes([0, 3], 2, [1, 2], 2)
    assert lex_precedes([0, 1], 2, [0], 1)
    assert not lex_precedes([0], 1, [0, 1], 2)
    assert not lex_precedes([2, 5], 2, [2, 5], 2)
    buf = np.zeros(8)
    # 0.1 + 0.2 != 0.3 as real numbers (the float64 inputs), although fsum's are close
    vals = np.array([0.1, 0.2, 0.3])
    assert exact_diff_sign(vals, [0, 1], 2, [2], 1, buf) == 1
    assert exact_diff_sign(vals, [2], 1, [0, 1], 2, buf) == -1
    assert exact_diff_sign(vals, [1, 0], 2, [0, 1], 2, buf) == 0
    # differences far below one ulp of the sums are resolved
    big = np.array([1e16, 1.0, 1e16, 2.0])
    assert exact_diff_sign(big, [0, 1], 2, [2, 3], 2, buf) == -1
    e = np.array([1.0, 1.0, 1.0, 1.0])
    t = np.array([0.25, 0.25, 0.3, 0.2])
    gidx = np.arange(4)
    ia, ib = np.zeros(4, np.int64), np.zeros(4, np.int64)
    assert compare_sets(e, t, gidx, [0, 2], 2, [1, 2], 2, buf, ia, ib) == -1  # rule 3
    assert compare_sets(e, t, gidx, [0, 3], 2, [1, 2], 2, buf, ia, ib) == 1  # rule 2
    assert compare_sets(e, t, gidx, [3], 1, [1, 2], 2, buf, ia, ib) == -1  # rule 1
    rows = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=bool)
    assert canonical_best(e, np.full(4, 0.25), rows) == 2
    assert canonical_best(e, t, rows) == 2  # {1, 2} and {0, 2} tie in G: rule 3
    assert canonical_best(e, t, rows[:2]) == 0  # rule 2
    assert canonical_best(np.array([1e16, 1.0, 1e16, 2.0]), np.ones(4), np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)) == 0


def test_top_k_breaks_ties_by_index():
    from dmoe.policies import TopK
    from dmoe.system import SystemConfig

    system = SystemConfig(num_nodes=4, num_subcarriers=12)
    rates = np.full((4, 4, 12), 1e6)
    sched = TopK(2).schedule(np.full((3, 4), 0.25), np.array([0, 1, 2]), rates, 1, system=system)
    assert sched.selection[:, :2].all() and not sched.selection[:, 2:].any()


# ------------------------------------------------------------------ item 3: eq (8) weights


def _softmax32(logits):
    return torch.softmax(torch.tensor(logits, dtype=torch.float32), dim=-1)


def test_weighted_combine_renormalises_subnormal_selected_mass():
    scores = _softmax32([[100.0] + [0.0] * 7])
    sel = torch.zeros(1, 8, dtype=torch.bool)
    sel[0, 1:] = True
    assert 0 < float(scores[0, 1:].sum()) < torch.finfo(torch.float32).tiny  # subnormal mass
    w = renormalised_weights(sel, scores)
    assert w.dtype == torch.float32
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(w[0, 1:], torch.full((7,), 1 / 7))
    # the model's combine_weights uses it (the FFN no longer vanishes)
    moe_like = SimpleNamespace(combine="weighted")
    w2 = MoEModel.combine_weights(moe_like, sel, scores)
    assert torch.equal(w2, w)
    # and so do the wrapped transformers MoE families that renormalise (eq 8)
    hf_like = SimpleNamespace(_normalize=True, _routed_scale=1.0, _residual_scale=1.0)
    assert torch.equal(HFMoEModel.combine_weights(hf_like, sel, scores), w)


def test_weighted_combine_edge_rows():
    scores = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 0.7, 0.3], [0.4, 0.3, 0.2, 0.1]])
    sel = torch.tensor([[True, False, True, False], [True, True, False, False], [False] * 4])
    w = renormalised_weights(sel, scores)
    assert torch.allclose(w[0], torch.tensor([0.5 / 0.7, 0, 0.2 / 0.7, 0]))
    assert torch.equal(w[1], torch.tensor([0.5, 0.5, 0.0, 0.0]))  # zero mass: equal weights
    assert torch.equal(w[2], torch.zeros(4))  # nothing selected: nothing added
    # ordinary rows: eq (8) to float32 rounding
    s = torch.softmax(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), -1)
    m = torch.rand(50, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    m[:, 0] = True
    ref = torch.where(m, s, 0) / torch.where(m, s, 0).sum(-1, keepdim=True)
    assert torch.allclose(renormalised_weights(m, s), ref, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ item 4: precise rates


@pytest.mark.parametrize("x", [1e-17, 1e-16, 1e-10, 1e-300, 5e-324])
def test_tiny_snr_gives_a_tiny_positive_rate(x):
    gain = np.zeros((2, 2, 1))
    gain[0, 1, 0] = x
    r = subcarrier_rates(gain, subcarrier_spacing_hz=1.0, tx_power_w=1.0, noise_power_w=1.0)[0, 1, 0]
    expected = x / math.log(2.0)  # log2(1 + x) = x / ln 2 (1 - x / 2 + ...)
    assert r > 0
    if x > 1e-300:
        assert r == pytest.approx(expected, rel=1e-15)


def test_rates_match_log2_away_from_zero():
    gain = np.random.default_rng(0).exponential(size=(3, 3, 5)) * 1e3
    r = subcarrier_rates(gain, subcarrier_spacing_hz=15e3, tx_power_w=0.1, noise_power_w=1e-3)
    assert np.allclose(r, 15e3 * np.log2(1 + gain * 100.0), rtol=1e-14)


# ------------------------------------------------------------------ item 5: empty choices


@pytest.mark.parametrize("bad", ["", "   ", "\t\n"])
def test_empty_or_blank_answer_choice_is_rejected(tiny_tokenizer, bad):
    q = Question("What is 2 + 2?", ("4", bad, "5", "6"), 0, "anatomy", 0)
    with pytest.raises(ValueError, match=r"choice B .*empty or whitespace-only"):
        pack_question(tiny_tokenizer, q)


def test_choice_that_tokenises_to_nothing_is_rejected():
    class DroppingTokenizer:
        """Drops every character it does not know (as some vocabularies do)."""

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text if c.isascii()]}

    q = Question("What?", ("yes", "no", "\u00e9\u00e8", "maybe"), 0, "anatomy", 0)
    with pytest.raises(ValueError, match="choice C .*tokenised to zero tokens"):
        pack_question(DroppingTokenizer(), q)


# ------------------------------------------------------------------ item 6: policy errors


@pytest.mark.parametrize(
    "name, rule",
    [
        ("JESA(1.5,2)", "`gamma0` must lie in (0, 1]"),
        ("Top-0", "`k` must be >= 1"),
        ("LB(0.9,0)", "`max_experts` must be >= 1"),
        ("H(1.2,2)", "`qos` must lie in [0, 1]"),
        ("JESA(0.9,2,3)", "`qos` must lie in [0, 1]"),
    ],
)
def test_policy_string_errors_name_the_policy_string(name, rule):
    with pytest.raises(ValueError) as info:
        policy_from_name(name)
    assert f"policy {name!r}" in str(info.value) and rule in str(info.value)


def test_cli_policy_error_names_the_policy_string(tmp_path):
    from click.testing import CliRunner

    from dmoe.cli import main

    res = CliRunner().invoke(
        main, ["run", "--policy", "JESA(1.5,2)", "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c")]
    )
    assert res.exit_code != 0
    assert "JESA(1.5,2)" in res.output and "gamma0" in res.output
    assert "Traceback" not in res.output


# ------------------------------------------------------------------ item 7: no overflow warning


def test_tiny_positive_rate_raises_no_overflow_warning():
    rates = np.ones((2, 2, 2))
    rates[0, 1] = [5e-324, 1e3]
    rates[1, 0] = [5e-324, 5e-324]
    demand = np.array([[0, 3], [2, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = allocate_subcarriers(rates, demand, tx_power_w=0.1, bits_per_token=64)
        costs = token_costs(np.array([[0, 5e-324], [1.0, 0]]), SystemConfig(num_nodes=2))
    # link 0->1 takes the usable subcarrier 1; link 1->0 cannot be carried (energy > 1.8e308 J)
    assert res.subcarrier[0, 1] == 1 and res.served[0, 1]
    assert res.unserved[1, 0] and np.isinf(res.energy[1, 0])
    assert np.isinf(costs[0, 1])
