"""The DMoE runtime on a tiny random MoE: equivalence with the centralised pass, ledger."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmoe.data import load_mmlu, pack_question
from dmoe.policies import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.runtime import DMoERuntime, EnergyLedger, evaluate_policy
from dmoe.system import SystemConfig

from conftest import make_tiny_moe

K = 4


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama):
    # a random (non-contiguous) partition of every layer's neurons into K experts
    return make_tiny_moe(tiny_llama, K, seed=1)


@pytest.fixture(scope="module")
def queries(tiny_tokenizer):
    return [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=6)]


SYSTEM = SystemConfig(num_nodes=K, num_subcarriers=16)


@pytest.mark.parametrize(
    "policy",
    [Dense(), TopK(1), TopK(2), Homogeneous(0.6, 2), JESAPolicy(0.8, 2), LowerBound(0.8, 3)],
    ids=lambda p: p.name,
)
@pytest.mark.parametrize("combine", ["sum", "weighted"])
def test_runtime_equals_centralised_forward_with_same_masks(tiny_moe, queries, policy, combine):
    tiny_moe.combine = combine
    try:
        rt = DMoERuntime(tiny_moe, policy, system=SYSTEM, seed=3, record_selection=True)
        out = rt.run_round(queries[:K])
        for q, logits, sel in zip(queries[:K], out.logits, out.selections):
            ref = tiny_moe.forward_masked(
                q.input_ids,
                positions=q.positions,
                attention_mask=q.attention_mask,
                selection=torch.from_numpy(sel),
            )[q.score_rows]
            torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    finally:
        tiny_moe.combine = "sum"


def test_dense_policy_equals_dense_model(tiny_moe, tiny_llama, queries):
    rt = DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=0)
    out = rt.run_round(queries[:2])
    for q, logits in zip(queries[:2], out.logits):
        with torch.no_grad():
            ref = tiny_llama(
                q.input_ids[None], position_ids=q.positions[None], attention_mask=q.attention_mask[None, None]
            ).logits[0][q.score_rows]
        torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)


def test_ledger_charges_only_remote_links_on_allocated_subcarriers():
    sys_ = SystemConfig(num_nodes=3, num_subcarriers=4)
    ledger = EnergyLedger(2, sys_)
    rates = np.full((3, 3, 4), 1e5)
    rates[0, 1, 2] = 2e5
    selection = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)
    source = np.array([0, 0, 2])
    sub = -np.ones((3, 3), dtype=int)
    sub[0, 1] = 2
    comm, comp = ledger.charge(1, selection, source, sub, rates)
    # token 0 -> expert 1 is the only remote transfer, at 2e5 bit/s on subcarrier 2
    assert comm == pytest.approx(sys_.tx_power_w * sys_.bits_per_token / 2e5)
    a = sys_.comp_energy_per_token_j
    assert comp == pytest.approx(2 * a[0] + a[1] + a[2])
    t = ledger.per_layer()
    assert t.transmissions.tolist() == [0, 1] and t.tokens.tolist() == [0, 3]
    sub[0, 1] = -1
    with pytest.raises(RuntimeError, match="no subcarrier"):
        ledger.charge(0, selection, source, sub, rates)


def test_same_seed_same_channels_and_results(tiny_moe, queries):
    a = evaluate_policy(tiny_moe, queries, JESAPolicy(0.8, 2), system=SYSTEM, seed=5, progress=False)
    b = evaluate_policy(tiny_moe, queries, JESAPolicy(0.8, 2), system=SYSTEM, seed=5, progress=False)
    c = evaluate_policy(tiny_moe, queries, JESAPolicy(0.8, 2), system=SYSTEM, seed=6, progress=False)
    assert a.energy_j == b.energy_j and np.array_equal(a.logliks, b.logliks)
    assert a.energy_j != c.energy_j
    assert a.num_questions == 6 and a.num_tokens == sum(q.num_tokens for q in queries)
    assert 0.0 <= a.accuracy <= 1.0 and np.isfinite(a.mean_nll)
    assert np.isclose(a.energy_j, a.energy_comm_j + a.energy_comp_j)
    assert np.isclose(a.per_layer.energy_comm_j.sum(), a.energy_comm_j)


def test_energy_ordering_of_policies(tiny_moe, queries):
    res = {
        p.name: evaluate_policy(tiny_moe, queries, p, system=SYSTEM, seed=1, progress=False)
        for p in [Dense(), TopK(2), TopK(1), LowerBound(0.8, 2), JESAPolicy(0.8, 2)]
    }
    assert res["dense"].energy_j > res["Top-2"].energy_j > res["Top-1"].energy_j
    # LB ignores exclusive subcarrier use: never above JESA with the same gamma0 and D
    assert res["LB(0.8,2)"].energy_j <= res["JESA(0.8,2)"].energy_j + 1e-12


def test_runtime_rejects_bad_configuration(tiny_moe, queries):
    with pytest.raises(ValueError, match="`system.num_nodes`"):
        DMoERuntime(tiny_moe, Dense(), system=SystemConfig(num_nodes=8))
    with pytest.raises(ValueError, match="`channel_redraw`"):
        DMoERuntime(tiny_moe, Dense(), system=SYSTEM, channel_redraw="sometimes")
    with pytest.raises(ValueError, match="`seed`"):
        DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=-1)
    rt = DMoERuntime(tiny_moe, Dense(), system=SYSTEM)
    with pytest.raises(ValueError, match="`queries`"):
        rt.run_round(queries[: K + 1])
    with pytest.raises(ValueError, match="`queries`"):
        evaluate_policy(tiny_moe, [], Dense(), system=SYSTEM)


# ------------------------------------------------------------------ radio: channels, CSI, latency
def test_default_channel_gives_the_legacy_results_exactly(tiny_moe, queries):
    from dmoe.channels.rates import draw_rates

    pol = JESAPolicy(0.8, 2)
    new = evaluate_policy(tiny_moe, queries, pol, system=SYSTEM, seed=4, progress=False)
    old = evaluate_policy(
        tiny_moe, queries, pol, system=SYSTEM, seed=4, progress=False, rates_fn=lambda rng: draw_rates(SYSTEM, rng)
    )
    assert new.energy_j == old.energy_j and np.array_equal(new.logliks, old.logliks)
    assert new.energy_planned_j == new.energy_j and new.failed_attempts == 0 and new.dropped_tokens == 0


@pytest.mark.parametrize(
    "channel",
    [
        dict(model="tdl-a"),
        dict(model="tdl-d", speed_kmh=30.0),
        dict(model="rayleigh", speed_kmh=0.0, csi_delay=1),
        dict(model="tdl-c", csi_error=0.3),
        dict(model="rayleigh", csi_error=1.0, csi_delay=1, speed_kmh=120.0),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_runtime_on_realistic_channels(tiny_moe, queries, channel):
    from dmoe.channels import ChannelConfig

    cfg = ChannelConfig(**channel)
    res = evaluate_policy(tiny_moe, queries, TopK(2), system=SYSTEM, seed=2, progress=False, channel=cfg)
    t = res.per_layer
    for value in (res.energy_j, res.energy_planned_j, res.mean_nll, *res.latency_stats().values()):
        assert np.isfinite(value)
    assert np.all(np.isfinite(res.latency_layer_round_s)) and np.all(res.latency_layer_round_s > 0)
    assert res.latency_layer_round_s.shape == (2, tiny_moe.num_layers)  # 6 queries = 2 rounds of K = 4
    assert res.latency_query_s.shape == (6,)
    assert np.isclose(t.energy_comm_planned_j.sum() + t.energy_comp_planned_j.sum(), res.energy_planned_j)
    if cfg.perfect_csi or (cfg.speed_kmh == 0.0 and cfg.csi_error == 0.0):  # static: a stale estimate is exact
        assert res.failed_attempts == 0 and res.energy_planned_j == pytest.approx(res.energy_j)
    else:
        assert res.failed_attempts > 0  # a noisy or stale estimate overestimates some links
        assert res.energy_comm_j > t.energy_comm_planned_j.sum() * 0.5
    summary = res.summary()
    for key in ("latency_layer_round_mean_s", "latency_layer_round_p95_s", "latency_query_mean_s",
                "latency_query_p95_s", "energy_planned_j", "failed_attempts", "dropped_tokens"):
        assert key in summary


def test_layer_round_latency_is_the_slowest_path(tiny_moe, queries):
    from dmoe.energy import link_rate_from_subcarriers, link_token_counts
    from dmoe.latency import link_air_time, round_timing

    captured = []

    class Spy(TopK):
        def schedule(self, scores, source, rates, layer, *, system, rng=None):
            s = super().schedule(scores, source, rates, layer, system=system, rng=rng)
            captured.append((s, source, rates))
            return s

    rt = DMoERuntime(tiny_moe, Spy(2), system=SYSTEM, seed=1)
    rt.run_round(queries[:K])
    lat = rt.latency.layer_round_s[0]
    for layer, (s, source, rates) in enumerate(captured):
        tok = link_token_counts(s.selection, source, K)
        air = link_air_time(tok, link_rate_from_subcarriers(rates, s.subcarrier), SYSTEM.bits_per_token)
        assert lat[layer] == pytest.approx(round_timing(tok, air, air, SYSTEM).latency_s)


def test_runtime_rejects_rates_fn_with_channel(tiny_moe):
    from dmoe.channels import ChannelConfig

    with pytest.raises(ValueError, match="`rates_fn`"):
        DMoERuntime(tiny_moe, Dense(), system=SYSTEM, rates_fn=lambda rng: None, channel=ChannelConfig())
    with pytest.raises(ValueError, match="`channel_redraw`"):
        DMoERuntime(tiny_moe, Dense(), system=SYSTEM, channel=ChannelConfig(speed_kmh=3.0), channel_redraw="fixed")
