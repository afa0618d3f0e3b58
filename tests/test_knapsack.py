"""Multiple-choice knapsack over layers (issue 11): exact against brute force and HiGHS."""

from __future__ import annotations

import numpy as np
import pytest

from dmoe.optimize._knapsack import pareto_front_mckp, solve_mckp


def _case(rng, n, v, ties):
    if ties:  # small integers: many exact ties between allocations
        loss = rng.integers(0, 4, (n, v)).astype(float)
        energy = rng.integers(0, 4, (n, v)).astype(float)
    else:
        loss = rng.exponential(1.0, (n, v)) * (rng.random((n, v)) < 0.9)
        energy = rng.exponential(1.0, (n, v))
        if rng.random() < 0.2:
            loss = loss - 0.5  # negative losses (an NLL increase may be negative)
    return loss, energy


@pytest.mark.parametrize("kind", ["loss", "energy"])
def test_pareto_dp_equals_brute_force_on_thousands_of_cases(kind):
    rng = np.random.default_rng(11)
    infeasible = 0
    for case in range(2500):
        n, v = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        loss, energy = _case(rng, n, v, ties=case % 3 == 0)
        con = loss if kind == "loss" else energy
        low, high = con.min(1).sum(), con.max(1).sum()
        budget = float(rng.uniform(low - 0.3 * (high - low + 1), high + 0.1))
        if case % 7 == 0:
            budget = float(low)  # exactly the least achievable sum (boundary)
        a = solve_mckp(loss, energy, budget, kind=kind, method="pareto")
        b = solve_mckp(loss, energy, budget, kind=kind, method="brute")
        assert a.feasible == b.feasible, case
        assert a.loss == b.loss and a.energy == b.energy, (case, a, b)
        infeasible += not a.feasible
        # the returned levels really give the returned sums, and meet the budget when feasible
        idx = np.arange(n)
        assert np.isclose(loss[idx, a.levels].sum(), a.loss) and np.isclose(energy[idx, a.levels].sum(), a.energy)
        if a.feasible:
            assert (a.loss if kind == "loss" else a.energy) <= budget
    assert 50 < infeasible < 2000  # both branches exercised


@pytest.mark.parametrize("kind", ["loss", "energy"])
def test_pareto_dp_equals_highs_milp_on_larger_cases(kind):
    rng = np.random.default_rng(5)
    for case in range(60):
        n, v = int(rng.integers(4, 13)), int(rng.integers(2, 6))
        loss, energy = _case(rng, n, v, ties=False)
        con = loss if kind == "loss" else energy
        budget = float(rng.uniform(con.min(1).sum(), con.max(1).sum()))
        a = solve_mckp(loss, energy, budget, kind=kind, method="pareto")
        b = solve_mckp(loss, energy, budget, kind=kind, method="milp")
        assert a.feasible and b.feasible
        obj_a, obj_b = (a.energy, b.energy) if kind == "loss" else (a.loss, b.loss)
        # HiGHS is exact up to its 1e-7 feasibility tolerance
        assert obj_a == pytest.approx(obj_b, rel=1e-9, abs=1e-6), case


def test_front_is_exactly_the_non_dominated_set():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n, v = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        loss, energy = _case(rng, n, v, ties=bool(rng.integers(2)))
        fl, fe, levels = pareto_front_mckp(loss, energy)
        assert np.all(np.diff(fl) > 0) and np.all(np.diff(fe) < 0)
        grids = np.array(np.meshgrid(*[np.arange(v)] * n, indexing="ij")).reshape(n, -1).T
        al = loss[np.arange(n), grids].sum(1)
        ae = energy[np.arange(n), grids].sum(1)
        for x, y in zip(al, ae):  # every allocation is weakly dominated by a front point
            assert np.any((fl <= x + 1e-12) & (fe <= y + 1e-12))
        for x, y, lv in zip(fl, fe, levels):  # no front point is strictly dominated
            assert not np.any((al <= x) & (ae <= y) & ((al < x) | (ae < y)))
            assert np.isclose(loss[np.arange(n), lv].sum(), x)


def test_infeasible_budget_returns_nearest_feasible_allocation():
    loss = np.array([[1.0, 3.0], [2.0, 5.0]])
    energy = np.array([[4.0, 1.0], [3.0, 1.0]])
    res = solve_mckp(loss, energy, 2.0, kind="loss")
    assert not res.feasible and res.loss == 3.0 and list(res.levels) == [0, 0]
    assert "cannot be met" in res.message and "`budget`" in res.message
    res = solve_mckp(loss, energy, 1.0, kind="energy")
    assert not res.feasible and res.energy == 2.0 and list(res.levels) == [1, 1]
    res = solve_mckp(loss, energy, 6.0, kind="loss")
    assert res.feasible and res.energy == 4.0  # levels [1, 0]: loss 3+2 = 5 <= 6, energy 1+3
    for method in ("milp", "brute"):
        other = solve_mckp(loss, energy, 2.0, kind="loss", method=method)
        assert not other.feasible and other.loss == 3.0


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"loss": [[np.nan, 1.0]], "energy": [[1.0, 1.0]], "budget": 1.0}, "`loss`"),
        ({"loss": [[1.0, 1.0]], "energy": [[1.0]], "budget": 1.0}, "same shape"),
        ({"loss": [1.0, 1.0], "energy": [1.0, 1.0], "budget": 1.0}, "2-D"),
        ({"loss": [[1.0]], "energy": [[1.0]], "budget": float("inf")}, "`budget`"),
        ({"loss": [[1.0]], "energy": [[1.0]], "budget": 1.0, "kind": "time"}, "`kind`"),
        ({"loss": [[1.0]], "energy": [[1.0]], "budget": 1.0, "method": "dp"}, "`method`"),
        ({"loss": np.ones((30, 5)), "energy": np.ones((30, 5)), "budget": 1.0, "method": "brute"}, "brute"),
    ],
)
def test_bad_input_names_the_argument(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        solve_mckp(**kwargs)


def test_thirty_layers_five_levels_is_fast_and_exact_against_milp():
    rng = np.random.default_rng(0)
    loss = np.sort(rng.exponential(0.1, (30, 5)), axis=1)[:, ::-1].copy()  # lower levels lose more
    energy = np.sort(rng.uniform(0.001, 0.01, (30, 5)), axis=1)
    for budget in (loss.min(1).sum() + 0.05, loss.min(1).sum() + 0.5, loss.max(1).sum()):
        a = solve_mckp(loss, energy, budget)
        b = solve_mckp(loss, energy, budget, method="milp")
        assert a.energy == pytest.approx(b.energy, rel=1e-9)
