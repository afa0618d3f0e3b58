"""The fast exact selection paths of issue 18 against brute force and today's search.

* :mod:`dmoe.optimize._des_fast` (plain P1(a), numba, no limit): the D <= 2 pair scan,
  the enumeration, the LP reduction and the search after it; energies bit for bit as
  numpy sums them;
* :mod:`dmoe.optimize._node_fast` (several experts per node, equal costs per node): the
  search over per-node counts, its dynamic-programming bound, and the tokens it leaves to
  :mod:`dmoe.optimize._node_des` (unequal costs, near ties).

"Today's search" is the compiled driver that ``select_experts`` runs with a
``node_limit`` (:func:`dmoe.optimize._des.run_compiled`) and the general node kernel
(:func:`dmoe.optimize.selection._select_node_general`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmoe.optimize import _des, _des_fast, _node_fast, select_experts
from dmoe.optimize.selection import SCORE_TOL, _select_node_general

pytestmark = pytest.mark.skipif(_des._numba_namespace() is None, reason="numba missing")

BIG_LIMIT = 10**9  # a node limit that never binds: today's compiled driver


def _quantised(rng, n, k, d):
    """Tie-heavy tokens: dyadic scores and costs, zero scores, unavailable experts,
    thresholds from <= 0 to above the Top-D sum."""
    scores = rng.integers(0, 5, (n, k)) / 8.0
    costs = rng.integers(0, 4, (n, k)) / 4.0
    costs[rng.random((n, k)) < 0.1] = np.inf
    thr = rng.integers(-1, 4 * d, n) / 8.0
    return scores, costs, thr


def _softmax(rng, n, k, d):
    logits = rng.normal(0.0, 1.5, (n, k))
    scores = np.exp(logits)
    scores /= scores.sum(axis=1, keepdims=True)
    rate = 1e6 * np.log2(1.0 + 10.0 * rng.exponential(1e-2, (n, k)))
    costs = np.arange(1, k + 1) * 1e-3 * 8.0 / k + 1e-2 * 65536 / rate
    top = np.sort(scores, axis=1)[:, ::-1]
    thr = top[:, 0] + (top[:, :d].sum(axis=1) - top[:, 0]) * rng.uniform(0.1, 1.1, n)
    return scores, costs, thr


def _same(a, b):
    np.testing.assert_array_equal(a.selection, b.selection)
    np.testing.assert_array_equal(a.feasible, b.feasible)
    np.testing.assert_array_equal(a.energy, b.energy)


# ------------------------------------------------------------------ plain P1(a)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 12])
def test_fast_des_is_brute_force_on_ties_and_edges(k):
    """Thousands of tie-heavy tokens (D = 1, 2, K/2, K): the canonical optimum of the
    enumeration, Remark 2 fallbacks included, and today's search's answer."""
    rng = np.random.default_rng(100 + k)
    for d in sorted({1, 2, max(1, k // 2), k}):
        scores, costs, thr = _quantised(rng, 600, k, d)
        fast = select_experts(scores, costs, thr, d, method="des")
        _same(fast, select_experts(scores, costs, thr, d, method="enumerate"))
        _same(fast, select_experts(scores, costs, thr, d, method="des", node_limit=BIG_LIMIT))
        assert fast.optimal.all() and (fast.gap == 0).all() and (fast.stop == 0).all()


@pytest.mark.parametrize("k, d", [(4, 2), (8, 2), (8, 8), (12, 3), (16, 4), (16, 16)])
def test_fast_des_is_brute_force_on_router_like_tokens(k, d):
    rng = np.random.default_rng(7 * k + d)
    scores, costs, thr = _softmax(rng, 1500, k, d)
    fast = select_experts(scores, costs, thr, d, method="des")
    _same(fast, select_experts(scores, costs, thr, d, method="enumerate"))


def test_threshold_exactly_at_an_attainable_sum():
    """thr - SCORE_TOL equal to a subset's score sum (and one ulp either side): C1 is
    decided on the correctly rounded sum, as by the enumeration."""
    rng = np.random.default_rng(5)
    for k, d in [(6, 2), (8, 3), (12, 12), (20, 4), (40, 8)]:
        scores, costs, _ = _softmax(rng, 300, k, d)
        thr = np.empty(300)
        for q in range(300):
            members = rng.choice(k, size=int(rng.integers(1, d + 1)), replace=False)
            target = math.fsum(scores[q, members].tolist())
            thr[q] = np.nextafter(target, [-np.inf, np.inf, target][q % 3]) + SCORE_TOL
        fast = select_experts(scores, costs, thr, d, method="des")
        today = select_experts(scores, costs, thr, d, method="des", node_limit=BIG_LIMIT)
        _same(fast, today)
        if k <= 12:
            _same(fast, select_experts(scores, costs, thr, d, method="enumerate"))


@pytest.mark.parametrize("k, d", [(13, 2), (16, 8), (32, 8), (64, 4), (64, 16), (256, 8)])
def test_reduction_and_search_match_todays_search(k, d):
    """Above :data:`_des_fast.SMALL` experts the LP reduction runs first, then the
    enumeration or the search: the same selections as today's compiled search."""
    rng = np.random.default_rng(k + 31 * d)
    n = 300 if k <= 64 else 60
    scores, costs, thr = _softmax(rng, n, k, d)
    costs[rng.random((n, k)) < 0.05] = np.inf
    scores[rng.random((n, k)) < 0.05] = 0.0
    fast = select_experts(scores, costs, thr, d, method="des")
    _same(fast, select_experts(scores, costs, thr, d, method="des", node_limit=BIG_LIMIT))
    assert k > _des_fast.SMALL


