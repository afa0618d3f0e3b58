"""Radio channel models behind one interface (the runtime, the experiments and the API use it).

* :mod:`~dmoe.channels.base` -- the :class:`ChannelModel` interface and :func:`power_gain`;
* :mod:`~dmoe.channels.rayleigh` -- i.i.d. Rayleigh, the paper's model (Section II-A);
* :mod:`~dmoe.channels.tdl` -- 3GPP TR 38.901 TDL-A..E on the OFDM grid;
* :mod:`~dmoe.channels.doppler` -- Clarke/Jakes time correlation from node mobility;
* :mod:`~dmoe.channels.csi` -- the server's imperfect estimate;
* :mod:`~dmoe.channels.geometry` -- node positions (disk, grid, CSV) and distances;
* :mod:`~dmoe.channels.pathloss` -- 3GPP TR 38.901 path loss, LoS probability, shadowing;
* :mod:`~dmoe.channels.config` -- :class:`ChannelConfig`, what a run says about its channel;
* :mod:`~dmoe.channels.process` -- :class:`ChannelProcess`, true and estimated rates per layer round;
* :mod:`~dmoe.channels.rates` -- the paper's i.i.d. (and tapped-delay-line) block-fading draws and
  the per-subcarrier rates of eq (1-2): :func:`draw_rates`, :func:`channel_gain`,
  :func:`subcarrier_rates`.

:func:`draw_rates` (the paper's i.i.d. draws) stays the default. It lived in ``dmoe/channel.py``
until issue 19; that path re-exports it for one release with a DeprecationWarning.
"""

from .base import ChannelDraw, ChannelModel, power_gain
from .config import CHANNEL_MODELS, DEFAULT_CARRIER_GHZ, DEPLOYMENT_STREAM, MAX_SPEED_KMH, ChannelConfig, channel_model
from .csi import estimate_response
from .doppler import doppler_hz, evolve, time_correlation
from .geometry import LAYOUT_KINDS, node_positions, pairwise_distances, parse_layout
from .pathloss import (
    DEFAULT_PATHLOSS,
    PATHLOSS_MODELS,
    LargeScale,
    draw_large_scale,
    los_probability,
    path_loss_db,
    shadow_fading_std_db,
)
from .process import CHANNEL_REDRAW, ChannelProcess, LayerChannel, check_channel_choice
from .rates import channel_gain, correlated_channel_gain, draw_rates, gain_correlation, subcarrier_rates
from .rayleigh import RayleighChannel
from .tdl import DEFAULT_DELAY_SPREAD_NS, TDL_PROFILES, TDLChannel, check_grid_resolution

__all__ = [
    "CHANNEL_MODELS",
    "CHANNEL_REDRAW",
    "check_channel_choice",
    "DEFAULT_CARRIER_GHZ",
    "DEFAULT_DELAY_SPREAD_NS",
    "DEFAULT_PATHLOSS",
    "DEPLOYMENT_STREAM",
    "LAYOUT_KINDS",
    "MAX_SPEED_KMH",
    "PATHLOSS_MODELS",
    "TDL_PROFILES",
    "ChannelConfig",
    "ChannelDraw",
    "ChannelModel",
    "ChannelProcess",
    "LargeScale",
    "LayerChannel",
    "RayleighChannel",
    "TDLChannel",
    "channel_gain",
    "channel_model",
    "check_grid_resolution",
    "correlated_channel_gain",
    "doppler_hz",
    "draw_rates",
    "draw_large_scale",
    "estimate_response",
    "gain_correlation",
    "evolve",
    "los_probability",
    "node_positions",
    "pairwise_distances",
    "parse_layout",
    "path_loss_db",
    "power_gain",
    "shadow_fading_std_db",
    "subcarrier_rates",
    "time_correlation",
]
