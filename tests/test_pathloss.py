"""3GPP TR 38.901 path loss (Table 7.4.1-1), LoS probability (Table 7.4.2-1) and shadowing.

Expected values are computed by hand from the tables (the arithmetic is in the comments,
log10(3.5) = 0.544068, log10(28) = 1.447158, log10(60) = 1.778151, log10(2) = 0.301030),
not by the code under test. Statistical tests use fixed seeds and tolerances of several
standard errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dmoe.channels.pathloss import (
    MIN_DISTANCE_M,
    PATHLOSS_MODELS,
    SHADOW_FADING_STD_DB,
    check_pathloss_model,
    draw_large_scale,
    los_probability,
    path_loss_db,
    shadow_fading_std_db,
)

UMI, INH, FS = "umi-street-canyon", "inh-office", "free-space"


@pytest.mark.parametrize(
    "model, d, fc, los, expected",
    [
        # UMi, h_BS = h_UT = 1.5 m: h' = 0.5 m, d'_BP = 4 * 0.5 * 0.5 * fc / 3e8 = fc / 3e8
        # 3.5 GHz: d'_BP = 11.667 m. d = 10 m <= d'_BP: PL1 = 32.4 + 21*1 + 20*0.544068 = 64.28136
        (UMI, 10.0, 3.5, True, 64.28136),
        # NLoS' = 35.3*1 + 22.4 + 21.3*0.544068 - 0 = 69.28865 > 64.28136
        (UMI, 10.0, 3.5, False, 69.28865),
        # below the minimum 10 m: clamped to 10 m
        (UMI, 4.0, 3.5, True, 64.28136),
        (UMI, 0.0, 3.5, False, 69.28865),
        # d = 100 m > d'_BP: PL2 = 32.4 + 40*2 + 20*0.544068 - 9.5*log10(11.6667^2)
        #                      = 123.28136 - 19*1.066947 = 103.00937
        (UMI, 100.0, 3.5, True, 103.00937),
        # NLoS' = 35.3*2 + 22.4 + 21.3*0.544068 = 104.58865 > 103.00937
        (UMI, 100.0, 3.5, False, 104.58865),
        # 28 GHz: d'_BP = 93.333 m. d = 50 m: PL1 = 32.4 + 21*1.698970 + 20*1.447158 = 97.02153
        (UMI, 50.0, 28.0, True, 97.02153),
        # NLoS' = 35.3*1.698970 + 22.4 + 21.3*1.447158 = 113.19811
        (UMI, 50.0, 28.0, False, 113.19811),
        # d = 200 m: PL2 = 32.4 + 40*2.301030 + 28.94316 - 19*log10(93.3333) = 153.38436 - 37.43070 = 115.95366
        (UMI, 200.0, 28.0, True, 115.95366),
        # NLoS' = 35.3*2.301030 + 22.4 + 30.82447 = 134.45082
        (UMI, 200.0, 28.0, False, 134.45082),
        # 2 GHz: d'_BP = 6.667 m < 10 m, so already d = 10 m uses PL2:
        # 32.4 + 40 + 20*0.301030 - 19*log10(6.6667) = 78.42060 - 19*0.823909 = 62.76633 (PL1 would be 59.42060)
        (UMI, 10.0, 2.0, True, 62.76633),
        # NLoS' = 35.3 + 22.4 + 21.3*0.301030 = 64.11194
        (UMI, 10.0, 2.0, False, 64.11194),
        # InH-Office: LoS 32.4 + 17.3 log10(d) + 20 log10(fc); d = 10 m, 3.5 GHz: 32.4 + 17.3 + 10.88136 = 60.58136
        (INH, 10.0, 3.5, True, 60.58136),
        # NLoS' = 38.3 + 17.30 + 24.9*0.544068 = 69.14729
        (INH, 10.0, 3.5, False, 69.14729),
        # d = 3 m: LoS = 32.4 + 17.3*0.477121 + 10.88136 = 51.53556; NLoS' = 38.3*0.477121 + 17.3 + 13.54729
        # = 49.12104 < LoS, so NLoS = max(LoS, NLoS') = 51.53556
        (INH, 3.0, 3.5, True, 51.53556),
        (INH, 3.0, 3.5, False, 51.53556),
        # below 1 m: clamped; LoS = 32.4 + 0 + 10.88136 = 43.28136; NLoS' = 30.84729 -> max = 43.28136
        (INH, 0.3, 3.5, True, 43.28136),
        (INH, 0.0, 3.5, False, 43.28136),
        # 60 GHz, 100 m: LoS = 32.4 + 34.6 + 20*1.778151 = 102.56303; NLoS' = 76.6 + 17.3 + 24.9*1.778151 = 138.17597
        (INH, 100.0, 60.0, True, 102.56303),
        (INH, 100.0, 60.0, False, 138.17597),
        # free space 20 log10(4 pi d f / c): 100 m, 3.5 GHz: 20*log10(14670.8) = 83.32914
        (FS, 100.0, 3.5, True, 83.32914),
        (FS, 100.0, 3.5, False, 83.32914),
        # 10 m, 28 GHz: 20*log10(11736.6) = 81.39094
        (FS, 10.0, 28.0, True, 81.39094),
    ],
)
def test_path_loss_against_hand_computed_table_values(model, d, fc, los, expected):
    assert float(path_loss_db(model, d, fc, los)) == pytest.approx(expected, abs=2e-4)


def test_umi_with_the_tables_base_station_height_uses_3d_distance():
    # h_BS = 10 m, h_UT = 1.5 m (Table 7.4.1-1's UMi): d'_BP = 4 * 9 * 0.5 * 3.5e9 / 3e8 = 210 m
    # d_2D = 100 m: d_3D = sqrt(100^2 + 8.5^2) = 100.36060; PL1 = 32.4 + 21*2.001563 + 10.88136 = 85.31419
    pl = path_loss_db(UMI, [100.0, 500.0], 3.5, True, tx_height_m=10.0, rx_height_m=1.5)
    assert pl[0] == pytest.approx(85.31419, abs=2e-4)
    # d_2D = 500 m > 210 m: d_3D = 500.07225; PL2 = 32.4 + 40*2.699033 + 10.88136 - 9.5*log10(210^2 + 8.5^2)
    #                                           = 151.24267 - 9.5*4.645150 = 107.11375
    assert pl[1] == pytest.approx(107.11375, abs=2e-4)
    nlos = path_loss_db(UMI, 100.0, 3.5, False, tx_height_m=10.0, rx_height_m=1.5)
    # NLoS' = 35.3*2.001563 + 22.4 + 11.58865 - 0.3*(1.5 - 1.5) = 104.64383
    assert float(nlos) == pytest.approx(104.64383, abs=2e-4)


def test_umi_los_is_continuous_at_the_breakpoint_and_nlos_never_below_los():
    fc = 3.5
    d_bp = fc * 1e9 / 3e8
    below, above = path_loss_db(UMI, [d_bp - 1e-9, d_bp + 1e-9], fc, True)
    assert below == pytest.approx(above, abs=1e-6)
    d = np.linspace(0, 2000, 4001)
    for model in PATHLOSS_MODELS:
        for f in (0.7, 3.5, 28.0):
            assert np.all(path_loss_db(model, d, f, False) >= path_loss_db(model, d, f, True))
            assert np.all(np.diff(path_loss_db(model, d, f, True)) >= 0)  # non-decreasing in distance


@pytest.mark.parametrize(
    "model, d, expected",
    [
        (UMI, 0.0, 1.0),
        (UMI, 18.0, 1.0),
        # 18/50 + exp(-50/36) * (1 - 18/50) = 0.36 + 0.249352 * 0.64 = 0.519585
        (UMI, 50.0, 0.519585),
        # 18/100 + exp(-100/36) * 0.82 = 0.18 + 0.062177 * 0.82 = 0.230985
        (UMI, 100.0, 0.230985),
        (INH, 1.2, 1.0),
        # exp(-(3 - 1.2)/4.7) = exp(-0.382979) = 0.681827
        (INH, 3.0, 0.681827),
        # 0.32 exp(-(20 - 6.5)/32.6) = 0.32 * 0.660928 = 0.211497
        (INH, 20.0, 0.211497),
        (FS, 500.0, 1.0),
    ],
)
def test_los_probability_against_table(model, d, expected):
    assert float(los_probability(model, d)) == pytest.approx(expected, abs=2e-6)


def test_inh_los_probability_is_continuous_only_where_the_table_says():
    # at 6.5 m the mixed-office formula jumps from exp(-5.3/4.7) = 0.3238 to 0.32 (as the table does)
    p = los_probability(INH, [6.5 - 1e-9, 6.5])
    assert p[0] == pytest.approx(math.exp(-5.3 / 4.7), abs=1e-8) and p[1] == pytest.approx(0.32)


def test_shadow_fading_std_of_the_table():
    assert SHADOW_FADING_STD_DB[UMI] == (4.0, 7.82)
    assert SHADOW_FADING_STD_DB[INH] == (3.0, 8.03)
    np.testing.assert_array_equal(shadow_fading_std_db(UMI, [True, False]), [4.0, 7.82])
    np.testing.assert_array_equal(shadow_fading_std_db(FS, [True, False]), [0.0, 0.0])


def _square(n, rng, half=120.0):
    """n positions uniform in a square of side 2 * half [m]."""
    return np.random.default_rng(rng).uniform(-half, half, size=(n, 2))


#: half side of the square [m] that gives each model both LoS and NLoS links in numbers
HALF = {UMI: 120.0, INH: 12.0}


@pytest.mark.parametrize("model", [UMI, INH])
def test_los_frequency_matches_probability_within_binomial_bounds(model):
    # 160 nodes: 12720 links with many distances; in distance bins, the number of LoS links
    # is a sum of independent Bernoullis with the table's probabilities
    pos = _square(160, 0, HALF[model])
    ls = draw_large_scale(pos, model, 3.5, np.random.default_rng(1))
    iu = np.triu_indices(160, k=1)
    d, los = ls.distance_m[iu], ls.los[iu]
    p = los_probability(model, d)
    edges = np.quantile(d, np.linspace(0, 1, 11))
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (d >= lo) & (d < hi)
        mean, sd = p[sel].sum(), math.sqrt(np.sum(p[sel] * (1 - p[sel])))
        assert abs(los[sel].sum() - mean) <= 4 * sd + 1, (lo, hi)
    total_sd = math.sqrt(np.sum(p * (1 - p)))
    assert abs(los.sum() - p.sum()) <= 4 * total_sd


@pytest.mark.parametrize("model", [UMI, INH])
def test_shadowing_is_gaussian_with_the_tables_std(model):
    pos = _square(160, 2, HALF[model])
    ls = draw_large_scale(pos, model, 3.5, np.random.default_rng(3))
    iu = np.triu_indices(160, k=1)
    sf, los = ls.shadowing_db[iu], ls.los[iu]
    for state, sigma in zip((True, False), SHADOW_FADING_STD_DB[model]):
        x = sf[los == state]
        n = x.size
        assert n > 1000
        assert abs(x.mean()) <= 4 * sigma / math.sqrt(n)
        # std of a sample std of a normal: sigma / sqrt(2(n-1))
        assert abs(x.std(ddof=1) - sigma) <= 4 * sigma / math.sqrt(2 * (n - 1))
        assert stats.kstest(x / sigma, "norm").pvalue > 1e-3
    # PL + SF is the recorded path loss, and the gain is its linear inverse
    pl = path_loss_db(model, ls.distance_m[iu], 3.5, los) + sf
    np.testing.assert_allclose(ls.path_loss_db[iu], pl, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ls.gain[iu], 10 ** (-pl / 10), rtol=1e-12)


def test_large_scale_is_reciprocal_seeded_and_shadowing_can_be_turned_off():
    pos = _square(12, 4)
    a = draw_large_scale(pos, UMI, 3.5, np.random.default_rng(5))
    b = draw_large_scale(pos, UMI, 3.5, np.random.default_rng(5))
    c = draw_large_scale(pos, UMI, 3.5, np.random.default_rng(5), shadowing=False)
    for arr in (a.los, a.shadowing_db, a.path_loss_db, a.gain, a.distance_m):
        np.testing.assert_array_equal(arr, arr.T)
    np.testing.assert_array_equal(a.gain, b.gain)
    np.testing.assert_array_equal(a.los, c.los)  # the LoS states do not depend on the shadowing switch
    assert np.all(c.shadowing_db == 0)
    assert np.all(np.diag(a.gain) == 0) and np.all(a.gain[~np.eye(12, dtype=bool)] > 0)
    d = a.to_dict()
    assert d["model"] == UMI and len(d["positions_m"]) == 12 and 0 <= d["los_fraction"] <= 1
    free = draw_large_scale(pos, FS, 3.5, np.random.default_rng(5))
    assert free.los.all() and np.all(free.shadowing_db == 0)


def test_coincident_nodes_are_clamped_to_the_minimum_distance():
    pos = np.array([[0.0, 0.0], [0.0, 0.0], [30.0, 40.0]])
    ls = draw_large_scale(pos, UMI, 3.5, np.random.default_rng(0), shadowing=False)
    assert ls.distance_m[0, 1] == 0.0 and ls.distance_m[0, 2] == 50.0
    assert ls.los[0, 1]  # P_LoS(0) = 1
    assert ls.path_loss_db[0, 1] == pytest.approx(float(path_loss_db(UMI, MIN_DISTANCE_M[UMI], 3.5, True)))
    assert np.isfinite(ls.gain).all()


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: path_loss_db("uma", 10.0, 3.5, True), "pathloss"),
        (lambda: path_loss_db(UMI, -1.0, 3.5, True), "distance_2d_m"),
        (lambda: path_loss_db(UMI, float("nan"), 3.5, True), "distance_2d_m"),
        (lambda: path_loss_db(INH, float("inf"), 3.5, True), "distance_2d_m"),
        (lambda: path_loss_db(UMI, 10.0, 0.3, True), "carrier_ghz"),
        (lambda: path_loss_db(INH, 10.0, 150.0, True), "carrier_ghz"),
        (lambda: path_loss_db(FS, 10.0, 0.0, True), "carrier_ghz"),
        (lambda: path_loss_db(UMI, 10.0, float("nan"), True), "carrier_ghz"),
        (lambda: path_loss_db(UMI, 10.0, 3.5, True, tx_height_m=1.0), "tx_height_m"),
        (lambda: path_loss_db(INH, 10.0, 3.5, True, rx_height_m=-2.0), "rx_height_m"),
        (lambda: los_probability(UMI, [-3.0]), "distance_2d_m"),
        (lambda: los_probability("rma", [3.0]), "pathloss"),
        (lambda: draw_large_scale(np.zeros((3, 3)), UMI, 3.5, np.random.default_rng(0)), "positions"),
        (lambda: draw_large_scale([[0, 0], [np.nan, 1]], UMI, 3.5, np.random.default_rng(0)), "positions"),
    ],
)
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        call()


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError) as exc:
        check_pathloss_model("UMa")
    for name in PATHLOSS_MODELS:
        assert name in str(exc.value)
    assert check_pathloss_model("UMi_Street-Canyon") == UMI
    with pytest.raises(TypeError, match="`rng`"):
        draw_large_scale(np.zeros((2, 2)), UMI, 3.5, 0)
