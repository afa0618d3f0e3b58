"""The command-line options of a deployment, defined once for ``dmoe run``, ``dmoe generate``
and ``dmoe chat``: the model, K, N, placement, the radio system (preset, noise figure,
power, node layout and path loss, s0 on the wire), the channel, and the engine.

Three decorators, each a run of consecutive ``dmoe run`` options (so that ``dmoe run
--help`` and ``dmoe config --defaults`` list them in the same order as before), and
:func:`check_options` / :func:`channel_from_options`, the checks every command applies
before any work.
"""

from __future__ import annotations

import math

import click

from .channels import CHANNEL_MODELS, DEFAULT_CARRIER_GHZ, DEFAULT_DELAY_SPREAD_NS, PATHLOSS_MODELS, ChannelConfig
from .defaults import DEFAULT_NUM_EXPERTS, DEFAULT_NUM_NODES
from .system import SYSTEM_PRESETS
from .wire import DEFAULT_WIRE_DTYPE, WIRE_DTYPES

__all__ = ["option_group", "system_options", "channel_model_options", "engine_options", "check_options",
           "channel_from_options"]


def option_group(options):
    """One decorator applying the click option decorators ``options`` in their order (the
    first listed comes first in ``--help``)."""

    def decorate(func):
        for opt in reversed(options):
            func = opt(func)
        return func

    return decorate


#: K, N, placement and the radio system: ``-K``, ``-N``, ``--placement``, ``-M``,
#: ``--snr-db``, ``--system``, ``--noise-figure``, ``--tx-power-dbm``, ``--layout``,
#: ``--pathloss``, ``--wire-dtype``, ``--hidden-state-bytes``.
system_options = option_group([
    click.option("--num-experts", "-K", type=click.IntRange(min=2), default=None,
                 help="K, experts per layer. Default: the checkpoint's routed experts for a real MoE (giving "
                      f"another K is an error); for the carved SmolLM2, {DEFAULT_NUM_EXPERTS} fine-grained experts on "
                      f"{DEFAULT_NUM_NODES} nodes. With -K "
                      "and no --nodes, one expert per node."),
    click.option("--nodes", "-N", "num_nodes", type=click.IntRange(min=1), default=None,
                 help=f"N edge nodes holding the K experts of each layer (N <= K). Default: {DEFAULT_NUM_NODES} for "
                      "the carved default, else N = K, one expert per node."),
    click.option("--placement", type=click.Choice(["contiguous", "round-robin", "coactivation"]), default=None,
                 help="How experts are placed on the N nodes when N < K (default: coactivation for a carved "
                      "model, contiguous for a real MoE); coactivation keeps experts the router selects together "
                      "on one node (calibration statistics)."),
    click.option("--num-subcarriers", "-M", type=click.IntRange(min=1), default=None,
                 help="M, OFDMA subcarriers (resource blocks in an NR --system). Default: the smallest power of two "
                      ">= N(N-1) for N nodes (64 for 8); an NR preset's carrier RBs."),
    click.option("--snr-db", type=float, default=None,
                 help="P0/N0 [dB] of the paper preset (default 10 dB); the NR presets and --noise-figure set "
                      "N0 = k T0 B0 NF instead."),
    click.option("--system", "preset", type=click.Choice(list(SYSTEM_PRESETS), case_sensitive=False),
                 default="paper", show_default=True,
                 help="Radio numerology: the paper's (1 MHz subcarriers, P0 = 10 mW, P0/N0 = 10 dB) or a 5G NR FR1 "
                      "carrier whose allocation unit is a resource block of 12 subcarriers (M = its RBs, 23 dBm per "
                      "node, NF 7 dB, 3.5 GHz)."),
    click.option("--noise-figure", "noise_figure", type=float, default=None,
                 help="Receiver noise figure [dB] >= 0, overriding the preset's: N0 = k T0 B0 NF (-174 dBm/Hz)."),
    click.option("--tx-power-dbm", "tx_power_dbm", type=float, default=None,
                 help="Node transmit power budget P_max [dBm], overriding the preset's (NR: P0 = P_max / N_RB per "
                      "RB; paper: P0 stays 10 mW, so at least 10 dBm)."),
    click.option("--layout", default=None,
                 help="Node positions: disk:R (uniform in a disk of radius R m, seeded by --seed), grid:D (square "
                      "grid, spacing D m) or a CSV file of x,y [m] rows, one per node. Default: none, every link "
                      "has the paper's average gain 1e-2."),
    click.option("--pathloss", type=click.Choice(list(PATHLOSS_MODELS), case_sensitive=False), default=None,
                 help="3GPP TR 38.901 path loss of a --layout (LoS probability, LoS/NLoS formulas, log-normal "
                      "shadowing) at --carrier-ghz. Default with a layout: umi-street-canyon."),
    click.option("--wire-dtype", type=click.Choice(list(WIRE_DTYPES), case_sensitive=False),
                 default=DEFAULT_WIRE_DTYPE, show_default=True,
                 help="How hidden states travel: s0 = the model's hidden size x 2 B (fp16, bf16) or x 1 B + a 4 B "
                      "fp32 scale per token (fp8, int8). SmolLM2-135M: 1,152 B in fp16 (the paper: 8,192 B)."),
    click.option("--hidden-state-bytes", type=click.IntRange(min=1), default=None,
                 help="s0 [byte] per hidden state, set explicitly (overrides --wire-dtype)."),
])

