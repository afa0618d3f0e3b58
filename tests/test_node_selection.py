"""Node-aware P1(a) (issue 12): node-block DES against brute force and HiGHS."""

from __future__ import annotations

import numpy as np
import pytest

from dmoe.optimize import _des, select_experts
from dmoe.optimize.selection import SCORE_TOL, node_energy
from dmoe.placement import node_selection


def instance(seed, num_tokens, num_experts, num_nodes, *, per_expert_a=True, zipf=False):
    """Random router-like scores, computation energies, a balanced random placement, node costs."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (num_tokens, num_experts))
    scores = np.exp(logits)
    scores /= scores.sum(axis=1, keepdims=True)
    placement = rng.permutation(np.arange(num_experts) % num_nodes)
    if per_expert_a:
        costs = rng.uniform(1e-3, 8e-3, (num_tokens, num_experts))
    else:
        costs = ((np.arange(num_nodes) + 1) * 1e-3)[placement]
    node_costs = rng.exponential(0.02, (num_tokens, num_nodes))
    node_costs[np.arange(num_tokens), rng.integers(0, num_nodes, num_tokens)] = 0.0  # own node
    threshold = rng.uniform(0.05, 1.0, num_tokens)
    return scores, costs, placement, node_costs, threshold


def check_result(res, scores, costs, placement, node_costs, threshold, d):
    sel = res.selection
    assert (sel.sum(axis=1) <= d).all()  # C2
    ok = res.feasible
    assert (np.where(sel, scores, 0).sum(axis=1)[ok] >= threshold[ok] - SCORE_TOL - 1e-12).all()  # C1
    cost = np.broadcast_to(costs, scores.shape)
    nc = np.broadcast_to(node_costs, (scores.shape[0], np.asarray(node_costs).shape[-1]))
    np.testing.assert_allclose(res.energy, node_energy(sel, cost, placement, nc), rtol=1e-12, atol=0)
    assert np.isfinite(res.energy).all()


@pytest.mark.parametrize("num_experts,num_nodes,d", [(8, 2, 3), (10, 4, 4), (12, 3, 5), (12, 6, 2), (9, 9, 3), (7, 1, 7)])
def test_des_matches_enumeration_thousands(num_experts, num_nodes, d):
    """Compiled node DES == brute force (energy and, by the canonical rule, the same set)."""
    for seed in range(3):
        args = instance(100 * seed + num_experts, 400, num_experts, num_nodes, per_expert_a=seed != 1)
        scores, costs, placement, node_costs, thr = args
        des = select_experts(scores, costs, thr, d, placement=placement, node_costs=node_costs, method="des")
        enu = select_experts(scores, costs, thr, d, placement=placement, node_costs=node_costs, method="enumerate")
        check_result(des, *args, d)
        assert des.optimal.all()
        np.testing.assert_array_equal(des.feasible, enu.feasible)
        np.testing.assert_allclose(des.energy, enu.energy, rtol=1e-9, atol=1e-15)
        np.testing.assert_array_equal(des.selection, enu.selection)


def test_milp_oracle_agrees():
    for seed, (e, n, d) in enumerate([(10, 3, 4), (16, 4, 8), (24, 8, 8)]):
        args = instance(seed, 60, e, n)
        scores, costs, placement, node_costs, thr = args
        des = select_experts(scores, costs, thr, d, placement=placement, node_costs=node_costs)
        milp = select_experts(scores, costs, thr, d, placement=placement, node_costs=node_costs, method="milp")
        check_result(milp, *args, d)
        np.testing.assert_allclose(des.energy, milp.energy, rtol=1e-9, atol=1e-15)


def test_python_fallback_matches(monkeypatch):
    monkeypatch.setattr(_des, "USE_NUMBA", False)
    args = instance(7, 150, 10, 3)
    scores, costs, placement, node_costs, thr = args
    des = select_experts(scores, costs, thr, 4, placement=placement, node_costs=node_costs, method="des")
    enu = select_experts(scores, costs, thr, 4, placement=placement, node_costs=node_costs, method="enumerate")
    np.testing.assert_array_equal(des.selection, enu.selection)


def test_one_expert_per_node_is_todays_des():
    """N = E with the identity placement: the same energies as the paper's P1(a) with e_j = a_j + c_j."""
    rng = np.random.default_rng(3)
    args = instance(3, 500, 8, 8)
    scores, costs, _, node_costs, thr = args
    placement = np.arange(8)
    new = select_experts(scores, costs, thr, 3, placement=placement, node_costs=node_costs)
    old = select_experts(scores, costs + node_costs, thr, 3)
    np.testing.assert_array_equal(new.feasible, old.feasible)
    np.testing.assert_allclose(new.energy, old.energy, rtol=1e-12)
    # optima are unique with continuous random data: the same experts
    np.testing.assert_array_equal(new.selection, old.selection)
    del rng


