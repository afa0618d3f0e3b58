"""The greedy resource-block heuristic's lateness reduction (issue 18): scanning the moves on
Python floats chooses the same moves as the numpy-scalar version before it, bit for bit, on
thousands of seeded random problems (with and without node budgets, deadlines of every
tightness, unusable RBs, ties)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmoe.optimize import _rb_greedy
from dmoe.optimize._rb_problem import Problem


# the implementation before issue 18, verbatim (the oracle)
def _reduce_lateness_before(prob, owner, max_moves):
    """Lower the largest deadline stretch by RB exchanges and transfers between links.

    Each step takes the latest link l (largest stretch c_l / (T_l sum r)) and the move that
    most lowers max(stretch of l, stretch of the other link l2): l gives one of its RBs (or
    none) for one of l2's (l2 keeps at least one); a move is applied only when that maximum
    falls below l's stretch, so the largest stretch never rises.
    """
    owner = owner.copy()
    r, caps = prob.r, prob.caps
    for _ in range(max_moves):
        idx = np.flatnonzero(owner >= 0)
        rate_sum = np.bincount(owner[idx], weights=r[owner[idx], idx], minlength=prob.num_links)
        late = np.array([_rb_greedy._lateness(prob, l, rate_sum[l]) if rate_sum[l] > 0 else -math.inf
                         for l in range(prob.num_links)])
        l = int(np.argmax(late))
        if not late[l] > 1.0:
            return owner
        mine = np.flatnonzero(owner == l)
        count = np.bincount(prob.node[owner[idx]], minlength=1 if caps is None else caps.shape[0])
        best, best_val = None, late[l] * (1.0 - 1e-12)
        for m2 in idx:
            l2 = int(owner[m2])
            if l2 == l or r[l, m2] <= 0:
                continue
            n2 = int(np.count_nonzero(owner == l2))
            # transfer m2 to l (l2 keeps at least one RB, l's node has budget)
            gives = [None] if n2 > 1 else []
            if caps is not None and prob.node[l] != prob.node[l2] and count[prob.node[l]] >= caps[prob.node[l]]:
                gives = []
            gives += [int(m1) for m1 in mine if r[l2, m1] > 0]
            for m1 in gives:
                s1 = rate_sum[l] + r[l, m2] - (0.0 if m1 is None else r[l, m1])
                s2 = rate_sum[l2] - r[l2, m2] + (0.0 if m1 is None else r[l2, m1])
                val = max(_rb_greedy._lateness(prob, l, s1), _rb_greedy._lateness(prob, l2, s2))
                if val < best_val:
                    best, best_val = (m1, int(m2), l2), val
        if best is None:
            return owner
        m1, m2, l2 = best
        owner[m2] = l
        if m1 is not None:
            owner[m1] = l2
    return owner


def _problem(rng):
    links, rbs = int(rng.integers(1, 9)), int(rng.integers(1, 14))
    r = rng.exponential(1.0, (links, rbs)) * 10.0 ** rng.uniform(5, 8)
    if rng.random() < 0.5:
        r = np.round(r, -6)  # ties
    r[rng.random((links, rbs)) < rng.uniform(0, 0.5)] = 0.0
    c = rng.uniform(1e5, 1e7, links)
    d = rng.uniform(1e-3, 0.2, links)
    d[rng.random(links) < 0.15] = np.inf
    nodes = int(rng.integers(1, links + 1))
    node = rng.integers(0, nodes, links).astype(np.int64)
    caps = None if rng.random() < 0.4 else rng.integers(1, 4, nodes).astype(np.int64)
    with np.errstate(divide="ignore"):
        weight = np.where(r > 0, c[:, None] / np.where(r > 0, r, 1.0), np.inf)
    owner = rng.integers(-1, links, rbs).astype(np.int64)
    return Problem(r, c, d, node, caps, weight), owner


def test_same_moves_as_before():
    rng = np.random.default_rng(18)
    moved = 0
    for _ in range(3000):
        prob, owner = _problem(rng)
        moves = int(rng.integers(1, 4 * prob.num_rbs + 1))
        expected = _reduce_lateness_before(prob, owner, moves)
        got = _rb_greedy._reduce_lateness(prob, owner, moves)
        assert np.array_equal(got, expected)
        moved += not np.array_equal(got, owner)
    assert moved > 300  # the cases move RBs, not only return at once


def test_zero_deadline_and_zero_rates_as_before():
    r = np.array([[2e6, 0.0, 1e6], [1e6, 3e6, 0.0]])
    c = np.array([1e6, 2e6])
    for d in (np.array([0.0, 0.1]), np.array([1e-320, 1e-3]), np.array([math.inf, 1e-4])):
        prob = Problem(r, c, d, np.array([0, 1]), None, np.ones_like(r))
        for owner in (np.array([0, 1, -1]), np.array([1, 1, 0]), np.array([-1, 1, 0])):
            with np.errstate(all="ignore"):
                assert np.array_equal(_rb_greedy._reduce_lateness(prob, owner, 6),
                                      _reduce_lateness_before(prob, owner, 6))