#: The channel, the nodes' compute and the model: ``--channel-redraw``, ``--channel``,
#: ``--delay-spread``, ``--speed-kmh``, ``--carrier-ghz``, ``--csi-error``, ``--csi-delay``,
#: ``--comp-throughput``, ``--combine``, ``--model``, ``--device``, ``--cache-dir``.
channel_model_options = option_group([
    click.option("--channel-redraw", type=click.Choice(["layer", "round", "fixed"]), default="layer",
                 show_default=True, help="New channel draw per layer round, per query round, or once."),
    click.option("--channel", "channel_model", type=click.Choice(list(CHANNEL_MODELS), case_sensitive=False),
                 default="rayleigh", show_default=True,
                 help="Fading: i.i.d. Rayleigh per subcarrier (the paper) or a 3GPP TR 38.901 TDL profile."),
    click.option("--delay-spread", "delay_spread", type=float, default=DEFAULT_DELAY_SPREAD_NS, show_default=True,
                 help="RMS delay spread of the TDL profiles [ns] (TR 38.901 Table 7.7.3-1 'nominal')."),
    click.option("--speed-kmh", type=float, default=None,
                 help="Node speed [km/h]: channels of consecutive layer rounds correlate by J0(2 pi f_D tau), "
                      "tau = the round's latency; 0 = static within a query round. Default: no mobility model "
                      "(independent block fading as --channel-redraw says)."),
    click.option("--carrier-ghz", type=float, default=DEFAULT_CARRIER_GHZ, show_default=True,
                 help="Carrier frequency [GHz] (Doppler shift and path loss)."),
    click.option("--csi-error", type=float, default=0.0, show_default=True,
                 help="Normalised variance in [0, 1] of the server's channel estimate error, CN(0, err * E|H|^2)."),
    click.option("--csi-delay", type=int, default=0, show_default=True,
                 help="Age of the server's channel estimate [layer rounds] (1 = the previous round's channel)."),
    click.option("--comp-throughput", type=float, default=1e4, show_default=True,
                 help="FFN throughput of every node [token/s] (latency model)."),
    click.option("--combine", type=click.Choice(["sum", "weighted"]), default=None,
                 help="Carved model only: aggregate selected slices by their sum (default) or eq (8)'s "
                      "weighted mean. A real MoE combines with its family's own weights."),
    click.option("--model", "model_source", default=None,
                 help="A Mixture-of-Experts checkpoint (local dir or hub id: Mixtral, Qwen2-MoE, Qwen3-MoE, "
                      "OLMoE, DeepSeek-V3, GPT-OSS, Granite-MoE), a dense model to carve into experts, or a "
                      "dmoe build; default SmolLM2-135M-Instruct carved."),
    click.option("--device", default=None,
                 help="Torch device for the model, e.g. cuda or cpu (default cpu)."),
    click.option("--cache-dir", default=None, help="Model cache (default $DMOE_CACHE_DIR or ~/.cache/dmoe)."),
])

