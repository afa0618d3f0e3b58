"""The channel a DMoE run meets, layer round after layer round: true and estimated rates.

:class:`ChannelProcess` is what the runtime asks, once per layer round, for the rates the
server schedules on (estimated) and the rates the transmissions meet (true), and what it
tells how long the round took (:meth:`ChannelProcess.advance`), so that mobility decorrelates
the channel by the time that really passed. Random numbers come from
``numpy.random.default_rng`` keyed by ``[seed, round, ...]``, so every policy run with the
same seed meets the same fading (with mobility: the same innovations; the channel then
still differs between policies whose rounds take different times, as it physically would).

Without a speed (``ChannelConfig.speed_kmh is None``) the channel is block fading, redrawn
independently as ``channel_redraw`` says: ``"layer"`` every layer round (key
``[seed, round, layer]``), ``"round"`` once per query round (``[seed, round]``), ``"fixed"``
once (``[seed]``); for i.i.d. Rayleigh with perfect CSI this is exactly
:func:`dmoe.channels.rates.draw_rates` on those keys, i.e. the paper's model and the results of
earlier versions. With a speed, a query round starts from a draw keyed ``[seed, round]``
and each later layer round evolves it (:func:`dmoe.channels.doppler.evolve`, innovation
keyed ``[seed, round, layer, 2]``). The CSI error is keyed ``[seed, round, layer, 3]``.

With a layout (``ChannelConfig.layout``) the deployment (:meth:`ChannelConfig.large_scale`:
node positions, per-link LoS state and shadowing, keyed ``[seed, DEPLOYMENT_STREAM, ...]``)
is drawn once when the process is made and kept for the whole run; every link's power gain
is then its large-scale gain times the small-scale response, ``G_ij |H_ij^(m)|^2``, for
every fading model, with mobility and with CSI error (the estimate error is relative to the
link's mean power G_ij). K is then the number of nodes N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rates import draw_rates, subcarrier_rates
from ..system import SystemConfig
from .base import ChannelDraw, power_gain
from .config import ChannelConfig
from .csi import estimate_response
from .doppler import evolve
from .rayleigh import RayleighChannel
from .tdl import check_grid_resolution

__all__ = ["CHANNEL_REDRAW", "LayerChannel", "ChannelProcess", "check_channel_choice"]

CHANNEL_REDRAW = ("layer", "round", "fixed")


def check_channel_choice(channel: ChannelConfig, channel_redraw: str) -> ChannelConfig:
    """Check a channel configuration and how often it is redrawn, before any work.

    Args:
        channel: the :class:`ChannelConfig` of the run.
        channel_redraw: one of :data:`CHANNEL_REDRAW` (a new draw per layer round, per
            round, or one fixed draw).

    Returns:
        ``channel``, unchanged.

    Raises:
        TypeError: ``channel`` is not a :class:`ChannelConfig`.
        ValueError: ``channel_redraw`` is not one of :data:`CHANNEL_REDRAW`, or it is not
            ``"layer"`` while ``channel.speed_kmh`` is set (mobility then decides how the
            channel changes between layer rounds).

    Source: our channel process (beyond the paper's i.i.d. block fading, Section II).
    """
    if not isinstance(channel, ChannelConfig):
        raise TypeError(f"`channel` must be a ChannelConfig, got {type(channel).__name__}")
    if channel_redraw not in CHANNEL_REDRAW:
        raise ValueError(f"`channel_redraw` (--channel-redraw) must be one of {CHANNEL_REDRAW}, got {channel_redraw!r}")
    if channel.speed_kmh is not None and channel_redraw != "layer":
        raise ValueError(
            f"`channel_redraw` (--channel-redraw) = {channel_redraw!r} cannot be combined with `speed_kmh` "
            "(--speed-kmh): with a speed, mobility decides how the channel changes between layer rounds (the "
            "correlation follows from the Doppler shift and the round's duration)"
        )
    return channel


@dataclass(frozen=True)
class LayerChannel:
    """Rates of one layer round.

    Attributes:
        true_rates: ``[K, K, M], float64`` r_ij^(m) [bit/s] the transmissions meet (eq 1).
        estimated_rates: ``[K, K, M], float64`` [bit/s] the server schedules on (the same
            array as ``true_rates`` with perfect CSI).
    """

    true_rates: np.ndarray
    estimated_rates: np.ndarray


class ChannelProcess:
    """Per-layer-round true and estimated rates for one run (module docstring).

    Args:
        config: :class:`ChannelConfig`.
        system: K, M, B0, P0, N0 and path loss (K = the number of nodes N).
        seed: non-negative int.
        channel_redraw: ``"layer"``, ``"round"`` or ``"fixed"`` (only without a speed).

    Raises:
        ValueError: unknown ``channel_redraw``, or ``channel_redraw`` other than
            ``"layer"`` together with a speed (mobility decides the correlation then).
    """

    def __init__(self, config: ChannelConfig, system: SystemConfig, *, seed: int = 0, channel_redraw: str = "layer"):
        check_channel_choice(config, channel_redraw)
        self.config = config
        self.system = system
        self.seed = int(seed)
        self.channel_redraw = channel_redraw
        self.model = config.make_model()
        check_grid_resolution(self.model, system.subcarrier_spacing_hz)
        self.doppler_hz = config.doppler_hz
        self._round: int | None = None
        self._state: ChannelDraw | None = None
        self._history: list[np.ndarray] = []
        self._elapsed_s = 0.0
        #: the deployment (None without a layout): positions, LoS, shadowing, gains
        self.large_scale = config.large_scale(system.num_nodes, self.seed)
        # [K, K, 1] large-scale gain per link, or the scalar path loss of the paper
        self._gain = system.path_loss if self.large_scale is None else self.large_scale.gain[:, :, None]

    def _key(self, round_index: int, layer: int) -> list[int]:
        if self.channel_redraw == "layer":
            return [self.seed, round_index, layer]
        if self.channel_redraw == "round":
            return [self.seed, round_index]
        return [self.seed]

    def _rates(self, response: np.ndarray) -> np.ndarray:
        s = self.system
        return subcarrier_rates(
            power_gain(response, self._gain),
            subcarrier_spacing_hz=s.subcarrier_spacing_hz,
            tx_power_w=s.tx_power_w,
            noise_power_w=s.noise_power_w,
        )

    def iid_rates(self, rng: np.random.Generator) -> np.ndarray:
        """One i.i.d. Rayleigh draw of the rates ``[K, K, M], float64`` [bit/s] on this run's
        large-scale gains: :func:`dmoe.channels.rates.draw_rates` (bit-identical) without a layout.
        The runtime charges transfers of layers it does not schedule on it."""
        if self.large_scale is None:
            return draw_rates(self.system, rng)
        s = self.system
        response = RayleighChannel().draw(s.num_nodes, s.num_subcarriers, s.subcarrier_spacing_hz, rng).response
        return self._rates(response)

    def advance(self, seconds: float) -> None:
        """Record that the current layer round took ``seconds`` [s] (>= 0, finite)."""
        seconds = float(seconds)
        if not np.isfinite(seconds) or seconds < 0:
            raise ValueError(f"`seconds` must be finite and >= 0, got {seconds!r}")
        self._elapsed_s += seconds

    def layer_channel(self, round_index: int, layer: int) -> LayerChannel:
        """True and estimated rates of layer round ``layer`` (0-based) of query round
        ``round_index``; call with layers in order within a query round.

        Returns:
            :class:`LayerChannel`.
        """
        cfg, s = self.config, self.system
        if round_index != self._round:
            self._round, self._state, self._history, self._elapsed_s = round_index, None, [], 0.0
        if cfg.speed_kmh is None:
            rng = np.random.default_rng(self._key(round_index, layer))
            if cfg.is_paper_default:
                rates = draw_rates(s, rng)
                return LayerChannel(rates, rates)
            self._state = self.model.draw(s.num_nodes, s.num_subcarriers, s.subcarrier_spacing_hz, rng)
        elif self._state is None:
            rng = np.random.default_rng([self.seed, round_index])
            self._state = self.model.draw(s.num_nodes, s.num_subcarriers, s.subcarrier_spacing_hz, rng)
        else:
            rng = np.random.default_rng([self.seed, round_index, layer, 2])
            self._state = evolve(self._state, self.model, self.doppler_hz, self._elapsed_s, s.subcarrier_spacing_hz, rng)
        self._elapsed_s = 0.0
        response = self._state.response
        self._history = (self._history + [response])[-(cfg.csi_delay + 1):]
        true_rates = self._rates(response)
        if cfg.perfect_csi:
            return LayerChannel(true_rates, true_rates)
        est = estimate_response(
            self._history,
            csi_error=cfg.csi_error,
            csi_delay=cfg.csi_delay,
            rng=np.random.default_rng([self.seed, round_index, layer, 3]),
        )
        return LayerChannel(true_rates, self._rates(est))
