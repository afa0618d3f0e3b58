"""Retransmission rule (dmoe.runtime.transfer), timing model (dmoe.latency), the ledgers and
the deadline policy, each against independent hand-written oracles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.energy import link_rate_from_subcarriers, link_token_counts, schedule_energy
from dmoe.latency import link_air_time, round_timing
from dmoe.policies import Deadline, Dense, JESAPolicy, LowerBound, TopK, policy_from_name, policy_from_params
from dmoe.runtime.ledger import EnergyLedger, LatencyLedger
from dmoe.runtime.transfer import transmit
from dmoe.system import SystemConfig


def _timing_oracle(tokens, fwd, bwd, c):
    """Event-by-event: node j waits for its last incoming packet, computes, then every
    source gets its outputs back; the round ends at the last delivery."""
    k = tokens.shape[0]
    end = 0.0
    for j in range(k):
        load = sum(tokens[i][j] for i in range(k))
        if load == 0:
            continue
        arrive = max([fwd[i][j] for i in range(k) if i != j and tokens[i][j] > 0] + [0.0])
        ready = arrive + load / c[j]
        for i in range(k):
            if tokens[i][j] > 0:
                end = max(end, ready + (bwd[i][j] if i != j else 0.0))
    return end


@pytest.mark.parametrize("seed", range(20))
def test_round_timing_matches_event_oracle(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    system = SystemConfig(num_nodes=k, comp_throughput_tokens_per_s=tuple(rng.uniform(1, 50, k)))
    tokens = rng.integers(0, 4, (k, k)) * (rng.random((k, k)) < 0.6)
    rate = rng.uniform(1e4, 1e6, (k, k))
    fwd = link_air_time(tokens, rate, system.bits_per_token)
    bwd = link_air_time(tokens, rate * rng.uniform(0.5, 2, (k, k)), system.bits_per_token)
    got = round_timing(tokens, fwd, bwd, system)
    assert got.latency_s == pytest.approx(_timing_oracle(tokens, fwd, bwd, system.comp_throughput_j), rel=1e-12)
    # serial per link: time = tokens * bits / rate
    off = ~np.eye(k, dtype=bool) & (tokens > 0)
    assert np.allclose(fwd[off], tokens[off] * system.bits_per_token / rate[off])
    assert np.all(fwd[~off] == 0)


def test_round_timing_edge_cases():
    system = SystemConfig(num_nodes=3, comp_throughput_tokens_per_s=10.0)
    z = np.zeros((3, 3))
    assert round_timing(z, z, z, system).latency_s == 0.0
    local = np.diag([5, 0, 0])
    assert round_timing(local, z, z, system).latency_s == pytest.approx(0.5)  # 5 tokens at 10 token/s
    with pytest.raises(ValueError, match="`tokens`"):
        round_timing(np.zeros((2, 2)), z, z, system)


def _one_link(r_est, r_true, tokens=3):
    """K = 2, node 0 sends ``tokens`` tokens to expert 1 on subcarrier 0."""
    system = SystemConfig(num_nodes=2, num_subcarriers=1)
    est = np.zeros((2, 2, 1))
    true = np.zeros((2, 2, 1))
    est[0, 1, 0], true[0, 1, 0] = r_est, r_true
    sel = np.zeros((tokens, 2), dtype=bool)
    sel[:, 1] = True
    sub = np.array([[-1, 0], [-1, -1]])
    return system, transmit(sel, np.zeros(tokens, dtype=int), sub, est, true, system)


def test_transfer_succeeds_when_the_true_rate_holds():
    system, out = _one_link(1e5, 2e5)
    bits, p0 = system.bits_per_token, system.tx_power_w
    assert not out.failed.any() and out.failed_attempts == 0
    assert out.energy_comm_spent[0, 1] == pytest.approx(3 * p0 * bits / 1e5)  # sent at the scheduled rate
    assert out.forward_s[0, 1] == pytest.approx(3 * bits / 1e5)
    assert out.backward_s[0, 1] == pytest.approx(3 * bits / 2e5)  # return at the measured rate
    assert np.array_equal(out.energy_comm_spent, out.energy_comm_planned)


def test_transfer_backs_off_after_one_failed_attempt():
    system, out = _one_link(2e5, 5e4)
    bits, p0 = system.bits_per_token, system.tx_power_w
    assert out.failed[0, 1] and out.failed_attempts == 1 and out.dropped_tokens == 0
    assert out.energy_comm_planned[0, 1] == pytest.approx(3 * p0 * bits / 2e5)
    assert out.energy_comm_spent[0, 1] == pytest.approx(p0 * bits / 2e5 + 3 * p0 * bits / 5e4)
    assert out.forward_s[0, 1] == pytest.approx(bits / 2e5 + 3 * bits / 5e4)
    assert out.selection[:, 1].all() and out.tokens_delivered[0, 1] == 3


def test_transfer_on_a_dead_link_drops_the_expert_without_inf_or_nan():
    system, out = _one_link(2e5, 0.0)
    bits, p0 = system.bits_per_token, system.tx_power_w
    assert out.dropped[0, 1] and out.dropped_tokens == 3 and out.failed_attempts == 1
    assert not out.selection[:, 1].any() and out.tokens_delivered[0, 1] == 0
    assert out.energy_comm_spent[0, 1] == pytest.approx(p0 * bits / 2e5)  # the lost probe packet
    assert out.energy_comp_spent.sum() == 0.0 and out.energy_comp_planned.sum() > 0
    for arr in (out.energy_comm_spent, out.forward_s, out.backward_s, out.energy_comp_spent):
        assert np.all(np.isfinite(arr))
    t = round_timing(out.tokens_delivered, out.forward_s, out.backward_s, system)
    assert t.latency_s == 0.0  # nothing delivered, nothing computed


def test_transfer_rejects_a_zero_scheduled_rate():
    with pytest.raises(RuntimeError, match="scheduled rate is 0"):
        _one_link(0.0, 1e5)


@pytest.mark.parametrize("policy", [TopK(2), JESAPolicy(0.8, 2), LowerBound(0.8, 3), Dense()], ids=lambda p: p.name)
def test_perfect_csi_spends_exactly_the_schedule_energy(policy):
    rng = np.random.default_rng(4)
    system = SystemConfig(num_nodes=4, num_subcarriers=16)
    source = rng.integers(0, 4, 30)
    scores = rng.dirichlet(np.ones(4), 30)
    rates = draw_rates(system, rng)
    s = policy.schedule(scores, source, rates, 2, system=system, rng=0)
    out = transmit(s.selection, source, s.subcarrier, rates, rates, system)
    ref = schedule_energy(s.selection, source, s.subcarrier, rates, system)
    assert np.array_equal(out.energy_comm_spent, ref.comm_links)
    assert np.array_equal(out.energy_comp_spent, ref.comp_experts)
    ledger_new, ledger_old = EnergyLedger(3, system), EnergyLedger(3, system)
    ledger_new.charge_outcome(1, out, s.feasible)
    ledger_old.charge(1, s.selection, source, s.subcarrier, rates, s.feasible)
    a, b = ledger_new.per_layer(), ledger_old.per_layer()
    for f in ("energy_comm_j", "energy_comp_j", "tokens", "expert_calls", "transmissions", "infeasible_tokens"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert ledger_new.energy_planned_j == ledger_new.energy_j and ledger_new.failed_attempts == 0


@pytest.mark.parametrize("seed", range(10))
def test_imperfect_csi_spends_at_least_the_plan_on_air(seed):
    rng = np.random.default_rng(seed)
    system = SystemConfig(num_nodes=4, num_subcarriers=16)
    source = rng.integers(0, 4, 40)
    scores = rng.dirichlet(np.ones(4), 40)
    true = draw_rates(system, rng)
    est = true * rng.uniform(0.5, 1.5, true.shape)
    est[0, 1] = 0.0  # the server thinks one link is dead
    true[2, 3] = 0.0  # one link really is dead
    s = TopK(2).schedule(scores, source, est, 1, system=system)
    out = transmit(s.selection, source, s.subcarrier, est, true, system)
    live = ~out.dropped
    assert np.all(out.energy_comm_spent[live] >= out.energy_comm_planned[live] - 1e-15)
    # a dead link costs its one lost packet, at the scheduled rate
    p0b = system.tx_power_w * system.bits_per_token
    assert np.allclose(out.energy_comm_spent[out.dropped], p0b / out.scheduled_rate[out.dropped])
    assert out.failed_attempts == int((out.true_rate < out.scheduled_rate)[out.tokens_planned > 0].sum() -
                                      np.trace((out.true_rate < out.scheduled_rate) * (out.tokens_planned > 0)))
    assert np.all(np.isfinite(out.energy_comm_spent)) and np.all(np.isfinite(out.forward_s))
    # the effective selection only loses experts reached over dead links
    assert np.all(out.selection <= s.selection)


def test_latency_ledger_statistics():
    led = LatencyLedger(3)

    class T:
        def __init__(self, x):
            self.latency_s = x

    for r, size in enumerate([4, 2]):
        for layer in range(3):
            led.charge(r, layer, T(float(r * 10 + layer)), size)
    assert led.layer_round_s.tolist() == [[0, 1, 2], [10, 11, 12]]
    assert led.query_s.tolist() == [3, 3, 3, 3, 33, 33]
    mean, p95 = led.per_layer()
    assert mean.tolist() == [5, 6, 7] and np.allclose(p95, [9.5, 10.5, 11.5])


# ------------------------------------------------------------------ deadline policy
def _air_oracle(tok, rates, sched, bits):
    """Air time per link: one subcarrier, or the slowest of the link's resource blocks."""
    if sched.rb_share is None:
        return link_air_time(tok, link_rate_from_subcarriers(rates, sched.subcarrier), bits)
    k = tok.shape[0]
    air = np.zeros((k, k))
    for i, j in np.argwhere((tok > 0) & ~np.eye(k, dtype=bool)):
        rbs = np.flatnonzero(sched.rb_share[i, j] > 0)
        if rbs.size == 0:
            air[i, j] = tok[i, j] * bits / rates[i, j, sched.subcarrier[i, j]]
        else:
            air[i, j] = max(tok[i, j] * bits * sched.rb_share[i, j, q] / rates[i, j, q] for q in rbs)
    return air


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("base", [TopK(2), JESAPolicy(0.7, 2), LowerBound(0.7, 2)], ids=lambda p: p.name)
def test_deadline_schedule_meets_its_deadline(seed, base):
    rng = np.random.default_rng(seed)
    system = SystemConfig(num_nodes=5, num_subcarriers=24)
    source = rng.integers(0, 5, 60)
    scores = rng.dirichlet(np.ones(5), 60)
    rates = draw_rates(system, rng)
    free = base.schedule(scores, source, rates, 1, system=system, rng=0)
    tok = link_token_counts(free.selection, source, 5)
    air = link_air_time(tok, link_rate_from_subcarriers(rates, free.subcarrier), system.bits_per_token)
    t_free = round_timing(tok, air, air, system).latency_s
    for frac in (0.8, 0.5, 0.2):
        pol = Deadline(base, frac * t_free)
        s = pol.schedule(scores, source, rates, 1, system=system, rng=0)
        tok = link_token_counts(s.selection, source, 5)
        air = _air_oracle(tok, rates, s, system.bits_per_token)
        lat = round_timing(tok, air, air, system).latency_s
        assert s.info["deadline_met"] and lat <= frac * t_free * (1 + 1e-6) + 1e-12
        assert s.info["deadline_miss_s"] == 0.0
        assert lat == pytest.approx(s.info["planned_latency_s"])
        loaded = (tok > 0) & ~np.eye(5, dtype=bool)
        if base.name != "LB(0.7,2)":
            # C3 still holds: no RB carries two links
            if s.rb_share is None:
                used = s.subcarrier[loaded]
                assert used.size == np.unique(used).size
            else:
                assert ((s.rb_share > 0).sum(axis=(0, 1)) <= 1).all()


