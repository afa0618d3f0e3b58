"""What a run says about its radio channel: deployment, fading model, mobility and channel knowledge.

:class:`ChannelConfig` is the one description the CLI (``--layout``, ``--pathloss``,
``--channel``, ``--delay-spread``, ``--speed-kmh``, ``--carrier-ghz``, ``--csi-error``,
``--csi-delay``), the Python API and the experiments pass to the runtime, and that results
record beside their numbers.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .base import ChannelModel
from .doppler import doppler_hz
from .geometry import node_positions, parse_layout
from .pathloss import DEFAULT_PATHLOSS, LargeScale, check_pathloss_model, draw_large_scale, path_loss_db
from .rayleigh import RayleighChannel
from .tdl import DEFAULT_DELAY_SPREAD_NS, TDL_PROFILES, TDLChannel

__all__ = ["CHANNEL_MODELS", "DEPLOYMENT_STREAM", "MAX_SPEED_KMH", "ChannelConfig", "channel_model"]

#: Names accepted by ``--channel`` / ``ChannelConfig.model``.
CHANNEL_MODELS: tuple[str, ...] = ("rayleigh",) + tuple(TDL_PROFILES)

#: Default carrier frequency [GHz]: the 3.5 GHz band (n78) of most 5G edge deployments.
DEFAULT_CARRIER_GHZ = 3.5

#: Largest accepted node speed [km/h]: 500 km/h, the high-speed-train bound of 3GPP NR
#: (the high-speed-train scenario of TR 38.913); beyond it the Doppler model stops describing a real deployment.
MAX_SPEED_KMH = 500.0

#: Second word of the random-number keys of a deployment (:meth:`ChannelConfig.large_scale`):
#: node positions come from ``default_rng([seed, DEPLOYMENT_STREAM, 0])``, LoS states and
#: shadowing from ``[seed, DEPLOYMENT_STREAM, 1]``. The per-round channel keys are
#: ``[seed, round, ...]``, so they never meet these (no run has 1.7e9 query rounds).
DEPLOYMENT_STREAM = 0x67656F00


def channel_model(name: str, *, delay_spread_ns: float = DEFAULT_DELAY_SPREAD_NS) -> ChannelModel:
    """The :class:`ChannelModel` called ``name`` (``"rayleigh"`` or ``"tdl-a"`` .. ``"tdl-e"``).

    Raises:
        ValueError: unknown ``name`` (listing the known ones) or bad ``delay_spread_ns``.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key in ("rayleigh", "iid"):
        return RayleighChannel()
    if key not in TDL_PROFILES:
        raise ValueError(f"unknown channel `model` {name!r}; known: {', '.join(CHANNEL_MODELS)}")
    return TDLChannel(key, delay_spread_ns)


def _real(name: str, value: Any, *, low: float, high: float = math.inf, unit: str = "", low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"`{name}` must be a finite number{f' [{unit}]' if unit else ''}, got {value!r}")
    v = float(value)
    if v < low or (low_open and v == low) or v > high:
        lo = "(" if low_open else "["
        hi = "]" if math.isfinite(high) else ")"
        raise ValueError(f"`{name}` must lie in {lo}{low:g}, {high:g}{hi}{f' [{unit}]' if unit else ''}, got {value!r}")
    return v