def test_all_experts_on_one_node():
    """N = 1: one transmission for any selection; the selection is plain P1(a) with costs a_j."""
    scores, costs, _, _, thr = instance(5, 300, 12, 1)
    node_costs = np.random.default_rng(5).exponential(0.05, (300, 1))
    placement = np.zeros(12, dtype=int)
    new = select_experts(scores, costs, thr, 4, placement=placement, node_costs=node_costs)
    plain = select_experts(scores, costs, thr, 4)
    used = new.selection.any(axis=1)
    np.testing.assert_allclose(new.energy, plain.energy + np.where(used, node_costs[:, 0], 0.0), rtol=1e-12)
    np.testing.assert_array_equal(new.selection, plain.selection)


def test_exact_sum_is_math_fsum():
    import math

    from dmoe.optimize._node_des import exact_sum  # the node kernel's sum (shared with DES, _ties)

    def _fsum(v, n, buf):
        return exact_sum(v, np.arange(n), n, buf)

    rng = np.random.default_rng(0)
    buf = np.empty(64)
    for _ in range(2000):
        n = int(rng.integers(0, 30))
        v = rng.normal(0, 1, n) * 10.0 ** rng.integers(-20, 20, n)
        assert _fsum(v, n, buf) == math.fsum(v.tolist())
    v = np.array([0.1, 0.2, 0.3, 1e-17])
    assert _fsum(v, 4, buf) == math.fsum(v.tolist())


def test_ties_follow_the_canonical_rule():
    """Equal energies: larger score sum, then the index rule (smallest differing index first)."""
    # four identical experts on two identical nodes: {0, 1} (same node) beats {0, 2}, {2, 3}
    scores = np.full((1, 4), 0.25)
    placement = np.array([0, 0, 1, 1])
    for method in ("des", "enumerate"):
        res = select_experts(scores, np.ones(4) * 1e-3, 0.5, 2, placement=placement, node_costs=np.array([0.01, 0.01]), method=method)
        assert np.flatnonzero(res.selection[0]).tolist() == [0, 1]
    # equal energy, different scores: the larger score sum wins ({1} over {0})
    scores = np.array([[0.5, 0.6, 0.2]])
    for method in ("des", "enumerate"):
        res = select_experts(scores, np.full(3, 1e-3), 0.4, 1, placement=np.array([0, 1, 2]), node_costs=np.array([0.0, 0.0, 0.0]), method=method)
        assert np.flatnonzero(res.selection[0]).tolist() == [1]
    # index rule: {0, 1} comes before {0}: with free experts 0 and 1 on the own node both
    # reach C1 alone... a prefix comes after the longer set only on equal energy and score,
    # so build equal energy and score: experts 1 and 2 have the score of expert 3
    scores = np.array([[0.4, 0.2, 0.2, 0.4]])
    for method in ("des", "enumerate"):
        res = select_experts(scores, np.array([1e-3, 5e-4, 5e-4, 1e-3]), 0.4, 2,
                             placement=np.array([0, 0, 0, 1]), node_costs=np.array([0.0, 0.0]), method=method)
        # {0}, {3}, {1, 2}: equal energy 1e-3 and score 0.4; index rule: {0} first
        assert np.flatnonzero(res.selection[0]).tolist() == [0]
    # many random instances with quantised values (lots of ties): des == enumerate exactly
    rng = np.random.default_rng(11)
    scores = rng.integers(1, 4, (800, 8)) / 8.0
    costs = rng.integers(1, 3, (800, 8)) * 1e-3
    node_costs = rng.integers(0, 3, (800, 4)) * 1e-2
    placement = np.arange(8) % 4
    thr = rng.integers(1, 8, 800) / 8.0
    des = select_experts(scores, costs, thr, 3, placement=placement, node_costs=node_costs, method="des")
    enu = select_experts(scores, costs, thr, 3, placement=placement, node_costs=node_costs, method="enumerate")
    np.testing.assert_allclose(des.energy, enu.energy, rtol=1e-9)
    np.testing.assert_array_equal(des.selection, enu.selection)


