"""Imperfect channel state information (CSI) at the edge server.

The server schedules on an estimate of every link's frequency response, the nodes transmit
over the true one. Two impairments, alone or together (``ChannelConfig.csi_error``,
``ChannelConfig.csi_delay``):

* estimation error: H_est = H_ref + e, e ~ CN(0, sigma^2 * E|H|^2) independently per link and
  subcarrier (E|H|^2 = 1 in the normalised response, so e ~ CN(0, sigma^2));
* outdated estimate: H_ref is the channel ``csi_delay`` layer rounds ago (the current one
  when 0, and the oldest one of the query round while fewer rounds have passed).
"""

from __future__ import annotations

import math

import numpy as np

from .base import zero_diagonal

__all__ = ["estimate_response"]


def estimate_response(history, *, csi_error: float, csi_delay: int, rng) -> np.ndarray:
    """The server's estimate of the current normalised response.

    Args:
        history: sequence of ``[K, K, M], complex128`` responses of this query round, oldest
            first, the current one last (at least one).
        csi_error: sigma^2 in [0, 1].
        csi_delay: layer rounds of delay >= 0.
        rng: Generator for the estimation error (unused when ``csi_error`` is 0).

    Returns:
        ``[K, K, M], complex128`` estimate (diagonal 0).

    Raises:
        ValueError: empty ``history``.
    """
    if len(history) == 0:
        raise ValueError("`history` must hold at least the current response")
    ref = history[max(0, len(history) - 1 - int(csi_delay))]
    if csi_error == 0:
        return ref
    # [K, K, M, 2] real/imaginary parts of CN(0, sigma^2)
    parts = rng.standard_normal(ref.shape + (2,))
    error = (parts[..., 0] + 1j * parts[..., 1]) * math.sqrt(0.5 * csi_error)
    return zero_diagonal(ref + error)
