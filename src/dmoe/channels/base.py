"""The interface every small-scale fading model implements.

A model draws, for every directed link (i, j) and every subcarrier m of the OFDM grid, the
complex frequency response H_ij[m] normalised to unit mean power, E|H|^2 = 1, split into

* a deterministic line-of-sight (LoS) part ``los`` (zero for Rayleigh models), and
* a zero-mean circularly symmetric Gaussian (diffuse) part ``diffuse``.

The power gain of eq (1) is then ``path_loss * |los + diffuse|^2`` (:func:`power_gain`).
Splitting the two parts lets :mod:`dmoe.channels.doppler` evolve the diffuse part in time
(Gauss-Markov with Clarke's correlation) while the LoS part only turns its phase.
The diagonal i = j (no link) is 0 in both parts.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

__all__ = ["ChannelModel", "ChannelDraw", "power_gain"]


@dataclass
class ChannelDraw:
    """One realisation of the small-scale channel of all links.

    Attributes:
        los: ``[K, K, M], complex128`` LoS part (zeros for Rayleigh models).
        diffuse: ``[K, K, M], complex128`` diffuse (Rayleigh) part.
        los_doppler_cos: ``[K, K], float64`` cos of each link's LoS angle of arrival
            relative to the motion (the LoS phase turns by 2 pi f_D cos(theta) per second).
    """

    los: np.ndarray
    diffuse: np.ndarray
    los_doppler_cos: np.ndarray

    @property
    def response(self) -> np.ndarray:
        """``[K, K, M], complex128`` H = los + diffuse (unit mean power)."""
        return self.los + self.diffuse


def power_gain(response, path_loss) -> np.ndarray:
    """H_ij^(m) of eq (1): ``path_loss * |response|^2`` [linear], shape of ``response``.

    ``path_loss`` is the mean power gain [linear]: a float (the paper's 1e-2 on every link)
    or an array broadcastable to ``response``, e.g. ``[K, K, 1]`` large-scale gains per link
    (:mod:`dmoe.channels.pathloss`)."""
    response = np.asarray(response)
    return path_loss * (response.real**2 + response.imag**2)


def zero_diagonal(arr: np.ndarray) -> np.ndarray:
    """Set ``arr[i, i, ...] = 0`` in place and return it."""
    k = arr.shape[0]
    arr[np.arange(k), np.arange(k)] = 0
    return arr


class ChannelModel(abc.ABC):
    """A small-scale fading model over the OFDM grid (see module docstring).

    Subclasses set :attr:`name` and implement :meth:`draw_diffuse`, :meth:`los_power`,
    :meth:`frequency_correlation` and :meth:`params`.
    """

    name: str

    @abc.abstractmethod
    def draw_diffuse(self, num_nodes: int, num_subcarriers: int, subcarrier_spacing_hz: float, rng) -> np.ndarray:
        """A fresh diffuse part ``[K, K, M], complex128`` with E|diffuse|^2 = 1 - los_power."""

    def los_power(self) -> float:
        """Share of the mean power carried by the LoS part (0 for Rayleigh models)."""
        return 0.0

    @abc.abstractmethod
    def frequency_correlation(self, lag, subcarrier_spacing_hz: float) -> np.ndarray:
        """Theoretical E[H[m] conj(H[m + lag])] (complex, shaped like ``lag``; 1 at lag 0)."""

    @abc.abstractmethod
    def params(self) -> dict:
        """JSON-ready description of the model."""

    def draw(self, num_nodes: int, num_subcarriers: int, subcarrier_spacing_hz: float, rng) -> ChannelDraw:
        """One realisation of every link: diffuse part, then LoS phases and angles.

        Args:
            num_nodes: N, the number of nodes.
            num_subcarriers: M.
            subcarrier_spacing_hz: B0 [Hz].
            rng: :class:`numpy.random.Generator`.

        Returns:
            :class:`ChannelDraw` (unit mean power per link and subcarrier, diagonal 0).
        """
        k, m = num_nodes, num_subcarriers
        diffuse = self.draw_diffuse(k, m, subcarrier_spacing_hz, rng)
        p_los = self.los_power()
        if p_los > 0:
            # LoS tap at delay 0: the same value on every subcarrier, random initial phase
            phase = rng.uniform(0.0, 2.0 * np.pi, size=(k, k))
            los = np.broadcast_to((np.sqrt(p_los) * np.exp(1j * phase))[..., None], (k, k, m)).copy()
            los_cos = np.cos(rng.uniform(0.0, 2.0 * np.pi, size=(k, k)))
            zero_diagonal(los)
        else:
            los = np.zeros((k, k, m), dtype=np.complex128)
            los_cos = np.zeros((k, k))
        return ChannelDraw(los, diffuse, los_cos)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params()})"
