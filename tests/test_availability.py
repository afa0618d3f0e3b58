"""Solvers and policies with unavailable experts (failed nodes, issue 9).

Exactness on the remaining experts is checked against independent oracles: the same
problem with the unavailable experts' columns removed, solved by brute-force enumeration
and by HiGHS.
"""

from __future__ import annotations

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.energy import token_costs
from dmoe.optimize import jesa, lower_bound, select_experts
from dmoe.policies import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.policies.layerwise import DESPolicy, LayerwiseQoS
from dmoe.optimize.selection import SCORE_TOL
from dmoe.system import SystemConfig


def _instance(seed, t=40, k=6):
    rng = np.random.default_rng(seed)
    scores = rng.dirichlet(np.full(k, 0.7), size=t)
    costs = rng.uniform(1e-3, 1e-2, size=(t, k))
    thr = rng.uniform(0.2, 0.95, size=t)
    d = int(rng.integers(1, 4))
    mask = rng.random(k) < 0.6
    if not mask.any():
        mask[rng.integers(k)] = True
    return scores, costs, thr, d, mask


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("method", ["des", "enumerate", "milp"])
def test_select_experts_exact_on_remaining_experts(seed, method):
    scores, costs, thr, d, mask = _instance(seed)
    res = select_experts(scores, costs, thr, d, method=method, available=mask)
    assert not res.selection[:, ~mask].any()
    # oracles: the reduced problem (unavailable columns removed), brute force and HiGHS
    for oracle in ("enumerate", "milp"):
        ref = select_experts(scores[:, mask], costs[:, mask], thr, d, method=oracle)
        np.testing.assert_array_equal(res.feasible, ref.feasible)
        ok = res.feasible
        np.testing.assert_allclose(res.energy[ok], ref.energy[ok], rtol=1e-12, atol=1e-15)
    # feasible tokens meet C1 and C2; infeasible ones take the Top-D remaining experts
    sums = (scores * res.selection).sum(axis=1)
    assert np.all(sums[res.feasible] >= thr[res.feasible] - SCORE_TOL)
    assert np.all(res.selection.sum(axis=1) <= d)
    for t in np.flatnonzero(~res.feasible):
        elig = np.flatnonzero(mask & (scores[t] > 0))
        best = elig[np.argsort(-scores[t, elig], kind="stable")][:d]
        assert set(np.flatnonzero(res.selection[t])) == set(best.tolist())


def test_per_token_availability_equals_infinite_cost():
    scores, costs, thr, d, _ = _instance(7)
    rng = np.random.default_rng(1)
    mask = rng.random(scores.shape) < 0.7
    a = select_experts(scores, costs, thr, d, method="des", available=mask)
    b = select_experts(scores, np.where(mask, costs, np.inf), thr, d, method="des")
    np.testing.assert_array_equal(a.selection, b.selection)


def test_available_validation():
    scores, costs, thr, d, mask = _instance(0)
    with pytest.raises(TypeError, match="`available`"):
        select_experts(scores, costs, thr, d, available=mask.astype(int))
    with pytest.raises(ValueError, match="`available`"):
        select_experts(scores, costs, thr, d, available=mask[:-1])
    with pytest.raises(ValueError, match="`available`"):
        select_experts(scores, costs, thr, d, available=np.ones((2, 2, 2), dtype=bool))


SYSTEM = SystemConfig(num_nodes=5, num_subcarriers=20)


def _round(seed, t=30):
    rng = np.random.default_rng(seed)
    k = SYSTEM.num_nodes
    mask = rng.random(k) < 0.7
    mask[rng.integers(k)] = True
    alive = np.flatnonzero(mask)
    scores = rng.dirichlet(np.ones(k), size=t)
    source = rng.choice(alive, size=t)  # tokens are hosted on live nodes only
    return scores, source, draw_rates(SYSTEM, rng), mask


@pytest.mark.parametrize("seed", range(12))
def test_jesa_selection_steps_exact_on_remaining_experts(seed):
    scores, source, rates, mask = _round(seed)
    res = jesa(scores, source, rates, 0.8, 2, system=SYSTEM, rng=seed, available=mask)
    assert not res.selection[:, ~mask].any()
    # the final selection is the exact P1(a) optimum for the final subcarriers' costs
    costs = token_costs(res.link_rate, SYSTEM)[source][:, mask]
    ref = select_experts(scores[:, mask], costs, 0.8, 2, method="milp")
    np.testing.assert_array_equal(res.feasible, ref.feasible)
    energy = np.where(res.selection[:, mask], costs, 0.0).sum(axis=1)
    np.testing.assert_allclose(energy[res.feasible], ref.energy[res.feasible], rtol=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_lower_bound_equals_reduced_problem(seed):
    scores, source, rates, mask = _round(seed)
    res = lower_bound(scores, source, rates, 0.7, 2, system=SYSTEM, available=mask)
    # the reduced system: only the live nodes, sources renumbered
    alive = np.flatnonzero(mask)
    renum = -np.ones(SYSTEM.num_nodes, dtype=int)
    renum[alive] = np.arange(alive.size)
    a = SYSTEM.comp_energy_per_token_j[alive]
    small = SystemConfig(num_nodes=alive.size, num_subcarriers=SYSTEM.num_subcarriers, comp_energy_per_token=tuple(a))
    ref = lower_bound(
        scores[:, alive], renum[source], rates[np.ix_(alive, alive)], 0.7, 2, system=small, method="enumerate"
    )
    np.testing.assert_array_equal(res.selection[:, alive], ref.selection)
    assert not res.selection[:, ~mask].any()
    assert res.energy == pytest.approx(ref.energy, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "policy",
    [Dense(), TopK(1), TopK(2), Homogeneous(0.6, 2), JESAPolicy(0.9, 2), LowerBound(0.9, 2), DESPolicy(0.9, 2),
     LayerwiseQoS([0.5, 0.7], 2)],
    ids=lambda p: p.name,
)
def test_every_policy_respects_availability(policy, seed):
    scores, source, rates, mask = _round(seed)
    sched = policy.schedule(scores, source, rates, 2, system=SYSTEM, rng=seed, available=mask)
    assert not sched.selection[:, ~mask].any()
    assert sched.selection.any(axis=1).all()  # every token still reaches some live expert
    if isinstance(policy, Dense):
        assert (sched.selection == mask).all()
        assert sched.feasible.all() == mask.all()
    if isinstance(policy, TopK):
        k = min(policy.k, int(mask.sum()))
        key = np.where(mask, scores, -np.inf)
        top = np.argsort(-key, axis=1, kind="stable")[:, :k]
        served = sched.selection.sum(axis=1) == k
        # tokens whose links were all served got exactly their k best live experts
        rows = np.flatnonzero(served)
        assert all(set(top[r]) == set(np.flatnonzero(sched.selection[r])) for r in rows)
    # all-available mask changes nothing
    full = policy.schedule(scores, source, rates, 2, system=SYSTEM, rng=seed)
    same = policy.schedule(scores, source, rates, 2, system=SYSTEM, rng=seed, available=np.ones(5, dtype=bool))
    np.testing.assert_array_equal(full.selection, same.selection)
    np.testing.assert_array_equal(full.subcarrier, same.subcarrier)
