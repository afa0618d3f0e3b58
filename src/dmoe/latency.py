"""Timing model of one layer round (ours; the paper models energy only).

A layer round, from the server's schedule to the aggregation at the source nodes, has three
phases (protocol steps 4-5 of Section III-C):

1. forward transfers: every link i -> j (i != j) carrying s_ij tokens sends them one after
   another on its own subcarrier, so its air time is the sum of its packets' times
   ``8*s0 / rate`` [s]; different links use different subcarriers (OFDMA, C3) and run in
   parallel; a link holding several resource blocks splits its bits over them, all on
   from t = 0, and finishes with its slowest RB (:func:`schedule_air_time`,
   :func:`dmoe.energy.link_rates_from_allocation`);
2. computation: node j starts its FFN once every token bound for it has arrived, and
   processes its load (local tokens included) ``n_j = sum_i s_ij`` at c_j token/s
   (``SystemConfig.comp_throughput_tokens_per_s``);
3. backward transfers: node j returns the s_ij outputs to node i on the same subcarrier
   (TDD reciprocity: the same rate as the forward link), again serially per link.

The round is complete when the slowest path has delivered:
``latency = max over loaded (i, j) of [arrive_j + n_j / c_j + backward_ij]`` with
``arrive_j = max over remote i of forward_ij``. Attention and gating at the source nodes
take the same time under every policy and are not included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmoe.system import SystemConfig

__all__ = ["RoundTiming", "air_time_budget", "link_air_time", "round_timing", "schedule_air_time"]


@dataclass(frozen=True)
class RoundTiming:
    """Timing of one layer round.

    Attributes:
        latency_s: completion time of the slowest path [s].
        forward_s: ``[K, K], float64`` forward air time per link [s] (0 when unloaded).
        compute_s: ``[K], float64`` FFN time per node [s].
        backward_s: ``[K, K], float64`` backward air time per link i <- j, indexed [i, j] [s].
        ready_s: ``[K], float64`` time node j finishes its FFN [s] (0 when idle).
    """

    latency_s: float
    forward_s: np.ndarray
    compute_s: np.ndarray
    backward_s: np.ndarray
    ready_s: np.ndarray


def link_air_time(tokens, link_rate, bits_per_token: int) -> np.ndarray:
    """Serial air time ``s_ij * bits / R_ij`` per link [s] (0 on the diagonal and unloaded links).

    Args:
        tokens: ``[K, K]`` s_ij >= 0.
        link_rate: ``[K, K], float64`` R_ij [bit/s].
        bits_per_token: 8 * s0.

    Returns:
        ``[K, K], float64`` [s]; ``+inf`` on a loaded link with rate 0.
    """
    s = np.asarray(tokens, dtype=np.float64)
    r = np.asarray(link_rate, dtype=np.float64)
    k = s.shape[0]
    off = ~np.eye(k, dtype=bool)
    loaded = off & (s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(loaded, s * bits_per_token / r, 0.0)
    return t


def schedule_air_time(tokens, rates, subcarrier, bits_per_token: int, rb_share=None) -> np.ndarray:
    """Air time per link [s] of a schedule, one subcarrier or several RBs per link.

    ``s_ij * bits / R^T_ij`` with R^T the time rate of
    :func:`dmoe.energy.link_rates_from_allocation` (the subcarrier's rate when
    ``rb_share`` is None: :func:`link_air_time` on :func:`dmoe.energy.link_rate_from_subcarriers`).

    Args:
        tokens: ``[K, K]`` s_ij; rates: ``[K, K, M]`` [bit/s]; subcarrier: ``[K, K] int``;
        bits_per_token: 8 s0; rb_share: None or ``[K, K, M]``.

    Returns:
        ``[K, K], float64`` [s]; ``+inf`` on a loaded link without rate.
    """
    from dmoe.energy import link_rates_from_allocation

    return link_air_time(tokens, link_rates_from_allocation(rates, subcarrier, rb_share)[1], bits_per_token)


def air_time_budget(tokens, deadline_s: float, system: SystemConfig, *, load=None) -> np.ndarray:
    """Air time each transfer may take so that the layer round ends within ``deadline_s``.

    With the forward and the backward transfer of a link on the same RBs at the same rate
    (TDD reciprocity, perfect CSI) the round ends at max_j (2 max_i air_ij + n_j / c_j)
    (:func:`round_timing`), so it meets T exactly when every loaded link i -> j has
    air_ij <= (T - n_j / c_j) / 2 (returned 1e-9 relative smaller, so that rounding of
    transfers filled exactly to it cannot end the round after T). Links into a node whose
    computation alone takes T or more get ``inf`` (no air time can save the round; the
    caller sees the miss in its timing), as do unloaded links and the diagonal.

    Args:
        tokens: ``[K, K]`` s_ij; deadline_s: T [s] > 0; system: supplies c_j;
        load: ``[K]`` FFN work per node (:func:`round_timing`), default ``sum_i s_ij``.

    Returns:
        ``[K, K], float64`` [s], > 0 or ``inf``.
    """
    s = np.asarray(tokens, dtype=np.float64)
    k = system.num_nodes
    load = s.sum(axis=0) if load is None else np.asarray(load, dtype=np.float64)
    slack = float(deadline_s) - load / system.comp_throughput_j  # [K] time left for air per node
    # 1e-9 relative margin: RBs filled exactly to the budget never round the round past T
    budget = np.where(slack > 0, slack / 2.0 * (1.0 - 1e-9), np.inf)
    out = np.broadcast_to(budget[None, :], (k, k)).copy()
    out[~((s > 0) & ~np.eye(k, dtype=bool))] = np.inf
    return out


def round_timing(tokens, forward_s, backward_s, system: SystemConfig, *, load=None) -> RoundTiming:
    """Completion time of one layer round (module docstring).

    Args:
        tokens: ``[K, K]`` s_ij tokens handled by expert j for node i (diagonal: local).
        forward_s: ``[K, K], float64`` air time of link i -> j [s] (all attempts).
        backward_s: ``[K, K], float64`` air time of the return j -> i, indexed [i, j] [s].
        system: supplies c_j.
        load: ``[K], float64`` FFN work of each node in tokens through its whole share of
            the layer, or None (default: ``sum_i s_ij``). With several experts per node
            (issue 12) a token through m of the E/N experts of node n is m N / E of such a
            token (:attr:`dmoe.runtime.transfer.TransferOutcome.node_load`).

    Returns:
        :class:`RoundTiming` (latency 0 when no token is processed).

    Raises:
        ValueError: on shape mismatch.
    """
    s = np.asarray(tokens, dtype=np.float64)
    k = system.num_nodes
    fwd = np.asarray(forward_s, dtype=np.float64)
    bwd = np.asarray(backward_s, dtype=np.float64)
    for name, arr in (("tokens", s), ("forward_s", fwd), ("backward_s", bwd)):
        if arr.shape != (k, k):
            raise ValueError(f"`{name}` must have shape [{k}, {k}], got {arr.shape}")
    loaded = s > 0
    off = ~np.eye(k, dtype=bool)
    # [K] arrival of the last forward transfer at node j
    arrive = np.max(np.where(loaded & off, fwd, 0.0), axis=0)
    load = s.sum(axis=0) if load is None else np.asarray(load, dtype=np.float64)
    if load.shape != (k,):
        raise ValueError(f"`load` must have shape [{k}], got {load.shape}")
    compute = load / system.comp_throughput_j
    ready = np.where(load > 0, arrive + compute, 0.0)
    # [K, K] completion of path i -> j -> i
    path = np.where(loaded, ready[None, :] + np.where(off, bwd, 0.0), 0.0)
    latency = float(path.max()) if loaded.any() else 0.0
    return RoundTiming(latency, fwd, compute, bwd, ready)
