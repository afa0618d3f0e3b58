"""Reference solver: P1(a) as a 0/1 MILP per token with scipy.optimize.milp (HiGHS).

min e.x  s.t.  t.x >= thr_eff (C1),  1.x <= D (C2),  x in {0, 1}, x_j = 0 for ineligible j.

Making a floating-point MILP solver an exact oracle takes four steps, all in this module:

1. **Scaling.** The objective is divided by max e and the C1 row (and its bound) by
   max t, so HiGHS's absolute tolerances (feasibility 1e-7, integrality 1e-6) act on
   numbers of order 1 whatever the magnitudes (scores of 1e-9 or costs of 1e12).
2. **Tolerances.** ``mip_rel_gap=0`` (the default 1e-4 accepts a 0.01 % worse selection).
   scipy exposes no feasibility tolerance, hence steps 3-4.
3. **Verification** of the *rounded* solution in float64 with our definitions: C1 with the
   correctly rounded score sum (:func:`~dmoe.optimize._ties.exact_sum`), C2 by counting,
   and its energy against HiGHS's dual bound (``mip_dual_bound``): the solution is
   *certified* when it is feasible and its energy exceeds the bound by at most
   :data:`CERT_RTOL` relative.
4. **Polish (the stated fallback).** HiGHS's tolerances cannot separate selections whose
   energies differ by less than about 1e-9 relative, nor choose among ties. The
   canonical optimum (:mod:`dmoe.optimize._ties`) is therefore taken by the exact
   canonical branch and bound (:func:`dmoe.optimize._des.solve`, pure Python here),
   seeded with the verified HiGHS solution (or, when verification fails, with the
   greedy incumbent, the search then proves optimality on its own). Its result is
   exact in both cases; ``certified`` records which case occurred.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

#: HiGHS's solution is certified when energy <= dual bound * (1 + CERT_RTOL) (+ tiny)
CERT_RTOL = 1e-9

_OPTIONS = {"mip_rel_gap": 0.0, "presolve": True, "disp": False}

#: HiGHS options of the node-aware oracle :func:`solve_nodes` (issue 12): gaps 0 and the
#: feasibility tolerances 1e-10 passed verbatim to HiGHS (scipy warns, silenced); its C1
#: check uses the correctly rounded score sum of :mod:`dmoe.optimize._ties`.
_NODE_OPTIONS = {
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 0.0,
    "mip_feasibility_tolerance": 1e-10,
    "primal_feasibility_tolerance": 1e-10,
    "presolve": True,
    "output_flag": False,
}


def highs_solve(t: np.ndarray, e: np.ndarray, lower: float, max_experts: int):
    """One token's MILP, scaled (step 1-2), rounded and verified (step 3).

    Args:
        t, e: ``[n], float64`` scores > 0 and finite costs >= 0 of the eligible experts.
        lower: thr_eff (C1: sum >= lower). max_experts: D.

    Returns:
        (x ``[n] bool`` or None, certified bool, dual_bound float [J] or nan): x is the
        rounded HiGHS solution when it is feasible in exact arithmetic, else None.
    """
    n = t.size
    e_scale = float(e.max()) if e.size and e.max() > 0 else 1.0
    t_scale = float(t.max())
    constraints = [
        LinearConstraint((t / t_scale)[None, :], lb=lower / t_scale, ub=np.inf),
        LinearConstraint(np.ones((1, n)), lb=-np.inf, ub=float(max_experts)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = milp(
            c=e / e_scale,
            integrality=np.ones(n),
            bounds=Bounds(np.zeros(n), np.ones(n)),
            constraints=constraints,
            options=dict(_OPTIONS),
        )
    if res.x is None:
        return None, False, math.nan
    x = np.round(res.x) > 0.5
    dual = getattr(res, "mip_dual_bound", None)
    dual = math.nan if dual is None else float(dual) * e_scale
    if x.sum() > max_experts or math.fsum(t[x].tolist()) < lower:
        return None, False, dual
    energy = math.fsum(e[x].tolist())
    certified = res.status == 0 and math.isfinite(dual) and energy <= dual * (1 + CERT_RTOL) + 1e-300
    return x, bool(certified), dual


def solve(scores: np.ndarray, costs: np.ndarray, eligible: np.ndarray, thr_eff: np.ndarray, max_experts: int):
    """Canonical optimum of P1(a) per row: HiGHS, verified, polished (module doc).

    Args:
        scores, costs: ``[n, K], float64``; eligible: ``[n, K], bool``;
        thr_eff: ``[n]`` (every row feasible); max_experts: D.

    Returns:
        (selection ``[n, K] bool``, found ``[n] bool``, certified ``[n] bool``): found is
        False only where no selection meets C1 and C2; certified is True where HiGHS's own
        rounded solution passed the checks of step 3.
    """
    # local import: _des imports nothing from here, but keep the oracle module light
    from dmoe.optimize import _des

    n_tok, k = scores.shape
    seed = np.zeros((n_tok, k), dtype=bool)
    certified = np.zeros(n_tok, dtype=bool)
    for q in range(n_tok):
        idx = np.flatnonzero(eligible[q])
        if idx.size == 0:
            continue
        x, ok, _ = highs_solve(scores[q, idx], costs[q, idx], float(thr_eff[q]), max_experts)
        if x is not None:
            seed[q, idx[x]] = True
            certified[q] = ok
    found = eligible.any(axis=1)
    selection = np.zeros((n_tok, k), dtype=bool)
    if found.any():
        rows = np.flatnonzero(found)
        sel, _, _, _ = _des.solve(
            scores[rows], np.ascontiguousarray(costs[rows]), eligible[rows], thr_eff[rows], max_experts,
            seed[rows], None, variant="canonical",
        )
        selection[rows] = sel
    return selection, found, certified


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
                           constraints=constraints, options=dict(_NODE_OPTIONS))
            if res.x is None or res.status != 0:
                return None
            return np.round(res.x[:m]) > 0.5

        x = solve(lower)
        if x is not None and math.fsum(t[x].tolist()) < lower:
            x = solve(lower + 2 * _NODE_OPTIONS["mip_feasibility_tolerance"])
            if x is not None and math.fsum(t[x].tolist()) < lower:
                x = None
        if x is None:
            continue
        selection[q, idx[x]] = True
        found[q] = True
    return selection, found
