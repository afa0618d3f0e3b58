"""A deployment (layout + path loss) composed with every fading model, mobility and CSI error
in the runtime's channel; the paper's default unchanged; `dmoe run`'s new flags reject bad
input before any work."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from dmoe.channels.rates import draw_rates
from dmoe.channels import CHANNEL_MODELS, DEPLOYMENT_STREAM, ChannelConfig, ChannelProcess, RayleighChannel
from dmoe.channels.geometry import node_positions
from dmoe.channels.pathloss import draw_large_scale
from dmoe.cli import main
from dmoe.system import SystemConfig, dbm_to_w, system_preset

NR30 = "nr-fr1-30khz-100mhz"
K, M = 4, 32
SYSTEM = system_preset(NR30, num_nodes=K, num_subcarriers=M)
OFF = ~np.eye(K, dtype=bool)


def _gain(rates, system):
    """Invert eq (1): H = (2^(r / B0) - 1) N0 / P0."""
    return np.expm1(rates * math.log(2.0) / system.subcarrier_spacing_hz) * system.noise_power_w / system.tx_power_w


def _check_mean(samples, expected, *, sigmas=5.0):
    """``samples`` [R, K, K]: i.i.d. per-round means of each link; their mean must be within
    ``sigmas`` standard errors of ``expected`` [K, K] on every link."""
    mean = samples.mean(axis=0)[OFF]
    se = samples.std(axis=0, ddof=1)[OFF] / math.sqrt(samples.shape[0])
    assert np.all(np.abs(mean - expected[OFF]) <= sigmas * se + 1e-12 * expected[OFF]), (mean / expected[OFF])
    # and the pooled relative error is small
    assert np.mean(mean / expected[OFF]) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("model", CHANNEL_MODELS)
def test_mean_power_gain_per_link_is_the_large_scale_gain(model):
    cfg = ChannelConfig(model, layout="disk:60")
    proc = ChannelProcess(cfg, SYSTEM, seed=11)
    g = proc.large_scale.gain
    rounds = 400
    # [R, K, K] per-round mean over subcarriers of the power gain (independent rounds)
    per_round = np.stack([_gain(proc.layer_channel(r, 0).true_rates, SYSTEM).mean(axis=2) for r in range(rounds)])
    _check_mean(per_round, g)
    # the same deployment in every round (spatially consistent), the one ChannelConfig.large_scale gives
    np.testing.assert_array_equal(cfg.large_scale(K, 11).gain, g)


def test_mobility_and_csi_error_keep_the_per_link_scale():
    cfg = ChannelConfig("tdl-c", speed_kmh=30.0, csi_error=0.2, layout="grid:15", pathloss="inh-office")
    proc = ChannelProcess(cfg, SYSTEM, seed=2)
    g = proc.large_scale.gain
    true, est = [], []
    for r in range(200):
        for layer in range(3):
            ch = proc.layer_channel(r, layer)
            proc.advance(0.05)
            if layer == 2:  # evolved by mobility
                true.append(_gain(ch.true_rates, SYSTEM).mean(axis=2))
                est.append(_gain(ch.estimated_rates, SYSTEM).mean(axis=2))
    _check_mean(np.stack(true), g)
    # H_est = H + CN(0, sigma^2 E|H|^2): E|H_est|^2 = (1 + sigma^2) G per link
    _check_mean(np.stack(est), 1.2 * g)


def test_layout_with_rayleigh_is_the_unit_response_times_the_gain_exactly():
    cfg = ChannelConfig(layout="disk:25", pathloss="umi-street-canyon")
    assert not cfg.is_paper_default
    proc = ChannelProcess(cfg, SYSTEM, seed=5)
    pos = node_positions("disk:25", K, rng=np.random.default_rng([5, DEPLOYMENT_STREAM, 0]))
    ls = draw_large_scale(pos, "umi-street-canyon", 3.5, np.random.default_rng([5, DEPLOYMENT_STREAM, 1]))
    np.testing.assert_array_equal(proc.large_scale.gain, ls.gain)
    h = RayleighChannel().draw(K, M, SYSTEM.subcarrier_spacing_hz, np.random.default_rng([5, 3, 2])).response
    power = ls.gain[:, :, None] * np.abs(h) ** 2
    expected = SYSTEM.subcarrier_spacing_hz * np.log2(1 + power * SYSTEM.snr_linear)
    np.testing.assert_allclose(proc.layer_channel(3, 2).true_rates, expected, rtol=1e-12, atol=0)
    # the i.i.d. draw the runtime charges unscheduled layers on uses the same gains
    np.testing.assert_allclose(proc.iid_rates(np.random.default_rng([5, 3, 2])), expected, rtol=1e-12, atol=0)
    # rates are symmetric in the mean (reciprocity of the large-scale part)
    np.testing.assert_array_equal(proc.large_scale.gain, proc.large_scale.gain.T)


@pytest.mark.parametrize("redraw", ["layer", "round", "fixed"])
def test_paper_default_is_bit_identical_to_draw_rates(redraw):
    system = system_preset("paper", num_nodes=8)
    for cfg in (ChannelConfig(), ChannelConfig(shadowing=False)):
        assert cfg.is_paper_default
        proc = ChannelProcess(cfg, system, seed=3, channel_redraw=redraw)
        assert proc.large_scale is None
        for r, layer in [(0, 0), (1, 4), (2, 7)]:
            key = {"layer": [3, r, layer], "round": [3, r], "fixed": [3]}[redraw]
            got = proc.layer_channel(r, layer)
            np.testing.assert_array_equal(got.true_rates, draw_rates(SystemConfig(), np.random.default_rng(key)))
            assert got.estimated_rates is got.true_rates
        np.testing.assert_array_equal(proc.iid_rates(np.random.default_rng(9)), draw_rates(system, np.random.default_rng(9)))


def test_channel_config_layout_fields():
    c = ChannelConfig(layout=" disk:50 ")
    assert c.layout == "disk:50" and c.pathloss == "umi-street-canyon" and c.shadowing
    assert ChannelConfig.from_dict(c.to_dict()) == c
    assert "disk:50" in c.label() and "umi-street-canyon" in c.label()
    assert "without shadowing" in ChannelConfig(layout="grid:5", pathloss="INH-office", shadowing=False).label()
    a, b = c.large_scale(6, 1), c.large_scale(6, 1)
    np.testing.assert_array_equal(a.positions_m, b.positions_m)
    assert not np.array_equal(a.positions_m, c.large_scale(6, 2).positions_m)
    assert ChannelConfig().large_scale(6, 1) is None


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"pathloss": "inh-office"}, "`pathloss`"),
        ({"layout": "disk:50", "pathloss": "uma"}, "known: inh-office, umi-street-canyon, free-space"),
        ({"layout": "disk:-50"}, "`layout`"),
        ({"layout": "disk:nan"}, "`layout`"),
        ({"layout": "grid:inf"}, "`layout`"),
        ({"layout": ""}, "`layout`"),
        ({"layout": "disk:50", "carrier_ghz": 120.0}, "`carrier_ghz`"),
        ({"layout": "disk:50", "shadowing": "yes"}, "`shadowing`"),
    ],
)
def test_channel_config_bad_deployment(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ChannelConfig(**kwargs)


def test_csv_layout_must_have_one_row_per_node(tmp_path):
    p = tmp_path / "nodes.csv"
    p.write_text("x,y\n0,0\n10,0\n0,10\n")
    cfg = ChannelConfig(layout=str(p), pathloss="free-space")
    assert cfg.large_scale(3, 0).distance_m[1, 2] == pytest.approx(math.sqrt(200))
    with pytest.raises(ValueError, match="N = 4 nodes"):
        ChannelProcess(cfg, system_preset("paper", num_nodes=4), seed=0)


def test_runtime_with_an_nr_preset_and_a_layout_gives_finite_results(tiny_llama, tiny_tokenizer):
    from conftest import make_tiny_moe

    from dmoe.data import load_mmlu, pack_question
    from dmoe.policies import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
    from dmoe.runtime import evaluate_policy

    model = make_tiny_moe(tiny_llama, K, seed=1)
    queries = [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=4)]
    system = system_preset(NR30, num_nodes=K, num_subcarriers=16)
    channel = ChannelConfig("tdl-a", layout="disk:80")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no division by zero, no overflow, no NaN
        for pol in (Dense(), TopK(1), Homogeneous(0.5, 2), JESAPolicy(0.9, 2), LowerBound(0.9, 2)):
            res = evaluate_policy(model, queries, pol, system=system, seed=0, channel=channel, progress=False)
            stats = res.latency_stats()
            assert np.isfinite(res.energy_j) and res.energy_comm_j > 0 and np.isfinite(res.mean_nll)
            assert all(np.isfinite(v) for v in stats.values() if isinstance(v, float))


# ------------------------------------------------------------------ CLI: rejected before any work
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--system", "lte"], "--system"),
        (["--pathloss", "inh-office"], "--pathloss"),
        (["--layout", "disk:50", "--pathloss", "uma"], "--pathloss"),
        (["--layout", "disk:-5"], "`layout`"),
        (["--layout", "disk:nan"], "`layout`"),
        (["--layout", "grid:0"], "`layout`"),
        (["--layout", "missing.csv"], "neither"),
        (["--layout", "disk:50", "--carrier-ghz", "200"], "`carrier_ghz`"),
        (["--noise-figure", "-1"], "--noise-figure"),
        (["--noise-figure", "nan"], "--noise-figure"),
        (["--tx-power-dbm", "inf"], "--tx-power-dbm"),
        (["--tx-power-dbm", "5"], "cannot carry one resource block"),
        (["--system", NR30, "--snr-db", "10"], "--snr-db"),
        (["--system", NR30, "-M", "16"], "--num-subcarriers"),  # dense needs N(N-1) = 56 RBs
    ],
)
def test_bad_deployment_arguments_fail_cleanly(args, needle, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", *args, "--output", str(out), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "c").exists() and not out.exists()  # nothing done, nothing written


def test_csv_with_the_wrong_number_of_nodes_fails_before_any_work(tmp_path):
    p = tmp_path / "nodes.csv"
    p.write_text("x,y\n0,0\n10,0\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--layout", str(p), "--output", str(out), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "N = 8 nodes" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "c").exists() and not out.exists()


def test_run_main_job_rejects_a_preset_beside_an_explicit_system():
    from dmoe.main_job import run_main_job

    with pytest.raises(ValueError, match="`system`"):
        run_main_job(system=SystemConfig(), preset=NR30)
    with pytest.raises(ValueError, match="`system`"):
        run_main_job(system=SystemConfig(), tx_power_dbm=20.0)
    with pytest.raises(ValueError, match="known: paper"):
        run_main_job(preset="nr-fr2")
    with pytest.raises(ValueError, match="`noise_figure_db`"):
        run_main_job(noise_figure_db=float("nan"))
    assert dbm_to_w(20.0) == pytest.approx(0.1)
