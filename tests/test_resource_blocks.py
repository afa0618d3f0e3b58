"""Several resource blocks per link under a deadline (dmoe.optimize.resource_blocks).

Oracles written here, independent of the module: a direct HiGHS MILP (bits on each RB,
on-time rows x / r <= T y) solved lexicographically (links served, then the least deadline
stretch, then energy), and a brute force over every RB -> link map on tiny instances.

The seeded random sweeps check about a thousand (instance, method) pairs against the
oracles in the default run; ``DMOE_RB_SCALE=10`` multiplies every sweep (thousands of
instances per method, minutes).
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from dmoe.optimize import allocate_subcarriers
from dmoe.optimize.feasibility import InvariantError, check_resource_blocks
from dmoe.optimize.resource_blocks import allocate_resource_blocks, relaxed_resource_blocks

P0, BITS = 1e-2, 65536
SCALE = int(os.environ.get("DMOE_RB_SCALE", "1"))


def alloc(rates, demand, deadline=None, budget=None, method="auto", **kw):
    res = allocate_resource_blocks(rates, demand, tx_power_w=P0, bits_per_token=BITS, deadline_s=deadline,
                                   max_rbs_per_node=budget, method=method, **kw)
    check_resource_blocks(res, rates, demand, tx_power_w=P0, bits_per_token=BITS, deadline_s=deadline,
                          max_rbs_per_node=budget, assign_idle=kw.get("assign_idle", False))
    return res


def random_instance(rng, k_max=3, m_max=6, zero_fraction=0.1):
    k = int(rng.integers(2, k_max + 1))
    m = int(rng.integers(1, m_max + 1))
    rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(k, k, m)))
    rates[rng.random((k, k, m)) < zero_fraction] = 0.0
    rates[np.arange(k), np.arange(k)] = 0.0
    demand = rng.integers(0, 4, size=(k, k))
    deadline = [None, 0.3, 0.6, 1.0, 2.0, 5.0][int(rng.integers(0, 6))]
    budget = [None, None, 1, 2, 3][int(rng.integers(0, 5))]
    return rates, demand, deadline, budget


# ------------------------------------------------------------------ independent oracles
def _links(rates, demand):
    k = rates.shape[0]
    return [(i, j) for i in range(k) for j in range(k) if i != j and demand[i, j] > 0]


def _run(c, integ, lb, ub, a, lo, hi):
    return milp(c=c, integrality=integ, bounds=Bounds(lb, ub), constraints=[LinearConstraint(a, lo, hi)],
                options={"mip_rel_gap": 1e-10, "disp": False, "presolve": False})  # HiGHS#3094-like presolve bugs


def oracle(rates, demand, deadline, budget):
    """(links served, least stretch theta, energy [J]) by a direct MILP, lexicographically."""
    k, _, m = rates.shape
    links = _links(rates, demand)
    n = len(links)
    if n == 0:
        return 0, 1.0, 0.0
    r = np.array([rates[i, j] for i, j in links])  # [L, M]
    c = np.array([demand[i, j] * BITS for i, j in links], dtype=float)
    t = np.array([math.inf if deadline is None else deadline] * n)
    usable = (r > 0) & np.isfinite(P0 * c[:, None] / np.where(r > 0, r, 1))
    nodes = np.array([i for i, _ in links])
    # variables: y [L*M] (binary), z [L] (binary); stage A: max sum z
    ny = n * m

    def common(extra_cols):
        rows, lo, hi = [], [], []
        for mm in range(m):  # C3
            row = np.zeros(ny + n + extra_cols)
            row[[l * m + mm for l in range(n)]] = 1
            rows.append(row), lo.append(-np.inf), hi.append(1)
        if budget is not None:
            for node in range(k):
                row = np.zeros(ny + n + extra_cols)
                for l in np.flatnonzero(nodes == node):
                    row[l * m:(l + 1) * m] = 1
                rows.append(row), lo.append(-np.inf), hi.append(budget)
        for l in range(n):
            row = np.zeros(ny + n + extra_cols)  # z_l <= sum_m y_lm
            row[l * m:(l + 1) * m] = -1
            row[ny + l] = 1
            rows.append(row), lo.append(-np.inf), hi.append(0)
            for mm in range(m):  # y <= z
                row = np.zeros(ny + n + extra_cols)
                row[l * m + mm] = 1
                row[ny + l] = -1
                rows.append(row), lo.append(-np.inf), hi.append(0)
        return rows, lo, hi

    ub_y = np.r_[usable.ravel().astype(float), np.ones(n)]
    rows, lo, hi = common(0)
    res = _run(np.r_[np.zeros(ny), -np.ones(n)], np.ones(ny + n), np.zeros(ny + n), ub_y, np.array(rows), lo, hi)
    served = int(round(-res.fun))

    def energy_stage(tt):
        # variables y [L*M], z [L], f [L*M] (share of c_l on RB m)
        nv = 2 * ny + n
        rows, lo, hi = common(ny)
        for l in range(n):
            row = np.zeros(nv)
            row[ny + n + l * m: ny + n + (l + 1) * m] = 1
            row[ny + l] = -1
            rows.append(row), lo.append(0), hi.append(0)  # sum_m f = z
            for mm in range(m):
                row = np.zeros(nv)
                row[ny + n + l * m + mm] = 1
                row[l * m + mm] = -1
                rows.append(row), lo.append(-np.inf), hi.append(0)  # f <= y
                if math.isfinite(tt[l]) and usable[l, mm]:
                    row = np.zeros(nv)  # on-time c f / r <= T y
                    row[ny + n + l * m + mm] = c[l] / r[l, mm] / tt[l]
                    row[l * m + mm] = -1
                    rows.append(row), lo.append(-np.inf), hi.append(0)
        row = np.zeros(nv)
        row[ny:ny + n] = 1
        rows.append(row), lo.append(served), hi.append(served)
        cost = np.zeros(nv)
        cost[ny + n:] = (P0 * c[:, None] / np.where(usable, r, 1.0)).ravel() * usable.ravel()
        scale = cost.max() if cost.max() > 0 else 1.0
        res = _run(cost / scale, np.r_[np.ones(ny + n), np.zeros(ny)], np.zeros(nv),
                   np.r_[ub_y, usable.ravel().astype(float)], np.array(rows), lo, hi)
        return None if res.x is None else res.fun * scale

    e = energy_stage(t)
    if e is not None:
        return served, 1.0, e
    # stage C: max phi, sum_m min(1, r T / c) y >= phi - (1 - z)
    nv = ny + n + 1
    rows, lo, hi = common(1)
    for l in range(n):
        row = np.zeros(nv)
        row[l * m:(l + 1) * m] = np.minimum(1.0, r[l] * t[l] / c[l]) * usable[l]
        row[ny + l] = -1
        row[-1] = -1
        rows.append(row), lo.append(-1), hi.append(np.inf)
    row = np.zeros(nv)
    row[ny:ny + n] = 1
    rows.append(row), lo.append(served), hi.append(served)
    cost = np.zeros(nv)
    cost[-1] = -1
    res = _run(cost, np.r_[np.ones(ny + n), 0], np.zeros(nv), np.r_[ub_y, 1.0], np.array(rows), lo, hi)
    y = res.x[:ny].reshape(n, m) > 0.5
    theta = max(1.0, max(c[l] / (t[l] * r[l, y[l]].sum()) for l in range(n) if y[l].any()))
    return served, theta, energy_stage(t * theta * (1 + 1e-9))


def brute(rates, demand, deadline, budget):
    """(served, theta, energy) over every RB -> link map."""
    links = _links(rates, demand)
    k, _, m = rates.shape
    t = math.inf if deadline is None else deadline
    options = [[-1] + [l for l, (i, j) in enumerate(links) if rates[i, j, mm] > 0] for mm in range(m)]
    rows = []
    for combo in itertools.product(*options):
        sets = [[mm for mm in range(m) if combo[mm] == l] for l in range(len(links))]
        if budget is not None and any(sum(len(s) for l, s in enumerate(sets) if links[l][0] == node) > budget
                                      for node in range(k)):
            continue
        theta = 1.0
        for l, s in enumerate(sets):
            if s and math.isfinite(t):
                i, j = links[l]
                theta = max(theta, demand[i, j] * BITS / (t * sum(rates[i, j, q] for q in s)))
        rows.append((sum(1 for s in sets if s), theta, sets))
    served = max(x[0] for x in rows)
    theta = min(x[1] for x in rows if x[0] == served)
    best = math.inf
    for s_count, th, sets in rows:
        if s_count != served or th > theta * (1 + 1e-9):
            continue
        e = 0.0
        for l, s in enumerate(sets):
            if not s:
                continue
            i, j = links[l]
            rem, tt = demand[i, j] * BITS, t * theta * (1 + 1e-12)
            for rate in sorted((rates[i, j, q] for q in s), reverse=True):
                part = min(rem, rate * tt)
                e += P0 * part / rate
                rem -= part
        best = min(best, e)
    return served, theta, best


def _same(res, ref, rtol=1e-6):
    served, theta, energy = ref
    assert int(res.served.sum()) == served
    assert res.deadline_stretch == pytest.approx(theta, rel=rtol)
    assert res.total_energy == pytest.approx(energy, rel=rtol, abs=1e-300)


# ------------------------------------------------------------------ against the oracles
def test_milp_method_matches_independent_milp():
    rng = np.random.default_rng(1)
    for _ in range(100 * SCALE):
        rates, demand, deadline, budget = random_instance(rng)
        res = alloc(rates, demand, deadline, budget, method="milp")
        assert res.optimal and res.gap <= 1e-9 and res.stretch_bound == res.deadline_stretch
        _same(res, oracle(rates, demand, deadline, budget))


def test_auto_and_greedy_against_independent_milp():
    """auto is exact when it says so; greedy (and auto's greedy) are bounded by the oracle."""
    rng = np.random.default_rng(2)
    exact = total = 0
    for _ in range(200 * SCALE):
        rates, demand, deadline, budget = random_instance(rng, k_max=3, m_max=7)
        ref = oracle(rates, demand, deadline, budget)
        for method in ("auto", "greedy"):
            res = alloc(rates, demand, deadline, budget, method=method)
            served, theta, energy = ref
            assert int(res.served.sum()) == served
            assert res.stretch_bound <= theta * (1 + 1e-6)
            assert res.deadline_stretch >= theta * (1 - 1e-6)
            assert res.lower_bound <= energy * (1 + 1e-6) + 1e-300  # valid at any smaller stretch
            if res.optimal:
                _same(res, ref)
                exact += method == "auto"
            elif res.deadline_stretch == 1.0 and theta == 1.0:
                assert res.total_energy >= energy * (1 - 1e-6)
            total += method == "auto"
    assert exact >= 0.9 * total  # almost every small instance is solved exactly by auto


def test_brute_force_agrees_with_both_oracles():
    rng = np.random.default_rng(3)
    for _ in range(80 * SCALE):
        rates, demand, deadline, budget = random_instance(rng, k_max=3, m_max=4)
        demand[demand > 0] = np.minimum(demand[demand > 0], 2)
        keep = np.argwhere(demand > 0)[3:]
        demand[keep[:, 0], keep[:, 1]] = 0  # at most 3 links: (L + 1)^M maps stay few
        res = alloc(rates, demand, deadline, budget, method="brute")
        ref = brute(rates, demand, deadline, budget)
        _same(res, ref)
        _same(res, oracle(rates, demand, deadline, budget))


# ------------------------------------------------------------------ P3(a) is the loose case
def test_no_or_loose_deadline_is_p3a_exactly():
    rng = np.random.default_rng(4)
    for trial in range(120 * SCALE):
        rates, demand, _, _ = random_instance(rng, k_max=4, m_max=16)
        idle = bool(trial % 2)
        ref = allocate_subcarriers(rates, demand, tx_power_w=P0, bits_per_token=BITS, assign_idle=idle)
        loose = 10.0 * float(ref.energy[ref.served].max(initial=1.0)) / P0 + 1.0  # > every P3(a) air time
        for deadline in (None, loose):
            res = alloc(rates, demand, deadline, assign_idle=idle)
            assert res.method == "assignment" and res.optimal and res.deadline_stretch == 1.0
            assert np.array_equal(res.subcarrier, ref.subcarrier)  # the same RB, idle links too
            assert np.array_equal(res.energy, ref.energy)  # bit for bit
            assert np.array_equal(res.served, ref.served) and np.array_equal(res.unserved, ref.unserved)
            assert (res.num_rbs <= 1).all() and not res.multi_rb
        # the exact MILP finds the same energy (and the same RBs when P3(a)'s optimum is unique)
        res = alloc(rates, demand, None, method="milp")
        assert res.total_energy == pytest.approx(ref.total_energy, rel=1e-9, abs=1e-300)
        assert (res.num_rbs <= 1).all()


def test_tight_deadline_takes_more_rbs_and_energy_by_hand():
    # one link, three RBs of rates 4, 2, 1 Mbit/s, c = 3 Mbit: within T = 0.6 s RB0 carries
    # 2.4 Mbit, RB1 the remaining 0.6 Mbit in 0.3 s; RB2 is not needed
    rates = np.zeros((2, 2, 3))
    rates[0, 1] = [4e6, 2e6, 1e6]
    demand = np.array([[0, 3e6 / BITS], [0, 0]])
    for method in ("auto", "milp", "greedy", "brute"):
        res = alloc(rates, demand, 0.6, method=method)
        assert res.num_rbs[0, 1] == 2 and res.rb_owner.tolist() == [1, 1, -1]
        assert res.total_energy == pytest.approx(P0 * (0.6 + 0.3), rel=1e-12)
        assert res.airtime[0, 1] == pytest.approx(0.6, rel=1e-12) and res.deadline_met.all()
        assert res.rb_share[0, 1].tolist() == pytest.approx([0.8, 0.2, 0.0])
    # with no deadline: RB0 alone, 0.75 s
    res = alloc(rates, demand, None)
    assert res.num_rbs[0, 1] == 1 and res.total_energy == pytest.approx(P0 * 0.75)


def test_tighter_deadlines_use_more_rbs():
    rng = np.random.default_rng(5)
    for _ in range(15 * SCALE):
        k, m = 3, 24
        rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(k, k, m)))
        demand = rng.integers(1, 4, size=(k, k))
        free = alloc(rates, demand)
        t0 = float(free.airtime[free.served].min())
        res = alloc(rates, demand, 0.5 * t0)  # every link misses T on its P3(a) RB
        assert res.num_rbs[res.served].min() >= 2 or res.deadline_stretch > 1.0
        assert res.allocation.any(axis=(0, 1)).sum() > free.allocation.any(axis=(0, 1)).sum()
        assert res.total_energy >= free.total_energy * (1 - 1e-12)  # the deadline costs energy


