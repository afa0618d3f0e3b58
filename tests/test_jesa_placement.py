"""JESA, LB, Top-k, H and dense with several experts per node (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.energy import schedule_energy
from dmoe.optimize import jesa, lower_bound
from dmoe.policies import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.placement import contiguous_placement, node_selection, round_robin_placement
from dmoe.system import SystemConfig


def layer(seed, num_tokens=40, num_experts=16, num_nodes=4, subcarriers=16):
    rng = np.random.default_rng(seed)
    system = SystemConfig(num_nodes=num_nodes, num_subcarriers=subcarriers)
    logits = rng.normal(0, 1.5, (num_tokens, num_experts))
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    source = rng.integers(0, num_nodes, num_tokens)
    rates = draw_rates(system, rng)
    return system, scores, source, rates


@pytest.mark.parametrize("seed", range(12))
def test_jesa_with_placement_never_rises_and_bills_match(seed):
    system, scores, source, rates = layer(seed)
    placement = round_robin_placement(16, 4) if seed % 2 else contiguous_placement(16, 4)
    thr = 0.3 + 0.05 * (seed % 8)
    res = jesa(scores, source, rates, thr, 4, system=system, rng=seed, placement=placement)
    hist = np.asarray(res.energy_history)
    assert (np.diff(hist) <= 1e-12 * hist[:-1]).all()
    assert res.tokens.shape == (4, 4) and res.energy_comp_experts.shape == (4,)
    bill = schedule_energy(res.selection, source, res.subcarrier, rates, system, placement=placement)
    assert bill.total == pytest.approx(res.energy, rel=1e-12)
    # demand of (i, n) = tokens from i needing node n
    need = node_selection(res.selection, placement, 4)
    for i in range(4):
        assert (res.tokens[i] == need[source == i].sum(axis=0)).all()
    # every used remote node pair has a subcarrier
    off = ~np.eye(4, dtype=bool)
    assert (res.subcarrier[(res.tokens > 0) & off] >= 0).all()
    # the lower bound is below JESA for feasible tokens
    lb = lower_bound(scores, source, rates, thr, 4, system=system, placement=placement)
    if res.feasible.all() and lb.feasible.all():
        assert lb.energy <= res.energy * (1 + 1e-12)


def test_identity_placement_is_the_paper_model():
    system, scores, source, rates = layer(3, num_experts=6, num_nodes=6, subcarriers=32)
    a = jesa(scores, source, rates, 0.6, 2, system=system, rng=1)
    b = jesa(scores, source, rates, 0.6, 2, system=system, rng=1, placement=np.arange(6))
    np.testing.assert_array_equal(a.selection, b.selection)
    np.testing.assert_array_equal(a.subcarrier, b.subcarrier)
    assert a.energy == pytest.approx(b.energy, rel=1e-12)
    la = lower_bound(scores, source, rates, 0.6, 2, system=system)
    lb = lower_bound(scores, source, rates, 0.6, 2, system=system, placement=np.arange(6))
    assert la.energy == pytest.approx(lb.energy, rel=1e-12)
    for pol in (TopK(2), Dense()):
        sa = pol.schedule(scores, source, rates, 1, system=system)
        sb = pol.schedule(scores, source, rates, 1, system=system, placement=np.arange(6))
        np.testing.assert_array_equal(sa.selection, sb.selection)
        np.testing.assert_array_equal(sa.subcarrier, sb.subcarrier)


@pytest.mark.parametrize("policy", [TopK(4), Homogeneous(0.5, 4), JESAPolicy(0.9, 4), LowerBound(0.9, 4), Dense()])
def test_policies_schedule_with_placement(policy):
    system, scores, source, rates = layer(5)
    placement = round_robin_placement(16, 4)
    sched = policy.schedule(scores, source, rates, 2, system=system, rng=0, placement=placement)
    assert sched.selection.shape == (40, 16)
    bill = schedule_energy(sched.selection, source, sched.subcarrier, rates, system, placement=placement)
    assert np.isfinite(bill.total)


def test_placement_groups_cut_transmissions():
    """Same selection, fewer transmissions when co-selected experts share a node."""
    system, scores, source, rates = layer(8, num_experts=8, num_nodes=4)
    sel = np.zeros((40, 8), dtype=bool)
    sel[:, [0, 1]] = True
    together = node_selection(sel, np.array([0, 0, 1, 1, 2, 2, 3, 3]), 4)
    apart = node_selection(sel, np.array([0, 1, 2, 3, 0, 1, 2, 3]), 4)
    assert together.sum() == 40 and apart.sum() == 80


def test_bad_placement_in_policies():
    system, scores, source, rates = layer(1)
    with pytest.raises(ValueError, match="give a `placement`"):
        jesa(scores, source, rates, 0.5, 2, system=system)
    with pytest.raises(ValueError, match="`placement`"):
        jesa(scores, source, rates, 0.5, 2, system=system, placement=np.zeros(16, dtype=int))
    with pytest.raises(ValueError, match="`placement`"):
        TopK(2).schedule(scores, source, rates, 1, system=system, placement=np.arange(8) % 4)
