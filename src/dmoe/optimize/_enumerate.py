"""Exhaustive search for P1(a) over all subsets (the brute-force oracle), vectorised.

For K <= 16 the subsets with 1..D members are rows of a precomputed 0/1 matrix
``S [num_subsets, K]``; for a chunk of tokens the score sums and energies of every subset
are two matrix products, infeasible subsets are masked, and the argmin is taken. There is
no per-token Python work for the products. The few subsets whose energy is within the
rounding slack of the cheapest one are then compared exactly (C1 on correctly rounded
sums, the order on exact sums, :mod:`dmoe.optimize._ties`), so the result is the canonical optimum (least energy, then
largest score sum, then the expert-index rule).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dmoe.optimize._ties import canonical_best, row_exact_sums

MAX_EXPERTS = 16
# relative slack covering the rounding of the matrix-product sums (K <= 16 terms)
_REL = 1e-12
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
    """Canonical optimum of P1(a) for every row by enumeration (see :mod:`dmoe.optimize._ties`).

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
        rows = np.arange(hi - lo)
        thr = thr_eff[lo:hi, None]
        # [c, num_subsets] score sums, energies and "uses an ineligible expert" (matrix
        # products: approximate, within _REL of the exact sums)
        ssum = scores_e[lo:hi] @ st
        esum = costs_e[lo:hi] @ st
        bad = (blocked[lo:hi] @ st) > 0.5
        tslack = _REL * (np.abs(thr) + scores_e[lo:hi].sum(axis=1, keepdims=True))
        maybe = (ssum >= thr - tslack) & ~bad
        sure = (ssum >= thr + tslack) & ~bad
        # candidates for the canonical optimum: possibly feasible, energy within the
        # rounding slack of the cheapest surely feasible subset
        cap = np.where(sure, esum, np.inf).min(axis=1, keepdims=True)
        cand = maybe & (esum <= cap * (1.0 + _REL))
        n_cand = cand.sum(axis=1)
        first = np.argmax(cand, axis=1)
        # one candidate that surely meets C1: it is the canonical optimum
        single = (n_cand == 1) & sure[rows, first]
        found[lo:hi] = single
        selection[lo:hi][single] = subsets[first[single]] > 0.5
        for r in np.flatnonzero(~single & (n_cand > 0)):
            q = lo + r
            masks = subsets[np.flatnonzero(cand[r])] > 0.5
            g = row_exact_sums(np.broadcast_to(scores_e[q], masks.shape), masks)
            ok = g >= thr_eff[q]
            if not ok.any():
                continue
            masks = masks[ok]
            selection[q] = masks[canonical_best(costs_e[q], scores_e[q], masks)]
            found[q] = True
    return selection, found


def solve_nodes(scores, acost, ncost, placement, eligible, thr_eff, max_experts):
    """Exact node-aware P1(a) by enumeration, in the canonical order of issue 8.

    Energy of subset S: sum_{j in S} a_j + sum over the distinct nodes of S of c_n. The
    answer is the first feasible subset by (energy, -score sum) as correctly rounded sums
    (:func:`math.fsum`), then the expert-index rule (at the smallest index where two sets
    differ, the one containing it comes first); C1 holds when the correctly rounded score
    sum reaches ``thr_eff``. Matrix products find the near-minimal subsets (within 1e-10
    relative of the float minimum) and decide C1 away from the threshold; exact sums
    decide the rest.

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
        # C1 on correctly rounded sums: the products decide away from the threshold
        thr = thr_eff[lo:hi, None]
        tslack = _REL * (np.abs(thr) + scores_e[lo:hi].sum(axis=1, keepdims=True))
        ok = (ssum >= thr + tslack) & ~bad
        for r, c in zip(*np.nonzero((ssum >= thr - tslack) & ~ok & ~bad)):
            ok[r, c] = math.fsum(scores[lo + r, subsets[c] > 0.5].tolist()) >= thr_eff[lo + r]
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