# ------------------------------------------------------------------ edge cases
def test_one_link_and_exactly_attainable_deadline():
    rates = np.zeros((2, 2, 2))
    rates[0, 1] = [3e6, 1e6]
    demand = np.array([[0, 4e6 / BITS], [0, 0]])
    # c = (3 + 1) Mbit/s * 1 s exactly: both RBs full, the deadline is met without stretch
    for method in ("auto", "milp", "greedy", "brute"):
        res = alloc(rates, demand, 1.0, method=method)
        assert res.deadline_stretch == 1.0 and res.deadline_met.all() and res.num_rbs[0, 1] == 2
        assert res.total_energy == pytest.approx(2 * P0, rel=1e-12)
    # a bit tighter: late, stretched by exactly 1 / 0.9
    for method in ("auto", "milp", "greedy", "brute"):
        res = alloc(rates, demand, 0.9, method=method)
        assert res.deadline_stretch == pytest.approx(1 / 0.9, rel=1e-9)
        assert not res.deadline_met[0, 1] and res.num_late == 1
        assert res.lateness_s[0, 1] == pytest.approx(0.1, rel=1e-6)


def test_as_many_rbs_as_links_and_fewer():
    rng = np.random.default_rng(6)
    rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(3, 3, 6)))
    demand = np.ones((3, 3))
    res = alloc(rates, demand, 1e-3)  # M = 6 = links: each one RB, all late
    assert res.served[~np.eye(3, dtype=bool)].all() and (res.num_rbs[res.served] == 1).all()
    assert res.deadline_stretch > 1 and res.num_late > 0
    res = alloc(rates[:, :, :4], demand, 1.0)  # 4 RBs for 6 links
    assert res.served.sum() == 4 and res.unserved.sum() == 2
    assert np.isinf(res.energy[res.unserved]).all() and not res.deadline_met[res.unserved].any()