def test_reduction_keeps_ties():
    """Equal experts above SMALL: the reduction must keep every tied expert the index
    rule could need."""
    rng = np.random.default_rng(8)
    k = 24
    scores = np.tile(rng.integers(1, 4, k) / 16.0, (200, 1))
    costs = np.tile(rng.integers(1, 3, k) / 4.0, (200, 1))
    thr = rng.integers(1, 12, 200) / 16.0
    for d in (2, 5, 24):
        _same(select_experts(scores, costs, thr, d, method="des"),
              select_experts(scores, costs, thr, d, method="des", node_limit=BIG_LIMIT))


@pytest.mark.parametrize("k", [1, 3, 7, 8, 9, 16, 31, 128, 129, 200, 300])
def test_energy_is_numpys_row_sum(k):
    """The kernel's energies are bit for bit ``np.where(selection, costs, 0).sum(axis=1)``
    (numpy's pairwise order, K > 128 included)."""
    rng = np.random.default_rng(k)
    d = min(k, 8)
    scores, _, thr = _softmax(rng, 200, k, d)
    costs = np.exp(rng.normal(0.0, 8.0, (200, k)))  # wide dynamic range: order matters
    sel, energy, _, _ = _des_fast.run(scores, costs, thr, d, SCORE_TOL)
    np.testing.assert_array_equal(energy, np.where(sel, costs, 0.0).sum(axis=1))


def test_degenerate_batches():
    empty = select_experts(np.zeros((0, 5)), np.ones(5), 0.5, 2)
    assert empty.selection.shape == (0, 5) and empty.energy.shape == (0,)
    # no eligible expert at all: infeasible with nothing selected, finite energy
    res = select_experts(np.zeros((2, 4)), np.ones(4), [0.5, 0.0], 2)
    assert res.feasible.tolist() == [False, True] and not res.selection.any()
    assert res.energy.tolist() == [0.0, 0.0]
    one = select_experts(np.array([[0.3, 0.7]]), np.array([2.0, 1.0]), 0.7 + SCORE_TOL, 1)
    assert one.selection.tolist() == [[False, True]]


# ------------------------------------------------------------------ node-aware


def _node_instance(rng, n, e, num_nodes, d, *, quantised=False):
    """Equal computation energy per node (as expert_comp_energy gives), own node free."""
    placement = rng.permutation(np.arange(e) % num_nodes)
    a_node = rng.integers(0, 3, num_nodes) * 1e-3 if quantised else rng.uniform(1e-4, 2e-3, num_nodes)
    costs = a_node[placement]
    if quantised:
        scores = rng.integers(0, 4, (n, e)) / 8.0
        ncost = rng.integers(0, 3, (n, num_nodes)) * 1e-2
        thr = rng.integers(-1, 3 * d, n) / 8.0
    else:
        logits = rng.normal(0.0, 1.5, (n, e))
        scores = np.exp(logits)
        scores /= scores.sum(axis=1, keepdims=True)
        ncost = rng.exponential(5e-3, (n, num_nodes))
        top = np.sort(scores, axis=1)[:, ::-1][:, :d].sum(axis=1)
        thr = top * rng.uniform(0.3, 1.05, n)
    ncost[np.arange(n), rng.integers(0, num_nodes, n)] = 0.0
    ncost[rng.random((n, num_nodes)) < 0.05] = np.inf
    return scores, costs, placement, ncost, thr


def _node(scores, costs, placement, ncost, thr, d, method="des"):
    return select_experts(scores, costs, thr, d, placement=placement, node_costs=ncost, method=method)


def _general(scores, costs, placement, ncost, thr, d):
    costs = np.broadcast_to(costs, scores.shape)
    return _select_node_general(scores, costs, placement, ncost, np.asarray(thr) - SCORE_TOL, d, "des", None, 0.0)


