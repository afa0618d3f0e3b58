"""JESA's fast iterations (issue 18) against the reference Algorithm 2 (before the speed work).

:func:`dmoe.optimize.jesa.jesa` solves each iteration's selection only for the source nodes
whose cost row changed, skips the validation inside the loop and reuses allocations of a
demand already seen; :mod:`dmoe.optimize._jesa_reference` is the plain algorithm. On
thousands of small seeded instances (ties, D = 1, D = K, infeasible thresholds, unavailable
experts, placements with N < E, per-node budgets, deadlines with several RBs per link) both
must return the same result, every field, energies bit for bit.
"""

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.optimize import _jesa_reference as ref
from dmoe.optimize._validation import check_available, check_threshold
from dmoe.optimize.jesa import jesa, lower_bound
from dmoe.system import SystemConfig


def _same(a, b):
    assert np.array_equal(a.selection, b.selection)
    assert np.array_equal(a.subcarrier, b.subcarrier)
    assert np.array_equal(a.link_rate, b.link_rate)
    assert np.array_equal(a.tokens, b.tokens) and a.tokens.dtype == b.tokens.dtype
    assert a.energy_comm == b.energy_comm and a.energy_comp == b.energy_comp
    assert np.array_equal(a.energy_comm_links, b.energy_comm_links)
    assert np.array_equal(a.energy_comp_experts, b.energy_comp_experts)
    assert np.array_equal(a.feasible, b.feasible)
    assert np.array_equal(a.threshold, b.threshold)
    if hasattr(a, "iterations"):
        assert (a.iterations, a.converged, a.stop_reason) == (b.iterations, b.converged, b.stop_reason)
        assert a.energy_history == b.energy_history
        assert (a.rb_share is None) == (b.rb_share is None)
        assert a.rb_share is None or np.array_equal(a.rb_share, b.rb_share)
        assert repr(a.rb_info) == repr(b.rb_info)


def _instance(seed, *, placement=False, budget=False):
    """A small random instance: (scores, source, rates, thr, d, system, placement, available)."""
    g = np.random.default_rng(seed)
    n = int(g.integers(2, 6))
    m = int(g.integers(1, n * (n - 1) + 4))
    kw = {}
    if g.random() < 0.5:
        kw["comp_energy_per_token"] = tuple(np.maximum(g.uniform(1e-4, 3e-3, n).round(int(g.integers(3, 8))), 1e-4))
    if g.random() < 0.3:
        kw["comp_energy_static"] = tuple(g.uniform(0, 1e-3, n))
    if budget:
        kw["node_power_budget_w"] = float(g.integers(1, n)) * 1e-2
    system = SystemConfig(num_nodes=n, num_subcarriers=m, **kw)
    rates = draw_rates(system, g)
    if g.random() < 0.4:  # ties between subcarriers and links
        rates = np.round(rates / 1e6) * 1e6
    rates[g.random(rates.shape) < g.uniform(0, 0.3)] = 0.0
    e = n * int(g.integers(2, 4)) if placement else n
    place = None
    if placement:
        place = g.permutation(np.arange(e) % n).astype(np.int64)
    t = int(g.integers(0, 25))
    scores = g.dirichlet(np.full(e, g.uniform(0.2, 2.0)), size=t)
    if g.random() < 0.4:  # tied scores
        scores = np.round(scores * 8) / 8
    source = g.integers(0, n, t)
    d = int(g.choice([1, e, int(g.integers(1, e + 1))]))
    thr = float(g.uniform(0, 1.2)) if g.random() < 0.6 else g.uniform(0, 1.2, t)
    avail = None
    u = g.random()
    if u < 0.2:
        avail = g.random(e) < 0.7
    elif u < 0.3:
        avail = g.random((t, e)) < 0.7
    return scores, source, rates, thr, d, system, place, avail


