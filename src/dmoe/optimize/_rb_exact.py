"""Exact solvers of the resource-block problem: HiGHS MILP, LP (Lagrangian) bound, brute force.

Notation (:mod:`dmoe.optimize.resource_blocks`): link l has c_l bits and deadline T_l,
RB m rate r_lm; a candidate pair p = (l, m) (:func:`~dmoe.optimize._rb_problem.candidate_pairs`).

**MILP** (deadline T_l, N* links served): with a_p = min(1, r_p T_l / c_l) (the share of
c_l that RB m can carry within T_l) and h_p = min(c_l / r_p, T_l) (its on-time then),
variables g_p in [0, 1] (the fraction of that on-time used), y_p binary (RB m is link l's),
z_l binary (link l is served; fixed to 1 when every link can be served):

    min  sum_p h_p g_p                      (energy / P0 [s])
    s.t. sum_{p of l} a_p g_p = z_l         (every served link's bits, within T_l)
         g_p <= y_p,  y_p <= z_l
         sum_{p on m} y_p <= 1              (C3)
         sum_{p of node i} y_p <= B_i       (per-node budget)
         sum_l z_l = N*.

**Fallback** (no allocation serving N* links meets every T_l): first the least common
stretch theta >= 1 of the deadlines that some allocation meets (a max-min covering MILP
in the y alone, :func:`_stretch_milp`), then the energy MILP above at theta T_l for the
theta the first stage's RB sets attain.

**LP bound**: the relaxation of the MILP (y_p = g_p), solved by HiGHS; the bound returned
is the Lagrangian value of its dual multipliers, valid for any multipliers, so it does not
rely on the LP solver's tolerances.

**Brute force**: every map RB -> link or none ((L + 1)^M of them), for tiny instances
(the test oracle).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_array, vstack

from dmoe.optimize._rb_problem import Problem, link_ontime

__all__ = ["solve_milp", "lp_bound", "lp_relaxation", "solve_brute", "stretch_of", "stretch_bound", "BRUTE_MAX_MAPS"]

#: brute force refuses instances with more than this many RB -> link maps
BRUTE_MAX_MAPS = 200_000

#: HiGHS presolve is off: on these big-M / set-packing models the presolve of scipy 1.17's
#: HiGHS returned sub-optimal points reported optimal (e.g. a stretch of 6.34 for a least
#: of 3.72 on a 5-link, 6-RB instance; the known class of ERGO-Code/HiGHS#3094, #3073)
_MILP_OPTIONS = {"disp": False, "presolve": False, "mip_rel_gap": 1e-9}


def _pairs(cand: np.ndarray):
    rows, cols = np.nonzero(cand)
    return rows.astype(np.int64), cols.astype(np.int64)


def _structure(prob: Problem, rows, cols, served_all: bool):
    """Sparse incidence blocks of the pairs: link [L, P], RB [M, P], node [K, P]."""
    p = rows.size
    idx = np.arange(p)
    ones = np.ones(p)
    link = csr_array((ones, (rows, idx)), shape=(prob.num_links, p))
    rb = csr_array((ones, (cols, idx)), shape=(prob.num_rbs, p))
    node = None
    if prob.caps is not None:
        node = csr_array((ones, (prob.node[rows], idx)), shape=(int(prob.caps.shape[0]), p))
    return link, rb, node


def _energy_rows(prob: Problem, rows, cols, deadline):
    r = prob.r[rows, cols]
    c = prob.c[rows]
    d = deadline[rows]
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.minimum(1.0, r * d / c)
        h = np.minimum(c / r, d)
    return a, h


def _solve(c, integrality, lb, ub, constraints, limit):
    """HiGHS; ``limit`` None, ``("time", seconds)`` or ``("nodes", count)`` (deterministic)."""
    options = dict(_MILP_OPTIONS)
    if limit is not None:
        options["time_limit" if limit[0] == "time" else "node_limit"] = limit[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return milp(c=c, integrality=integrality, bounds=Bounds(lb, ub), constraints=constraints, options=options)


def _energy_milp(prob, cand, deadline, n_serve, time_limit):
    """The energy MILP; returns (owner [M] or None, dual bound [s of on-time] or nan, status)."""
    rows, cols = _pairs(cand)
    p, l_num = rows.size, prob.num_links
    served_all = n_serve == l_num
    a, h = _energy_rows(prob, rows, cols, deadline)
    h_scale = float(h.max()) if p and h.max() > 0 else 1.0
    link, rb, node = _structure(prob, rows, cols, served_all)
    nz = 0 if served_all else l_num
    # variables [g (P), y (P), z (nz)]
    eye = csr_array((np.ones(p), (np.arange(p), np.arange(p))), shape=(p, p))
    zero_pp = csr_array((p, p))
    blocks, lo, hi = [], [], []
    a_link = csr_array((a, (rows, np.arange(p))), shape=(l_num, p))
    if served_all:
        blocks.append(_hstack([a_link, csr_array((l_num, p))]))
        lo.append(np.ones(l_num))
        hi.append(np.ones(l_num))
    else:
        zl = csr_array((-np.ones(l_num), (np.arange(l_num), np.arange(l_num))), shape=(l_num, l_num))
        blocks.append(_hstack([a_link, csr_array((l_num, p)), zl]))
        lo.append(np.zeros(l_num))
        hi.append(np.zeros(l_num))
    pad = (lambda rows_: csr_array((rows_, nz))) if nz else None

    def row(g_part, y_part, z_part=None):
        parts = [g_part, y_part]
        if nz:
            parts.append(z_part if z_part is not None else pad(g_part.shape[0]))
        return _hstack(parts)

    blocks.append(row(eye, -eye))  # g <= y
    lo.append(np.full(p, -np.inf))
    hi.append(np.zeros(p))
    blocks.append(row(csr_array((prob.num_rbs, p)), rb))  # C3
    lo.append(np.full(prob.num_rbs, -np.inf))
    hi.append(np.ones(prob.num_rbs))
    if node is not None:
        blocks.append(row(csr_array((node.shape[0], p)), node))
        lo.append(np.full(node.shape[0], -np.inf))
        hi.append(prob.caps.astype(np.float64))
    if nz:
        zsel = csr_array((-np.ones(p), (np.arange(p), rows)), shape=(p, l_num))
        blocks.append(row(zero_pp, eye, zsel))  # y <= z
        lo.append(np.full(p, -np.inf))
        hi.append(np.zeros(p))
        blocks.append(_hstack([csr_array((1, 2 * p)), csr_array(np.ones((1, l_num)))]))
        lo.append(np.array([float(n_serve)]))
        hi.append(np.array([float(n_serve)]))
    a_all = vstack(blocks).tocsr()
    nvar = 2 * p + nz
    cost = np.concatenate([h / h_scale, np.zeros(p + nz)])
    integ = np.concatenate([np.zeros(p), np.ones(p + nz)])
    res = _solve(cost, integ, np.zeros(nvar), np.ones(nvar),
                 [LinearConstraint(a_all, np.concatenate(lo), np.concatenate(hi))], time_limit)
    bound = getattr(res, "mip_dual_bound", None)
    bound = float(bound) * h_scale if bound is not None and np.isfinite(bound) else math.nan
    if res.x is None:
        return None, bound, int(res.status)
    owner = np.full(prob.num_rbs, -1, dtype=np.int64)
    take = res.x[p : 2 * p] > 0.5
    owner[cols[take]] = rows[take]
    return owner, bound, int(res.status)


def _hstack(parts):
    from scipy.sparse import hstack

    return hstack(parts).tocsr()


def _stretch_milp(prob, cand, n_serve, time_limit, relax=False):
    """Stage 1 of the fallback: RB sets with the least common deadline stretch.

    Returns (owner ``[M]`` or None, HiGHS status), or with ``relax`` the LP's phi (or None).

    A set S_l finishes within theta T_l (all its RBs on) iff sum_{m in S_l} a_lm >= 1 / theta
    with a_lm = min(1, r_lm T_l / c_l) (capping at 1 changes nothing for theta >= 1), so
    max phi = 1 / theta s.t. sum_p a_p y_p >= phi z_l (written sum_p a_p y_p - phi - z_l >= -1,
    phi <= 1), sum_p y_p >= z_l, C3, the node budget, y <= z, sum z = N*: a max-min
    (Santa Claus) covering MILP in the y alone.
    """
    rows, cols = _pairs(cand)
    p, l_num = rows.size, prob.num_links
    served_all = n_serve == l_num
    a, _ = _energy_rows(prob, rows, cols, prob.d)
    nz = 0 if served_all else l_num
    # variables [y (P), z (nz), phi (1)]
    nvar = p + nz + 1
    idx = np.arange(p)
    fin_links = np.isfinite(prob.d)

    def mat(r_, c_, v_, nrows):
        return csr_array((v_, (r_, c_)), shape=(nrows, nvar))

    blocks, lo, hi = [], [], []
    fl = np.flatnonzero(fin_links)
    pos = np.full(l_num, -1)
    pos[fl] = np.arange(fl.size)
    sel = fin_links[rows]
    if served_all:
        # sum_p a_p y_p - phi >= 0 for links with a deadline; sum_p y_p >= 1 for all
        blocks.append(mat(np.r_[pos[rows[sel]], np.arange(fl.size)], np.r_[idx[sel], np.full(fl.size, nvar - 1)],
                          np.r_[a[sel], -np.ones(fl.size)], fl.size))
        lo.append(np.zeros(fl.size))
        hi.append(np.full(fl.size, np.inf))
        blocks.append(mat(rows, idx, np.ones(p), l_num))
        lo.append(np.ones(l_num))
        hi.append(np.full(l_num, np.inf))
    else:
        blocks.append(mat(np.r_[pos[rows[sel]], np.arange(fl.size), np.arange(fl.size)],
                          np.r_[idx[sel], np.full(fl.size, nvar - 1), p + fl],
                          np.r_[a[sel], -np.ones(fl.size), -np.ones(fl.size)], fl.size))
        lo.append(np.full(fl.size, -1.0))
        hi.append(np.full(fl.size, np.inf))
        blocks.append(mat(np.r_[rows, np.arange(l_num)], np.r_[idx, p + np.arange(l_num)],
                          np.r_[np.ones(p), -np.ones(l_num)], l_num))
        lo.append(np.zeros(l_num))
        hi.append(np.full(l_num, np.inf))
        blocks.append(mat(np.r_[idx, idx], np.r_[idx, p + rows], np.r_[np.ones(p), -np.ones(p)], p))  # y <= z
        lo.append(np.full(p, -np.inf))
        hi.append(np.zeros(p))
        blocks.append(mat(np.zeros(l_num, dtype=np.int64), p + np.arange(l_num), np.ones(l_num), 1))
        lo.append(np.array([float(n_serve)]))
        hi.append(np.array([float(n_serve)]))
    blocks.append(mat(cols, idx, np.ones(p), prob.num_rbs))  # C3
    lo.append(np.full(prob.num_rbs, -np.inf))
    hi.append(np.ones(prob.num_rbs))
    if prob.caps is not None:
        blocks.append(mat(prob.node[rows], idx, np.ones(p), int(prob.caps.shape[0])))
        lo.append(np.full(prob.caps.shape[0], -np.inf))
        hi.append(prob.caps.astype(np.float64))
    cost = np.zeros(nvar)
    cost[-1] = -1.0
    integ = np.zeros(nvar) if relax else np.r_[np.ones(p + nz), 0.0]
    res = _solve(cost, integ, np.zeros(nvar), np.ones(nvar),
                 [LinearConstraint(vstack(blocks).tocsr(), np.concatenate(lo), np.concatenate(hi))], time_limit)
    if relax:
        return float(res.x[-1]) if res.x is not None else None
    if res.x is None:
        return None, int(res.status)
    owner = np.full(prob.num_rbs, -1, dtype=np.int64)
    take = res.x[:p] > 0.5
    owner[cols[take]] = rows[take]
    return owner, int(res.status)


def stretch_of(prob: Problem, owner: np.ndarray) -> float:
    """Least theta >= 1 such that every served link of ``owner`` fits theta T_l (RBs all on)."""
    l_num = prob.num_links
    idx = np.flatnonzero(owner >= 0)
    rate_sum = np.bincount(owner[idx], weights=prob.r[owner[idx], idx], minlength=l_num)
    has = (rate_sum > 0) & np.isfinite(prob.d)
    ratio = prob.c[has] / (prob.d[has] * rate_sum[has])
    return float(max(1.0, ratio.max(initial=1.0)))


def stretch_bound(prob: Problem, cand: np.ndarray, n_serve: int) -> float:
    """A lower bound on the least deadline stretch theta* (>= 1): 1 / phi of the LP
    relaxation of :func:`_stretch_milp` (phi_LP >= phi*), less 1e-9 relative for the LP's
    tolerances."""
    phi = _stretch_milp(prob, cand, n_serve, None, relax=True)
    if phi is None or not phi > 0:
        return 1.0
    return max(1.0, (1.0 / phi) * (1.0 - 1e-9))


def solve_milp(prob: Problem, cand: np.ndarray, n_serve: int, limit=None):
    """Exact allocation by HiGHS (module doc).

    Args:
        limit: None, ``("time", seconds)`` or ``("nodes", count)`` for each HiGHS call.

    Returns:
        (owner ``[M]`` or None when HiGHS found no solution within ``limit``, stretch
        theta >= 1, dual bound on the on-time sum [s] or nan, proven optimal bool; in the
        fallback optimal also means the stretch was proven least).
    """
    time_limit = limit
    owner, bound, status = _energy_milp(prob, cand, prob.d, n_serve, time_limit)
    if owner is not None:
        return owner, 1.0, bound, status == 0
    if status != 2:  # time limit without a solution
        return None, 1.0, bound, False
    # hard deadline infeasible: stage 1 (least stretch), stage 2 (energy at theta T)
    sets, status1 = _stretch_milp(prob, cand, n_serve, time_limit)
    if sets is None:
        return None, 1.0, math.nan, False
    theta = stretch_of(prob, sets)
    owner, bound, status2 = _energy_milp(prob, cand, prob.d * theta * (1.0 + 1e-9), n_serve, time_limit)
    if owner is None:
        return sets, theta, math.nan, False
    return owner, theta, bound, status1 == 0 and status2 == 0


def lp_bound(prob: Problem, cand: np.ndarray, deadline: np.ndarray, n_serve: int) -> float:
    """A valid lower bound on the on-time sum [s] (energy / P0) of any allocation that
    serves ``n_serve`` links within ``deadline`` (module doc: LP relaxation, Lagrangian
    value of its multipliers). Returns 0 when there is nothing to bound."""
    return lp_relaxation(prob, cand, deadline, n_serve)[0]


def lp_relaxation(prob: Problem, cand: np.ndarray, deadline: np.ndarray, n_serve: int):
    """:func:`lp_bound` and the LP's solution: (bound [s], ``[L, M]`` share g of each RB's
    time-at-capacity the relaxation gives each link, or None when the LP is infeasible,
    i.e. no allocation meets ``deadline``)."""
    rows, cols = _pairs(cand)
    p, l_num = rows.size, prob.num_links
    if p == 0 or l_num == 0:
        return 0.0, None
    served_all = n_serve == l_num
    a, h = _energy_rows(prob, rows, cols, deadline)
    h_scale = float(h.max()) if h.max() > 0 else 1.0
    link, rb, node = _structure(prob, rows, cols, served_all)
    nz = 0 if served_all else l_num
    a_link = csr_array((a, (rows, np.arange(p))), shape=(l_num, p))
    if served_all:
        a_eq = a_link
        b_eq = np.ones(l_num)
    else:
        a_eq = vstack([
            _hstack([a_link, csr_array((-np.ones(l_num), (np.arange(l_num), np.arange(l_num))), shape=(l_num, l_num))]),
            _hstack([csr_array((1, p)), csr_array(np.ones((1, l_num)))]),
        ]).tocsr()
        b_eq = np.r_[np.zeros(l_num), float(n_serve)]
    ub_blocks = [rb]
    b_ub = [np.ones(prob.num_rbs)]
    if node is not None:
        ub_blocks.append(node)
        b_ub.append(prob.caps.astype(np.float64))
    a_ub = vstack(ub_blocks).tocsr()
    if nz:
        a_ub = _hstack([a_ub, csr_array((a_ub.shape[0], nz))])
        gz = _hstack([csr_array((np.ones(p), (np.arange(p), np.arange(p))), shape=(p, p)),
                      csr_array((-np.ones(p), (np.arange(p), rows)), shape=(p, l_num))])
        a_ub = vstack([a_ub, gz]).tocsr()
        b_ub.append(np.zeros(p))
    b_ub = np.concatenate(b_ub)
    cost = np.concatenate([h / h_scale, np.zeros(nz)])
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=(0.0, 1.0), method="highs")
    if res.status != 0:
        return 0.0, None
    lam = np.asarray(res.eqlin.marginals, dtype=np.float64)
    mu = np.minimum(np.asarray(res.ineqlin.marginals, dtype=np.float64), 0.0)
    reduced = cost - a_eq.T @ lam - a_ub.T @ mu
    value = float(b_eq @ lam + b_ub @ mu + np.minimum(reduced, 0.0).sum())
    value *= 1.0 - 1e-12  # float rounding of the sums above
    share = np.zeros(prob.r.shape)
    share[rows, cols] = np.asarray(res.x[:p], dtype=np.float64)
    return max(0.0, value * h_scale), share


def solve_brute(prob: Problem):
    """Exhaustive search (module doc): (owner ``[M]``, stretch theta >= 1).

    Order: most links served, then least stretch theta (1e-9 relative ties), then least
    energy at theta T_l.

    Raises:
        ValueError: more than :data:`BRUTE_MAX_MAPS` maps.
    """
    l_num, m_num = prob.r.shape
    options = [[-1] + [l for l in range(l_num) if prob.r[l, m] > 0] for m in range(m_num)]
    size = math.prod(len(o) for o in options)
    if size > BRUTE_MAX_MAPS:
        raise ValueError(
            f"`method` 'brute' enumerates {size} RB maps (more than {BRUTE_MAX_MAPS}); use 'milp' or 'auto'"
        )
    caps = prob.caps
    found = []
    for combo in itertools.product(*options):
        sets = [[] for _ in range(l_num)]
        for m, l in enumerate(combo):
            if l >= 0:
                sets[l].append(m)
        if caps is not None:
            per_node = np.bincount(prob.node, weights=[len(s) for s in sets], minlength=caps.shape[0])
            if np.any(per_node > caps):
                continue
        served = sum(1 for s in sets if s)
        theta = 1.0
        for l, s in enumerate(sets):
            if s and math.isfinite(prob.d[l]):
                theta = max(theta, prob.c[l] / (prob.d[l] * sum(prob.r[l, m] for m in s)))
        found.append((served, theta, sets))
    most = max(f[0] for f in found)
    best_theta = min(f[1] for f in found if f[0] == most)
    limit = best_theta * (1.0 + 1e-9)
    ext = prob.d * best_theta * (1.0 + 1e-12)
    best, best_e = None, math.inf
    for served, theta, sets in found:
        if served != most or theta > limit:
            continue
        e = 0.0
        for l, s in enumerate(sets):
            if s:
                rs = sorted((prob.r[l, m] for m in s), reverse=True)
                e += link_ontime(rs, prob.c[l], ext[l])
        if e < best_e * (1.0 - 1e-13):
            best, best_e = sets, e
    owner = np.full(m_num, -1, dtype=np.int64)
    for l, s in enumerate(best):
        owner[s] = l
    return owner, best_theta