@pytest.mark.parametrize("e, num_nodes, d", [(6, 2, 2), (8, 4, 3), (10, 5, 10), (12, 3, 4), (12, 12, 2), (9, 1, 3)])
def test_node_fast_is_brute_force(e, num_nodes, d):
    """Router-like and tie-heavy tokens (free nodes, zero energies, unreachable nodes,
    thresholds from <= 0 to above the Top-D sum): the enumeration's canonical optimum."""
    rng = np.random.default_rng(e * 10 + num_nodes)
    for quantised in (False, True):
        args = _node_instance(rng, 500, e, num_nodes, d, quantised=quantised)
        fast = _node(*args, d)
        enu = _node(*args, d, method="enumerate")
        _same(fast, enu)
        general = _node_fast.run(args[0], np.broadcast_to(args[1], args[0].shape), args[2], args[3], args[4], d,
                                 SCORE_TOL)[4]
        assert not general.any()  # equal costs per node and no near ties: all on the fast path


@pytest.mark.parametrize("e, num_nodes", [(32, 8), (64, 8), (64, 16)])
def test_node_fast_matches_the_general_kernel(e, num_nodes):
    rng = np.random.default_rng(e + num_nodes)
    args = _node_instance(rng, 150, e, num_nodes, 8)
    _same(_node(*args, 8), _general(*args, 8))


def test_node_fast_hard_tokens_take_the_dp_bound():
    """Tokens whose cheap nodes would need more than D experts exceed the search budget
    and are searched again with the dynamic-programming bound: still today's answer."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_node_aware import instances

    scores, a, placement, ncost, thr = instances(256, 16, 200, 8, 0)
    res = _node(scores, a, placement, ncost, thr, 8)
    hard = np.flatnonzero(res.nodes > _node_fast._BUDGET)
    assert hard.size >= 5
    rows = hard[:12]
    old = _general(scores[rows], a, placement, ncost[rows], thr[rows], 8)
    np.testing.assert_array_equal(res.selection[rows], old.selection)
    np.testing.assert_array_equal(res.energy[rows], old.energy)


def test_dp_table_bounds_the_rest():
    """_dp_table (run as Python) never exceeds the true cheapest completion (brute force
    over the count vectors of the later nodes)."""
    import itertools

    rng = np.random.default_rng(3)
    for _ in range(40):
        g, d = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        mi = rng.integers(1, d + 1, g)
        cn = rng.uniform(0, 1, g)
        an = rng.uniform(0, 0.1, g)
        pp = np.zeros((g, d + 1))
        for h in range(g):
            pp[h, 1:mi[h] + 1] = np.cumsum(np.sort(rng.uniform(0.01, 0.3, mi[h]))[::-1])
        thr = float(rng.uniform(0.05, 0.8))
        tab = np.zeros((g + 1, d + 1, 9))
        _node_fast._dp_table(g, d, thr, cn, an, mi, pp, tab, np.zeros(d + 1, np.int64), np.zeros(d + 1))
        for h in range(g):
            for s in range(d + 1):
                for b in range(9):
                    need = b * thr / 8
                    best = math.inf
                    for ks in itertools.product(*[range(mi[i] + 1) for i in range(h, g)]):
                        if sum(ks) <= s and sum(pp[h + i, k] for i, k in enumerate(ks)) >= need:
                            best = min(best, sum(cn[h + i] + k * an[h + i] for i, k in enumerate(ks) if k))
                    assert tab[h, s, b] <= best + 1e-15


def test_unequal_costs_and_near_ties_go_to_the_general_kernel():
    rng = np.random.default_rng(9)
    scores, costs, placement, ncost, thr = _node_instance(rng, 200, 12, 4, 3)
    costs = np.tile(costs, (200, 1))
    costs[:100, 0] *= 1.5  # node of expert 0: unequal costs on the first 100 tokens
    # two scores one ulp apart on one node (tokens 100..149)
    j = np.flatnonzero(placement == placement[1])[:2]
    scores[100:150, j[1]] = np.nextafter(scores[100:150, j[0]], 0.0)
    ncost[:, placement[[0, 1]]] = 1e-3  # both nodes reachable
    general = _node_fast.run(scores, costs, placement, ncost, thr, 3, SCORE_TOL)[4]
    assert general[:100].all() and general[100:150].all()
    fast = _node(scores, costs, placement, ncost, thr, 3)
    _same(fast, _general(scores, costs, placement, ncost, thr, 3))
    np.testing.assert_allclose(fast.energy, _node(scores, costs, placement, ncost, thr, 3, "enumerate").energy,
                               rtol=1e-12)
