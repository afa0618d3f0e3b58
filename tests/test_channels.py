"""Channel models (dmoe.channels): statistics against theory, the paper's default unchanged,
imperfect CSI, mobility, bad input. Statistical tests use many seeded draws and tolerances
of several standard errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import j0

from dmoe.channels.rates import channel_gain, draw_rates
from dmoe.channels import (
    CHANNEL_MODELS,
    TDL_PROFILES,
    ChannelConfig,
    ChannelProcess,
    RayleighChannel,
    TDLChannel,
    channel_model,
    doppler_hz,
    estimate_response,
    evolve,
    power_gain,
    time_correlation,
)
from dmoe.system import SystemConfig

B0 = 1e6
MODELS = [channel_model(n) for n in CHANNEL_MODELS]


def _offdiag(arr):
    k = arr.shape[0]
    return arr[~np.eye(k, dtype=bool)]  # [K(K-1), M]


# ------------------------------------------------------------------ the profiles
@pytest.mark.parametrize("name", list(TDL_PROFILES))
def test_tdl_tables_have_unit_rms_delay_spread(name):
    # TR 38.901 normalises every TDL profile to an RMS delay spread of one: a typo in a
    # delay or power would show here
    ch = TDLChannel(name, delay_spread_ns=100.0)
    assert ch.rms_delay_spread_s() == pytest.approx(100e-9, rel=0.01)
    assert ch.frequency_correlation(0, B0) == pytest.approx(1.0)
    assert ch.tap_power.sum() + ch.los_power() == pytest.approx(1.0)


@pytest.mark.parametrize("name,k_db", [("tdl-d", 13.3), ("tdl-e", 22.0)])
def test_los_profiles_k_factor(name, k_db):
    ch = TDLChannel(name)
    assert 10 * np.log10(ch.los_power() / ch.tap_power[0]) == pytest.approx(k_db, abs=1e-9)
    assert ch.tap_delay_s[0] == 0.0


def test_zero_delay_spread_is_flat_fading():
    ch = TDLChannel("tdl-c", delay_spread_ns=0.0)
    h = ch.draw_diffuse(3, 16, B0, np.random.default_rng(0))
    assert np.allclose(h, h[..., :1])
    assert np.allclose(ch.frequency_correlation(np.arange(5), B0), 1.0)


# ------------------------------------------------------------------ statistics
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_mean_power_per_link(model):
    rng = np.random.default_rng(1)
    k, m, n = 4, 16, 1500
    # [n, K(K-1), M] gains of many independent draws
    g = np.stack([_offdiag(power_gain(model.draw(k, m, B0, rng).response, 1e-2)) for _ in range(n)])
    per_link = g.mean(axis=(0, 2)) / 1e-2
    # conservative standard error: one sample per draw (subcarriers may be fully correlated)
    se = g[:, :, 0].std(axis=0).max() / 1e-2 / np.sqrt(n)
    assert np.all(np.abs(per_link - 1.0) < 5 * se), per_link
    assert np.all(power_gain(model.draw(k, m, B0, rng).response, 1e-2)[np.arange(k), np.arange(k)] == 0)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_frequency_correlation_matches_profile(model):
    rng = np.random.default_rng(2)
    k, m, n = 12, 24, 40
    lags = np.arange(0, 9)
    acc = np.zeros(lags.size, dtype=complex)
    for _ in range(n):
        h = _offdiag(model.draw(k, m, B0, rng).response)  # [links, M]
        for a, d in enumerate(lags):
            acc[a] += np.mean(h[:, : m - d] * np.conj(h[:, d:]))
    emp = acc / n
    theory = model.frequency_correlation(lags, B0)
    # samples: 132 links x 40 draws = 5280 independent links per lag
    assert np.max(np.abs(emp - theory)) < 0.06, (emp, theory)


def test_tdl_frequency_correlation_sign_convention_against_direct_sum():
    ch = TDLChannel("tdl-a", delay_spread_ns=300.0)
    d = 3
    direct = sum(p * np.exp(2j * np.pi * d * B0 * t) for p, t in zip(ch.tap_power, ch.tap_delay_s))
    assert ch.frequency_correlation(d, B0) == pytest.approx(direct)
    # a longer delay spread decorrelates neighbouring subcarriers more
    assert abs(TDLChannel("tdl-a", 300.0).frequency_correlation(1, B0)) < abs(
        TDLChannel("tdl-a", 30.0).frequency_correlation(1, B0)
    )


@pytest.mark.parametrize("model", [RayleighChannel(), TDLChannel("tdl-a"), TDLChannel("tdl-d")], ids=lambda m: m.name)
@pytest.mark.parametrize("x", [0.5, 1.5, 2.4, 3.8, 6.0])
def test_time_correlation_is_clarke(model, x):
    # x = 2 pi f_D tau; 3.8 gives a negative J0
    f_d = 10.0
    tau = x / (2 * np.pi * f_d)
    rng = np.random.default_rng(int(10 * x))
    k, m, n = 16, 8, 25
    acc = 0.0
    for _ in range(n):
        s0 = model.draw(k, m, B0, rng)
        s1 = evolve(s0, model, f_d, tau, B0, rng)
        acc += np.mean(_offdiag(s1.response) * np.conj(_offdiag(s0.response)))
    emp = acc / n
    assert abs(emp - j0(x)) < 0.05, (emp, j0(x))
    assert time_correlation(f_d, tau) == pytest.approx(j0(x))


def test_doppler_shift():
    # 120 km/h at 3.5 GHz: v/c * f_c = 33.33 / 299792458 * 3.5e9 = 389.2 Hz
    assert doppler_hz(120.0, 3.5) == pytest.approx(120 / 3.6 * 3.5e9 / 299_792_458.0)
    assert doppler_hz(0.0, 3.5) == 0.0


# ------------------------------------------------------------------ the paper's default
@pytest.mark.parametrize("redraw", ["layer", "round", "fixed"])
def test_default_process_is_exactly_draw_rates(redraw):
    system = SystemConfig(num_nodes=4, num_subcarriers=16)
    proc = ChannelProcess(ChannelConfig(), system, seed=5, channel_redraw=redraw)
    for r in range(2):
        for layer in range(3):
            got = proc.layer_channel(r, layer)
            key = {"layer": [5, r, layer], "round": [5, r], "fixed": [5]}[redraw]
            want = draw_rates(system, np.random.default_rng(key))
            assert np.array_equal(got.true_rates, want) and got.estimated_rates is got.true_rates


def test_rayleigh_model_draws_like_the_legacy_module():
    g_new = power_gain(RayleighChannel().draw(5, 12, B0, np.random.default_rng(7)).response, 1e-2)
    g_old = channel_gain(5, 12, path_loss=1e-2, rng=np.random.default_rng(7))
    assert np.allclose(g_new, g_old, rtol=1e-12, atol=0)


# ------------------------------------------------------------------ CSI and mobility
def test_csi_error_variance():
    rng = np.random.default_rng(3)
    h = RayleighChannel().draw(10, 32, B0, rng).response
    est = estimate_response([h], csi_error=0.2, csi_delay=0, rng=rng)
    err = _offdiag(est - h)
    assert np.mean(np.abs(err) ** 2) == pytest.approx(0.2, rel=0.05)
    assert abs(np.mean(err)) < 0.02
    assert np.all(est[np.arange(10), np.arange(10)] == 0)
    assert estimate_response([h], csi_error=0.0, csi_delay=0, rng=rng) is h


def test_outdated_csi_is_the_previous_round():
    system = SystemConfig(num_nodes=4, num_subcarriers=8)
    proc = ChannelProcess(ChannelConfig("tdl-a", csi_delay=1), system, seed=1)
    first = proc.layer_channel(0, 0)
    assert np.array_equal(first.estimated_rates, first.true_rates)  # fresh estimate at the start of a round
    prev = first
    for layer in range(1, 4):
        cur = proc.layer_channel(0, layer)
        assert np.array_equal(cur.estimated_rates, prev.true_rates)
        assert not np.array_equal(cur.true_rates, prev.true_rates)
        prev = cur


def test_speed_zero_is_static_within_a_query_round_and_independent_across():
    system = SystemConfig(num_nodes=4, num_subcarriers=8)
    proc = ChannelProcess(ChannelConfig("tdl-d", speed_kmh=0.0), system, seed=2)
    a = proc.layer_channel(0, 0).true_rates
    proc.advance(3.0)
    assert np.array_equal(proc.layer_channel(0, 1).true_rates, a)
    assert not np.array_equal(proc.layer_channel(1, 0).true_rates, a)


def test_mobility_uses_the_elapsed_time():
    system = SystemConfig(num_nodes=4, num_subcarriers=8)
    fast = ChannelProcess(ChannelConfig(speed_kmh=3.0), system, seed=2)
    a = fast.layer_channel(0, 0).true_rates
    fast.advance(1e-6)  # a microsecond: J0 ~ 1
    b = fast.layer_channel(0, 1).true_rates
    assert np.allclose(a, b, rtol=1e-3)
    fast.advance(5.0)  # seconds: decorrelated
    c = fast.layer_channel(0, 2).true_rates
    assert not np.allclose(b, c, rtol=0.1)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs,arg",
    [
        ({"model": "tdl-x"}, "model"),
        ({"model": 3}, "model"),
        ({"delay_spread_ns": -1.0}, "delay_spread_ns"),
        ({"delay_spread_ns": float("nan")}, "delay_spread_ns"),
        ({"speed_kmh": -3.0}, "speed_kmh"),
        ({"carrier_ghz": 0.0}, "carrier_ghz"),
        ({"csi_error": 1.5}, "csi_error"),
        ({"csi_error": -0.1}, "csi_error"),
        ({"csi_delay": -1}, "csi_delay"),
        ({"csi_delay": 0.5}, "csi_delay"),
    ],
)
def test_channel_config_bad_input_names_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        ChannelConfig(**kwargs)


def test_other_bad_input():
    with pytest.raises(ValueError, match="`profile`"):
        TDLChannel("tdl-z")
    with pytest.raises(ValueError, match="`delay_spread_ns`"):
        TDLChannel("tdl-a", -5.0)
    with pytest.raises(ValueError, match="`speed_kmh`"):
        doppler_hz(-1.0, 3.5)
    with pytest.raises(ValueError, match="`comp_throughput_tokens_per_s`"):
        SystemConfig(comp_throughput_tokens_per_s=0.0)
    with pytest.raises(ValueError, match=r"`comp_throughput_tokens_per_s`\[1\]"):
        SystemConfig(num_nodes=2, comp_throughput_tokens_per_s=(1e3, 0.0))
    with pytest.raises(ValueError, match="`channel_redraw`"):
        ChannelProcess(ChannelConfig(speed_kmh=3.0), SystemConfig(), channel_redraw="round")
    with pytest.raises(ValueError, match="`model`"):
        ChannelConfig.from_dict({"model": "fancy"})
    with pytest.raises(ValueError, match="`speed`"):
        ChannelConfig.from_dict({"speed": 3})


def test_config_round_trip():
    c = ChannelConfig("TDL-C", delay_spread_ns=300, speed_kmh=30, csi_error=0.1, csi_delay=1)
    assert c.model == "tdl-c"
    assert ChannelConfig.from_dict(c.to_dict()) == c
    assert "TDL-C" in c.label() and "30 km/h" in c.label()
    s = SystemConfig(num_nodes=2, comp_throughput_tokens_per_s=[1e3, 2e3])
    assert SystemConfig.from_dict(s.to_dict()) == s
    assert np.array_equal(s.comp_throughput_j, [1e3, 2e3])


# ------------------------------------------------------------------ Sionna cross-check
def test_tdl_matches_sionna_statistically():
    pytest.importorskip("sionna.phy", reason="optional: pip install dmoe[sionna]")
    import torch
    from sionna.phy.channel import cir_to_ofdm_channel, subcarrier_frequencies
    from sionna.phy.channel.tr38901 import TDL

    torch.manual_seed(0)
    m, ds = 16, 100e-9
    for name in ("A", "D"):
        tdl = TDL(model=name, delay_spread=ds, carrier_frequency=3.5e9, min_speed=0.0, max_speed=0.0)
        a, tau = tdl(batch_size=3000, num_time_steps=1, sampling_frequency=1.0)
        freqs = subcarrier_frequencies(m, B0)
        # [batch, M] frequency response
        h_s = cir_to_ofdm_channel(freqs, a, tau, normalize=False).reshape(3000, m).numpy().astype(np.complex128)
        ours = TDLChannel(f"tdl-{name.lower()}", ds * 1e9)
        h_o = _offdiag(ours.draw(64, m, B0, np.random.default_rng(0)).response)
        for h in (h_s, h_o):
            assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, abs=0.06)
        for d in (1, 2, 4):
            c_s = np.mean(h_s[:, : m - d] * np.conj(h_s[:, d:]))
            c_o = np.mean(h_o[:, : m - d] * np.conj(h_o[:, d:]))
            # Sionna's frequencies run from -M/2 B0; the correlation depends on the lag only.
            # Conventions of the sign of the phase may differ: compare magnitudes and the real part.
            assert abs(c_s) == pytest.approx(abs(c_o), abs=0.06)
            assert abs(c_s) == pytest.approx(abs(ours.frequency_correlation(d, B0)), abs=0.06)

    # time correlation of Sionna's sum-of-sinusoids TDL-A at 30 km/h against our J0 (Clarke)
    v = 30 / 3.6
    f_d = doppler_hz(30.0, 3.5)
    for x in (1.0, 3.0):
        dt = x / (2 * np.pi * f_d)
        tdl = TDL(model="A", delay_spread=ds, carrier_frequency=3.5e9, min_speed=v, max_speed=v)
        a, _ = tdl(batch_size=3000, num_time_steps=2, sampling_frequency=1.0 / dt)
        a = a.numpy().astype(np.complex128).reshape(3000, -1, 2)  # [batch, paths, time]
        emp = np.sum(np.mean(a[..., 1] * np.conj(a[..., 0]), axis=0)) / np.sum(np.mean(np.abs(a[..., 0]) ** 2, axis=0))
        assert emp.real == pytest.approx(float(time_correlation(f_d, dt)), abs=0.06)


def test_delay_spread_beyond_the_grid_is_refused_and_a_wrapping_tail_warned():
    """Issue 20: 1e9 ns aliased silently to flat fading (results identical to 0 ns)."""
    from dmoe.channels import check_grid_resolution

    with pytest.raises(ValueError, match=r"`delay_spread_ns` = 1e\+09 ns .* must be < 1000 ns"):
        check_grid_resolution(TDLChannel("tdl-a", 1e9), 1e6)
    with pytest.raises(ValueError, match="must be < 1000 ns"):
        check_grid_resolution(TDLChannel("tdl-c", 1000.0), 1e6)
    msgs = []
    check_grid_resolution(TDLChannel("tdl-a", 300.0), 1e6, warn=msgs.append)
    assert len(msgs) == 1 and "wrap around" in msgs[0] and "103.5 ns" in msgs[0]
    msgs.clear()
    check_grid_resolution(TDLChannel("tdl-a", 100.0), 1e6, warn=msgs.append)  # last tap 966 ns < 1 us
    check_grid_resolution(RayleighChannel(), 1e9, warn=msgs.append)
    assert msgs == []


def test_speed_above_the_documented_bound_is_refused():
    from dmoe.channels import MAX_SPEED_KMH

    assert MAX_SPEED_KMH == 500.0
    ChannelConfig(speed_kmh=500.0)
    with pytest.raises(ValueError, match=r"`speed_kmh` must lie in \[0, 500\] \[km/h\]"):
        ChannelConfig(speed_kmh=1e12)