def test_zero_rates_and_no_demand():
    rates = np.zeros((3, 3, 4))
    rates[0, 1, 2] = 1e6
    demand = np.zeros((3, 3))
    demand[0, 1] = demand[1, 2] = 2
    res = alloc(rates, demand, 0.1)
    assert res.served[0, 1] and res.unserved[1, 2] and res.rb_owner.tolist() == [-1, -1, 1, -1]
    res = alloc(rates, np.zeros((3, 3)), 0.1)
    assert not res.served.any() and res.total_energy == 0.0 and (res.rb_owner == -1).all()


def test_per_node_budget_and_budget_of_one_rb():
    rng = np.random.default_rng(7)
    for _ in range(20 * SCALE):
        rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(3, 3, 8)))
        demand = rng.integers(0, 4, size=(3, 3))
        for budget in (1, 2):
            res = alloc(rates, demand, 0.5, budget)  # the checker asserts the budget
            per_node = np.bincount(res.rb_owner[res.rb_owner >= 0] // 3, minlength=3)
            assert per_node.max(initial=0) <= budget
            if budget == 1:  # one RB per node: at most one served link per node
                assert (res.served.sum(axis=1) <= 1).all() and (res.num_rbs <= 1).all()


def test_deadline_so_tight_nothing_meets_it():
    rng = np.random.default_rng(8)
    rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(3, 3, 5)))
    demand = np.full((3, 3), 3)
    for method in ("auto", "milp", "greedy"):
        res = alloc(rates, demand, 1e-6, method=method)
        assert res.num_late == res.served.sum() > 0 and not res.deadline_met[res.served].any()
        assert res.deadline_stretch > 1e3 and (res.lateness_s[res.served] > 0).all()
        assert np.isfinite(res.energy[res.served]).all() and not np.isnan(res.lateness_s).any()


