"""Optimal subcarrier allocation, problem P3(a) (paper Section VI-A, Appendix B).

Given token demand s_ij, every *active* link (i != j, s_ij > 0) gets at most one
subcarrier (one is optimal by eq (16)) and every subcarrier serves at most one link (C3),
minimising sum_{active} P0 * bits_per_token * s_ij / r_ij^(m). This is a rectangular
assignment problem solved exactly by :func:`scipy.optimize.linear_sum_assignment` on the
``[num_active_links, M]`` cost matrix.

Decided rules:

* Zero rates: a (link, subcarrier) pair with r = 0 is never used. Such pairs get a large
  finite penalty (costs are first normalised to at most 1, the penalty is
  num_links + 1, so serving more links always beats a cheaper but smaller assignment) and
  a penalty pair that the assignment still picks is dropped (link unassigned). inf is
  never passed to the solver. A link whose rate is 0 on every subcarrier gets none.
* More active links than usable subcarriers: the assignment first maximises the number of
  served links, then among those minimises the total energy of the served links, so the
  links left out are those whose service would cost the most. Unserved active links have
  ``energy = inf`` and ``unserved = True``; callers (JESA, policies) must reroute their
  tokens.
* ``assign_idle=True``: the free subcarriers then go to idle links (i != j, s_ij = 0) by a
  second assignment minimising sum P0 * bits_per_token / r (the per-token energy the
  link would have), so the next expert-selection step of JESA can use links that carry
  nothing now. Without it, Algorithm 2 could never re-open a link: a link without a
  subcarrier has infinite cost for DES, so the set of active links could only shrink.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from dmoe.optimize._validation import check_demand, check_positive, check_rates

__all__ = ["SubcarrierResult", "allocate_subcarriers", "assign_links"]


@dataclass(frozen=True)
class SubcarrierResult:
    """Result of :func:`allocate_subcarriers`.

    Attributes:
        subcarrier: ``[K, K], int64`` beta as the index of each link's subcarrier, -1 = none
            (diagonal always -1). With ``assign_idle`` idle links may hold one too.
        energy: ``[K, K], float64`` [J] communication energy (eq 3) of served active links,
            ``inf`` for unserved active links, 0 elsewhere.
        served: ``[K, K], bool`` active links with a subcarrier.
        unserved: ``[K, K], bool`` active links without a subcarrier (must be rerouted).
        link_rate: ``[K, K], float64`` [bit/s] rate of the assigned subcarrier, 0 if none.
    """

    subcarrier: np.ndarray
    energy: np.ndarray
    served: np.ndarray
    unserved: np.ndarray
    link_rate: np.ndarray

    @property
    def active(self) -> np.ndarray:
        """``[K, K], bool`` links with demand (i != j, s_ij > 0)."""
        return self.served | self.unserved

    @property
    def total_energy(self) -> float:
        """Sum of ``energy`` over served links [J] (finite)."""
        return float(self.energy[self.served].sum())


def assign_links(weight: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Min-weight assignment of rows (links) to columns (subcarriers), one each at most.

    Maximises the number of assigned rows over ``usable`` pairs first, then minimises the
    total weight (penalty method, see module doc).

    Args:
        weight: ``[num_links, num_subcarriers], float64`` >= 0, finite where ``usable``.
        usable: ``[num_links, num_subcarriers], bool``.

    Returns:
        ``[num_links], int64`` column per row, -1 where unassigned.
    """
    n, m = weight.shape
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or m == 0 or not usable.any():
        return out
    scale = float(np.max(weight, where=usable, initial=0.0))  # weights are >= 0
    scale = scale if scale > 0 and np.isfinite(scale) else 1.0
    # [n, m] normalised weights in [0, 1]; unusable pairs get a penalty > any real total
    with np.errstate(invalid="ignore"):
        cost = weight / scale
    if not usable.all():
        cost[~usable] = float(n + 1)
    rows, cols = linear_sum_assignment(cost)
    keep = usable[rows, cols]
    out[rows[keep]] = cols[keep]
    return out


