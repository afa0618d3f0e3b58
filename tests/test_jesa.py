"""JESA (Algorithm 2) and the lower bound LB(gamma0, D)."""

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.optimize import jesa, lower_bound, random_subcarriers
from dmoe.optimize.feasibility import check_jesa
from dmoe.system import SystemConfig


def setup(seed, k=8, m=64, tokens_per_node=32, alpha=0.5, system=None):
    system = system or SystemConfig(num_nodes=k, num_subcarriers=m)
    rng = np.random.default_rng(seed)
    rates = draw_rates(system, rng)
    scores = rng.dirichlet(np.full(k, alpha), size=k * tokens_per_node)
    source = np.repeat(np.arange(k), tokens_per_node)
    return system, rates, scores, source


def run(scores, source, rates, thr, d, system, **kw):
    res = jesa(scores, source, rates, thr, d, system=system, **kw)
    check_jesa(res, scores, source, rates, thr, d, system=system)
    return res


@pytest.mark.parametrize("seed", range(12))
def test_feasible_monotone_converges(seed):
    thr, d = [(0.5, 2), (0.8, 3), (0.9, 2), (0.3, 1)][seed % 4]
    system, rates, scores, source = setup(seed)
    res = run(scores, source, rates, thr, d, system, rng=seed)
    h = np.asarray(res.energy_history)
    assert h.size == res.iterations and np.all(np.diff(h) <= 1e-12 * h[:-1])
    assert res.converged and res.stop_reason == "converged"
    assert np.isfinite(res.energy) and res.energy > 0
    assert res.energy_comm == pytest.approx(res.energy_comm_links.sum())
    assert res.energy_comp == pytest.approx(res.energy_comp_experts.sum())


@pytest.mark.parametrize("m", [4, 12, 30])
def test_fewer_subcarriers_than_links(m):
    for seed in range(4):
        system, rates, scores, source = setup(100 + seed, k=6, m=m, tokens_per_node=16)
        res = run(scores, source, rates, 0.6, 2, system, rng=seed)
        used = res.subcarrier[res.subcarrier >= 0]
        assert used.size <= m
        # remote tokens only travel on links with a subcarrier
        assert (res.tokens[~np.eye(6, dtype=bool) & (res.subcarrier < 0)] == 0).all()


def test_reproducible_with_seed():
    system, rates, scores, source = setup(5, k=6, m=12)
    a = run(scores, source, rates, 0.7, 2, system, rng=42)
    b = run(scores, source, rates, 0.7, 2, system, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a.selection, b.selection)
    np.testing.assert_array_equal(a.subcarrier, b.subcarrier)
    assert a.energy_history == b.energy_history


def test_infeasible_tokens_and_static_energy_keep_history_monotone():
    s = SystemConfig(num_nodes=6, num_subcarriers=10, comp_energy_static=(0.01,) * 6)
    for seed in range(6):
        system, rates, scores, source = setup(200 + seed, k=6, m=10, system=s, alpha=0.3)
        res = run(scores, source, rates, 0.95, 1, system, rng=seed)  # many infeasible tokens
        assert (~res.feasible).any()
        h = np.asarray(res.energy_history)
        assert np.all(np.diff(h) <= 1e-12 * h[:-1])


def test_per_token_threshold_and_methods_agree():
    system, rates, scores, source = setup(7, k=6, m=40)
    thr = np.linspace(0.2, 0.9, scores.shape[0])
    a = run(scores, source, rates, thr, 3, system, rng=1, method="enumerate")
    b = run(scores, source, rates, thr, 3, system, rng=1, method="des")
    assert a.energy == pytest.approx(b.energy, rel=1e-9)
    np.testing.assert_array_equal(a.threshold, thr)


def test_assignment_init_and_max_iterations():
    system, rates, scores, source = setup(8, k=5, m=20)
    res = run(scores, source, rates, 0.7, 2, system, init="assignment")
    assert res.converged
    one = run(scores, source, rates, 0.7, 2, system, rng=0, max_iterations=1)
    assert one.iterations == 1 and not one.converged and one.stop_reason == "max_iterations"


def test_empty_batch():
    system, rates, _, _ = setup(9, k=4, m=16)
    res = run(np.zeros((0, 4)), np.zeros(0, dtype=int), rates, 0.5, 2, system, rng=0)
    assert res.selection.shape == (0, 4) and res.energy == 0.0 and res.converged