def test_deadline_names_and_bad_input():
    p = policy_from_name("JESA(0.9,2)[T=5s]")
    assert isinstance(p, Deadline) and p.name == "JESA(0.9,2)[T=5s]" and p.deadline_s == 5.0
    assert policy_from_params(p.params()) == p
    assert policy_from_name("top-2 [ T = 0.5 ]").name == "Top-2[T=0.5s]"
    with pytest.raises(ValueError, match="`deadline_s`"):
        Deadline(TopK(2), 0.0)
    with pytest.raises(ValueError, match="`deadline_s`"):
        Deadline(TopK(2), float("inf"))
    with pytest.raises(ValueError, match="dense"):
        policy_from_name("dense[T=1s]")
    with pytest.raises(ValueError, match=r"the deadline must read \[T=<seconds>s\]"):
        policy_from_name("JESA(0.9,2)[T=]")


# ------------------------------------------------------------ several resource blocks per link
def _two_rb_link(est, true, share=(0.75, 0.25), tokens=4):
    system = SystemConfig(num_nodes=2, num_subcarriers=3)
    e = np.zeros((2, 2, 3))
    t = np.zeros((2, 2, 3))
    e[0, 1, :2], t[0, 1, :2] = est, true
    rb = np.zeros((2, 2, 3))
    rb[0, 1, :2] = share
    sel = np.zeros((tokens, 2), dtype=bool)
    sel[:, 1] = True
    sub = np.array([[-1, 0], [-1, -1]])
    return system, transmit(sel, np.zeros(tokens, dtype=int), sub, e, t, system, rb_share=rb)


