"""Channel statistics: Rayleigh gains, eq (1) rates, frequency correlation."""

import numpy as np
import pytest
from scipy import stats

from dmoe.rng import as_generator
from dmoe.channels.rates import channel_gain, correlated_channel_gain, draw_rates, gain_correlation, subcarrier_rates
from dmoe.system import SystemConfig


def _offdiag(gain):
    k = gain.shape[0]
    return gain[~np.eye(k, dtype=bool)]  # [K(K-1), M]


def test_shape_diagonal_nonnegative():
    g = channel_gain(5, 16, path_loss=1e-2, rng=0)
    assert g.shape == (5, 5, 16) and g.dtype == np.float64
    assert np.all(g[np.arange(5), np.arange(5)] == 0)
    assert np.all(_offdiag(g) > 0)


def test_reproducible_with_seed_and_generator():
    a = channel_gain(4, 8, path_loss=1e-2, rng=123)
    b = channel_gain(4, 8, path_loss=1e-2, rng=np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    c = channel_gain(4, 8, path_loss=1e-2, rng=124)
    assert not np.array_equal(a, c)


def test_mean_gain_matches_path_loss():
    pl = 1e-2
    x = _offdiag(channel_gain(8, 2048, path_loss=pl, rng=1)).ravel()  # 114688 samples
    # exponential: std = mean; 5-sigma confidence interval on the sample mean
    assert abs(x.mean() - pl) < 5 * pl / np.sqrt(x.size)


def test_gain_is_exponential():
    pl = 3e-3
    x = _offdiag(channel_gain(6, 1000, path_loss=pl, rng=2)).ravel()
    assert stats.kstest(x / pl, "expon").pvalue > 1e-3


def test_rate_cdf_matches_analytic():
    s = SystemConfig()
    rates = _offdiag(draw_rates(s, rng=3)).ravel()
    b0, snr, pl = s.subcarrier_spacing_hz, s.snr_linear, s.path_loss

    def cdf(r):
        # P(B0 log2(1 + snr*pl*X) <= r), X ~ Exp(1)
        return 1.0 - np.exp(-(np.exp2(r / b0) - 1.0) / (snr * pl))

    assert stats.kstest(rates, cdf).pvalue > 1e-3


def test_iid_subcarriers_uncorrelated():
    n = 0
    # adjacent-subcarrier and cross-link correlation over many independent draws
    xs, ys, zs = [], [], []
    for seed in range(30):
        g = _offdiag(channel_gain(8, 64, path_loss=1e-2, rng=100 + seed))
        xs.append(g[:, :-1].ravel())
        ys.append(g[:, 1:].ravel())
        zs.append(np.roll(g, 1, axis=0)[:, :-1].ravel())
        n += g[:, :-1].size
    x, y, z = map(np.concatenate, (xs, ys, zs))
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(x, z)[0, 1]) < 5 / np.sqrt(n)


@pytest.mark.parametrize("taps", [2, 4, 8])
def test_frequency_selective_correlation(taps):
    m = 64
    xs = {1: ([], []), 3: ([], [])}
    for seed in range(40):
        g = _offdiag(correlated_channel_gain(8, m, path_loss=1e-2, num_taps=taps, rng=seed))
        for lag in xs:
            xs[lag][0].append(g[:, :-lag].ravel())
            xs[lag][1].append(g[:, lag:].ravel())
    for lag, (a, b) in xs.items():
        a, b = np.concatenate(a), np.concatenate(b)
        expected = float(gain_correlation(taps, m, lag))
        # links are independent: 56 * 40 = 2240 independent pairs per subcarrier offset;
        # within a link the pairs are dependent, so use a loose absolute tolerance
        assert abs(np.corrcoef(a, b)[0, 1] - expected) < 0.05, (lag, expected)
    assert float(gain_correlation(taps, m, 0)) == pytest.approx(1.0)


