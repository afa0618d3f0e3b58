"""The active-link form of the resource-block problem and its exact per-link evaluation.

Shared by the solvers of :mod:`dmoe.optimize.resource_blocks` (``_rb_exact``,
``_rb_greedy``): the problem restricted to the L active links, the one-RB assignment
(P3(a) with the per-node budget), the optimal bit split of a link over a given RB set
(greedy fill, exact) and the candidate pruning that keeps the MILP exact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from dmoe.optimize.subcarrier import assign_links

__all__ = ["Problem", "assign_one", "fill_bits", "link_ontime", "candidate_pairs"]


@dataclass(frozen=True)
class Problem:
    """The allocation problem on the L active links (row-major order of (i, j)).

    Attributes:
        r: ``[L, M], float64`` r_lm [bit/s], 0 where link l cannot use RB m.
        c: ``[L], float64`` c_l = 8 s0 s_l [bit] > 0.
        d: ``[L], float64`` deadline T_l [s] > 0 (``inf``: none).
        node: ``[L], int64`` transmitting node of each link.
        caps: ``[K], int64`` B_i RBs per node, or None (no budget).
        weight: ``[L, M], float64`` P3(a)'s energy P0 c_l / r_lm [J] (inf where unusable).
    """

    r: np.ndarray
    c: np.ndarray
    d: np.ndarray
    node: np.ndarray
    caps: np.ndarray | None
    weight: np.ndarray

    @property
    def num_links(self) -> int:
        return int(self.r.shape[0])

    @property
    def num_rbs(self) -> int:
        return int(self.r.shape[1])


def _assign_capped(weight: np.ndarray, usable: np.ndarray, node: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """One RB per row at most, one row per RB, at most ``caps[node]`` rows per node; most
    rows first, then least weight. A min-cost flow (source -> node -> row -> RB -> sink):
    its LP is totally unimodular (rows and nodes nest, RBs are disjoint), solved by HiGHS."""
    n, m = weight.shape
    rows, cols = np.nonzero(usable)
    out = np.full(n, -1, dtype=np.int64)
    if rows.size == 0:
        return out
    w = weight[rows, cols]
    scale = float(w.max()) if w.max() > 0 else 1.0
    # each served row gains n + 1 > any total normalised weight: most rows first
    cost = w / scale - float(n + 1)
    p = rows.size
    idx = np.arange(p)
    blocks = [
        csr_array((np.ones(p), (rows, idx)), shape=(n, p)),
        csr_array((np.ones(p), (cols, idx)), shape=(m, p)),
        csr_array((np.ones(p), (node[rows], idx)), shape=(int(caps.shape[0]), p)),
    ]
    from scipy.sparse import vstack

    a = vstack(blocks).tocsr()
    ub = np.concatenate([np.ones(n), np.ones(m), caps.astype(np.float64)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = milp(
            c=cost,
            integrality=np.ones(p),
            bounds=Bounds(np.zeros(p), np.ones(p)),
            constraints=[LinearConstraint(a, -np.inf, ub)],
            options={"disp": False, "mip_rel_gap": 0.0, "presolve": False},
        )
    if res.x is None:  # pragma: no cover - the empty assignment is always feasible
        raise RuntimeError(f"internal error: capped assignment failed ({res.message})")
    take = res.x > 0.5
    out[rows[take]] = cols[take]
    return out


def assign_one(weight: np.ndarray, usable: np.ndarray, node: np.ndarray, caps: np.ndarray | None) -> np.ndarray:
    """P3(a)'s assignment with a per-node budget: ``[n] int64`` RB per row, -1 = none.

    Without a binding budget (no node has more rows than its cap) this is exactly
    :func:`dmoe.optimize.subcarrier.assign_links` (the same rows, columns and ties as
    :func:`~dmoe.optimize.subcarrier.allocate_subcarriers`); otherwise the capped flow.
    """
    if caps is None:
        return assign_links(weight, usable)
    rows_per_node = np.bincount(node[usable.any(axis=1)], minlength=caps.shape[0]) if node.size else np.zeros(1)
    if np.all(rows_per_node <= caps):
        return assign_links(weight, usable)
    return _assign_capped(weight, usable, node, caps)


def fill_bits(prob: Problem, owner: np.ndarray, deadline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal split of each link's bits over its RBs (``owner``), all RBs from t = 0.

    Given the RB set S_l, min sum_m x_m / r_m s.t. sum_m x_m = c_l, x_m <= r_m T_l is a
    fractional knapsack: fill the highest-rate RBs first, each for T_l seconds. A set that
    cannot carry c_l within T_l (sum_m r_m T_l < c_l) runs every RB for the same time
    c_l / sum_m r_m (the fastest it can finish; it is late).

    Args:
        prob: the problem; owner: ``[M] int`` link of each RB (-1 free); deadline: ``[L]`` [s].

    Returns:
        (x ``[M] float64`` bits on each RB, short ``[L] bool`` links that miss ``deadline``).
    """
    x = np.zeros(owner.shape[0])
    short = np.zeros(prob.num_links, dtype=bool)
    idx = np.flatnonzero(owner >= 0)
    if idx.size == 0:
        return x, short
    lk = owner[idx]
    rr = prob.r[lk, idx]
    order = np.lexsort((idx, -rr, lk))  # by link, rate descending, RB index
    idx, lk, rr = idx[order], lk[order], rr[order]
    c = prob.c[lk]
    with np.errstate(over="ignore", invalid="ignore"):
        cap = np.minimum(rr * deadline[lk], c)  # an RB never carries more than its link's bits
    # capacity of the better RBs of the same link (exclusive cumulative sum per link)
    before = np.zeros_like(cap)
    bounds = np.flatnonzero(np.r_[True, lk[1:] != lk[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a > 1:
            before[a + 1 : b] = np.cumsum(cap[a : b - 1])
    xs = np.clip(c - before, 0.0, cap)
    total = np.bincount(lk, weights=cap, minlength=prob.num_links)
    short = (total < prob.c) & (np.bincount(lk, minlength=prob.num_links) > 0)
    if short.any():
        # the fastest finish of a short link: every RB on for c / sum r
        rate_sum = np.bincount(lk, weights=rr, minlength=prob.num_links)
        late = short[lk]
        xs = np.where(late, rr * (prob.c / np.where(short, rate_sum, 1.0))[lk], xs)
    x[idx] = xs
    return x, short


def link_ontime(rates_desc, c: float, d: float) -> float:
    """Sum of on-times [s] of one link over RBs with ``rates_desc`` (descending), filled
    greedily within ``d``; ``inf`` when they cannot carry ``c`` bits within ``d``."""
    rem, on = c, 0.0
    for r in rates_desc:
        cap = r * d
        if rem <= cap:
            return on + rem / r
        on += d
        rem -= cap
    return float("inf")


def candidate_pairs(prob: Problem) -> np.ndarray:
    """``[L, M] bool`` (link, RB) pairs that some optimal allocation may use (exact pruning).

    Two facts hold for an optimal allocation after the exchanges below (each keeps it
    optimal), for every deadline extension u >= 0 of the fallback:

    * an RB that carries no bits can be dropped, so every RB of link l carries bits: the
      greedy fill then leaves its n_l - 1 best RBs short of c_l, hence the n_l - 1
      *smallest* usable rates of l also sum to less than c_l / T_l, which bounds n_l by
      n_max(l) (and by the node budget);
    * if link l uses RB m while an RB m' it rates higher (ties by index) is free, moving
      l's bits from m to m' is feasible and costs no more; so every RB ranked above a used
      one is used, and link l only uses its U_max best RBs, U_max = min(M, sum_l n_max(l)).
    """
    l_num, m_num = prob.r.shape
    usable = prob.r > 0
    n_usable = usable.sum(axis=1)
    n_max = np.ones(l_num, dtype=np.int64)
    finite = np.isfinite(prob.d)
    if finite.any():
        # ascending usable rates per link (unusable pushed to the end as inf)
        asc = np.sort(np.where(usable, prob.r, np.inf), axis=1)
        with np.errstate(invalid="ignore"):
            cum = np.cumsum(np.where(np.isfinite(asc), asc, 0.0), axis=1)
        need = np.where(finite, prob.c / np.where(finite, prob.d, 1.0), 0.0)
        # number k of smallest rates whose sum stays below c / T
        k = (cum < need[:, None]).sum(axis=1)
        n_max = np.where(finite, k + 1, 1)
    n_max = np.minimum(n_max, np.maximum(n_usable, 1))
    if prob.caps is not None:
        n_max = np.minimum(n_max, prob.caps[prob.node])
    u_max = int(min(m_num, int(n_max.sum())))
    if prob.caps is not None:
        u_max = min(u_max, int(prob.caps[np.unique(prob.node)].sum()))
    # rank of each RB for each link: rate descending, ties by index
    order = np.lexsort((np.broadcast_to(np.arange(m_num), prob.r.shape), -prob.r), axis=1)
    keep = np.zeros_like(usable)
    np.put_along_axis(keep, order[:, :u_max], True, axis=1)
    return keep & usable