def _compare(seed, *, placement=False, budget=False, deadline=False, init="random"):
    scores, source, rates, thr, d, system, place, avail = _instance(seed, placement=placement, budget=budget)
    t, e = scores.shape
    deadline_s = float(np.random.default_rng(seed + 1).choice([1e-3, 1e-2, 0.1, 1.0, 1e9])) if deadline else None
    fast = jesa(scores, source, rates, thr, d, system=system, rng=seed, placement=place, available=avail,
                deadline_s=deadline_s, init=init)
    slow = ref.jesa_reference(scores, source, rates, check_threshold(thr, t), d, system=system, rng=seed,
                              placement=place, avail=check_available(avail, t, e), deadline_s=deadline_s, init=init)
    _same(fast, slow)
    lb = lower_bound(scores, source, rates, thr, d, system=system, placement=place, available=avail)
    lb_ref = ref.lower_bound_reference(scores, source, rates, check_threshold(thr, t), d, system=system,
                                       placement=place, avail=check_available(avail, t, e))
    _same(lb, lb_ref)
    return fast


@pytest.mark.parametrize("block", range(4))
def test_one_expert_per_node_matches_reference(block):
    for seed in range(block * 500, (block + 1) * 500):
        _compare(seed, init="assignment" if seed % 7 == 0 else "random")


@pytest.mark.parametrize("block", range(3))
def test_placement_matches_reference(block):
    for seed in range(10_000 + block * 400, 10_000 + (block + 1) * 400):
        _compare(seed, placement=True)


def test_node_budget_matches_reference():
    for seed in range(20_000, 20_150):
        _compare(seed, budget=True, placement=seed % 2 == 0)


def test_deadline_several_rbs_matches_reference():
    multi = 0
    for seed in range(30_000, 30_120):
        multi += _compare(seed, deadline=True, placement=seed % 3 == 0).rb_share is not None
    assert multi >= 5  # the multi-RB path was exercised


def test_larger_batches_many_iterations_match_reference():
    """K = 8 nodes x 32 experts-like sizes: many tokens per node, several iterations."""
    for seed in range(12):
        g = np.random.default_rng(seed)
        system = SystemConfig(num_nodes=8, num_subcarriers=64)
        rates = draw_rates(system, g)
        place = np.arange(32) % 8 if seed % 2 else None
        e = 32 if seed % 2 else 8
        scores = g.dirichlet(np.full(e, 0.3), size=120)
        source = g.integers(0, 8, 120)
        thr = 0.9 ** (1 + seed)
        fast = jesa(scores, source, rates, thr, 8, system=system, rng=seed, placement=place)
        slow = ref.jesa_reference(scores, source, rates, np.full(120, thr), 8, system=system, rng=seed,
                                  placement=place)
        _same(fast, slow)
        assert fast.iterations >= 2


def test_bad_input_is_refused_before_the_kernels():
    scores, source, rates, thr, d, system, place, avail = _instance(3)
    bad = scores.copy()
    if bad.size:
        bad[0, 0] = np.nan
        with pytest.raises(ValueError, match="`scores` must not contain NaN"):
            jesa(bad, source, rates, thr, d, system=system)
    with pytest.raises(ValueError, match="`source`"):
        jesa(scores, source + 100, rates, thr, d, system=system) if source.size else jesa(
            np.ones((1, scores.shape[1])), [100], rates, thr, d, system=system)
    with pytest.raises(ValueError, match="`max_experts`"):
        jesa(scores, source, rates, thr, 0, system=system)


def test_enumerate_with_too_many_experts_is_refused_at_the_entry():
    g = np.random.default_rng(0)
    system = SystemConfig(num_nodes=4, num_subcarriers=16)
    rates = draw_rates(system, g)
    scores = g.dirichlet(np.ones(20), size=6)
    place = np.arange(20) % 4
    with pytest.raises(ValueError, match="`method`='enumerate' supports at most 16 experts"):
        jesa(scores, np.arange(6) % 4, rates, 0.5, 2, system=system, placement=place, method="enumerate")


@pytest.mark.parametrize("method", ["enumerate", "milp"])
def test_oracle_methods_match_reference(method):
    for seed in range(40_000, 40_040):
        scores, source, rates, thr, d, system, place, avail = _instance(seed, placement=seed % 2 == 0)
        t, e = scores.shape
        fast = jesa(scores, source, rates, thr, d, system=system, rng=seed, placement=place, available=avail,
                    method=method)
        slow = ref.jesa_reference(scores, source, rates, check_threshold(thr, t), d, system=system, rng=seed,
                                  placement=place, avail=check_available(avail, t, e), method=method)
        _same(fast, slow)