def test_several_rbs_as_planned_when_true_rates_hold():
    system, out = _two_rb_link([3e5, 1e5], [3e5, 2e5])
    bits, p0 = system.bits_per_token, system.tx_power_w
    on = [4 * bits * 0.75 / 3e5, 4 * bits * 0.25 / 1e5]  # on-time of each RB, in parallel
    assert not out.failed.any()
    assert out.energy_comm_spent[0, 1] == pytest.approx(p0 * sum(on), rel=1e-12)
    assert out.forward_s[0, 1] == pytest.approx(max(on), rel=1e-12)
    assert out.backward_s[0, 1] == pytest.approx(max(4 * bits * 0.75 / 3e5, 4 * bits * 0.25 / 2e5), rel=1e-12)
    assert np.array_equal(out.energy_comm_spent, out.energy_comm_planned)


def test_several_rbs_one_failing_rb_retransmits_its_share():
    system, out = _two_rb_link([3e5, 1e5], [3e5, 5e4])
    bits, p0 = system.bits_per_token, system.tx_power_w
    rb0 = 4 * bits * 0.75 / 3e5
    rb1 = bits * 0.25 / 1e5 + 4 * bits * 0.25 / 5e4  # lost first segment, then all at the true rate
    assert out.failed[0, 1] and out.failed_attempts == 1 and not out.dropped.any()
    assert out.energy_comm_spent[0, 1] == pytest.approx(p0 * (rb0 + rb1), rel=1e-12)
    assert out.forward_s[0, 1] == pytest.approx(max(rb0, rb1), rel=1e-12)
    assert out.energy_comm_planned[0, 1] == pytest.approx(p0 * (rb0 + 4 * bits * 0.25 / 1e5), rel=1e-12)
    assert out.tokens_delivered[0, 1] == 4


