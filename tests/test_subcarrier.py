"""allocate_subcarriers (P3(a), Appendix B): optimality by enumeration, edge cases."""

import itertools

import numpy as np
import pytest

from dmoe.optimize import allocate_subcarriers
from dmoe.optimize.feasibility import check_subcarrier_allocation

P0, BITS = 1e-2, 65536


def alloc(rates, demand, **kw):
    res = allocate_subcarriers(rates, demand, tx_power_w=P0, bits_per_token=BITS, **kw)
    check_subcarrier_allocation(res, rates, demand, tx_power_w=P0, bits_per_token=BITS, assign_idle=kw.get("assign_idle", False))
    return res


def brute_force(rates, demand):
    """Best (max served, then min energy) over all partial injective assignments."""
    k, _, m = rates.shape
    links = [(i, j) for i in range(k) for j in range(k) if i != j and demand[i, j] > 0]
    best = (-1, np.inf)
    options = [[-1] + [s for s in range(m) if rates[i, j, s] > 0] for i, j in links]
    for combo in itertools.product(*options):
        used = [s for s in combo if s >= 0]
        if len(set(used)) != len(used):
            continue
        served = len(used)
        energy = sum(P0 * BITS * demand[i, j] / rates[i, j, s] for (i, j), s in zip(links, combo) if s >= 0)
        if served > best[0] or (served == best[0] and energy < best[1] - 1e-15 * abs(energy)):
            best = (served, energy)
    return best


def random_rates(rng, k, m, zero_fraction=0.0):
    rates = 1e6 * np.log2(1 + 10 * rng.exponential(1e-2, size=(k, k, m)))
    rates[rng.random((k, k, m)) < zero_fraction] = 0.0
    rates[np.arange(k), np.arange(k)] = 0.0
    return rates


def test_optimal_against_enumeration_tiny():
    rng = np.random.default_rng(0)
    for trial in range(60):
        k = 2 if trial % 2 else 3
        m = int(rng.integers(1, 5))
        rates = random_rates(rng, k, m, zero_fraction=0.25 if trial % 3 == 0 else 0.0)
        demand = rng.integers(0, 3, size=(k, k))
        # keep the brute force small: at most 3 active links
        off = np.argwhere(~np.eye(k, dtype=bool) & (demand > 0))
        for i, j in off[3:]:
            demand[i, j] = 0
        res = alloc(rates, demand)
        served, energy = brute_force(rates, demand)
        assert res.served.sum() == served
        assert res.total_energy == pytest.approx(energy, rel=1e-9, abs=1e-300)


def test_more_links_than_subcarriers_serves_m_links_min_energy():
    rng = np.random.default_rng(1)
    k, m = 3, 2  # 6 links, 2 subcarriers
    rates = random_rates(rng, k, m)
    demand = np.ones((k, k), dtype=int)
    res = alloc(rates, demand)
    assert res.served.sum() == m and res.unserved.sum() == 6 - m
    assert np.isinf(res.energy[res.unserved]).all()
    served, energy = brute_force(rates, demand)
    assert res.total_energy == pytest.approx(energy)


def test_link_with_zero_rate_everywhere_gets_nothing():
    rng = np.random.default_rng(2)
    rates = random_rates(rng, 3, 4)
    rates[0, 1, :] = 0.0
    demand = np.zeros((3, 3))
    demand[0, 1] = 5
    demand[1, 2] = 1
    res = alloc(rates, demand)
    assert res.subcarrier[0, 1] == -1 and res.unserved[0, 1] and np.isinf(res.energy[0, 1])
    assert res.served[1, 2] and res.link_rate[1, 2] == rates[1, 2].max()


def test_zero_rate_pair_never_chosen_even_if_only_option_left():
    # two links, two subcarriers; link A only works on subcarrier 0, link B on both
    rates = np.zeros((2, 2, 2))
    rates[0, 1] = [1e5, 0.0]
    rates[1, 0] = [1e6, 1e3]
    res = alloc(rates, np.array([[0, 1], [1, 0]]))
    assert res.subcarrier[0, 1] == 0 and res.subcarrier[1, 0] == 1  # serve both over cheaper B
    assert res.served[0, 1] and res.served[1, 0]


