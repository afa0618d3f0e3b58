"""Time correlation from node mobility: Clarke/Jakes Doppler (Clarke 1968; Jakes 1974).

With isotropic scattering around a node moving at speed v, every Rayleigh tap has the time
autocorrelation E[h(t) conj(h(t + tau))] = J0(2 pi f_D tau), where f_D = v f_c / c is the
maximum Doppler shift. Between two consecutive layer rounds, tau apart, we draw the new
diffuse part from its exact Gaussian conditional law given the old one:

    diffuse(t + tau) = rho * diffuse(t) + sqrt(1 - rho^2) * fresh,   rho = J0(2 pi f_D tau),

where ``fresh`` is an independent draw of the same frequency-selective process (same tap
powers, so the frequency correlation is kept). The LoS part turns its phase by
2 pi f_D cos(theta) tau, theta the link's angle of arrival (uniform), whose average over
theta is again J0(2 pi f_D tau). Consecutive rounds thus have exactly Clarke's correlation;
over several rounds the correlation is the product of the per-step ones (a Gauss-Markov
process), not J0 of the summed time -- irrelevant here because a layer round lasts far
longer than the coherence time at any speed above walking (see README, timing model).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.special import j0

from .base import ChannelDraw, ChannelModel

__all__ = ["SPEED_OF_LIGHT_M_S", "doppler_hz", "time_correlation", "evolve"]

#: c [m/s].
SPEED_OF_LIGHT_M_S = 299_792_458.0


def _non_negative(name: str, value, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0 [{unit}], got {value!r}")
    return float(value)


def doppler_hz(speed_kmh: float, carrier_ghz: float) -> float:
    """Maximum Doppler shift f_D = v f_c / c [Hz].

    Args:
        speed_kmh: relative speed of the nodes [km/h] >= 0.
        carrier_ghz: carrier frequency f_c [GHz] > 0.

    Raises:
        ValueError: negative or non-finite speed, non-positive carrier (naming the argument).
    """
    speed = _non_negative("speed_kmh", speed_kmh, "km/h")
    carrier = _non_negative("carrier_ghz", carrier_ghz, "GHz")
    if carrier == 0:
        raise ValueError(f"`carrier_ghz` must be > 0 [GHz], got {carrier_ghz!r}")
    return speed / 3.6 * carrier * 1e9 / SPEED_OF_LIGHT_M_S


def time_correlation(doppler_shift_hz: float, tau_s) -> np.ndarray:
    """Clarke's correlation J0(2 pi f_D tau) (float64, shaped like ``tau_s``)."""
    return j0(2.0 * np.pi * float(doppler_shift_hz) * np.asarray(tau_s, dtype=np.float64))


def evolve(
    state: ChannelDraw,
    model: ChannelModel,
    doppler_shift_hz: float,
    tau_s: float,
    subcarrier_spacing_hz: float,
    rng,
) -> ChannelDraw:
    """The channel ``tau_s`` seconds after ``state`` (exact Gaussian conditional draw).

    Args:
        state: current :class:`ChannelDraw`.
        model: the model that drew it (supplies the fresh diffuse part).
        doppler_shift_hz: f_D [Hz] >= 0 (0: static, ``state`` is returned unchanged).
        tau_s: elapsed time [s] >= 0.
        subcarrier_spacing_hz: B0 [Hz].
        rng: Generator for the innovation.

    Returns:
        a new :class:`ChannelDraw`; E[diffuse' conj(diffuse)] = J0(2 pi f_D tau) E|diffuse|^2.

    Raises:
        ValueError: negative ``tau_s``.
    """
    tau = _non_negative("tau_s", tau_s, "s")
    if doppler_shift_hz == 0 or tau == 0:
        return state
    rho = float(time_correlation(doppler_shift_hz, tau))
    k, _, m = state.diffuse.shape
    fresh = model.draw_diffuse(k, m, subcarrier_spacing_hz, rng)
    diffuse = rho * state.diffuse + math.sqrt(max(0.0, 1.0 - rho * rho)) * fresh
    turn = np.exp(2j * np.pi * doppler_shift_hz * tau * state.los_doppler_cos)
    return ChannelDraw(state.los * turn[..., None], diffuse, state.los_doppler_cos)
