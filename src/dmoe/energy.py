"""Energy model: per-token costs and ledger helpers (paper eq 2-4, Section V-A).

Decided unit convention (DESIGN.md): the paper writes e_ij = s0 (a_j + P0/R_ij) with a_j
in J/token; we charge **per token**

    e_ij = a_j + P0 * 8*s0 / R_ij   [J/token]   for i != j,
    e_jj = a_j                       [J/token]   (in-situ inference, no transmission),

i.e. the communication energy of one hidden state of 8*s0 bits sent at R_ij bit/s with
power P0, plus the computation energy a_j of expert j on that token.

The static computation energy b_j of eq (4) is **not** part of the per-token cost (it does
not depend on how many tokens an expert takes). It is charged once per layer round for
every expert that processes at least one token (:func:`computation_energy`); an expert
that receives no token is idle and costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmoe.system import SystemConfig

__all__ = [
    "token_costs",
    "link_rate_from_subcarriers",
    "link_rates_from_allocation",
    "check_rb_share",
    "link_token_counts",
    "communication_energy",
    "computation_energy",
    "EnergyBreakdown",
    "schedule_energy",
    "expert_comp_energy",
    "transmission_costs",
    "node_computation_energy",
]


def _check_system(system) -> SystemConfig:
    if not isinstance(system, SystemConfig):
        raise TypeError(f"`system` must be a SystemConfig, got {type(system).__name__}")
    return system


def _square(name: str, value, k: int | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"`{name}` must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"`{name}` must have shape [num_experts, num_experts], got {arr.shape}")
    if k is not None and arr.shape[0] != k:
        raise ValueError(f"`{name}` must have shape [{k}, {k}] (system.num_nodes={k}), got {arr.shape}")
    return arr


def _offdiag(k: int) -> np.ndarray:
    return ~np.eye(k, dtype=bool)


def token_costs(link_rate, system: SystemConfig) -> np.ndarray:
    """Per-token cost e_ij of sending a token from node i to expert j (Section V-A).

    e_ij = a_j + P0 * bits_per_token / R_ij for i != j, e_jj = a_j (units decided in
    DESIGN.md; b_j is not included, see module doc).

    Args:
        link_rate: ``[num_experts, num_experts], float64`` R_ij [bit/s] >= 0 (eq 2); the
            diagonal is ignored. R_ij == 0 means the link has no usable subcarrier.
        system: supplies P0, s0 and a_j.

    Returns:
        ``[num_experts, num_experts], float64`` e_ij [J/token]; ``+inf`` where i != j and
        R_ij == 0 (expert unreachable from i).

    Raises:
        ValueError: wrong shape, NaN or negative rates. TypeError: bad ``system``.
    """
    system = _check_system(system)
    # [K, K] transmission energy per token (inf on zero-rate links) + a_j
    return transmission_costs(link_rate, system) + system.comp_energy_per_token_j[None, :]


def link_rate_from_subcarriers(rates, subcarrier) -> np.ndarray:
    """Link rates R_ij of eq (2) with at most one subcarrier per link.

    Args:
        rates: ``[num_experts, num_experts, num_subcarriers], float64`` r_ij^(m) [bit/s].
        subcarrier: ``[num_experts, num_experts], int`` assigned subcarrier index, -1 = none.

    Returns:
        ``[num_experts, num_experts], float64`` R_ij = r_ij^(subcarrier[i, j]) [bit/s], 0 where
        no subcarrier is assigned and on the diagonal.

    Raises:
        ValueError: shape mismatch or subcarrier index out of [-1, M).
    """
    rates = np.asarray(rates, dtype=np.float64)
    if rates.ndim != 3 or rates.shape[0] != rates.shape[1]:
        raise ValueError(f"`rates` must have shape [K, K, M], got {rates.shape}")
    k, _, m = rates.shape
    sub = np.asarray(subcarrier)
    if sub.shape != (k, k):
        raise ValueError(f"`subcarrier` must have shape [{k}, {k}], got {sub.shape}")
    if not np.issubdtype(sub.dtype, np.integer):
        raise TypeError(f"`subcarrier` must be an integer array, got dtype {sub.dtype}")
    if np.any(sub < -1) or np.any(sub >= m):
        raise ValueError(f"`subcarrier` entries must lie in [-1, {m}), got min {sub.min()} max {sub.max()}")
    i, j = np.indices((k, k))
    # [K, K] rate of the chosen subcarrier (index clipped, then masked)
    out = rates[i, j, np.maximum(sub, 0)]
    out = np.where(sub >= 0, out, 0.0)
    out[np.arange(k), np.arange(k)] = 0.0
    return out


def check_rb_share(rb_share, num_nodes: int, num_subcarriers: int) -> np.ndarray:
    """Validate a multi-resource-block allocation (:mod:`dmoe.optimize.resource_blocks`).

    Args:
        rb_share: ``[K, K, M], float64`` fraction of link i -> j's bits carried on RB m
            (0 = the RB is not the link's); each link's shares sum to 1 or are all 0.
        num_nodes: N; num_subcarriers: M.

    Returns:
        ``rb_share`` as a float64 array.

    Raises:
        ValueError: wrong shape, NaN / inf / negative entries, or a link whose shares
            neither sum to 1 (within 1e-9) nor are all 0. TypeError: not numeric.
    """
    arr = np.asarray(rb_share)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"`rb_share` must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    k, m = int(num_nodes), int(num_subcarriers)
    if arr.shape != (k, k, m):
        raise ValueError(f"`rb_share` must have shape [{k}, {k}, {m}] like `rates`, got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("`rb_share` must be finite and >= 0 (fractions of a link's bits)")
    total = arr.sum(axis=2)
    if not np.all((total == 0) | (np.abs(total - 1.0) <= 1e-9)):
        i, j = np.argwhere(~((total == 0) | (np.abs(total - 1.0) <= 1e-9)))[0]
        raise ValueError(f"`rb_share` of link {i}->{j} sums to {total[i, j]!r}; each link's shares must sum to 1 (or 0)")
    return arr


def link_rates_from_allocation(rates, subcarrier, rb_share=None) -> tuple[np.ndarray, np.ndarray]:
    """Energy- and time-equivalent link rates of a schedule with several RBs per link.

    A link i -> j carrying s_ij tokens splits its bits over its resource blocks, share
    ``rb_share[i, j, m]`` on RB m, all RBs transmitting in parallel at power P0 each
    (:mod:`dmoe.optimize.resource_blocks`). Its energy is P0 * 8 s0 s_ij * sum_m share_m /
    r_m (power times the sum of the RBs' on-times, eq 3 generalised) and its air time is
    8 s0 s_ij * max_m share_m / r_m (the slowest RB). Written as rates, so that
    :func:`communication_energy`, :func:`transmission_costs` and
    :func:`dmoe.latency.link_air_time` apply unchanged:

    * energy rate R^E_ij = 1 / sum_m (share_m / r_m): energy = P0 * 8 s0 s_ij / R^E_ij;
    * time rate R^T_ij = 1 / max_m (share_m / r_m): air time = 8 s0 s_ij / R^T_ij.

    A link on one RB (or ``rb_share=None``: one subcarrier per link, eq 2) has
    R^E = R^T = r of that RB exactly (:func:`link_rate_from_subcarriers`), so one-RB
    schedules are charged bit for bit as before. A positive share on a zero-rate RB makes
    both rates 0 (the link cannot deliver).

    Args:
        rates: ``[K, K, M], float64`` r_ij^(m) [bit/s].
        subcarrier: ``[K, K], int`` one subcarrier per link (-1 = none); used where
            ``rb_share`` is None or a link has no share.
        rb_share: None or ``[K, K, M], float64`` (:func:`check_rb_share`).

    Returns:
        ``(energy_rate, time_rate)``, each ``[K, K], float64`` [bit/s], 0 on the diagonal.

    Raises:
        ValueError / TypeError: shapes, index range (:func:`link_rate_from_subcarriers`),
        bad ``rb_share``.
    """
    base = link_rate_from_subcarriers(rates, subcarrier)
    if rb_share is None:
        return base, base
    rates = np.asarray(rates, dtype=np.float64)
    k, _, m = rates.shape
    share = check_rb_share(rb_share, k, m)
    used = share > 0
    count = used.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        # [K, K, M] seconds per bit of the link on each RB (inf on a zero-rate RB it uses)
        per_bit = np.where(used, share / np.where(rates > 0, rates, 1.0), 0.0)
        per_bit = np.where(used & ~(rates > 0), np.inf, per_bit)
        total, slowest = per_bit.sum(axis=2), per_bit.max(axis=2)
        energy_rate = np.where(count > 0, 1.0 / np.where(count > 0, total, 1.0), base)
        time_rate = np.where(count > 0, 1.0 / np.where(count > 0, slowest, 1.0), base)
    # one RB: its rate exactly (the one-subcarrier formulas, bit for bit)
    single = count == 1
    if single.any():
        best = np.argmax(used, axis=2)
        i, j = np.indices((k, k))
        r_one = rates[i, j, best]
        energy_rate = np.where(single, r_one, energy_rate)
        time_rate = np.where(single, r_one, time_rate)
    energy_rate[np.arange(k), np.arange(k)] = 0.0
    time_rate[np.arange(k), np.arange(k)] = 0.0
    return energy_rate, time_rate


def link_token_counts(selection, source, num_nodes: int | None = None) -> np.ndarray:
    """Token counts s_ij: how many tokens living on node i selected expert j (Algorithm 2).

    Args:
        selection: ``[num_tokens, num_nodes], bool`` alpha.
        source: ``[num_tokens], int`` node of each token, in [0, num_nodes).
        num_nodes: N (defaults to ``selection.shape[1]``).

    Returns:
        ``[num_nodes, num_nodes], int64`` s_ij in tokens; the diagonal counts local
        (in-situ) tokens.
    """
    sel = np.asarray(selection, dtype=bool)
    if sel.ndim != 2:
        raise ValueError(f"`selection` must have shape [num_tokens, num_nodes], got {sel.shape}")
    k = sel.shape[1] if num_nodes is None else int(num_nodes)
    if sel.shape[1] != k:
        raise ValueError(f"`selection` has {sel.shape[1]} experts, expected {k}")
    src = np.asarray(source)
    if src.shape != (sel.shape[0],):
        raise ValueError(f"`source` must have shape [{sel.shape[0]}], got {src.shape}")
    if src.size and (not np.issubdtype(src.dtype, np.integer) or src.min() < 0 or src.max() >= k):
        raise ValueError(f"`source` must hold integers in [0, {k})")
    counts = np.zeros((k, k), dtype=np.int64)
    # scatter-add each token's selection row into its source row
    np.add.at(counts, src.astype(np.intp), sel.astype(np.int64))
    return counts


def communication_energy(tokens, link_rate, system: SystemConfig, *, zero_rate: str = "raise") -> np.ndarray:
    """Communication energy per link, eq (3) with one subcarrier per link.

    E_ij^comm = P0 * bits_per_token * s_ij / R_ij [J] for i != j; 0 where s_ij == 0 and on
    the diagonal (local tokens are not transmitted).

    Args:
        tokens: ``[num_experts, num_experts]`` s_ij [tokens] >= 0 (int or float).
        link_rate: ``[num_experts, num_experts], float64`` R_ij [bit/s] >= 0.
        system: supplies P0 and s0.
        zero_rate: policy where s_ij > 0 but R_ij == 0 (tokens on a link without a usable
            subcarrier): ``"raise"`` (default, ValueError naming the link) or ``"inf"``
            (the entry is ``+inf``).

    Returns:
        ``[num_experts, num_experts], float64`` energy [J].

    Raises:
        ValueError: shapes, negative/NaN inputs, or a loaded zero-rate link under "raise".
    """
    system = _check_system(system)
    if zero_rate not in ("raise", "inf"):
        raise ValueError(f"`zero_rate` must be 'raise' or 'inf', got {zero_rate!r}")
    k = system.num_nodes
    s = _square("tokens", tokens, k)
    rate = _square("link_rate", link_rate, k)
    off = _offdiag(k)
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError("`tokens` must be finite and >= 0")
    if np.any(np.isnan(rate[off])) or np.any(rate[off] < 0):
        raise ValueError("`link_rate` must be >= 0 and not NaN off the diagonal")
    loaded = off & (s > 0)
    dead = loaded & ~(rate > 0)
    if np.any(dead) and zero_rate == "raise":
        i, j = np.argwhere(dead)[0]
        raise ValueError(
            f"`link_rate` is 0 on link {i}->{j} which carries {s[i, j]:g} tokens "
            "(a loaded link needs a subcarrier with positive rate)"
        )
    # [K, K] energy on loaded links with positive rate
    safe = np.where(loaded & (rate > 0), rate, 1.0)
    energy = np.where(loaded & (rate > 0), system.tx_power_w * system.bits_per_token * s / safe, 0.0)
    energy[dead] = np.inf
    return energy


def computation_energy(tokens, system: SystemConfig) -> np.ndarray:
    """Computation energy per expert, eq (4): E_j^comp = a_j sum_i s_ij + b_j [j active].

    Decision: b_j (static energy) is charged only when expert j processes at least one
    token in this round (an idle node is not woken up). Local tokens (i == j) count.

    Args:
        tokens: ``[num_experts, num_experts]`` s_ij [tokens] >= 0.
        system: supplies a_j [J/token] and b_j [J].

    Returns:
        ``[num_experts], float64`` energy [J].
    """
    system = _check_system(system)
    s = _square("tokens", tokens, system.num_nodes)
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError("`tokens` must be finite and >= 0")
    # [K] tokens processed by each expert
    load = s.sum(axis=0)
    return system.comp_energy_per_token_j * load + system.comp_energy_static_j * (load > 0)


@dataclass(frozen=True)
class EnergyBreakdown:
    """Energy of one schedule (one layer round).

    Attributes:
        tokens: ``[K, K], int64`` s_ij [tokens].
        link_rate: ``[K, K], float64`` R_ij [bit/s].
        comm_links: ``[K, K], float64`` E_ij^comm [J] (eq 3).
        comp_experts: ``[K], float64`` E_j^comp [J] (eq 4).
    """

    tokens: np.ndarray
    link_rate: np.ndarray
    comm_links: np.ndarray
    comp_experts: np.ndarray

    @property
    def comm(self) -> float:
        """Total communication energy [J]."""
        return float(self.comm_links.sum())

    @property
    def comp(self) -> float:
        """Total computation energy [J]."""
        return float(self.comp_experts.sum())

    @property
    def total(self) -> float:
        """comm + comp [J], the objective of P1/P2."""
        return self.comm + self.comp


def expert_comp_energy(system: SystemConfig, placement) -> np.ndarray:
    """Computation energy per token of every expert when several experts share a node.

    Decided (issue 12): ``system`` describes the N nodes (``system.num_nodes`` = N) and
    a_n [J/token] is the energy of node n running its 1/N share of a layer's FFN on one
    token; an expert is a 1/E share, so expert j costs ``a_{n(j)} * N / E`` per token.
    Processing a token through every expert of a node then costs a_n, as in the paper's
    one-expert-per-node model, and fine-grained experts at equal active fraction cost the
    same computation. With N = E and the identity placement this is a_j.

    Args:
        system: N nodes; placement: ``[num_experts], int`` node of each expert.

    Returns:
        ``[num_experts], float64`` [J/token] (``[num_layers, num_experts]`` for a per-layer placement).

    Raises:
        ValueError / TypeError: ``placement`` invalid for N = ``system.num_nodes`` nodes
        (:func:`dmoe.placement.check_placement`).
    """
    from .placement import check_placement

    system = _check_system(system)
    p = check_placement(placement, system.num_nodes)
    n, e = system.num_nodes, p.shape[-1]
    return system.comp_energy_per_token_j[p] * (n / e)


def transmission_costs(link_rate, system: SystemConfig) -> np.ndarray:
    """Energy of sending one token's hidden state from node i to node n (eq 3, per token).

    Args:
        link_rate: ``[N, N], float64`` R_in [bit/s] (diagonal ignored).
        system: supplies P0 and s0.

    Returns:
        ``[N, N], float64`` [J/token]: P0 * 8 s0 / R_in off the diagonal (``+inf`` where
        R_in = 0: unreachable), 0 on the diagonal (in-situ).

    Raises:
        ValueError: wrong shape, NaN or negative rates. TypeError: bad ``system``.
    """
    system = _check_system(system)
    k = system.num_nodes
    rate = _square("link_rate", link_rate, k)
    off = _offdiag(k)
    if np.any(np.isnan(rate[off])) or np.any(rate[off] < 0):
        raise ValueError("`link_rate` must be >= 0 and not NaN off the diagonal")
    # [N, N] transmission energy per token, inf on zero-rate links (and where it overflows)
    with np.errstate(divide="ignore", over="ignore"):
        comm = np.where(rate > 0, system.tx_power_w * system.bits_per_token / np.where(rate > 0, rate, 1.0), np.inf)
    comm[~off] = 0.0
    return comm


def node_computation_energy(selection, placement, system: SystemConfig) -> np.ndarray:
    """Computation energy per node with several experts per node (eq 4 generalised).

    E_n^comp = sum over tokens and selected experts j on n of a_{n} N / E
    (:func:`expert_comp_energy`) + b_n if node n processed at least one token.

    Args:
        selection: ``[num_tokens, num_experts], bool``; placement: ``[num_experts]``.

    Returns:
        ``[N], float64`` [J]. With N = E and the identity placement it equals
        :func:`computation_energy` of the same selection.
    """
    system = _check_system(system)
    sel = np.asarray(selection, dtype=bool)
    p = np.asarray(placement, dtype=np.int64)
    n = system.num_nodes
    # [E] tokens processed by each expert
    load = sel.sum(axis=0).astype(np.float64)
    comp = np.bincount(p, weights=load * expert_comp_energy(system, p), minlength=n)
    active = np.bincount(p, weights=load, minlength=n) > 0
    return comp + system.comp_energy_static_j * active


def schedule_energy(
    selection, source, subcarrier, rates, system: SystemConfig, *, zero_rate: str = "raise", placement=None, rb_share=None
) -> EnergyBreakdown:
    """Ledger helper: energy of a schedule (selection + subcarriers) under ``rates``.

    Args:
        selection: ``[num_tokens, num_experts], bool``.
        source: ``[num_tokens], int`` node of each token.
        subcarrier: ``[num_experts, num_experts], int`` (-1 = none).
        rates: ``[num_experts, num_experts, num_subcarriers], float64`` [bit/s].
        system: energy constants.
        zero_rate: see :func:`communication_energy`.
        placement: ``[num_experts]`` node of each expert when several experts share a node
            (``system.num_nodes`` = N nodes, ``rates`` and ``subcarrier`` are per node
            pair): one transmission per (token, remote node) however many of the node's
            experts it uses, computation per expert (:func:`node_computation_energy`).
            ``tokens`` are then node-pair counts and ``comp_experts`` is per node.
        rb_share: None (one subcarrier per link) or ``[K, K, M], float64`` the share of
            each link's bits on each resource block (several RBs per link,
            :func:`link_rates_from_allocation`); ``link_rate`` is then the energy rate R^E.

    Returns:
        :class:`EnergyBreakdown` (eq 2-4).
    """
    system = _check_system(system)
    if placement is None:
        tokens = link_token_counts(selection, source, system.num_nodes)
        comp = None
    else:
        from dmoe.placement import node_selection

        tokens = link_token_counts(node_selection(selection, placement, system.num_nodes), source, system.num_nodes)
        comp = node_computation_energy(selection, placement, system)
    rate = link_rates_from_allocation(rates, subcarrier, rb_share)[0]
    comm = communication_energy(tokens, rate, system, zero_rate=zero_rate)
    if comp is None:
        comp = computation_energy(tokens, system)
    return EnergyBreakdown(tokens=tokens, link_rate=rate, comm_links=comm, comp_experts=comp)
