"""A deployment: the expert model, its placement on N edge nodes and the radio system.

What ``dmoe run`` resolves from its model and system options, for the commands that serve
text (``dmoe generate``, ``dmoe chat``) and the lm-evaluation-harness backend
(:mod:`dmoe.integrations.lm_eval`), with the same defaults and the same rules:

* the carved default (SmolLM2-135M-Instruct) has K = 32 experts per layer on N = 8 nodes
  with the co-activation placement (``dmoe.main_job.DEFAULT_RUN_*``); an explicit K alone
  puts one expert per node; a real MoE checkpoint has its own K, one expert per node
  unless N is given (then a contiguous placement);
* M defaults to the smallest power of two >= N(N-1), P0/N0 to 10 dB;
* policies are parsed by name (:func:`dmoe.optimize.policies.policy_from_name`, the
  calibrated ``JESA(cal:B,D)`` forms from the model's cached importance profile) and
  checked against K and M as ``dmoe run`` checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .channels import ChannelConfig
from .system import SystemConfig, default_num_subcarriers

__all__ = ["Deployment", "deploy"]


@dataclass
class Deployment:
    """A model placed on the nodes of a radio system.

    Attributes:
        model: the :class:`~dmoe.model.ExpertModel`.
        system: the :class:`~dmoe.system.SystemConfig` (``num_experts`` = N nodes).
        placement: ``[K]`` or ``[L, K]`` node of every expert, or None (one per node).
        placement_kind: ``"contiguous"``, ``"round-robin"``, ``"coactivation"`` or None.
        num_experts: K, experts per layer.
        carved: whether the model is a carved dense model (else a real MoE).
    """

    model: object
    system: SystemConfig
    placement: np.ndarray | None
    placement_kind: str | None
    num_experts: int
    carved: bool

    def policy(self, name: str, *, profile=None, cache_dir=None, log: Callable[[str], None] = print):
        """Parse policy ``name`` (calibrated forms from the model's profile) and check it
        fits K and M.

        Raises:
            ValueError: an unknown or malformed name, k or D above K, M too small for
                dense, a calibrated policy without a matching profile.
        """
        from .main_job import _calibrated_policies, _check_policies, _parse_policies

        parsed = _parse_policies([name])
        if parsed[0] is None:
            parsed = _calibrated_policies(parsed, [name], self.model, profile, cache_dir, [], self.system, log)
        _check_policies(parsed, self.system, self.num_experts)
        return parsed[0]

    def runtime(self, policy, *, seed: int = 0, channel: ChannelConfig | None = None,
                channel_redraw: str = "layer", engine="local", ray_address: str | None = None,
                node_failure_rate: float = 0.0, node_rejoin: bool = True, record_selection: bool = False):
        """A :class:`~dmoe.runtime.DMoERuntime` of this deployment (arguments as there)."""
        from .runtime import DMoERuntime

        return DMoERuntime(
            self.model, policy, system=self.system, seed=seed, channel=channel, channel_redraw=channel_redraw,
            placement=self.placement, engine=engine, ray_address=ray_address, node_failure_rate=node_failure_rate,
            node_rejoin=node_rejoin, record_selection=record_selection,
        )

    def describe(self) -> dict:
        """JSON-ready: the model, K, N, placement and system."""
        return {
            "model": dict(getattr(self.model, "metadata", {}) or {}),
            "expert_model": self.model.describe(),
            "num_experts": self.num_experts,
            "num_nodes": self.system.num_experts,
            "placement": None if self.placement is None else {"kind": self.placement_kind,
                                                               "map": np.asarray(self.placement).tolist()},
            "system": self.system.to_dict(),
            "combine": getattr(self.model, "combine", None),
        }


def deploy(
    *,
    model_source: str | None = None,
    num_experts: int | None = None,
    num_nodes: int | None = None,
    placement: str | None = None,
    num_subcarriers: int | None = None,
    snr_db: float | None = None,
    comp_throughput_tokens_per_s: float | None = None,
    combine: str | None = None,
    device: str | None = None,
    cache_dir: str | None = None,
    max_experts: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Deployment:
    """Load the expert model and place it on the nodes (module docstring).

    Parameters
    ----------
    model_source, num_experts, num_nodes, placement, num_subcarriers, snr_db,
    comp_throughput_tokens_per_s, combine, device, cache_dir
        As for :func:`dmoe.main_job.run_main_job` (``dmoe run``'s options of the same names).
    max_experts : int, optional
        D of the co-activation placement's routing statistics (default K/4 for a carved
        model, at least 2; 2 for a real MoE), as ``dmoe run``.
    seed : int
        Seed of the co-activation placement's search.
    progress : bool
        Show the carved build's progress bar (first use only).

    Returns
    -------
    Deployment

    Raises
    ------
    ValueError
        An unknown placement, N > K, K contradicting the checkpoint, an unsupported
        architecture (before any weight is loaded where the config tells).
    FileNotFoundError, OSError
        Missing checkpoint files.
    """
    from .main_job import DEFAULT_RUN_EXPERTS, DEFAULT_RUN_NODES, DEFAULT_RUN_PLACEMENT
    from .model import inspect_checkpoint, load_expert_model
    from .placement import PLACEMENTS, make_placement

    if placement is not None and placement not in PLACEMENTS:
        raise ValueError(f"`placement` (--placement) must be one of {', '.join(PLACEMENTS)}; got {placement!r}")
    info = inspect_checkpoint(model_source)
    carved = info.kind != "moe"
    if not carved:
        if num_experts is not None and info.num_experts is not None and int(num_experts) != info.num_experts:
            raise ValueError(
                f"`num_experts` (--num-experts/-K) = {num_experts} contradicts the checkpoint: this "
                f"{info.family.label} model has K = {info.num_experts} routed experts per layer (one per node); "
                "omit --num-experts"
            )
        k = int(info.num_experts)
    else:
        k = int(num_experts) if num_experts is not None else DEFAULT_RUN_EXPERTS
    if num_nodes is not None:
        nodes = int(num_nodes)
    else:
        nodes = DEFAULT_RUN_NODES if carved and num_experts is None else k
    if nodes > k:
        raise ValueError(f"`num_nodes` (--nodes) N = {nodes} must not exceed the experts per layer K = {k}")
    if placement is None and nodes < k:
        placement = DEFAULT_RUN_PLACEMENT if carved else "contiguous"
    extra = {} if snr_db is None else {"snr_db": snr_db}
    if comp_throughput_tokens_per_s is not None:
        extra["comp_throughput_tokens_per_s"] = comp_throughput_tokens_per_s
    system = SystemConfig(
        num_experts=nodes,
        num_subcarriers=num_subcarriers if num_subcarriers is not None else default_num_subcarriers(nodes),
        **extra,
    )
    model = load_expert_model(model_source, num_experts=k, cache_dir=cache_dir, progress=progress, combine=combine,
                              device=device)
    if model.num_experts != k:
        raise ValueError(f"the model has K = {model.num_experts} experts per layer, expected {k}")
    place = None
    if placement is not None:
        coact = None
        if placement == "coactivation":
            from .runtime.routing import routing_coactivation

            top = int(max_experts) if max_experts is not None else (max(2, k // 4) if carved else 2)
            coact = routing_coactivation(model, top_k=min(top, k))
        place = make_placement(placement, k, nodes, coactivation=coact, seed=seed)
    return Deployment(model, system, place, placement, k, carved)