@dataclass(frozen=True)
class ChannelConfig:
    """Radio channel of a run (defaults: the paper's i.i.d. Rayleigh, perfect CSI).

    Attributes:
        model: ``"rayleigh"`` (i.i.d. per link and subcarrier, the paper) or a TR 38.901
            profile ``"tdl-a"`` .. ``"tdl-e"`` (:mod:`dmoe.channels.tdl`).
        delay_spread_ns: RMS delay spread of the TDL profiles [ns] >= 0; default 100 ns
            (TR 38.901 Table 7.7.3-1 "nominal"). Ignored by ``"rayleigh"``.
        speed_kmh: relative node speed [km/h] in [0, 500] (:data:`MAX_SPEED_KMH`), or ``None`` (default) for no mobility
            model: the channel is then redrawn independently as ``channel_redraw`` says
            (the paper's block fading). With a speed, consecutive layer rounds of a query
            round are correlated by J0(2 pi f_D tau), tau = the previous round's latency;
            0 km/h keeps the channel static for the whole query round. Independent query
            rounds (batches of K queries) always start from an independent draw.
        carrier_ghz: carrier frequency f_c [GHz] > 0, default 3.5 GHz.
        csi_error: normalised variance sigma^2 in [0, 1] of the server's channel estimate:
            H_est = H + CN(0, sigma^2 * E|H|^2) per link and subcarrier. Default 0.
        csi_delay: how many layer rounds old the server's estimate is (0: current; 1: the
            previous round's channel). In the first layer round of a query round the
            server has a fresh estimate (pilots at the start of the round).
        layout: node positions (:mod:`dmoe.channels.geometry`): ``"disk:R"`` (uniform in a
            disk of radius R m, seeded by the run's seed), ``"grid:D"`` (square grid of
            spacing D m) or the path of a CSV of ``x,y`` [m] rows, one per node; ``None``
            (default, the paper): every link has the average gain ``SystemConfig.path_loss``.
        pathloss: path-loss model of a layout (:mod:`dmoe.channels.pathloss`):
            ``"umi-street-canyon"`` (default with a layout), ``"inh-office"`` or
            ``"free-space"``; must be ``None`` without a layout. With a layout each link's
            mean power gain is its large-scale gain 10^(-(PL + SF)/10) (TR 38.901 path
            loss at ``carrier_ghz``, LoS state and shadowing drawn once per run and per
            link, reciprocal) instead of ``SystemConfig.path_loss``; the small-scale fading
            of ``model`` (unit mean power), mobility and CSI error multiply it.
        shadowing: log-normal shadow fading with TR 38.901's sigma_SF (default True);
            ignored without a layout.

    Raises:
        ValueError: unknown ``model`` or ``pathloss`` (listing the known ones), negative
            delay spread or speed, non-positive carrier (or, with a 3GPP path-loss model,
            outside 0.5-100 GHz), ``csi_error`` outside [0, 1], negative ``csi_delay``, a
            malformed ``layout`` (non-positive, NaN or infinite radius or spacing), a
            ``pathloss`` without ``layout`` (naming the field).
    """

    model: str = "rayleigh"
    delay_spread_ns: float = DEFAULT_DELAY_SPREAD_NS
    speed_kmh: float | None = None
    carrier_ghz: float = DEFAULT_CARRIER_GHZ
    csi_error: float = 0.0
    csi_delay: int = 0
    layout: str | None = None
    pathloss: str | None = None
    shadowing: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or self.model.strip().lower() not in CHANNEL_MODELS + ("iid",):
            raise ValueError(f"unknown channel `model` {self.model!r}; known: {', '.join(CHANNEL_MODELS)}")
        name = self.model.strip().lower()
        object.__setattr__(self, "model", "rayleigh" if name == "iid" else name)
        object.__setattr__(self, "delay_spread_ns", _real("delay_spread_ns", self.delay_spread_ns, low=0, unit="ns"))
        if self.speed_kmh is not None:
            object.__setattr__(self, "speed_kmh", _real("speed_kmh", self.speed_kmh, low=0, high=MAX_SPEED_KMH,
                                                        unit="km/h"))
        object.__setattr__(self, "carrier_ghz", _real("carrier_ghz", self.carrier_ghz, low=0, low_open=True, unit="GHz"))
        object.__setattr__(self, "csi_error", _real("csi_error", self.csi_error, low=0, high=1))
        if isinstance(self.csi_delay, bool) or not isinstance(self.csi_delay, numbers.Integral) or self.csi_delay < 0:
            raise ValueError(f"`csi_delay` must be an integer >= 0 [layer rounds], got {self.csi_delay!r}")
        object.__setattr__(self, "csi_delay", int(self.csi_delay))
        if not isinstance(self.shadowing, (bool, np.bool_)):
            raise ValueError(f"`shadowing` must be True or False, got {self.shadowing!r}")
        object.__setattr__(self, "shadowing", bool(self.shadowing))
        if self.layout is None:
            if self.pathloss is not None:
                raise ValueError(
                    f"`pathloss` ({self.pathloss!r}) needs a `layout` (--layout disk:R, grid:D or a CSV): "
                    "without node positions every link has the paper's average gain `path_loss`"
                )
            return
        parse_layout(self.layout)
        object.__setattr__(self, "layout", self.layout.strip())
        model = check_pathloss_model(self.pathloss if self.pathloss is not None else DEFAULT_PATHLOSS)
        object.__setattr__(self, "pathloss", model)
        path_loss_db(model, 1.0, self.carrier_ghz, True)  # the carrier is in the model's range

    # ---------------------------------------------------------------- derived
    def make_model(self) -> ChannelModel:
        """The fading model (:func:`channel_model`)."""
        return channel_model(self.model, delay_spread_ns=self.delay_spread_ns)

    @property
    def doppler_hz(self) -> float:
        """f_D [Hz] (0 without a speed)."""
        return 0.0 if self.speed_kmh is None else doppler_hz(self.speed_kmh, self.carrier_ghz)

    @property
    def perfect_csi(self) -> bool:
        """True when the server knows the current channel exactly."""
        return self.csi_error == 0.0 and self.csi_delay == 0

    @property
    def is_paper_default(self) -> bool:
        """i.i.d. Rayleigh, no mobility model, perfect CSI, no layout: the paper's setting
        (results identical to :func:`dmoe.channels.rates.draw_rates` for the same seed)."""
        return self.model == "rayleigh" and self.speed_kmh is None and self.perfect_csi and self.layout is None

    def large_scale(self, num_nodes: int, seed: int) -> LargeScale | None:
        """The deployment of a run: node positions, LoS states, shadowing and large-scale
        gains of every link (``None`` without a layout).

        Positions from ``default_rng([seed, DEPLOYMENT_STREAM, 0])`` (``"disk:R"``), LoS
        and shadowing from ``[seed, DEPLOYMENT_STREAM, 1]``
        (:func:`dmoe.channels.pathloss.draw_large_scale`): the same seed gives the same
        deployment, fixed for the whole run.

        Args:
            num_nodes: N.
            seed: the run's seed, >= 0.

        Returns:
            :class:`~dmoe.channels.pathloss.LargeScale` or ``None``.

        Raises:
            ValueError: a CSV layout that cannot be read, has a row without exactly two
                finite numbers, or does not have N rows.
        """
        if self.layout is None:
            return None
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}")
        positions = node_positions(self.layout, num_nodes, rng=np.random.default_rng([int(seed), DEPLOYMENT_STREAM, 0]))
        return draw_large_scale(
            positions, self.pathloss, self.carrier_ghz, np.random.default_rng([int(seed), DEPLOYMENT_STREAM, 1]),
            shadowing=self.shadowing,
        )

    def label(self) -> str:
        """Short human-readable description, e.g. ``"tdl-a 100 ns, 30 km/h, CSI err 0.1"``."""
        parts = ["i.i.d. Rayleigh" if self.model == "rayleigh" else f"{self.model.upper()} {self.delay_spread_ns:g} ns"]
        if self.speed_kmh is not None:
            parts.append(f"{self.speed_kmh:g} km/h @ {self.carrier_ghz:g} GHz")
        if self.csi_error:
            parts.append(f"CSI error {self.csi_error:g}")
        if self.csi_delay:
            parts.append(f"CSI {self.csi_delay} round{'s' if self.csi_delay > 1 else ''} old")
        if self.layout is not None:
            parts.append(
                f"layout {self.layout}, {self.pathloss} path loss @ {self.carrier_ghz:g} GHz"
                + ("" if self.shadowing or self.pathloss == "free-space" else " without shadowing")
            )
        return ", ".join(parts)

    # ---------------------------------------------------------------- I/O
    def replace(self, **changes: Any) -> "ChannelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ChannelConfig":
        """Inverse of :meth:`to_dict`; missing keys take the defaults.

        Raises:
            ValueError: unknown key (named) or invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"`data` must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"`{unknown[0]}` is not a ChannelConfig field; known fields: {', '.join(sorted(names))}")
        return cls(**dict(data))