#: Calibrated policies' profile and where the nodes run: ``--profile``, ``--engine``,
#: ``--ray-address``, ``--node-failure-rate``, ``--node-rejoin/--no-node-rejoin``.
engine_options = option_group([
    click.option("--profile", "profile", default=None,
                 help="Layer-importance profile (JSON of `dmoe calibrate`) for calibrated policies; default the "
                      "cached one of the model with the most calibration passes."),
    click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="Where the expert nodes run: this process, or one Ray actor (process) per node."),
    click.option("--ray-address", default=None,
                 help="Join this Ray cluster (auto, host:port, ray://host:port); default: start Ray embedded "
                      "with this machine's CPUs. Needs --engine ray."),
    click.option("--node-failure-rate", type=float, default=0.0, show_default=True,
                 help="Probability in [0, 1) that a node fails in a layer round (seeded; failed nodes' queries "
                      "are re-hosted and the round re-planned)."),
    click.option("--node-rejoin/--no-node-rejoin", default=True, show_default=True,
                 help="Failed nodes rejoin at the next query round."),
])


def check_options(opts: dict, *, finite: tuple[tuple[str, str], ...] = ()) -> None:
    """Check the options of the three decorators before any work (``opts``: the command's
    parameters by name); ``finite``: the command's own ``(flag, name)`` pairs that must be
    finite, checked first.

    Raises:
        click.BadParameter: naming the option: a failure rate outside [0, 1), a Ray address
            without ``--engine ray``, a non-finite or out-of-range number, ``--pathloss``
            without ``--layout``, ``--channel-redraw`` beside ``--speed-kmh``, a device
            that is not a torch device or CUDA where there is none.
    """
    rate = opts["node_failure_rate"]
    if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
        raise click.BadParameter(f"must lie in [0, 1), got {rate}", param_hint="'--node-failure-rate'")
    if opts["ray_address"] is not None and opts["engine"] != "ray":
        raise click.BadParameter("needs --engine ray", param_hint="'--ray-address'")
    for flag, key in (*finite, ("--snr-db", "snr_db"), ("--delay-spread", "delay_spread"),
                      ("--noise-figure", "noise_figure"), ("--tx-power-dbm", "tx_power_dbm"),
                      ("--carrier-ghz", "carrier_ghz"), ("--csi-error", "csi_error"),
                      ("--comp-throughput", "comp_throughput"), ("--speed-kmh", "speed_kmh")):
        value = opts[key]
        if value is not None and not math.isfinite(value):
            raise click.BadParameter(f"must be a finite number, got {value}", param_hint=f"'{flag}'")
    speed, nf = opts["speed_kmh"], opts["noise_figure"]
    for flag, key, rule in (("--delay-spread", "delay_spread", opts["delay_spread"] >= 0),
                            ("--speed-kmh", "speed_kmh", speed is None or speed >= 0),
                            ("--carrier-ghz", "carrier_ghz", opts["carrier_ghz"] > 0),
                            ("--csi-error", "csi_error", 0 <= opts["csi_error"] <= 1),
                            ("--csi-delay", "csi_delay", opts["csi_delay"] >= 0),
                            ("--comp-throughput", "comp_throughput", opts["comp_throughput"] > 0),
                            ("--noise-figure", "noise_figure", nf is None or nf >= 0)):
        if not rule:
            need = {"--csi-error": "in [0, 1]", "--carrier-ghz": "> 0", "--comp-throughput": "> 0"}.get(flag, ">= 0")
            raise click.BadParameter(f"must be {need}, got {opts[key]}", param_hint=f"'{flag}'")
    if opts["pathloss"] is not None and opts["layout"] is None:
        raise click.BadParameter("needs --layout (node positions)", param_hint="'--pathloss'")
    if speed is not None and opts["channel_redraw"] != "layer":
        raise click.BadParameter("cannot be combined with --speed-kmh (mobility decides how the channel changes)",
                                 param_hint="'--channel-redraw'")
    if opts["device"] is not None:
        import torch

        try:
            dev = torch.device(opts["device"])
        except (RuntimeError, ValueError) as exc:
            raise click.BadParameter(f"not a torch device: {exc}", param_hint="'--device'") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine", param_hint="'--device'")


def channel_from_options(opts: dict) -> ChannelConfig:
    """The :class:`~dmoe.channels.ChannelConfig` of the channel and layout options.

    Raises:
        ValueError: as :class:`~dmoe.channels.ChannelConfig` (a bad layout, path loss,
            speed, ...), naming the field.
    """
    pathloss = opts["pathloss"]
    return ChannelConfig(model=opts["channel_model"].lower(), delay_spread_ns=opts["delay_spread"],
                         speed_kmh=opts["speed_kmh"], carrier_ghz=opts["carrier_ghz"], csi_error=opts["csi_error"],
                         csi_delay=opts["csi_delay"], layout=opts["layout"],
                         pathloss=None if pathloss is None else pathloss.lower())
