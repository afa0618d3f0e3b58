"""3GPP TR 38.901 tapped-delay-line profiles TDL-A..TDL-E (Section 7.7.2, Tables 7.7.2-1..5).

Each profile lists taps with a normalised delay (the profile has unit RMS delay spread) and
a power [dB]. Actual delays are ``normalised delay * delay_spread`` (Section 7.7.3;
Table 7.7.3-1 gives example delay spreads: 10 ns very short, 30 ns short, 100 ns nominal,
300 ns long, 1000 ns very long; our default is the nominal 100 ns). Tap powers are
normalised to sum to one.

Every tap is an independent CN(0, P_p) Rayleigh coefficient c_p, except in TDL-D and TDL-E,
whose first tap is split, as the tables specify, into a LoS (specular) component and a
Rayleigh component at the same delay 0; their ratio is the K-factor K_1 (13.3 dB for TDL-D,
22 dB for TDL-E). The frequency response on the OFDM grid of spacing B0 is

    H[m] = sum_p c_p exp(-j 2 pi m B0 tau_p),   m = 0..M-1,

so E|H[m]|^2 = sum_p P_p = 1, and E[H[m] conj(H[m + d])] = sum_p P_p exp(j 2 pi d B0 tau_p)
(:meth:`TDLChannel.frequency_correlation`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .base import ChannelModel, zero_diagonal

__all__ = ["TDL_PROFILES", "TDLChannel", "DEFAULT_DELAY_SPREAD_NS", "check_grid_resolution"]

#: Share of a profile's power beyond 1/B0 from which :func:`check_grid_resolution` warns
#: (TDL-D/E at 100 ns on a 1 MHz grid wrap 0.6 % of their power, below it).
WRAP_WARN_POWER = 0.01

#: Nominal delay spread of TR 38.901 Table 7.7.3-1 [ns].
DEFAULT_DELAY_SPREAD_NS = 100.0

# (normalised delay, power [dB]) per tap, TR 38.901 V19.2 Tables 7.7.2-1..5 (unchanged since V16.1).
# For TDL-D/E the first row is the LoS (specular) component, the second the Rayleigh part
# of the same first tap.
_TDL_A = (
    (0.0000, -13.4), (0.3819, 0.0), (0.4025, -2.2), (0.5868, -4.0), (0.4610, -6.0), (0.5375, -8.2),
    (0.6708, -9.9), (0.5750, -10.5), (0.7618, -7.5), (1.5375, -15.9), (1.8978, -6.6), (2.2242, -16.7),
    (2.1718, -12.4), (2.4942, -15.2), (2.5119, -10.8), (3.0582, -11.3), (4.0810, -12.7), (4.4579, -16.2),
    (4.5695, -18.3), (4.7966, -18.9), (5.0066, -16.6), (5.3043, -19.9), (9.6586, -29.7),
)
_TDL_B = (
    (0.0000, 0.0), (0.1072, -2.2), (0.2155, -4.0), (0.2095, -3.2), (0.2870, -9.8), (0.2986, -1.2),
    (0.3752, -3.4), (0.5055, -5.2), (0.3681, -7.6), (0.3697, -3.0), (0.5700, -8.9), (0.5283, -9.0),
    (1.1021, -4.8), (1.2756, -5.7), (1.5474, -7.5), (1.7842, -1.9), (2.0169, -7.6), (2.8294, -12.2),
    (3.0219, -9.8), (3.6187, -11.4), (4.1067, -14.9), (4.2790, -9.2), (4.7834, -11.3),
)
_TDL_C = (
    (0.0000, -4.4), (0.2099, -1.2), (0.2219, -3.5), (0.2329, -5.2), (0.2176, -2.5), (0.6366, 0.0),
    (0.6448, -2.2), (0.6560, -3.9), (0.6584, -7.4), (0.7935, -7.1), (0.8213, -10.7), (0.9336, -11.1),
    (1.2285, -5.1), (1.3083, -6.8), (2.1704, -8.7), (2.7105, -13.2), (4.2589, -13.9), (4.6003, -13.9),
    (5.4902, -15.8), (5.6077, -17.1), (6.3065, -16.0), (6.6374, -15.7), (7.0427, -21.6), (8.6523, -22.8),
)
_TDL_D = (
    (0.0, -0.2), (0.0, -13.5), (0.035, -18.8), (0.612, -21.0), (1.363, -22.8), (1.405, -17.9),
    (1.804, -20.1), (2.596, -21.9), (1.775, -22.9), (4.042, -27.8), (7.937, -23.6), (9.424, -24.8),
    (9.708, -30.0), (12.525, -27.7),
)
_TDL_E = (
    (0.0000, -0.03), (0.0000, -22.03), (0.5133, -15.8), (0.5440, -18.1), (0.5630, -19.8), (0.5440, -22.9),
    (0.7112, -22.4), (1.9092, -18.6), (1.9293, -20.8), (1.9589, -22.6), (2.6426, -22.3), (3.7136, -25.6),
    (5.4524, -20.2), (12.0034, -29.8), (20.6519, -29.2),
)

#: name -> (taps, has LoS first row, K-factor of the first tap [dB] or None).
TDL_PROFILES: dict[str, tuple[tuple[tuple[float, float], ...], bool, float | None]] = {
    "tdl-a": (_TDL_A, False, None),
    "tdl-b": (_TDL_B, False, None),
    "tdl-c": (_TDL_C, False, None),
    "tdl-d": (_TDL_D, True, 13.3),
    "tdl-e": (_TDL_E, True, 22.0),
}


class TDLChannel(ChannelModel):
    """Frequency-selective fading from a TR 38.901 TDL profile (module docstring).

    Args:
        profile: one of ``"tdl-a"`` .. ``"tdl-e"`` (case-insensitive; ``"A"`` also works).
        delay_spread_ns: RMS delay spread [ns] >= 0 scaling the normalised delays
            (0 = flat fading). Default 100 ns (Table 7.7.3-1 "nominal").

    Raises:
        ValueError: unknown ``profile`` (listing the known ones), or a negative or
            non-finite ``delay_spread_ns``.

    Source: 3GPP TR 38.901 V19.2, Section 7.7.2 (Tables 7.7.2-1..5) and 7.7.3.
    """

    def __init__(self, profile: str, delay_spread_ns: float = DEFAULT_DELAY_SPREAD_NS):
        key = str(profile).strip().lower() if isinstance(profile, str) else None
        if key is not None and len(key) == 1:
            key = f"tdl-{key}"
        if key not in TDL_PROFILES:
            raise ValueError(f"unknown TDL `profile` {profile!r}; known: {', '.join(TDL_PROFILES)}")
        if (
            isinstance(delay_spread_ns, bool)
            or not isinstance(delay_spread_ns, numbers.Real)
            or not math.isfinite(float(delay_spread_ns))
            or float(delay_spread_ns) < 0
        ):
            raise ValueError(f"`delay_spread_ns` must be a finite number >= 0 [ns], got {delay_spread_ns!r}")
        self.name = key
        self.delay_spread_ns = float(delay_spread_ns)
        taps, has_los, k_factor_db = TDL_PROFILES[key]
        table = np.asarray(taps, dtype=np.float64)
        # [P] linear powers normalised to unit sum (LoS row included)
        power = 10.0 ** (table[:, 1] / 10.0)
        power = power / power.sum()
        self.k_factor_db = k_factor_db
        self._los_power = float(power[0]) if has_los else 0.0
        rayleigh = slice(1, None) if has_los else slice(None)
        #: [P_r] powers and delays [s] of the Rayleigh taps
        self.tap_power = power[rayleigh]
        self.tap_delay_s = table[rayleigh, 0] * self.delay_spread_ns * 1e-9
        #: all taps (LoS first where present), for the theoretical correlation
        self._all_power = power
        self._all_delay_s = table[:, 0] * self.delay_spread_ns * 1e-9

    def los_power(self) -> float:
        return self._los_power

    def draw_diffuse(self, num_nodes, num_subcarriers, subcarrier_spacing_hz, rng) -> np.ndarray:
        k, m, p = num_nodes, num_subcarriers, self.tap_power.size
        # [K, K, P] taps c_p ~ CN(0, P_p)
        parts = rng.standard_normal((k, k, p, 2))
        taps = (parts[..., 0] + 1j * parts[..., 1]) * np.sqrt(0.5 * self.tap_power)
        # [P, M] exp(-j 2 pi m B0 tau_p)
        steer = np.exp(-2j * np.pi * np.outer(self.tap_delay_s, np.arange(m) * subcarrier_spacing_hz))
        return zero_diagonal(taps @ steer)

    def frequency_correlation(self, lag, subcarrier_spacing_hz: float) -> np.ndarray:
        """E[H[m] conj(H[m + lag])] = sum_p P_p exp(j 2 pi lag B0 tau_p) (LoS tap included:
        its random phase makes it zero-mean over links)."""
        lag = np.asarray(lag, dtype=np.float64)
        phase = 2j * np.pi * lag[..., None] * subcarrier_spacing_hz * self._all_delay_s
        return np.sum(self._all_power * np.exp(phase), axis=-1)

    def rms_delay_spread_s(self) -> float:
        """RMS delay spread of the scaled profile [s] (about ``delay_spread_ns`` * 1e-9)."""
        p, t = self._all_power, self._all_delay_s
        mean = float(np.sum(p * t))
        return float(np.sqrt(np.sum(p * (t - mean) ** 2)))

    def params(self) -> dict:
        return {"model": self.name, "delay_spread_ns": self.delay_spread_ns, "k_factor_db": self.k_factor_db}


def check_grid_resolution(channel: ChannelModel, subcarrier_spacing_hz: float, *, warn=None) -> None:
    """Refuse a delay profile the OFDM grid of spacing B0 cannot resolve (issue 20).

    On a grid of spacing B0 the response ``sum_p c_p exp(-j 2 pi m B0 tau_p)`` is periodic in
    every tap delay with period 1/B0 (the OFDM symbol duration): a tap at tau and one at
    tau + 1/B0 are indistinguishable, and a delay spread of a whole number of symbol
    durations turns into flat fading (1e9 ns at B0 = 1 MHz gave exactly the results of
    0 ns). Rules:

    * an RMS delay spread >= 1/B0 is an error (the grid resolves nothing of it);
    * taps at delays >= 1/B0 carrying at least 1 % of the power (:data:`WRAP_WARN_POWER`;
      the profile's tail wraps around onto earlier delays) are a warning through ``warn`` (default :func:`warnings.warn`): the profile is
      distorted, not meaningless, e.g. TDL-A at 300 ns on the paper's 1 MHz grid.

    Models without delays (Rayleigh) always pass.

    Args:
        channel: the fading model (:class:`TDLChannel` is checked; others pass).
        subcarrier_spacing_hz: B0 [Hz] > 0 (a resource block's bandwidth in the NR presets).
        warn: callable receiving the warning text, or None.

    Raises:
        ValueError: naming ``delay_spread_ns``, its value, and the limit 1/B0 [ns].
    """
    if not isinstance(channel, TDLChannel):
        return
    symbol_ns = 1e9 / float(subcarrier_spacing_hz)
    spread = float(channel.delay_spread_ns)
    if spread >= symbol_ns:
        raise ValueError(
            f"`delay_spread_ns` = {spread:g} ns is beyond what the OFDM grid resolves: with subcarrier spacing "
            f"B0 = {float(subcarrier_spacing_hz):g} Hz delays are periodic in 1/B0 = {symbol_ns:g} ns, so the delay "
            f"spread must be < {symbol_ns:g} ns (TR 38.901 Table 7.7.3-1 ranges 10-1000 ns)"
        )
    delays_ns = channel._all_delay_s * 1e9
    wrapped = float(np.sum(channel._all_power[delays_ns >= symbol_ns]))
    if wrapped >= WRAP_WARN_POWER:
        import warnings

        longest = float(np.max(delays_ns))
        msg = (f"{channel.name.upper()} at delay spread {spread:g} ns has taps up to {longest:.4g} ns, beyond the "
               f"grid's 1/B0 = {symbol_ns:g} ns: taps carrying {wrapped:.1%} of the power wrap around (the profile "
               f"is distorted); a delay spread below {spread * symbol_ns / longest:.4g} ns keeps every tap resolvable")
        # default: reported at this line, so that the run's up-front check and every
        # runtime's ChannelProcess raise one warning, shown once (Python's warning registry)
        (warn or (lambda m: warnings.warn(m, UserWarning, stacklevel=1)))(msg)
