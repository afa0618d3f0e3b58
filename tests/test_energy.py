"""Energy model: per-token costs (Section V-A), eq (2)-(4) ledger helpers."""

import numpy as np
import pytest

from dmoe.energy import (
    communication_energy,
    computation_energy,
    link_rate_from_subcarriers,
    link_token_counts,
    schedule_energy,
    token_costs,
)
from dmoe.system import SystemConfig

SYS3 = SystemConfig(num_nodes=3, num_subcarriers=4)


def test_token_costs_formula_and_units():
    rate = np.array([[0.0, 1e5, 2e5], [4e5, 0.0, 0.0], [1e5, 1e5, 0.0]])
    c = token_costs(rate, SYS3)
    a = SYS3.comp_energy_per_token_j
    p0, bits = SYS3.tx_power_w, SYS3.bits_per_token
    assert c[0, 1] == pytest.approx(a[1] + p0 * bits / 1e5)
    assert c[1, 0] == pytest.approx(a[0] + p0 * bits / 4e5)
    np.testing.assert_allclose(np.diag(c), a)  # local: computation only
    assert np.isinf(c[1, 2])  # no rate: unusable
    # paper regime: comm energy of one 8 kB token at 100 kbit/s is ~6.6 mJ
    assert p0 * bits / 1e5 == pytest.approx(6.5536e-3)


def test_token_costs_validation():
    with pytest.raises(ValueError, match="`link_rate`"):
        token_costs(np.zeros((2, 2)), SYS3)
    with pytest.raises(ValueError, match="`link_rate`"):
        token_costs(-np.ones((3, 3)), SYS3)
    with pytest.raises(TypeError, match="`system`"):
        token_costs(np.ones((3, 3)), None)


def test_link_rate_from_subcarriers():
    rates = np.arange(3 * 3 * 4, dtype=float).reshape(3, 3, 4)
    sub = np.array([[-1, 2, -1], [0, -1, 3], [-1, 1, 0]])
    r = link_rate_from_subcarriers(rates, sub)
    assert r[0, 1] == rates[0, 1, 2]
    assert r[1, 0] == rates[1, 0, 0]
    assert r[1, 2] == rates[1, 2, 3]
    assert r[0, 2] == 0 and r[2, 2] == 0 and r[0, 0] == 0
    with pytest.raises(ValueError, match="`subcarrier`"):
        link_rate_from_subcarriers(rates, np.full((3, 3), 4))
    with pytest.raises(ValueError, match="`subcarrier`"):
        link_rate_from_subcarriers(rates, np.full((2, 2), 0))


def test_link_token_counts():
    sel = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=bool)
    src = np.array([0, 0, 2, 1])
    s = link_token_counts(sel, src, 3)
    expected = np.array([[1, 2, 1], [0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(s, expected)
    assert s.dtype == np.int64
    with pytest.raises(ValueError, match="`source`"):
        link_token_counts(sel, np.array([0, 0, 3, 1]), 3)


def test_communication_energy_eq3():
    tokens = np.array([[5, 2, 0], [1, 0, 0], [0, 3, 7]])
    rate = np.array([[0.0, 1e5, 0.0], [2e5, 0.0, 0.0], [0.0, 5e4, 0.0]])
    e = communication_energy(tokens, rate, SYS3)
    p0, bits = SYS3.tx_power_w, SYS3.bits_per_token
    assert e[0, 1] == pytest.approx(p0 * bits * 2 / 1e5)
    assert e[1, 0] == pytest.approx(p0 * bits * 1 / 2e5)
    assert e[2, 1] == pytest.approx(p0 * bits * 3 / 5e4)
    assert e[0, 0] == 0 and e[2, 2] == 0  # local tokens are not transmitted
    assert e[0, 2] == 0  # no tokens, no rate: fine


def test_communication_energy_zero_rate_policy():
    tokens = np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]])
    rate = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"0->1"):
        communication_energy(tokens, rate, SYS3)
    e = communication_energy(tokens, rate, SYS3, zero_rate="inf")
    assert np.isinf(e[0, 1]) and np.isfinite(e[~np.eye(3, dtype=bool) & (tokens == 0)]).all()
    with pytest.raises(ValueError, match="`tokens`"):
        communication_energy(-tokens, rate, SYS3)


def test_computation_energy_static_only_when_active():
    s = SystemConfig(num_nodes=3, comp_energy_per_token=(1e-3, 2e-3, 3e-3), comp_energy_static=(0.5, 0.25, 0.125))
    tokens = np.array([[2, 0, 0], [1, 0, 0], [0, 0, 4]])
    e = computation_energy(tokens, s)
    np.testing.assert_allclose(e, [3 * 1e-3 + 0.5, 0.0, 4 * 3e-3 + 0.125])