def test_lower_bound_below_jesa_and_tight_for_large_m():
    """LB <= JESA when every token is feasible; with K = 4, M = 2048 JESA reaches the bound
    with probability >= 96.8 % (Theorem 1, Remark 3)."""
    equal = 0
    for seed in range(20):
        system, rates, scores, source = setup(300 + seed, k=4, m=2048, tokens_per_node=16, alpha=1.0)
        res = run(scores, source, rates, 0.6, 3, system, rng=seed)
        lb = lower_bound(scores, source, rates, 0.6, 3, system=system)
        check_jesa(lb, scores, source, rates, 0.6, 3, system=system, exclusive=False)
        assert res.feasible.all()
        assert lb.energy <= res.energy * (1 + 1e-12)
        equal += bool(np.isclose(lb.energy, res.energy, rtol=1e-12))
    assert equal >= 16


def test_random_subcarriers():
    beta = random_subcarriers(4, 100, rng=0)
    off = ~np.eye(4, dtype=bool)
    assert (beta[off] >= 0).all() and len(set(beta[off].tolist())) == 12 and (np.diag(beta) == -1).all()
    beta = random_subcarriers(4, 5, rng=0)
    assert (beta >= 0).sum() == 5 and len(set(beta[beta >= 0].tolist())) == 5


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(source=np.full(8, 9)), "source"),
        (dict(source=np.zeros(3, dtype=int)), "source"),
        (dict(rates=np.ones((3, 3, 4))), "rates"),
        (dict(scores=np.full((8, 4), np.nan)), "scores"),
        (dict(threshold=np.nan), "threshold"),
        (dict(max_experts=0), "max_experts"),
        (dict(system=SystemConfig(num_nodes=5)), "system"),
        (dict(method="x"), "method"),
        (dict(init="zeros"), "init"),
        (dict(max_iterations=0), "max_iterations"),
    ],
)
def test_validation(change, name):
    system, rates, scores, source = setup(0, k=4, m=16, tokens_per_node=2)
    args = dict(scores=scores, source=source, rates=rates, threshold=0.5, max_experts=2, system=system)
    args.update(change)
    with pytest.raises(ValueError, match=f"`{name}`"):
        jesa(**args)


# ------------------------------------------------------------ deadline: several resource blocks
def _round_latency(res, source, rates, system):
    from dmoe.latency import round_timing, schedule_air_time

    air = schedule_air_time(res.tokens, rates, res.subcarrier, system.bits_per_token, res.rb_share)
    return round_timing(res.tokens, air, air, system).latency_s


@pytest.mark.parametrize("seed", range(3))
def test_jesa_deadline_none_or_loose_is_the_paper_algorithm_bit_for_bit(seed):
    system, rates, scores, source = setup(seed, k=5, m=32, tokens_per_node=16)
    ref = run(scores, source, rates, 0.7, 2, system, rng=seed)
    for deadline in (None, 1e9):
        res = run(scores, source, rates, 0.7, 2, system, rng=seed, deadline_s=deadline)
        assert np.array_equal(res.selection, ref.selection) and np.array_equal(res.subcarrier, ref.subcarrier)
        assert np.array_equal(res.energy_comm_links, ref.energy_comm_links)
        assert res.energy_history == ref.energy_history and res.rb_share is None
    assert ref.rb_info is None


def test_jesa_tight_deadline_takes_more_rbs_and_meets_it():
    found = 0
    for seed in range(6):
        system, rates, scores, source = setup(seed, k=4, m=32, tokens_per_node=12)
        free = run(scores, source, rates, 0.7, 2, system, rng=0)
        t_free = _round_latency(free, source, rates, system)
        res = run(scores, source, rates, 0.7, 2, system, rng=0, deadline_s=0.6 * t_free)
        assert res.rb_info is not None
        if res.rb_share is not None:
            found += 1
            assert ((res.rb_share > 0).sum(axis=2) > 1).any() and res.rb_info["multi_rb_links"] > 0
            assert ((res.rb_share > 0).sum(axis=(0, 1)) <= 1).all()  # C3
        if res.rb_info["late_links"] == 0:
            assert _round_latency(res, source, rates, system) <= 0.6 * t_free * (1 + 1e-6)
    assert found >= 3


def test_jesa_node_budget_without_deadline():
    system, rates, scores, source = setup(3, k=5, m=32, tokens_per_node=16)
    tight = system.replace(node_power_budget_w=2 * system.tx_power_w)  # 2 RBs per node
    res = run(scores, source, rates, 0.7, 2, tight, rng=1)
    per_node = (res.subcarrier >= 0).sum(axis=1)
    assert (per_node <= 2).all() and res.rb_share is None
    assert ((res.tokens > 0) & ~np.eye(5, dtype=bool)).sum(axis=1).max() <= 2


def test_jesa_bad_deadline():
    system, rates, scores, source = setup(0, k=3, m=8, tokens_per_node=2)
    for bad in (0.0, -1.0, float("inf"), float("nan"), "1s"):
        with pytest.raises(ValueError, match="`deadline_s`"):
            jesa(scores, source, rates, 0.5, 2, system=system, deadline_s=bad)
