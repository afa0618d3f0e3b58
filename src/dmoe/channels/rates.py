"""Block-fading channels and per-subcarrier rates (paper Section II-A, eq 1-2).

Formerly ``dmoe/channel.py`` (moved here in issue 19: one home for everything radio);
``dmoe.channel`` re-exports these names for one release with a DeprecationWarning.

Two channel models, both Rayleigh with average power gain ``path_loss`` on every link
and subcarrier (so every H_ij^(m) is marginally Exponential with mean ``path_loss``):

* :func:`channel_gain` -- i.i.d. across links and subcarriers (the paper's assumption in
  Theorem 1);
* :func:`correlated_channel_gain` -- frequency-selective: per link a tapped delay line of
  ``num_taps`` equal-power taps c_l ~ CN(0, 1/L), and the subcarrier response is its
  M-point DFT, h^(m) = sum_l c_l exp(-2 pi i l m / M). Neighbouring subcarriers are then
  correlated: E[h^(m) conj(h^(m+d))] = rho(d) = (1/L) sum_l exp(-2 pi i l d / M), and the
  power gains have correlation coefficient |rho(d)|^2 (:func:`gain_correlation`).
  L = 1 is flat fading (one gain for the whole band), L = M gives i.i.d. subcarriers.

Links are independent of each other in both models; the diagonal i = j (no link) is 0.
``rng`` is a :class:`numpy.random.Generator`, an int seed, or ``None`` (fresh entropy).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from dmoe.rng import as_generator
from dmoe.system import SystemConfig

__all__ = [
    "channel_gain",
    "correlated_channel_gain",
    "gain_correlation",
    "subcarrier_rates",
    "draw_rates",
]


def _check_dims(num_nodes, num_subcarriers) -> tuple[int, int]:
    for name, value in (("num_nodes", num_nodes), ("num_subcarriers", num_subcarriers)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(num_nodes), int(num_subcarriers)


def _check_path_loss(path_loss) -> float:
    if not isinstance(path_loss, numbers.Real) or not np.isfinite(path_loss) or path_loss <= 0:
        raise ValueError(f"`path_loss` must be a finite positive number, got {path_loss!r}")
    return float(path_loss)


def _zero_diagonal(gain: np.ndarray) -> np.ndarray:
    k = gain.shape[0]
    gain[np.arange(k), np.arange(k), :] = 0.0
    return gain


def channel_gain(num_nodes: int, num_subcarriers: int, *, path_loss: float, rng=None) -> np.ndarray:
    """I.i.d. Rayleigh block fading power gains H_ij^(m) (Section II-A, Section VII-A).

    H = path_loss * |h|^2 with h ~ CN(0, 1), independently for every (i, j, m), so H is
    Exponential with mean ``path_loss``.

    Args:
        num_nodes: N >= 1, the number of nodes.
        num_subcarriers: M >= 1.
        path_loss: average power gain E[H] [linear], > 0.
        rng: Generator, int seed or None.

    Returns:
        ``[num_nodes, num_nodes, num_subcarriers], float64`` gains [linear]; the
        diagonal i = j is 0 (no link).

    Raises:
        ValueError: non-positive dimensions or path loss. TypeError: bad ``rng``.
    """
    k, m = _check_dims(num_nodes, num_subcarriers)
    path_loss = _check_path_loss(path_loss)
    gen = as_generator(rng)
    # [N, N, M, 2] real and imaginary parts of CN(0, 1): each N(0, 1/2)
    parts = gen.standard_normal((k, k, m, 2))
    gain = path_loss * 0.5 * np.sum(parts * parts, axis=-1)
    return _zero_diagonal(gain)


def correlated_channel_gain(
    num_nodes: int, num_subcarriers: int, *, path_loss: float, num_taps: int, rng=None
) -> np.ndarray:
    """Frequency-selective Rayleigh gains from an equal-power tapped delay line.

    Per link (i, j) independently: taps c_l ~ CN(0, 1/L), l = 0..L-1; subcarrier response
    h^(m) = sum_l c_l exp(-2 pi i l m / M) (the M-point DFT of the zero-padded taps); gain
    H^(m) = path_loss * |h^(m)|^2. Every H^(m) is Exponential with mean ``path_loss``; the
    power correlation between subcarriers d apart is :func:`gain_correlation` (L, M, d).

    Args:
        num_nodes: N >= 1, the number of nodes.
        num_subcarriers: M >= 1.
        path_loss: average power gain [linear], > 0.
        num_taps: L, 1 <= L <= M (L = 1: flat fading, L = M: i.i.d. subcarriers).
        rng: Generator, int seed or None.

    Returns:
        ``[num_nodes, num_nodes, num_subcarriers], float64`` gains; diagonal 0.

    Raises:
        ValueError: invalid dimensions, path loss or ``num_taps``.
    """
    k, m = _check_dims(num_nodes, num_subcarriers)
    path_loss = _check_path_loss(path_loss)
    if not isinstance(num_taps, numbers.Integral) or isinstance(num_taps, bool) or not 1 <= num_taps <= m:
        raise ValueError(f"`num_taps` must be an integer in [1, num_subcarriers={m}], got {num_taps!r}")
    gen = as_generator(rng)
    num_taps = int(num_taps)
    # [N, N, L] complex taps, each CN(0, 1/L)
    taps = (gen.standard_normal((k, k, num_taps)) + 1j * gen.standard_normal((k, k, num_taps))) * np.sqrt(
        0.5 / num_taps
    )
    # [N, N, M] frequency response
    response = np.fft.fft(taps, n=m, axis=-1)
    gain = path_loss * (response.real**2 + response.imag**2)
    return _zero_diagonal(gain)


def gain_correlation(num_taps: int, num_subcarriers: int, lag) -> np.ndarray:
    """Correlation coefficient of H^(m) and H^(m+lag) under :func:`correlated_channel_gain`
    (our frequency-selective extension; the paper assumes i.i.d. subcarriers).

    |rho(lag)|^2 with rho(d) = (1/L) sum_{l<L} exp(-2 pi i l d / M) (for a circularly
    symmetric Gaussian h, corr(|h_a|^2, |h_b|^2) = |corr(h_a, h_b)|^2).

    Returns:
        float64 array shaped like ``lag`` (unitless, in [0, 1]).
    """
    lag = np.asarray(lag, dtype=np.float64)
    taps = np.arange(num_taps, dtype=np.float64)
    # [..., L] phases
    rho = np.mean(np.exp(-2j * np.pi * taps * lag[..., None] / num_subcarriers), axis=-1)
    return np.abs(rho) ** 2


def subcarrier_rates(
    gain, *, subcarrier_spacing_hz: float, tx_power_w: float, noise_power_w: float
) -> np.ndarray:
    """Per-subcarrier achievable rates r_ij^(m) = B0 log2(1 + H P0 / N0), eq (1).

    Computed as B0 log1p(H P0 / N0) / ln 2, accurate to a few ulp for every SNR (a gain
    whose SNR is 1e-17 gets 1.44e-17 B0 bit/s, not 0). A positive rate is > 0 unless the
    SNR itself underflows float64 (H P0 / N0 < 5e-324).

    Args:
        gain: ``[num_nodes, num_nodes, num_subcarriers]`` H [linear], >= 0.
        subcarrier_spacing_hz: B0 [Hz] > 0.
        tx_power_w: P0 [W] > 0.
        noise_power_w: N0 [W] > 0.

    Returns:
        ``[num_nodes, num_nodes, num_subcarriers], float64`` rates [bit/s].

    Raises:
        ValueError: negative/NaN gains, non-positive constants.
    """
    gain = np.asarray(gain, dtype=np.float64)
    if gain.ndim != 3 or gain.shape[0] != gain.shape[1]:
        raise ValueError(f"`gain` must have shape [N, N, M], got {gain.shape}")
    if not np.all(np.isfinite(gain)) or np.any(gain < 0):
        raise ValueError("`gain` must be finite and >= 0")
    for name, value in (
        ("subcarrier_spacing_hz", subcarrier_spacing_hz),
        ("tx_power_w", tx_power_w),
        ("noise_power_w", noise_power_w),
    ):
        if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"`{name}` must be a finite positive number, got {value!r}")
    # log2(1 + x) = log1p(x) / ln 2: exact for tiny SNR x (1 + 1e-17 rounds to 1, so
    # log2(1 + x) would report a positive-gain link as dead)
    snr = gain * (tx_power_w / noise_power_w)
    return (subcarrier_spacing_hz / math.log(2.0)) * np.log1p(snr)


def draw_rates(system: SystemConfig, rng=None, *, num_taps: int | None = None) -> np.ndarray:
    """Draw one block-fading realisation of r_ij^(m) for ``system`` (eq 1).

    Args:
        system: N, M, B0, P0, N0 and path loss come from here.
        rng: Generator, int seed or None.
        num_taps: ``None`` for the i.i.d. model (:func:`channel_gain`), else the number of
            delay taps of :func:`correlated_channel_gain`.

    Returns:
        ``[num_nodes, num_nodes, num_subcarriers], float64`` rates [bit/s]; diagonal 0.
    """
    if not isinstance(system, SystemConfig):
        raise TypeError(f"`system` must be a SystemConfig, got {type(system).__name__}")
    if num_taps is None:
        gain = channel_gain(system.num_nodes, system.num_subcarriers, path_loss=system.path_loss, rng=rng)
    else:
        gain = correlated_channel_gain(
            system.num_nodes, system.num_subcarriers, path_loss=system.path_loss, num_taps=num_taps, rng=rng
        )
    return subcarrier_rates(
        gain,
        subcarrier_spacing_hz=system.subcarrier_spacing_hz,
        tx_power_w=system.tx_power_w,
        noise_power_w=system.noise_power_w,
    )
