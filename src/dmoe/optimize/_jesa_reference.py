"""Reference JESA and lower bound: Algorithm 2 written plainly (the oracle of the fast path).

A frozen copy of :func:`dmoe.optimize.jesa.jesa`, :func:`~dmoe.optimize.jesa.lower_bound`
and P3(a) (:func:`dmoe.optimize.subcarrier.allocate_subcarriers`) as they were before the
speed work of issue 18: every iteration recomputes the per-token costs, calls the public
:func:`~dmoe.optimize.selection.select_experts` (validated, canonical) and rebuilds both
assignment problems from scratch. The fast path must return the same schedules (selection,
subcarriers, RB shares, feasibility, iterations, stop reason) and the same energies, bit
for bit; ``tests/test_jesa_fast.py`` and ``benchmarks/bench_jesa_round.py`` check it.
Inputs are the validated ones of :func:`dmoe.optimize.jesa._prepare` (no checks here).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from dmoe.rng import as_generator
from dmoe.energy import (
    computation_energy,
    expert_comp_energy,
    link_rate_from_subcarriers,
    link_rates_from_allocation,
    link_token_counts,
    node_computation_energy,
    token_costs,
    transmission_costs,
)
from dmoe.latency import air_time_budget
from dmoe.optimize._validation import mask_costs
from dmoe.optimize.resource_blocks import allocate_resource_blocks
from dmoe.optimize.selection import select_experts
from dmoe.optimize.subcarrier import SubcarrierResult

__all__ = ["allocate_subcarriers_reference", "jesa_reference", "lower_bound_reference"]

_RISE_RTOL = 1e-12


def _assign_links(weight, usable):
    n, m = weight.shape
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0 or not usable.any():
        return out
    scale = float(np.max(weight, where=usable, initial=0.0))
    scale = scale if scale > 0 and np.isfinite(scale) else 1.0
    with np.errstate(invalid="ignore"):
        cost = weight / scale
    if not usable.all():
        cost[~usable] = float(n + 1)
    rows, cols = linear_sum_assignment(cost)
    keep = usable[rows, cols]
    out[rows[keep]] = cols[keep]
    return out


def allocate_subcarriers_reference(rates, demand, p0, bits, assign_idle=False) -> SubcarrierResult:
    """P3(a) as :func:`~dmoe.optimize.subcarrier.allocate_subcarriers` (validated inputs)."""
    k, _, m = rates.shape
    demand = np.asarray(demand, dtype=np.float64)
    off = ~np.eye(k, dtype=bool)
    active = off & (demand > 0)
    subcarrier = np.full((k, k), -1, dtype=np.int64)
    act = np.argwhere(active)
    if act.size:
        r_act = rates[act[:, 0], act[:, 1], :]
        s = demand[act[:, 0], act[:, 1]]
        with np.errstate(divide="ignore", over="ignore"):
            weight = (p0 * bits * s)[:, None] / r_act
        usable = (r_act > 0) & np.isfinite(weight)
        subcarrier[act[:, 0], act[:, 1]] = _assign_links(weight, usable)
    if assign_idle:
        idle = np.argwhere(off & ~active)
        taken = np.zeros(m, dtype=bool)
        taken[subcarrier[subcarrier >= 0]] = True
        free = np.flatnonzero(~taken)
        if idle.size and free.size:
            r_idle = rates[idle[:, 0], idle[:, 1], :][:, free]
            with np.errstate(divide="ignore", over="ignore"):
                weight = (p0 * bits) / r_idle
            usable = (r_idle > 0) & np.isfinite(weight)
            cols = _assign_links(weight, usable)
            got = cols >= 0
            subcarrier[idle[got, 0], idle[got, 1]] = free[cols[got]]
    i, j = np.indices((k, k))
    link_rate = np.where(subcarrier >= 0, rates[i, j, np.maximum(subcarrier, 0)], 0.0)
    served = active & (subcarrier >= 0)
    unserved = active & (subcarrier < 0)
    with np.errstate(divide="ignore", over="ignore"):
        energy = np.where(served, p0 * bits * demand / np.where(served, link_rate, 1.0), 0.0)
    energy[unserved] = np.inf
    return SubcarrierResult(subcarrier, energy, served, unserved, link_rate)


def _select(scores, source, link_rate, thr, d, system, method, placement, avail=None):
    k = system.num_nodes
    if placement is None:
        costs = mask_costs(token_costs(link_rate, system)[source], avail)
        res = select_experts(scores, costs, thr, d, method=method)
        demand = link_token_counts(res.selection, source, k)
        return res, demand, computation_energy(demand, system)
    from dmoe.placement import node_selection

    node_costs = transmission_costs(link_rate, system)[source]
    a_exp = expert_comp_energy(system, placement)
    if avail is not None:
        a_exp = mask_costs(np.broadcast_to(a_exp, avail.shape), avail)
    res = select_experts(scores, a_exp, thr, d, placement=placement, node_costs=node_costs, method=method)
    demand = link_token_counts(node_selection(res.selection, placement, k), source, k)
    return res, demand, node_computation_energy(res.selection, placement, system)


def _node_load(selection, placement, num_nodes):
    if placement is None:
        return None
    calls = np.asarray(selection, dtype=bool).sum(axis=0).astype(np.float64)
    return np.bincount(placement, weights=calls, minlength=num_nodes) * (num_nodes / placement.shape[0])


def _same_share(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def _within_budget(beta, budget, gen):
    beta = beta.copy()
    for i in range(beta.shape[0]):
        links = np.flatnonzero(beta[i] >= 0)
        if links.size > budget:
            beta[i, gen.permutation(links)[budget:]] = -1
    return beta


def _random_subcarriers(k, m, gen):
    off = np.argwhere(~np.eye(k, dtype=bool))
    n = min(off.shape[0], m)
    links = gen.permutation(off.shape[0])[:n]
    subs = gen.permutation(m)[:n]
    beta = np.full((k, k), -1, dtype=np.int64)
    beta[off[links, 0], off[links, 1]] = subs
    return beta


def jesa_reference(scores, source, rates, thr, d, *, system, max_iterations=20, rng=None, method="auto",
                   init="random", placement=None, avail=None, deadline_s=None):
    """Algorithm 2 as :func:`dmoe.optimize.jesa.jesa` did before issue 18 (validated inputs:
    ``thr`` ``[T]``, ``avail`` ``[T, E]`` bool or None). Returns a
    :class:`~dmoe.optimize.jesa.JESAResult`."""
    from dmoe.optimize.jesa import JESAResult

    k, _, m = rates.shape
    p0, bits = system.tx_power_w, system.bits_per_token
    budget = system.max_rbs_per_node
    use_rb = deadline_s is not None or budget is not None

    def allocate(demand, selection):
        if not use_rb:
            return allocate_subcarriers_reference(rates, demand, p0, bits, assign_idle=True)
        air = None
        if deadline_s is not None:
            air = air_time_budget(demand, deadline_s, system, load=_node_load(selection, placement, k))
        return allocate_resource_blocks(rates, demand, tx_power_w=p0, bits_per_token=bits, deadline_s=air,
                                        max_rbs_per_node=budget, assign_idle=True)

    if init == "random":
        gen = as_generator(rng)
        beta = _random_subcarriers(k, m, gen)
        if budget is not None:
            beta = _within_budget(beta, budget, gen)
    else:
        ones = (~np.eye(k, dtype=bool)).astype(np.float64)
        if use_rb:
            beta = allocate_resource_blocks(rates, ones, tx_power_w=p0, bits_per_token=bits, max_rbs_per_node=budget,
                                            assign_idle=True).subcarrier
        else:
            beta = allocate_subcarriers_reference(rates, ones, p0, bits, assign_idle=True).subcarrier
    share = None
    prev_sel = None
    history = []
    state = None
    iterations = 0
    stop_reason = "max_iterations"
    for it in range(1, max_iterations + 1):
        iterations = it
        if share is None:
            link_rate = link_rate_from_subcarriers(rates, beta)
        else:
            link_rate = link_rates_from_allocation(rates, beta, share)[0]
        res, demand, comp = _select(scores, source, link_rate, thr, d, system, method, placement, avail)
        alloc = allocate(demand, res.selection)
        new_share = alloc.rb_share if use_rb and alloc.multi_rb else None
        objective = float(alloc.energy[alloc.served].sum() + comp.sum())
        if history and objective > history[-1] * (1.0 + _RISE_RTOL):
            stop_reason = "objective_increase"
            iterations = it - 1
            break
        fixed = (prev_sel is not None and np.array_equal(res.selection, prev_sel)
                 and np.array_equal(alloc.subcarrier, beta) and _same_share(new_share, share))
        state = (res, alloc, demand, comp)
        history.append(objective)
        prev_sel = res.selection
        beta = alloc.subcarrier
        share = new_share
        if fixed:
            stop_reason = "converged"
            break
    res, alloc, demand, comp = state
    comm_links = np.where(alloc.served, alloc.energy, 0.0)
    rb_info = None
    if use_rb:
        rb_info = {
            "late_links": alloc.num_late,
            "deadline_stretch": alloc.deadline_stretch,
            "gap": alloc.gap,
            "method": alloc.method,
            "multi_rb_links": int(np.count_nonzero(alloc.num_rbs > 1)),
            "rbs_used": int(np.count_nonzero(alloc.rb_share.sum(axis=(0, 1)) > 0)),
        }
    return JESAResult(
        selection=res.selection, subcarrier=alloc.subcarrier, link_rate=alloc.link_rate, tokens=demand,
        energy_comm=float(comm_links.sum()), energy_comm_links=comm_links, energy_comp=float(comp.sum()),
        energy_comp_experts=comp, iterations=iterations, converged=stop_reason == "converged",
        stop_reason=stop_reason, feasible=res.feasible, energy_history=history, threshold=thr,
        rb_share=alloc.rb_share if use_rb and alloc.multi_rb else None, rb_info=rb_info,
    )


def lower_bound_reference(scores, source, rates, thr, d, *, system, method="auto", placement=None, avail=None):
    """LB(gamma0, D) as :func:`dmoe.optimize.jesa.lower_bound` did before issue 18
    (validated inputs). Returns a :class:`~dmoe.optimize.jesa.LowerBoundResult`."""
    from dmoe.optimize.jesa import LowerBoundResult

    k = rates.shape[0]
    off = ~np.eye(k, dtype=bool)
    best = np.argmax(rates, axis=2)
    best_rate = np.where(off, np.max(rates, axis=2), 0.0)
    subcarrier = np.where(off & (best_rate > 0), best, -1).astype(np.int64)
    best_rate = np.where(subcarrier >= 0, best_rate, 0.0)
    res, demand, comp = _select(scores, source, best_rate, thr, d, system, method, placement, avail)
    loaded = off & (demand > 0)
    with np.errstate(divide="ignore"):
        comm_links = np.where(
            loaded, system.tx_power_w * system.bits_per_token * demand / np.where(loaded, best_rate, 1.0), 0.0
        )
    return LowerBoundResult(
        selection=res.selection, subcarrier=subcarrier, link_rate=best_rate, tokens=demand,
        energy_comm=float(comm_links.sum()), energy_comm_links=comm_links, energy_comp=float(comp.sum()),
        energy_comp_experts=comp, feasible=res.feasible, threshold=thr,
    )
