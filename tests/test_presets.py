"""Numerology presets (dmoe.system): the paper's unchanged, NR FR1 resource-block grids,
thermal noise k T0 B NF, power budgets, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmoe.system import (
    SYSTEM_PRESETS,
    SystemConfig,
    dbm_to_w,
    default_num_subcarriers,
    system_preset,
    thermal_noise_w,
    w_to_dbm,
)

NR15, NR30 = "nr-fr1-15khz-20mhz", "nr-fr1-30khz-100mhz"


@pytest.mark.parametrize("k", [2, 5, 8, 16])
def test_paper_preset_is_todays_default(k):
    assert system_preset("paper", num_nodes=k) == SystemConfig(num_nodes=k, num_subcarriers=default_num_subcarriers(k))
    assert system_preset("paper", num_nodes=k).noise_figure_db is None
    assert system_preset("paper") == SystemConfig()
    assert system_preset("Paper", snr_db=7.0, num_subcarriers=100) == SystemConfig(snr_db=7.0, num_subcarriers=100)


def test_thermal_noise_by_hand():
    # k T0 = 1.380649e-23 * 290 = 4.00388e-21 W/Hz = -173.975 dBm/Hz
    assert thermal_noise_w(1.0, 0.0) == pytest.approx(4.003882e-21, rel=1e-6)
    assert w_to_dbm(thermal_noise_w(1.0, 0.0)) == pytest.approx(-173.975, abs=1e-3)
    # 360 kHz, NF 7 dB: -173.975 + 10 log10(360e3) + 7 = -173.975 + 55.563 + 7 = -111.412 dBm
    assert w_to_dbm(thermal_noise_w(360e3, 7.0)) == pytest.approx(-111.412, abs=1e-3)
    assert dbm_to_w(30.0) == pytest.approx(1.0) and dbm_to_w(23.0) == pytest.approx(0.1995262, rel=1e-6)
    assert w_to_dbm(1e-3) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "name, rbs, rb_hz, p0_dbm, n0_dbm",
    [
        # 106 RBs x 12 x 15 kHz; P0 = 23 dBm - 10 log10(106) = 23 - 20.253 = 2.747 dBm;
        # N0 = -173.975 + 10 log10(180e3) + 7 = -173.975 + 52.553 + 7 = -114.422 dBm
        (NR15, 106, 180e3, 2.747, -114.422),
        # 273 RBs x 12 x 30 kHz; P0 = 23 - 10 log10(273) = 23 - 24.362 = -1.362 dBm; N0 = -111.412 dBm
        (NR30, 273, 360e3, -1.362, -111.412),
    ],
)
def test_nr_presets(name, rbs, rb_hz, p0_dbm, n0_dbm):
    s = system_preset(name, num_nodes=8)
    assert s.num_nodes == 8 and s.num_subcarriers == rbs
    assert s.subcarrier_spacing_hz == pytest.approx(rb_hz)
    assert s.node_power_budget_w == pytest.approx(0.199526, rel=1e-5)  # 23 dBm
    assert s.tx_power_w * rbs == pytest.approx(s.node_power_budget_w)  # constant PSD over the carrier
    assert w_to_dbm(s.tx_power_w) == pytest.approx(p0_dbm, abs=1e-3)
    assert s.noise_figure_db == 7.0
    assert w_to_dbm(s.noise_power_w) == pytest.approx(n0_dbm, abs=1e-3)
    assert s.snr_linear == pytest.approx(s.tx_power_w / s.noise_power_w)
    assert 10 * math.log10(s.snr_linear) == pytest.approx(p0_dbm - n0_dbm, abs=2e-3)
    assert s.max_rbs_per_node == rbs
    p = SYSTEM_PRESETS[name]
    assert p.carrier_ghz == 3.5 and p.subcarriers_per_unit == 12 and p.unit_bandwidth_hz == pytest.approx(rb_hz)
    assert "38.101-1" in p.source
    assert SystemConfig.from_dict(s.to_dict()) == s


def test_snr_db_is_ignored_with_a_noise_figure():
    a = SystemConfig(noise_figure_db=7.0, snr_db=10.0)
    b = SystemConfig(noise_figure_db=7.0, snr_db=-30.0)
    assert a.noise_power_w == b.noise_power_w == pytest.approx(thermal_noise_w(1e6, 7.0))
    assert a.snr_linear == b.snr_linear
    # without a noise figure: the paper's N0 = P0 / 10^(snr/10), unchanged
    assert SystemConfig().noise_power_w == pytest.approx(1e-3) and SystemConfig().snr_linear == 10.0


def test_overrides():
    # fewer RBs scheduled: the PSD (P0 per RB) stays the carrier's
    s = system_preset(NR30, num_nodes=4, num_subcarriers=50)
    assert s.num_subcarriers == 50 and s.tx_power_w == pytest.approx(dbm_to_w(23.0) / 273)
    # another budget: P0 = P_max / N_RB follows it
    s = system_preset(NR30, num_nodes=4, node_power_budget_w=dbm_to_w(20.0))
    assert s.tx_power_w == pytest.approx(dbm_to_w(20.0) / 273) and s.max_rbs_per_node == 273
    # explicit P0: a node can carry floor(P_max / P0) RBs
    s = system_preset(NR15, tx_power_w=dbm_to_w(13.0))
    assert s.max_rbs_per_node == 10
    s = system_preset(NR15, noise_figure_db=9.0)
    assert w_to_dbm(s.noise_power_w) == pytest.approx(-112.422, abs=1e-3)
    # the paper preset with a budget: P0 stays 10 mW
    s = system_preset("paper", node_power_budget_w=dbm_to_w(20.0))
    assert s.tx_power_w == 1e-2 and s.max_rbs_per_node == 10


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="`preset`") as exc:
        system_preset("lte-20mhz")
    for name in SYSTEM_PRESETS:
        assert name in str(exc.value)
    with pytest.raises(ValueError, match="`bandwidth`"):
        system_preset(NR15, bandwidth=5)
    with pytest.raises(ValueError, match="`num_nodes`"):
        system_preset(NR15, num_nodes=0)


@pytest.mark.parametrize("nf", [-1.0, float("nan"), float("inf"), "7", True])
def test_bad_noise_figure(nf):
    with pytest.raises(ValueError, match="`noise_figure_db`"):
        SystemConfig(noise_figure_db=nf)
    with pytest.raises(ValueError, match="`noise_figure_db`"):
        system_preset(NR30, noise_figure_db=nf)


def test_budget_that_cannot_carry_one_rb():
    with pytest.raises(ValueError, match="cannot carry one resource block"):
        system_preset("paper", node_power_budget_w=dbm_to_w(5.0))  # 3.2 mW < P0 = 10 mW
    with pytest.raises(ValueError, match="cannot carry one resource block"):
        system_preset(NR30, tx_power_w=1.0)  # 1 W per RB > 23 dBm
    with pytest.raises(ValueError, match="`node_power_budget_w`"):
        system_preset(NR30, node_power_budget_w=-1.0)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: dbm_to_w(float("nan")), "power_dbm"),
        (lambda: dbm_to_w("23"), "power_dbm"),
        (lambda: w_to_dbm(0.0), "power_w"),
        (lambda: thermal_noise_w(-1.0, 7.0), "bandwidth_hz"),
        (lambda: thermal_noise_w(1e6, -1.0), "noise_figure_db"),
        (lambda: thermal_noise_w(1e6, None), "noise_figure_db"),
    ],
)
def test_bad_conversions(call, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        call()


def test_preset_table_is_json_ready():
    import json

    rows = [p.to_dict() for p in SYSTEM_PRESETS.values()]
    json.dumps(rows, allow_nan=False)
    assert [r["name"] for r in rows] == ["paper", NR15, NR30]
    assert np.isclose(rows[2]["unit_bandwidth_hz"], 360e3)


def test_radio_values_far_outside_physics_are_refused_not_overflowed():
    """Issue 20 (found by tests/test_cli_properties.py): --snr-db 1e300 overflowed deep in the run."""
    from dmoe.system import SystemConfig, dbm_to_w

    with pytest.raises(ValueError, match=r"`snr_db` must be a finite number in \[-300, 300\] \[dB\]"):
        SystemConfig(snr_db=1e300)
    with pytest.raises(ValueError, match=r"`noise_figure_db` .* \[0, 50\] \[dB\]"):
        SystemConfig(noise_figure_db=400.0)
    with pytest.raises(ValueError, match=r"`power_dbm` .* \[-100, 60\] \[dBm\]"):
        dbm_to_w(1e300)
    assert SystemConfig(snr_db=-300.0).snr_linear == pytest.approx(1e-30)
