"""I.i.d. Rayleigh fading per link and subcarrier: the paper's model (Section II-A, VII-A).

H_ij[m] ~ CN(0, 1) independently for every link and subcarrier, so |H|^2 is Exponential
with mean 1 and the power gain ``path_loss * |H|^2`` has mean ``path_loss``. The random
numbers are drawn exactly as :func:`dmoe.channels.rates.channel_gain` draws them (one
``standard_normal((K, K, M, 2))`` call), so the same generator state gives the same
channel as the legacy module.
"""

from __future__ import annotations

import numpy as np

from .base import ChannelModel, zero_diagonal

__all__ = ["RayleighChannel"]


class RayleighChannel(ChannelModel):
    """I.i.d. Rayleigh block fading (flat over each subcarrier, independent across them).

    Source: paper Section II-A and VII-A (Rayleigh fading, independent subcarriers as in
    Theorem 1). Frequency correlation: 1 at lag 0, 0 elsewhere.
    """

    name = "rayleigh"

    def draw_diffuse(self, num_nodes, num_subcarriers, subcarrier_spacing_hz, rng) -> np.ndarray:
        # [K, K, M, 2] real and imaginary parts, each N(0, 1/2) after scaling
        parts = rng.standard_normal((num_nodes, num_nodes, num_subcarriers, 2))
        diffuse = (parts[..., 0] + 1j * parts[..., 1]) * np.sqrt(0.5)
        return zero_diagonal(diffuse)

    def frequency_correlation(self, lag, subcarrier_spacing_hz: float) -> np.ndarray:
        lag = np.asarray(lag)
        return np.where(lag == 0, 1.0 + 0j, 0.0 + 0j)

    def params(self) -> dict:
        return {"model": self.name}