def test_frequency_selective_marginal_is_exponential():
    pl = 1e-2
    g = correlated_channel_gain(8, 64, path_loss=pl, num_taps=4, rng=9)
    x = _offdiag(g)[:, 0]  # one subcarrier: independent across links
    xs = [x]
    for seed in range(10, 40):
        xs.append(_offdiag(correlated_channel_gain(8, 64, path_loss=pl, num_taps=4, rng=seed))[:, 5])
    x = np.concatenate(xs)
    assert stats.kstest(x / pl, "expon").pvalue > 1e-3
    assert np.all(g[np.arange(8), np.arange(8)] == 0)


def test_flat_and_iid_limits():
    flat = _offdiag(correlated_channel_gain(3, 16, path_loss=1e-2, num_taps=1, rng=0))
    np.testing.assert_allclose(flat, np.repeat(flat[:, :1], 16, axis=1))
    assert float(gain_correlation(16, 16, 1)) == pytest.approx(0.0, abs=1e-12)


def test_subcarrier_rates_formula():
    gain = np.zeros((2, 2, 2))
    gain[0, 1] = [1e-2, 0.0]
    r = subcarrier_rates(gain, subcarrier_spacing_hz=1e6, tx_power_w=1e-2, noise_power_w=1e-3)
    assert r[0, 1, 0] == pytest.approx(1e6 * np.log2(1 + 1e-2 * 10))
    assert r[0, 1, 1] == 0.0


def test_draw_rates_shapes_and_taps():
    s = SystemConfig(num_nodes=4, num_subcarriers=32)
    r = draw_rates(s, rng=0)
    assert r.shape == (4, 4, 32)
    assert np.all(r[np.arange(4), np.arange(4)] == 0)
    r2 = draw_rates(s, rng=0, num_taps=4)
    assert r2.shape == (4, 4, 32)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: channel_gain(0, 4, path_loss=1e-2), "num_nodes"),
        (lambda: channel_gain(2, 0, path_loss=1e-2), "num_subcarriers"),
        (lambda: channel_gain(2, 4, path_loss=0.0), "path_loss"),
        (lambda: correlated_channel_gain(2, 4, path_loss=1e-2, num_taps=5), "num_taps"),
        (lambda: correlated_channel_gain(2, 4, path_loss=1e-2, num_taps=0), "num_taps"),
        (lambda: subcarrier_rates(-np.ones((2, 2, 1)), subcarrier_spacing_hz=1, tx_power_w=1, noise_power_w=1), "gain"),
        (lambda: subcarrier_rates(np.ones((2, 2)), subcarrier_spacing_hz=1, tx_power_w=1, noise_power_w=1), "gain"),
        (lambda: subcarrier_rates(np.ones((2, 2, 1)), subcarrier_spacing_hz=0, tx_power_w=1, noise_power_w=1), "subcarrier_spacing_hz"),
    ],
)
def test_validation(call, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        call()


def test_bad_rng_type():
    with pytest.raises(TypeError, match="`rng`"):
        as_generator("seed")
    with pytest.raises(TypeError, match="`system`"):
        draw_rates({"num_experts": 8})


# ------------------------------------------------ the old module path (issue 19, item 5)
def test_old_module_path_reexports_the_same_objects_with_a_warning():
    import importlib

    import dmoe.channels
    import dmoe.channels.rates as rates
    import dmoe.rng

    old = importlib.import_module("dmoe.channel")
    for name in ("channel_gain", "correlated_channel_gain", "gain_correlation", "subcarrier_rates", "draw_rates"):
        with pytest.warns(DeprecationWarning, match=rf"dmoe\.channel\.{name}` moved to `dmoe\.channels\.rates"):
            obj = getattr(old, name)
        assert obj is getattr(rates, name) is getattr(dmoe.channels, name)
    with pytest.warns(DeprecationWarning, match=r"moved to `dmoe\.rng\.as_generator`") as rec:
        from dmoe.channel import as_generator as old_as_generator
    assert rec[0].filename == __file__  # points at the importing line
    assert old_as_generator is dmoe.rng.as_generator
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        old.nope  # noqa: B018
    assert sorted(dir(old)) == sorted(old.__all__)


def test_public_names_keep_their_objects():
    import warnings

    import dmoe
    import dmoe.channels.rates as rates

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dmoe.draw_rates is rates.draw_rates and dmoe.channel_gain is rates.channel_gain
        assert dmoe.subcarrier_rates is rates.subcarrier_rates