def test_one_best_subcarrier_each_when_distinct():
    rng = np.random.default_rng(3)
    rates = random_rates(rng, 4, 256)
    demand = np.ones((4, 4))
    res = alloc(rates, demand)
    best = rates.argmax(axis=2)
    off = ~np.eye(4, dtype=bool)
    if len(set(best[off].tolist())) == off.sum():  # Theorem 1 event: all maxima distinct
        np.testing.assert_array_equal(res.subcarrier[off], best[off])


def test_diagonal_ignored():
    rng = np.random.default_rng(4)
    rates = random_rates(rng, 3, 4)
    demand = rng.integers(0, 3, size=(3, 3)).astype(float)
    a = alloc(rates, demand)
    rates2 = rates.copy()
    rates2[np.arange(3), np.arange(3)] = np.nan
    demand2 = demand.copy()
    demand2[np.arange(3), np.arange(3)] = 1e9
    b = allocate_subcarriers(rates2, demand2, tx_power_w=P0, bits_per_token=BITS)
    np.testing.assert_array_equal(a.subcarrier, b.subcarrier)
    assert (np.diag(b.subcarrier) == -1).all() and (np.diag(b.energy) == 0).all()


def test_assign_idle_uses_free_subcarriers_only():
    rng = np.random.default_rng(5)
    k, m = 3, 8
    rates = random_rates(rng, k, m)
    demand = np.zeros((k, k))
    demand[0, 1] = 3
    demand[2, 0] = 1
    plain = alloc(rates, demand)
    idle = alloc(rates, demand, assign_idle=True)
    # active part unchanged, every idle link now holds a subcarrier (m = 8 >= 6 links)
    act = plain.served
    np.testing.assert_array_equal(plain.subcarrier[act], idle.subcarrier[act])
    np.testing.assert_array_equal(plain.energy, idle.energy)
    off = ~np.eye(k, dtype=bool)
    assert (idle.subcarrier[off] >= 0).all()
    assert not idle.served[off & (demand == 0)].any()
    assert (idle.energy[demand == 0] == 0).all()


def test_assign_idle_optimal_on_free_subcarriers():
    rng = np.random.default_rng(6)
    rates = random_rates(rng, 2, 3)
    demand = np.zeros((2, 2))
    demand[0, 1] = 1
    res = alloc(rates, demand, assign_idle=True)
    free = [s for s in range(3) if s != res.subcarrier[0, 1]]
    assert res.subcarrier[1, 0] == max(free, key=lambda s: rates[1, 0, s])


def test_assign_idle_with_too_few_subcarriers():
    rng = np.random.default_rng(7)
    rates = random_rates(rng, 4, 5)  # 12 links, 5 subcarriers
    demand = np.zeros((4, 4))
    demand[0, 1] = demand[1, 2] = 2
    res = alloc(rates, demand, assign_idle=True)
    assert res.served.sum() == 2 and (res.subcarrier >= 0).sum() == 5


def test_empty_demand():
    rates = random_rates(np.random.default_rng(8), 3, 4)
    res = alloc(rates, np.zeros((3, 3)))
    assert (res.subcarrier == -1).all() and res.total_energy == 0.0


@pytest.mark.parametrize(
    "rates, demand, kw, name",
    [
        (np.ones((2, 2)), np.ones((2, 2)), {}, "rates"),
        (np.ones((2, 3, 4)), np.ones((2, 2)), {}, "rates"),
        (-np.ones((2, 2, 4)), np.ones((2, 2)), {}, "rates"),
        (np.full((2, 2, 4), np.nan), np.ones((2, 2)), {}, "rates"),
        (np.ones((2, 2, 4)), np.ones((3, 3)), {}, "demand"),
        (np.ones((2, 2, 4)), -np.ones((2, 2)), {}, "demand"),
        (np.ones((2, 2, 4)), np.full((2, 2), np.nan), {}, "demand"),
        (np.ones((2, 2, 4)), np.ones((2, 2)), {"tx_power_w": 0.0}, "tx_power_w"),
        (np.ones((2, 2, 4)), np.ones((2, 2)), {"bits_per_token": -1}, "bits_per_token"),
    ],
)
def test_validation(rates, demand, kw, name):
    args = dict(tx_power_w=P0, bits_per_token=BITS)
    args.update(kw)
    with pytest.raises(ValueError, match=f"`{name}`"):
        allocate_subcarriers(rates, demand, **args)