def test_several_rbs_one_dead_rb_drops_the_link():
    system, out = _two_rb_link([3e5, 1e5], [3e5, 0.0])
    bits, p0 = system.bits_per_token, system.tx_power_w
    first = [bits * 0.75 / 3e5, bits * 0.25 / 1e5]  # every RB sent its first segment
    assert out.dropped[0, 1] and out.tokens_delivered[0, 1] == 0 and not out.selection[:, 1].any()
    assert out.energy_comm_spent[0, 1] == pytest.approx(p0 * sum(first), rel=1e-12)
    assert out.forward_s[0, 1] == pytest.approx(max(first), rel=1e-12) and out.backward_s[0, 1] == 0.0


def test_several_rbs_with_share_one_equals_the_one_subcarrier_rule():
    for est, true in ((2e5, 2e5), (2e5, 5e4), (2e5, 0.0)):
        _, a = _two_rb_link([est, 1e5], [true, 1e5], share=(1.0, 0.0), tokens=3)
        _, b = _one_link(est, true)
        for f in ("energy_comm_spent", "energy_comm_planned", "forward_s", "backward_s", "tokens_delivered"):
            assert np.allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=0), f


def test_multi_rb_deadline_schedule_is_charged_as_planned():
    """A Deadline schedule with several RBs: perfect CSI spends the schedule energy, the
    forward time is the planned air time, and the ledger's two paths agree."""
    from dmoe.latency import schedule_air_time

    found = False
    for seed in range(6):
        rng = np.random.default_rng(seed)
        system = SystemConfig(num_nodes=4, num_subcarriers=24)
        source = rng.integers(0, 4, 40)
        scores = rng.dirichlet(np.ones(4), 40)
        rates = draw_rates(system, rng)
        free = TopK(2).schedule(scores, source, rates, 1, system=system)
        tok = link_token_counts(free.selection, source, 4)
        air = link_air_time(tok, link_rate_from_subcarriers(rates, free.subcarrier), system.bits_per_token)
        s = Deadline(TopK(2), 0.5 * round_timing(tok, air, air, system).latency_s).schedule(
            scores, source, rates, 1, system=system)
        if s.rb_share is None:
            continue
        found = True
        out = transmit(s.selection, source, s.subcarrier, rates, rates, system, rb_share=s.rb_share)
        ref = schedule_energy(s.selection, source, s.subcarrier, rates, system, rb_share=s.rb_share)
        assert np.allclose(out.energy_comm_spent, ref.comm_links, rtol=1e-12, atol=0)
        tok = link_token_counts(s.selection, source, 4)
        assert np.allclose(out.forward_s, schedule_air_time(tok, rates, s.subcarrier, system.bits_per_token,
                                                            s.rb_share), rtol=1e-12, atol=0)
        assert np.allclose(out.forward_s, _air_oracle(tok, rates, s, system.bits_per_token), rtol=1e-9, atol=0)
        led_a, led_b = EnergyLedger(2, system), EnergyLedger(2, system)
        led_a.charge_outcome(0, out, s.feasible)
        led_b.charge(0, s.selection, source, s.subcarrier, rates, s.feasible, rb_share=s.rb_share)
        assert led_a.energy_j == pytest.approx(led_b.energy_j, rel=1e-12)
        assert s.info["multi_rb_links"] > 0 and s.info["deadline_met"]
    assert found