def test_per_link_deadlines():
    rates = np.zeros((2, 2, 3))
    rates[0, 1] = rates[1, 0] = [2e6, 2e6, 2e6]
    demand = np.array([[0, 2e6 / BITS], [2e6 / BITS, 0]])
    deadline = np.array([[np.inf, 0.5], [2.0, np.inf]])  # 0 -> 1 needs two RBs, 1 -> 0 one
    res = alloc(rates, demand, deadline, method="milp")
    assert res.num_rbs[0, 1] == 2 and res.num_rbs[1, 0] == 1 and res.deadline_met.all()
    assert res.deadline_s[0, 1] == 0.5 and res.deadline_s[1, 0] == 2.0


def test_relaxed_blocks_ignore_c3_and_bound_each_link():
    rng = np.random.default_rng(9)
    for _ in range(10 * SCALE):
        rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(3, 3, 6)))
        demand = rng.integers(1, 4, size=(3, 3))
        exclusive = alloc(rates, demand, 0.4)
        sub, share = relaxed_resource_blocks(rates, demand, tx_power_w=P0, bits_per_token=BITS, deadline_s=0.4)
        with np.errstate(divide="ignore", invalid="ignore"):
            on = np.where(share > 0, demand[:, :, None] * BITS * share / rates, 0.0).sum(axis=2)
        done = exclusive.served & exclusive.deadline_met
        assert (P0 * on[done] <= exclusive.energy[done] * (1 + 1e-9)).all()
        assert np.allclose(share.sum(axis=2)[~np.eye(3, dtype=bool)], 1.0)


