"""A deployment: the expert model, its placement on N edge nodes and the radio system.

The one place where a model source, K, N, the placement and the radio options become a
deployment, for ``dmoe run`` (:func:`dmoe.main_job.run_main_job`), the commands that serve
text (``dmoe generate``, ``dmoe chat``) and the lm-evaluation-harness backend
(:mod:`dmoe.integrations.lm_eval`). Two steps:

1. :func:`plan_deployment` checks every argument and reads the checkpoint's config only
   (:func:`dmoe.model.inspect_checkpoint`): K, N, the placement kind, the
   :class:`~dmoe.system.SystemConfig` of the radio preset with its overrides and the node
   geometry of the channel's layout (:meth:`dmoe.channels.ChannelConfig.large_scale`);
   bad input fails here, before any weight loads;
2. :meth:`DeploymentPlan.load` loads the model, sets s0 from its hidden size
   (:func:`dmoe.wire.resolve_hidden_state_bytes`) and places the experts (the co-activation
   placement counts the routers' co-selections).

:func:`deploy` does both. The rules, ``dmoe run``'s:

* the carved default (SmolLM2-135M-Instruct) has K = 32 experts per layer on N = 8 nodes
  with the co-activation placement (:mod:`dmoe.defaults`); an explicit K alone
  puts one expert per node; a real MoE checkpoint has its own K, one expert per node
  unless N is given (then a contiguous placement);
* the radio: a preset (``"paper"``: M = the smallest power of two >= N(N-1), P0/N0 =
  10 dB; an NR FR1 carrier: M = its resource blocks, N0 = k T0 B0 NF) with overrides of
  M, P0/N0, the noise figure, the power budget and the FFN throughput, or an explicit
  :class:`~dmoe.system.SystemConfig`;
* s0 [byte] = the model's hidden size x the wire format's bytes (fp16 by default), unless
  set explicitly or given by an explicit SystemConfig;
* policies are parsed by name (:func:`dmoe.policies.policy_from_name`, the
  calibrated ``JESA(cal:B,D)`` forms from the model's cached importance profile) and
  checked against K and M as ``dmoe run`` checks them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .channels import ChannelConfig, check_grid_resolution
from .system import SYSTEM_PRESETS, SystemConfig, dbm_to_w, system_preset
from .wire import DEFAULT_WIRE_DTYPE, resolve_hidden_state_bytes, wire_format

__all__ = ["Deployment", "DeploymentPlan", "deploy", "plan_deployment", "check_radio_arguments", "check_policy_name"]


@dataclass
class Deployment:
    """A model placed on the nodes of a radio system.

    Attributes:
        model: the :class:`~dmoe.model.ExpertModel`.
        system: the :class:`~dmoe.system.SystemConfig` (``num_experts`` = N nodes,
            ``hidden_state_bytes`` = s0 of this model).
        placement: ``[K]`` or ``[L, K]`` node of every expert, or None (one per node).
        placement_kind: ``"contiguous"``, ``"round-robin"``, ``"coactivation"`` or None.
        num_experts: K, experts per layer.
        carved: whether the model is a carved dense model (else a real MoE).
        channel: the :class:`~dmoe.channels.ChannelConfig` (fading and node layout).
        seed: the seed the node geometry was drawn from (and the runtime's default).
        preset: the radio preset's name, or None for an explicit SystemConfig.
        large_scale: the node geometry (:class:`~dmoe.channels.pathloss.LargeScale`:
            positions [m], LoS states, path loss [dB] per link) or None without a layout.
        hidden_state_source: where s0 came from (a sentence).
        wire_dtype: the wire format s0 was derived from, or None (set explicitly or by an
            explicit SystemConfig).
    """

    model: object
    system: SystemConfig
    placement: np.ndarray | None
    placement_kind: str | None
    num_experts: int
    carved: bool
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    seed: int = 0
    preset: str | None = "paper"
    large_scale: object | None = None
    hidden_state_source: str = ""
    wire_dtype: str | None = None

    def default_policy(self, max_experts: int | None = None) -> str:
        """``JESA(0.9,D)``: D = ``max_experts``, by default ``dmoe run``'s
        (:func:`dmoe.main_job.default_max_experts`)."""
        from .main_job import default_max_experts

        return f"JESA(0.9,{default_max_experts(self.num_experts, carved=self.carved, max_experts=max_experts)})"

    def policy(self, name: str, *, profile=None, cache_dir=None, log: Callable[[str], None] = print):
        """Parse policy ``name`` (calibrated forms from the model's profile) and check it
        fits K and M.

        Raises:
            ValueError: an unknown or malformed name, k or D above K, M too small for
                dense, a calibrated policy without a matching profile.
        """
        from .main_job import _calibrated_policies, _check_policies, _parse_policies

        parsed = _parse_policies([name], where=None)
        if parsed[0] is None:
            parsed = _calibrated_policies(parsed, [name], self.model, profile, cache_dir, [], self.system, log)
        _check_policies(parsed, self.system, self.num_experts)
        return parsed[0]

    def policies(self, policy: str | None = None, prefill: str | None = None, decode: str | None = None, *,
                 max_experts: int | None = None, profile=None, cache_dir=None,
                 log: Callable[[str], None] = print) -> tuple:
        """``(policy, prefill policy, decode policy)`` parsed by :meth:`policy`: ``policy``
        defaults to :meth:`default_policy`, the other two to ``policy``.

        Raises:
            ValueError: as :meth:`policy`.
        """
        main = self.policy(policy or self.default_policy(max_experts), profile=profile, cache_dir=cache_dir, log=log)
        first = self.policy(prefill, profile=profile, cache_dir=cache_dir, log=log) if prefill else main
        rest = self.policy(decode, profile=profile, cache_dir=cache_dir, log=log) if decode else main
        return main, first, rest

    def runtime(self, policy, *, seed: int | None = None, channel: ChannelConfig | None = None,
                channel_redraw: str = "layer", engine="local", ray_address: str | None = None,
                node_failure_rate: float = 0.0, node_rejoin: bool = True, record_selection: bool = False):
        """A :class:`~dmoe.runtime.DMoERuntime` of this deployment (arguments as there;
        ``seed`` and ``channel`` default to the deployment's).

        Raises:
            ValueError: a ``channel`` or ``seed`` that would draw another node geometry
                than the deployment's (a different layout, path loss, shadowing or carrier,
                or another seed, when the deployment has a layout).
        """
        from .runtime import DMoERuntime

        seed = self.seed if seed is None else seed
        channel = self.channel if channel is None else channel
        if self.large_scale is not None and (_geometry(channel) != _geometry(self.channel) or seed != self.seed):
            raise ValueError(
                f"the deployment's nodes stand where `seed` = {self.seed} put them ({self.channel.label()}); "
                "a runtime must use the same seed and the same layout, path loss, shadowing and carrier"
            )
        return DMoERuntime(
            self.model, policy, system=self.system, seed=seed, channel=channel, channel_redraw=channel_redraw,
            placement=self.placement, engine=engine, ray_address=ray_address, node_failure_rate=node_failure_rate,
            node_rejoin=node_rejoin, record_selection=record_selection,
        )

    def describe(self) -> dict:
        """JSON-ready: the model, K, N, placement, the radio system and its preset, the
        node geometry, s0 and where it came from, and the channel."""
        return {
            "model": dict(getattr(self.model, "metadata", {}) or {}),
            "expert_model": self.model.describe(),
            "num_experts": self.num_experts,
            "num_nodes": self.system.num_nodes,
            "placement": None if self.placement is None else {"kind": self.placement_kind,
                                                               "map": np.asarray(self.placement).tolist()},
            "system": self.system.to_dict(),
            "system_preset": self.preset,
            "deployment": None if self.large_scale is None else self.large_scale.to_dict(),
            "hidden_state_bytes": self.system.hidden_state_bytes,
            "hidden_state_source": self.hidden_state_source,
            "wire_dtype": self.wire_dtype,
            "channel": self.channel.to_dict(),
            "combine": getattr(self.model, "combine", None),
        }


def _geometry(channel: ChannelConfig) -> tuple:
    """What of ``channel`` decides the node geometry."""
    return (channel.layout, channel.pathloss, channel.shadowing, channel.carrier_ghz if channel.layout else None)


@dataclass(frozen=True)
class DeploymentPlan:
    """A deployment resolved from its arguments and the checkpoint's config, before any
    weight loads (:func:`plan_deployment`).

    Attributes:
        model_source: the model source as given.
        checkpoint: the :class:`~dmoe.model.CheckpointInfo` (``kind``, family, K).
        num_experts: K, experts per layer.
        num_nodes: N nodes.
        placement_kind: ``"contiguous"``, ``"round-robin"``, ``"coactivation"`` or None
            (one expert per node).
        system: the :class:`~dmoe.system.SystemConfig` (s0 is set by :meth:`load`).
        preset: the preset's canonical name, or None for an explicit SystemConfig.
        channel: the :class:`~dmoe.channels.ChannelConfig`.
        large_scale: the node geometry of the channel's layout, or None.
        seed: the seed of the geometry and of the co-activation placement.
        wire_dtype, hidden_state_bytes: s0's wire format and explicit value, as given.
        system_bytes: s0 of an explicit SystemConfig, else None.
        max_experts: D of the co-activation statistics, as given.
    """

    model_source: str | None
    checkpoint: object
    num_experts: int
    num_nodes: int
    placement_kind: str | None
    system: SystemConfig
    preset: str | None
    channel: ChannelConfig
    large_scale: object | None
    seed: int
    wire_dtype: str | None
    hidden_state_bytes: int | None
    system_bytes: int | None
    max_experts: int | None

    @property
    def carved(self) -> bool:
        """Whether the model is a carved dense model (else a real MoE)."""
        return self.checkpoint.kind != "moe"

    def load(self, *, cache_dir: str | None = None, combine: str | None = None, device: str | None = None,
             progress: bool = True, on_stage: Callable[[str], None] | None = None) -> Deployment:
        """Load the model (carving it on first use), set s0 from its hidden size and place
        the experts.

        Args:
            cache_dir: where carved models are cached (default ``$DMOE_CACHE_DIR`` or
                ``~/.cache/dmoe``).
            combine: carved model only: ``"sum"`` (default) or ``"weighted"`` (eq 8).
            device: torch device of the model (default CPU).
            progress: show the carved build's progress bar (first use only).
            on_stage: called with ``"model"`` once the model is loaded, then with
                ``"placement"`` once the experts are placed (also when there is nothing to
                place, N = K); :func:`dmoe.main_job.run_main_job`'s start-up stages.

        Returns:
            :class:`Deployment`.

        Raises:
            ValueError: the loaded model's K differs from the plan's; a ``combine`` that
                does not apply.
            TypeError: ``on_stage`` is not callable.
            FileNotFoundError, OSError: missing or unreadable checkpoint files.
        """
        from .model import load_expert_model
        from .placement import make_placement

        if on_stage is not None and not callable(on_stage):
            raise TypeError(f"`on_stage` must be a callable taking a stage name, got {on_stage!r}")
        k = self.num_experts
        model = load_expert_model(self.model_source, num_experts=k, cache_dir=cache_dir, progress=progress,
                                  combine=combine, device=device)
        if model.num_experts != k:
            raise ValueError(f"the model has K = {model.num_experts} experts per layer, expected {k}")
        if on_stage is not None:
            on_stage("model")
        # s0 of the model that runs (issue 16): its hidden size on the wire, unless set explicitly
        s0, source = resolve_hidden_state_bytes(int(model.hidden_size), wire_dtype=self.wire_dtype,
                                                explicit=self.hidden_state_bytes, system_bytes=self.system_bytes)
        dtype = (wire_format(self.wire_dtype or DEFAULT_WIRE_DTYPE).name
                 if self.hidden_state_bytes is None and (self.wire_dtype is not None or self.system_bytes is None)
                 else None)
        place = None
        if self.placement_kind is not None:
            coact = None
            if self.placement_kind == "coactivation":
                from .model.coactivation_cache import cached_coactivation

                # the routers' Top-D co-selections, D = the default policies' D (not the policy
                # list's, so that a policy's result does not depend on which others run with it);
                # cached beside the model build (they depend on the model and D only)
                top = int(self.max_experts) if self.max_experts is not None else (max(2, k // 4) if self.carved else 2)
                coact = cached_coactivation(model, top_k=min(top, k), cache_dir=cache_dir)
            place = make_placement(self.placement_kind, k, self.num_nodes, coactivation=coact, seed=self.seed)
        if on_stage is not None:
            on_stage("placement")
        return Deployment(model, self.system.replace(hidden_state_bytes=s0), place, self.placement_kind, k,
                          self.carved, channel=self.channel, seed=self.seed, preset=self.preset,
                          large_scale=self.large_scale, hidden_state_source=source, wire_dtype=dtype)


def plan_deployment(
    *,
    model_source: str | None = None,
    system: SystemConfig | None = None,
    num_experts: int | None = None,
    num_nodes: int | None = None,
    placement: str | None = None,
    preset: str = "paper",
    num_subcarriers: int | None = None,
    snr_db: float | None = None,
    comp_throughput_tokens_per_s: float | None = None,
    noise_figure_db: float | None = None,
    tx_power_dbm: float | None = None,
    channel: ChannelConfig | None = None,
    wire_dtype: str | None = None,
    hidden_state_bytes: int | None = None,
    max_experts: int | None = None,
    seed: int = 0,
    warn: Callable[[str], None] | None = None,
) -> DeploymentPlan:
    """Check the arguments and resolve K, N, the placement, the radio system and the node
    geometry from the checkpoint's config, loading no weight (module docstring).

    Parameters
    ----------
    model_source, system, num_experts, num_nodes, placement, preset, num_subcarriers,
    snr_db, comp_throughput_tokens_per_s, noise_figure_db, tx_power_dbm, channel,
    wire_dtype, hidden_state_bytes
        As for :func:`dmoe.main_job.run_main_job` (``dmoe run``'s options of the same
        names: ``--model``, ``-K``, ``-N``, ``--placement``, ``--system``, ``-M``,
        ``--snr-db`` [dB], ``--comp-throughput`` [token/s], ``--noise-figure`` [dB],
        ``--tx-power-dbm`` [dBm], the channel options, ``--wire-dtype``,
        ``--hidden-state-bytes`` [byte]).
    max_experts : int, optional
        D of the co-activation placement's routing statistics (default K/4 for a carved
        model, at least 2; 2 for a real MoE).
    seed : int
        Seed of the node geometry (a layout) and of the co-activation placement's search.
    warn : callable, optional
        Receives the text of a warning (a TDL profile whose tail wraps around the OFDM
        grid) at planning time; default: none here, the runtime's
        :class:`~dmoe.channels.ChannelProcess` warns through :func:`warnings.warn`.

    Returns
    -------
    DeploymentPlan

    Raises
    ------
    ValueError
        An unknown preset, wire format or placement; a non-finite noise figure, power or
        SNR; P0/N0 beside a noise figure; a preset beside an explicit ``system``; N above
        K (``system.num_nodes`` above the model's K included: K comes from
        ``num_experts``, the checkpoint or :data:`dmoe.defaults.DEFAULT_NUM_EXPERTS`, never
        from ``system``); N contradicting ``system``; K contradicting the checkpoint; an unsupported architecture;
        an invalid system (e.g. a power budget below one RB's P0); a CSV layout without N
        rows; a delay spread the OFDM grid cannot resolve.
    TypeError
        ``channel`` not a ChannelConfig.
    FileNotFoundError, OSError
        A missing or unreadable checkpoint config.
    """
    from .defaults import DEFAULT_NUM_EXPERTS as DEFAULT_RUN_EXPERTS
    from .defaults import DEFAULT_NUM_NODES as DEFAULT_RUN_NODES
    from .defaults import DEFAULT_PLACEMENT as DEFAULT_RUN_PLACEMENT
    from .model import inspect_checkpoint
    from .placement import PLACEMENTS

    preset = check_radio_arguments(preset, system, snr_db, noise_figure_db, tx_power_dbm, wire_dtype,
                                   hidden_state_bytes)
    channel = ChannelConfig() if channel is None else channel
    if not isinstance(channel, ChannelConfig):
        raise TypeError(f"`channel` must be a ChannelConfig, got {type(channel).__name__}")
    if placement is not None and placement not in PLACEMENTS:
        raise ValueError(f"`placement` (--placement) must be one of {', '.join(PLACEMENTS)}; got {placement!r}")
    if num_nodes is not None and system is not None and system.num_nodes != int(num_nodes):
        raise ValueError(f"`num_nodes` ({num_nodes}) differs from `system.num_nodes` ({system.num_nodes})")
    # K comes from `num_experts`, else the checkpoint, else the default; never from `system`,
    # whose `num_nodes` is N (before issue 19 a system of 8 nodes silently switched to K = 8)
    asked_k = num_experts
    # what the checkpoint is, from its config only: K is known before any weight is loaded
    info = inspect_checkpoint(model_source)
    carved = info.kind != "moe"
    if not carved:
        if asked_k is not None and info.num_experts is not None and int(asked_k) != info.num_experts:
            raise ValueError(
                f"`num_experts` (--num-experts/-K) = {asked_k} contradicts the checkpoint: this "
                f"{info.family.label} model has K = {info.num_experts} routed experts per layer (one per node); "
                "omit --num-experts"
            )
        k = int(info.num_experts)
    elif info.num_experts is not None:  # an existing dmoe build: its own K
        if asked_k is not None and int(asked_k) != info.num_experts:
            raise ValueError(
                f"`num_experts` (--num-experts/-K) = {asked_k} contradicts the model: the dmoe build at "
                f"{info.source.location!r} has K = {info.num_experts} experts per layer; omit --num-experts"
            )
        k = int(info.num_experts)
    else:
        k = int(asked_k) if asked_k is not None else DEFAULT_RUN_EXPERTS
    if num_nodes is not None:
        nodes = int(num_nodes)
    elif system is not None:
        nodes = system.num_nodes
    else:
        # the carved default: 32 experts on 8 nodes; an explicit -K, or a build of another K,
        # keeps one expert per node
        nodes = DEFAULT_RUN_NODES if carved and asked_k is None and k == DEFAULT_RUN_EXPERTS else k
    if system is not None and system.num_nodes > k:
        model = "the carved model" if carved else f"this {info.family.label} checkpoint"
        raise ValueError(
            f"`system.num_nodes` = {system.num_nodes} nodes contradicts the model: {model} has K = {k} experts per "
            f"layer (`num_experts`{'' if carved else ', from its config'}), and N must not exceed K; give a "
            f"SystemConfig with num_nodes <= {k}"
            + (" or a larger `num_experts`" if carved else "")
            + " (`system.num_nodes` is the number of nodes N, not the model's K)"
        )
    if nodes > k:
        raise ValueError(
            f"`num_nodes` (--nodes) N = {nodes} must not exceed the experts per layer K = {k} (--num-experts)"
        )
    if placement is None and nodes != k:
        # fewer nodes than experts: co-activation placement for a carved model (the best measured)
        placement = DEFAULT_RUN_PLACEMENT if carved else "contiguous"
    system_given = system
    if system is None:
        system = _preset_system(preset, nodes, num_subcarriers, snr_db, comp_throughput_tokens_per_s,
                                noise_figure_db, tx_power_dbm)
    # the deployment (node positions, LoS, shadowing) from the seed: a bad CSV fails here
    large_scale = channel.large_scale(system.num_nodes, seed)
    if large_scale is not None and system.noise_figure_db is None:
        # the paper's P0/N0 is a ratio before its fixed 1e-2 average gain: under a path loss of
        # 50-100 dB it leaves every link far below 0 dB SNR (hours per query), so refuse it
        raise ValueError(
            f"`layout` {channel.layout!r} needs the noise from a noise figure (N0 = k T0 B0 NF): "
            f"`snr_db` (--snr-db) is P0/N0 before the paper's fixed 1e-2 average gain, not under a path loss; "
            f"use an NR --system (e.g. nr-fr1-30khz-100mhz) or give --noise-figure (e.g. 7)"
        )
    # a delay profile the OFDM grid cannot resolve is refused before any work (issue 20)
    # up front only the error (nothing loaded yet); the warning of a wrapping tail comes from
    # the runtime's ChannelProcess, which checks again, so that it is shown once, not twice
    check_grid_resolution(channel.make_model(), system.subcarrier_spacing_hz,
                          warn=warn if warn is not None else lambda message: None)
    return DeploymentPlan(
        model_source=model_source, checkpoint=info, num_experts=k, num_nodes=nodes, placement_kind=placement,
        system=system, preset=preset, channel=channel, large_scale=large_scale, seed=seed, wire_dtype=wire_dtype,
        hidden_state_bytes=hidden_state_bytes,
        system_bytes=None if system_given is None else system_given.hidden_state_bytes, max_experts=max_experts,
    )


def deploy(*, cache_dir: str | None = None, combine: str | None = None, device: str | None = None,
           progress: bool = True, on_stage: Callable[[str], None] | None = None, **plan) -> Deployment:
    """Load the expert model and place it on the nodes of the radio system:
    :func:`plan_deployment` (every check, no weight loaded), then
    :meth:`DeploymentPlan.load`.

    Parameters
    ----------
    cache_dir, combine, device, progress, on_stage
        As :meth:`DeploymentPlan.load`: the carved models' cache, ``"sum"`` or
        ``"weighted"`` (carved model only), the torch device, the carved build's progress bar,
        the hook called with ``"model"`` and ``"placement"`` as those stages finish.
    **plan
        The keyword arguments of :func:`plan_deployment` (``dmoe run``'s options of the same
        names): ``model_source``, ``system``, ``num_experts``, ``num_nodes``, ``placement``,
        ``preset``, ``num_subcarriers``, ``snr_db`` [dB], ``comp_throughput_tokens_per_s``
        [token/s], ``noise_figure_db`` [dB], ``tx_power_dbm`` [dBm], ``channel``,
        ``wire_dtype``, ``hidden_state_bytes`` [byte], ``max_experts``, ``seed`` (of the node
        geometry and the co-activation placement; the runtime's default seed), ``warn``.

    Returns
    -------
    Deployment

    Raises
    ------
    ValueError, TypeError
        As :func:`plan_deployment` (before any weight is loaded; a TypeError also for an
        unknown keyword) and :meth:`DeploymentPlan.load`.
    FileNotFoundError, OSError
        Missing checkpoint files.
    """
    if on_stage is not None and not callable(on_stage):
        raise TypeError(f"`on_stage` must be a callable taking a stage name, got {on_stage!r}")
    return plan_deployment(**plan).load(cache_dir=cache_dir, combine=combine, device=device, progress=progress,
                                        on_stage=on_stage)


def check_radio_arguments(preset, system, snr_db, noise_figure_db, tx_power_dbm, wire_dtype=None,
                          hidden_state_bytes=None) -> str | None:
    """The canonical preset name (``None`` for an explicit ``system``), after checking the
    radio arguments; raises on a contradiction, before any work.

    Raises:
        ValueError: an unknown preset (listing the known ones); a preset, noise figure or
            power beside an explicit ``system``; a non-finite ``noise_figure_db``,
            ``tx_power_dbm`` or ``snr_db``; ``snr_db`` beside a noise figure; an unknown
            ``wire_dtype``; a ``hidden_state_bytes`` that is not a positive integer.
    """
    key = preset.strip().lower() if isinstance(preset, str) else None
    if key not in SYSTEM_PRESETS:
        raise ValueError(f"unknown system `preset` (--system) {preset!r}; known: {', '.join(SYSTEM_PRESETS)}")
    if system is not None:
        given = [n for n, v in (("noise_figure_db", noise_figure_db), ("tx_power_dbm", tx_power_dbm)) if v is not None]
        if key != "paper" or given:
            raise ValueError(
                f"give either `system` or `preset`/{'/'.join(f'`{n}`' for n in given) or '...'}, not both: "
                "an explicit SystemConfig holds every radio parameter"
            )
        key = None
    else:
        for name, value in (("noise_figure_db", noise_figure_db), ("tx_power_dbm", tx_power_dbm),
                            ("snr_db", snr_db)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or not np.isfinite(value)):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}")
        if snr_db is not None and (noise_figure_db is not None or SYSTEM_PRESETS[key].noise_figure_db is not None):
            raise ValueError(
                f"`snr_db` (--snr-db) cannot be combined with a noise figure (--noise-figure, or the {key!r} "
                f"preset's {SYSTEM_PRESETS[key].noise_figure_db} dB): N0 = k T0 B0 NF then; set the noise figure "
                "instead"
            )
    if wire_dtype is not None:
        wire_format(wire_dtype)
    if hidden_state_bytes is not None:
        resolve_hidden_state_bytes(1, explicit=hidden_state_bytes)
    return key


def _preset_system(preset, nodes, num_subcarriers, snr_db, comp_throughput, noise_figure_db, tx_power_dbm):
    """:func:`dmoe.system.system_preset` for N = ``nodes`` with the run's overrides."""
    extra = {}
    for name, value in (("num_subcarriers", num_subcarriers), ("snr_db", snr_db),
                        ("comp_throughput_tokens_per_s", comp_throughput), ("noise_figure_db", noise_figure_db)):
        if value is not None:
            extra[name] = value
    if tx_power_dbm is not None:
        try:
            extra["node_power_budget_w"] = dbm_to_w(tx_power_dbm)
        except ValueError as exc:
            raise ValueError(str(exc).replace("`power_dbm`", "`tx_power_dbm` (--tx-power-dbm)")) from None
    try:
        return system_preset(preset, num_nodes=nodes, **extra)
    except ValueError as exc:
        flags = {"num_subcarriers": "-M", "snr_db": "--snr-db", "noise_figure_db": "--noise-figure",
                 "node_power_budget_w": "--tx-power-dbm", "comp_throughput_tokens_per_s": "--comp-throughput"}
        # the options the user gave (the CLI always passes --comp-throughput's default: not named)
        given = ", ".join(flags[n] for n in extra if n != "comp_throughput_tokens_per_s")
        raise ValueError(f"{exc} (--system {preset}{f'; given {given}' if given else ''})") from exc


def check_policy_name(name: str) -> None:
    """Parse policy ``name`` unless it is a calibrated one (those need the model's profile):
    a bad name fails before any model work.

    Raises:
        ValueError: an unknown or malformed policy name.
    """
    from .policies.calibrated import is_calibrated_name
    from .policies import policy_from_name

    if not is_calibrated_name(name):
        policy_from_name(name)