def allocate_subcarriers(rates, demand, *, tx_power_w, bits_per_token, assign_idle: bool = False) -> SubcarrierResult:
    """Optimal subcarrier allocation for a given demand, P3(a) (Appendix B).

    Args:
        rates: ``[K, K, M], float64`` r_ij^(m) [bit/s] >= 0 (eq 1); diagonal ignored.
        demand: ``[K, K]`` s_ij [tokens] >= 0 (int or float); diagonal ignored.
        tx_power_w: P0 [W] > 0.
        bits_per_token: 8 * s0 [bit] > 0.
        assign_idle: also give free subcarriers to idle links (see module doc).

    Returns:
        :class:`SubcarrierResult`.

    Raises:
        ValueError / TypeError naming the argument: ``rates`` not [K, K, M] or with
        negative/NaN/inf entries off the diagonal; ``demand`` not [K, K] or negative/NaN;
        non-positive ``tx_power_w`` / ``bits_per_token``.
    """
    rates = check_rates(rates)
    k, _, m = rates.shape
    demand = check_demand(demand, k)
    p0 = check_positive("tx_power_w", tx_power_w)
    bits = check_positive("bits_per_token", bits_per_token)
    return _allocate(rates, demand, p0, bits, assign_idle)


def _allocate(rates, demand, p0, bits, assign_idle) -> SubcarrierResult:
    """:func:`allocate_subcarriers` on validated inputs (``rates`` ``[K, K, M] float64``,
    ``demand`` ``[K, K] float64``, ``p0``, ``bits`` floats > 0): callers that validated
    once at their edge (JESA's iterations) call this."""
    k, _, m = rates.shape
    off = ~np.eye(k, dtype=bool)
    active = off & (demand > 0)
    subcarrier = np.full((k, k), -1, dtype=np.int64)

    # [L, 2] active links (row-major), [L, M] their rates
    act = np.argwhere(active)
    if act.size:
        r_act = rates[act[:, 0], act[:, 1], :]
        s = demand[act[:, 0], act[:, 1]]
        with np.errstate(divide="ignore", over="ignore"):
            # [L, M] energy of link l on subcarrier m (eq 3); inf where r = 0 (never used)
            weight = (p0 * bits * s)[:, None] / r_act
        # a positive rate so small that the energy overflows float64 (> 1.8e308 J) cannot
        # carry the link: unusable, like a zero rate (no overflow warning escapes)
        usable = (r_act > 0) & np.isfinite(weight)
        subcarrier[act[:, 0], act[:, 1]] = assign_links(weight, usable)

    if assign_idle:
        idle = np.argwhere(off & ~active)
        taken = np.zeros(m, dtype=bool)
        taken[subcarrier[subcarrier >= 0]] = True
        free = np.flatnonzero(~taken)
        if idle.size and free.size:
            # [I, F] rates of idle links on free subcarriers
            r_idle = rates[idle[:, 0], idle[:, 1], :][:, free]
            with np.errstate(divide="ignore", over="ignore"):
                weight = (p0 * bits) / r_idle  # inf where r = 0 (never used)
            usable = (r_idle > 0) & np.isfinite(weight)
            cols = assign_links(weight, usable)
            got = cols >= 0
            subcarrier[idle[got, 0], idle[got, 1]] = free[cols[got]]

    i, j = np.indices((k, k))
    link_rate = np.where(subcarrier >= 0, rates[i, j, np.maximum(subcarrier, 0)], 0.0)
    served = active & (subcarrier >= 0)
    unserved = active & (subcarrier < 0)
    with np.errstate(divide="ignore", over="ignore"):
        energy = np.where(served, p0 * bits * demand / np.where(served, link_rate, 1.0), 0.0)
    energy[unserved] = np.inf
    return SubcarrierResult(subcarrier, energy, served, unserved, link_rate)