# ------------------------------------------------------------------ the shared checker bites
def test_checker_rejects_broken_results():
    rng = np.random.default_rng(10)
    rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(3, 3, 6)))
    demand = np.full((3, 3), 2)
    res = alloc(rates, demand, 0.3)
    share = res.rb_share.copy()
    m = int(np.flatnonzero(res.rb_owner >= 0)[0])
    owner = int(res.rb_owner[m])
    other = (owner + 1) % 9 if (owner + 1) % 4 else (owner + 2) % 9
    share[other // 3, other % 3, m] = 1e-3  # the RB now carries two links
    import dataclasses

    for bad in (
        dataclasses.replace(res, rb_share=share),
        dataclasses.replace(res, energy=res.energy * (1 + 1e-6)),
        dataclasses.replace(res, lower_bound=res.total_energy * 1.01),
    ):
        with pytest.raises(InvariantError):
            check_resource_blocks(bad, rates, demand, tx_power_w=P0, bits_per_token=BITS, deadline_s=0.3)
    with pytest.raises(InvariantError, match="budget"):
        check_resource_blocks(res, rates, demand, tx_power_w=P0, bits_per_token=BITS, deadline_s=0.3,
                              max_rbs_per_node=1)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rates": "nan"}, "`rates`"),
        ({"rates": "neg"}, "`rates`"),
        ({"rates": "shape"}, "`rates`"),
        ({"demand": "nan"}, "`demand`"),
        ({"demand": "neg"}, "`demand`"),
        ({"demand": "shape"}, "`demand`"),
        ({"deadline_s": 0.0}, "`deadline_s`"),
        ({"deadline_s": -1.0}, "`deadline_s`"),
        ({"deadline_s": float("nan")}, "`deadline_s`"),
        ({"deadline_s": np.ones((3, 3))}, "`deadline_s`"),
        ({"deadline_s": True}, "`deadline_s`"),
        ({"max_rbs_per_node": 0}, "`max_rbs_per_node`"),
        ({"max_rbs_per_node": 1.5}, "`max_rbs_per_node`"),
        ({"method": "exact"}, "`method`"),
        ({"tx_power_w": 0.0}, "`tx_power_w`"),
        ({"bits_per_token": -1}, "`bits_per_token`"),
        ({"time_limit_s": 0.0}, "`time_limit_s`"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    rates = np.full((2, 2, 3), 1e6)
    demand = np.ones((2, 2))
    args = {"rates": rates, "demand": demand, "tx_power_w": P0, "bits_per_token": BITS}
    special = {
        "rates": {"nan": np.where(np.arange(3) == 1, np.nan, rates), "neg": -rates, "shape": rates[0]},
        "demand": {"nan": np.full((2, 2), np.nan), "neg": -demand, "shape": np.ones(2)},
    }
    for key, value in kwargs.items():
        args[key] = special[key][value] if isinstance(value, str) and key in special else value
    rates_arg, demand_arg = args.pop("rates"), args.pop("demand")
    with pytest.raises((ValueError, TypeError), match=match):
        allocate_resource_blocks(rates_arg, demand_arg, **args)


def test_brute_refuses_large_instances():
    rates = np.full((3, 3, 12), 1e6)
    with pytest.raises(ValueError, match="`method` 'brute'"):
        allocate_resource_blocks(rates, np.ones((3, 3)), tx_power_w=P0, bits_per_token=BITS, method="brute")
