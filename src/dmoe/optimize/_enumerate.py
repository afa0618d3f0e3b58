"""Exhaustive search for P1(a) over all subsets (the brute-force oracle), vectorised.

For K <= 16 the subsets with 1..D members are rows of a precomputed 0/1 matrix
``S [num_subsets, K]``; for a chunk of tokens the score sums and energies of every subset
are two matrix products, infeasible subsets are masked, and the argmin is taken. There is
no per-token Python work. Subsets are ordered by their bitmask, so among equal-energy
optima the one with the smallest bitmask wins (deterministic).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAX_EXPERTS = 16
# entries of one [chunk, num_subsets] work array
_CHUNK_ENTRIES = 1 << 20


@lru_cache(maxsize=64)
def subset_matrix(num_experts: int, max_size: int) -> np.ndarray:
    """0/1 matrix of all non-empty subsets with at most ``max_size`` members.

    Returns:
        ``[num_subsets, num_experts], float64``, rows ordered by bitmask (read-only).
    """
    if not 1 <= num_experts <= MAX_EXPERTS:
        raise ValueError(f"enumerate supports 1 <= num_experts <= {MAX_EXPERTS}, got {num_experts}")
    masks = np.arange(1, 1 << num_experts, dtype=np.int64)
    # [2^K - 1, K] bit j of each mask
    bits = (masks[:, None] >> np.arange(num_experts, dtype=np.int64)[None, :]) & 1
    bits = bits[bits.sum(axis=1) <= max_size].astype(np.float64)
    bits.setflags(write=False)
    return bits


def solve(scores: np.ndarray, costs: np.ndarray, eligible: np.ndarray, thr_eff: np.ndarray, max_experts: int):
    """Exact P1(a) for every row by enumeration.

    Args:
        scores: ``[n, K], float64`` g_j >= 0.
        costs: ``[n, K], float64`` e_j >= 0, finite where ``eligible``.
        eligible: ``[n, K], bool`` experts that may be selected (score > 0, finite cost).
        thr_eff: ``[n], float64`` threshold minus the score tolerance (C1: sum >= thr_eff).
        max_experts: D (already clipped to K).

    Returns:
        (selection ``[n, K] bool``, found ``[n] bool``): found is False where no subset is
        feasible (callers handle that with the Remark 2 fallback).
    """
    n, k = scores.shape
    subsets = subset_matrix(k, max_experts)
    # [num_subsets, K] transposed for the products
    st = subsets.T
    chunk = max(1, _CHUNK_ENTRIES // subsets.shape[0])
    selection = np.zeros((n, k), dtype=bool)
    found = np.zeros(n, dtype=bool)
    scores_e = np.where(eligible, scores, 0.0)
    costs_e = np.where(eligible, costs, 0.0)
    blocked = (~eligible).astype(np.float64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        # [c, num_subsets] score sums, energies and "uses an ineligible expert"
        ssum = scores_e[lo:hi] @ st
        esum = costs_e[lo:hi] @ st
        bad = (blocked[lo:hi] @ st) > 0.5
        ok = (ssum >= thr_eff[lo:hi, None]) & ~bad
        esum[~ok] = np.inf
        best = np.argmin(esum, axis=1)
        has = ok[np.arange(hi - lo), best]
        found[lo:hi] = has
        selection[lo:hi] = (subsets[best] > 0.5) & has[:, None]
    return selection, found


def solve_nodes(scores, acost, ncost, placement, eligible, thr_eff, max_experts):
    """Exact node-aware P1(a) by enumeration, in the canonical order of issue 8.

    Energy of subset S: sum_{j in S} a_j + sum over the distinct nodes of S of c_n. The
    answer is the first feasible subset by (energy, -score sum) as correctly rounded sums
    (:func:`math.fsum`), then the expert-index rule (at the smallest index where two sets
    differ, the one containing it comes first). Matrix products find the near-minimal
    subsets (within 1e-10 relative of the float minimum); their exact sums decide.

    Args:
        scores, acost: ``[n, E], float64``; ncost: ``[n, N], float64`` (finite where some
        eligible expert needs it); placement: ``[E], int64``; eligible: ``[n, E], bool``;
        thr_eff: ``[n]``; max_experts: D (<= E <= 16).

    Returns:
        (selection ``[n, E] bool``, found ``[n] bool``).
    """
    import math

    n, k = scores.shape
    num_nodes = ncost.shape[1]
    subsets = subset_matrix(k, max_experts)
    onehot = np.zeros((k, num_nodes))
    onehot[np.arange(k), placement] = 1.0
    # [num_subsets, N] nodes each subset needs
    used = ((subsets @ onehot) > 0.5).astype(np.float64)
    st = subsets.T
    chunk = max(1, _CHUNK_ENTRIES // subsets.shape[0])
    selection = np.zeros((n, k), dtype=bool)
    found = np.zeros(n, dtype=bool)
    scores_e = np.where(eligible, scores, 0.0)
    costs_e = np.where(eligible, acost, 0.0)
    ncost_e = np.where(np.isfinite(ncost), ncost, 0.0)
    blocked = (~eligible).astype(np.float64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        ssum = scores_e[lo:hi] @ st
        esum = costs_e[lo:hi] @ st + ncost_e[lo:hi] @ used.T
        bad = (blocked[lo:hi] @ st) > 0.5
        ok = (ssum >= thr_eff[lo:hi, None]) & ~bad
        has = ok.any(axis=1)
        emin = np.where(ok, esum, np.inf).min(axis=1)
        near = ok & (esum <= emin[:, None] * (1.0 + 1e-10))
        for r in np.flatnonzero(has):
            q = lo + r
            cands = np.flatnonzero(near[r])
            best_key = None
            for c in cands:
                members = np.flatnonzero(subsets[c] > 0.5)
                nodes = np.flatnonzero(used[c] > 0.5)
                energy = math.fsum(acost[q, members].tolist() + ncost[q, nodes].tolist())
                gain = math.fsum(scores[q, members].tolist())
                key = (energy, -gain, tuple(1 - (subsets[c] > 0.5).astype(int)))
                if best_key is None or key < best_key:
                    best_key, best = key, members
            selection[q, best] = True
        found[lo:hi] = has
    return selection, found