def test_unreachable_nodes_and_infeasible_tokens():
    scores = np.array([[0.5, 0.4, 0.1, 0.0], [0.3, 0.3, 0.2, 0.2]])
    placement = np.array([0, 1, 1, 0])
    node_costs = np.array([[np.inf, 0.01], [0.0, 0.02]])
    res = select_experts(scores, np.full(4, 1e-3), 0.45, 2, placement=placement, node_costs=node_costs)
    # token 0: node 0 unreachable -> experts 1, 2 reach 0.5
    assert np.flatnonzero(res.selection[0]).tolist() == [1, 2] and res.feasible[0]
    res = select_experts(scores, np.full(4, 1e-3), 0.95, 2, placement=placement, node_costs=node_costs)
    assert not res.feasible.any()
    # Remark 2: Top-D eligible experts by score
    assert np.flatnonzero(res.selection[0]).tolist() == [1, 2]
    assert np.isfinite(res.energy).all()


def test_node_limit_reports_gap():
    args = instance(9, 20, 64, 8)
    scores, costs, placement, node_costs, thr = args
    res = select_experts(scores, costs, thr, 8, placement=placement, node_costs=node_costs, node_limit=3)
    full = select_experts(scores, costs, thr, 8, placement=placement, node_costs=node_costs)
    assert (res.energy >= full.energy - 1e-15).all()
    assert (res.gap >= 0).all() and (res.energy - res.gap <= full.energy + 1e-12).all()
    check_result(res, *args, 8)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"placement": np.arange(4) % 2}, "`placement` and `node_costs`"),
        ({"node_costs": np.zeros(2)}, "`placement` and `node_costs`"),
        ({"placement": np.arange(3), "node_costs": np.zeros(3)}, "`placement`"),
        ({"placement": np.array([0, 0, 0, 0]), "node_costs": np.zeros(2)}, "node 1 holds no expert"),
        ({"placement": np.array([0, 1, 2, 1]), "node_costs": np.zeros(2)}, "outside"),
        ({"placement": np.array([0, 1, -1, 1]), "node_costs": np.zeros(2)}, "unplaced"),
        ({"placement": np.arange(4) % 2, "node_costs": np.array([0.0, np.nan])}, "`node_costs`"),
        ({"placement": np.arange(4) % 2, "node_costs": np.array([0.0, -1.0])}, "`node_costs`"),
        ({"placement": np.arange(4) % 2, "node_costs": np.zeros((3, 2))}, "`node_costs`"),
        ({"placement": np.arange(4) % 2 + 0.5, "node_costs": np.zeros(2)}, "`placement`"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        select_experts(np.full((2, 4), 0.25), np.ones(4), 0.5, 2, **kwargs)


def test_node_selection_helper():
    sel = np.array([[True, False, True, False], [False, False, False, False]])
    out = node_selection(sel, np.array([0, 1, 0, 2]), 3)
    assert out.tolist() == [[True, False, False], [False, False, False]]