def test_per_token_costs_sum_to_ledger():
    """sum over tokens of e_ij equals comm + comp of eq (3)-(4) when b_j = 0."""
    rng = np.random.default_rng(0)
    k = 3
    rates = rng.uniform(1e4, 1e6, size=(k, k, 4))
    sub = np.array([[-1, 0, 1], [2, -1, 3], [-1, -1, -1]])
    sel = rng.random((20, k)) < 0.5
    src = rng.integers(0, k, size=20)
    # tokens of node 2 may only use local expert 2 (its links have no subcarrier)
    sel[src == 2] = np.array([False, False, True])
    rate = link_rate_from_subcarriers(rates, sub)
    costs = token_costs(rate, SYS3)[src]
    per_token = np.where(sel, costs, 0.0).sum()
    br = schedule_energy(sel, src, sub, rates, SYS3)
    assert br.total == pytest.approx(per_token, rel=1e-12)
    assert br.comm + br.comp == pytest.approx(br.total)


# ------------------------------------------------------------ several resource blocks per link
def test_link_rates_from_allocation_energy_and_time_rates():
    from dmoe.energy import link_rates_from_allocation

    rates = np.zeros((3, 3, 4))
    rates[0, 1] = [4e5, 2e5, 1e5, 5e4]
    rates[2, 1] = [1e5, 3e5, 3e5, 3e5]
    share = np.zeros((3, 3, 4))
    share[0, 1] = [0.5, 0.3, 0.2, 0.0]  # three RBs
    share[2, 1, 2] = 1.0  # one RB
    sub = np.full((3, 3), -1)
    sub[0, 1], sub[2, 1], sub[1, 0] = 0, 2, 3  # 1 -> 0 has a subcarrier but no share
    rates[1, 0, 3] = 7e4
    e_rate, t_rate = link_rates_from_allocation(rates, sub, share)
    # energy: sum of share / r seconds per bit; time: the slowest RB
    assert e_rate[0, 1] == pytest.approx(1 / (0.5 / 4e5 + 0.3 / 2e5 + 0.2 / 1e5))
    assert t_rate[0, 1] == pytest.approx(1 / max(0.5 / 4e5, 0.3 / 2e5, 0.2 / 1e5))
    assert e_rate[2, 1] == t_rate[2, 1] == 3e5  # one RB: its rate exactly
    assert e_rate[1, 0] == t_rate[1, 0] == 7e4  # no share: the subcarrier's rate
    assert np.array_equal(link_rates_from_allocation(rates, sub, None)[0], link_rate_from_subcarriers(rates, sub))
    share[2, 1] = [0.5, 0.5, 0.0, 0.0]
    rates[2, 1, 0] = 0.0  # bits on a zero-rate RB: the link cannot deliver
    e_rate, t_rate = link_rates_from_allocation(rates, sub, share)
    assert e_rate[2, 1] == 0.0 and t_rate[2, 1] == 0.0


@pytest.mark.parametrize("bad, match", [(np.full((3, 3, 3), 0.1), "shape"), (-np.ones((3, 3, 4)), ">= 0"),
                                        (np.full((3, 3, 4), 0.3), "sum to 1")])
def test_rb_share_validation(bad, match):
    from dmoe.energy import check_rb_share

    with pytest.raises(ValueError, match=match):
        check_rb_share(bad, 3, 4)
    with pytest.raises(TypeError, match="`rb_share`"):
        check_rb_share(np.zeros((3, 3, 4), dtype=bool), 3, 4)


def test_schedule_energy_with_several_rbs_by_hand():
    rates = np.zeros((3, 3, 4))
    rates[0, 1] = [4e5, 2e5, 1e5, 5e4]
    share = np.zeros((3, 3, 4))
    share[0, 1] = [0.6, 0.4, 0.0, 0.0]
    sub = np.full((3, 3), -1)
    sub[0, 1] = 0
    sel = np.zeros((5, 3), dtype=bool)
    sel[:, 1] = True
    src = np.zeros(5, dtype=int)
    br = schedule_energy(sel, src, sub, rates, SYS3, rb_share=share)
    p0, bits = SYS3.tx_power_w, SYS3.bits_per_token
    assert br.comm_links[0, 1] == pytest.approx(p0 * 5 * bits * (0.6 / 4e5 + 0.4 / 2e5), rel=1e-12)
    # one RB with share 1: exactly the one-subcarrier energy
    share[0, 1] = [1.0, 0, 0, 0]
    one = schedule_energy(sel, src, sub, rates, SYS3, rb_share=share)
    assert np.array_equal(one.comm_links, schedule_energy(sel, src, sub, rates, SYS3).comm_links)
