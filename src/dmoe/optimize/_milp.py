"""Reference solver: P1(a) as a 0/1 MILP per token with scipy.optimize.milp (HiGHS).

min c.x  s.t.  t.x >= thr_eff (C1),  1.x <= D (C2),  x in {0, 1}, x_j = 0 for ineligible j.

HiGHS defaults (relative gap 1e-4, absolute gap 1e-6, feasibility tolerance 1e-7) are too
loose for an exactness oracle, so the gaps are set to 0 and the feasibility tolerances to
1e-10 (passed verbatim to HiGHS; scipy warns about them, the warning is silenced). The
objective is scaled to max 1. The rounded solution is checked against our own C1
definition; if HiGHS accepted a subset that violates it by less than its tolerance, the
token is re-solved with the constraint raised by that tolerance.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

_HIGHS_OPTIONS = {
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 0.0,
    "mip_feasibility_tolerance": 1e-10,
    "primal_feasibility_tolerance": 1e-10,
    "presolve": True,
    "output_flag": False,
}


def _solve_one(t: np.ndarray, e: np.ndarray, lower: float, max_experts: int):
    n = t.size
    scale = float(e.max()) if e.size and e.max() > 0 else 1.0
    constraints = [
        LinearConstraint(t[None, :], lb=lower, ub=np.inf),
        LinearConstraint(np.ones((1, n)), lb=-np.inf, ub=float(max_experts)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = milp(
            c=e / scale,
            integrality=np.ones(n),
            bounds=Bounds(np.zeros(n), np.ones(n)),
            constraints=constraints,
            options=dict(_HIGHS_OPTIONS),
        )
    if res.x is None or res.status not in (0,):
        return None
    return np.round(res.x) > 0.5


def solve(scores: np.ndarray, costs: np.ndarray, eligible: np.ndarray, thr_eff: np.ndarray, max_experts: int):
    """Exact P1(a) per row with HiGHS.

    Returns:
        (selection ``[n, K] bool``, found ``[n] bool``); found is False where HiGHS reports
        infeasibility (callers then use the Remark 2 fallback).
    """
    n_tok, k = scores.shape
    selection = np.zeros((n_tok, k), dtype=bool)
    found = np.zeros(n_tok, dtype=bool)
    for q in range(n_tok):
        idx = np.flatnonzero(eligible[q])
        if idx.size == 0:
            continue
        t = scores[q, idx]
        e = costs[q, idx]
        lower = float(thr_eff[q])
        x = _solve_one(t, e, lower, max_experts)
        if x is not None and t[x].sum() < lower:
            x = _solve_one(t, e, lower + 2 * _HIGHS_OPTIONS["mip_feasibility_tolerance"], max_experts)
            if x is not None and t[x].sum() < lower:
                x = None
        if x is None:
            continue
        selection[q, idx[x]] = True
        found[q] = True
    return selection, found


def solve_nodes(scores, acost, ncost, placement, eligible, thr_eff, max_experts):
    """Exact node-aware P1(a) per row with HiGHS (the reference).

    min sum a_j x_j + sum c_n y_n  s.t.  t.x >= thr_eff (C1), 1.x <= D (C2),
    x_j <= y_{n(j)} (a node is paid once if any of its experts is used), x, y binary.

    Args:
        scores, acost: ``[n, E]``; ncost: ``[n, N]``; placement: ``[E]``;
        eligible: ``[n, E]`` bool; thr_eff: ``[n]``; max_experts: D.

    Returns:
        (selection ``[n, E] bool``, found ``[n] bool``).
    """
    n_tok, k = scores.shape
    selection = np.zeros((n_tok, k), dtype=bool)
    found = np.zeros(n_tok, dtype=bool)
    for q in range(n_tok):
        idx = np.flatnonzero(eligible[q])
        if idx.size == 0:
            continue
        nodes, inv = np.unique(placement[idx], return_inverse=True)
        m, g = idx.size, nodes.size
        t = scores[q, idx]
        c = np.concatenate([acost[q, idx], ncost[q, nodes]])
        scale = float(c.max()) if c.max() > 0 else 1.0
        lower = float(thr_eff[q])
        link = np.zeros((m, m + g))
        link[np.arange(m), np.arange(m)] = 1.0
        link[np.arange(m), m + inv] = -1.0

        def solve(lb):
            constraints = [
                LinearConstraint(np.concatenate([t, np.zeros(g)])[None, :], lb=lb, ub=np.inf),
                LinearConstraint(np.concatenate([np.ones(m), np.zeros(g)])[None, :], lb=-np.inf, ub=float(max_experts)),
                LinearConstraint(link, lb=-np.inf, ub=0.0),
            ]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = milp(c=c / scale, integrality=np.ones(m + g), bounds=Bounds(0, 1),
                           constraints=constraints, options=dict(_HIGHS_OPTIONS))
            if res.x is None or res.status != 0:
                return None
            return np.round(res.x[:m]) > 0.5

        x = solve(lower)
        if x is not None and t[x].sum() < lower:
            x = solve(lower + 2 * _HIGHS_OPTIONS["mip_feasibility_tolerance"])
            if x is not None and t[x].sum() < lower:
                x = None
        if x is None:
            continue
        selection[q, idx[x]] = True
        found[q] = True
    return selection, found
