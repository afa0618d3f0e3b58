"""Exact solutions of the joint problem P2 on small instances (the reference of Theorem 1).

P2 (Section IV-B) couples the expert selection alpha (C1, C2) and the subcarrier
allocation beta (C3, at most one subcarrier per link, eq 16). Two exact solvers:

* :func:`solve_p2_exact` -- a MILP (scipy.optimize.milp / HiGHS):

  - alpha_tj in {0, 1} for every token t and expert j;
  - beta_lm in {0, 1} for every directed link l = (i, j), i != j, and candidate
    subcarrier m, with sum_m beta_lm <= 1 (one subcarrier per link) and
    sum_l beta_lm <= 1 (C3);
  - y_lm >= 0 continuous, the tokens link l sends on subcarrier m:
    sum_m y_lm = sum_{t from i} alpha_tj and y_lm <= N_i beta_lm;
  - objective sum_tj a_j alpha_tj + sum_lm (P0 * 8 s0 / r_lm) y_lm  (eq 3, 4 per token,
    the units of DESIGN.md; b_j = 0 is required).

  Candidate subcarriers: a link only needs its L best subcarriers, L = the number of
  links that can carry traffic. In any allocation at most L - 1 other links hold a
  subcarrier, so one of the link's L best is free and moving the link there does not
  raise its energy (rates are >= those of any other subcarrier). This keeps the MILP
  small (L*L pairs) whatever M is.

* :func:`brute_force_p2` -- enumerates every alpha (each token: every subset that meets
  C1 and C2) and solves P3 exactly for each (:func:`~dmoe.optimize.allocate_subcarriers`).
  Exponential; for validating the MILP on tiny instances.

Both follow the library's conventions (:mod:`dmoe.optimize.selection`): C1 holds when the
score sum is >= threshold - SCORE_TOL; a token for which C1 and C2 cannot both hold takes
its Top-D experts by score (Remark 2), which is fixed, not optimised.

:func:`eq13_bound` is Theorem 1's lower bound on Pr(JESA is optimal).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from dmoe.energy import link_token_counts, schedule_energy
from dmoe.optimize import SCORE_TOL, allocate_subcarriers
from dmoe.system import SystemConfig

__all__ = ["ExactP2Result", "solve_p2_exact", "brute_force_p2", "eq13_bound", "distinct_best_subcarriers"]


@dataclass(frozen=True)
class ExactP2Result:
    """An optimal solution of P2.

    Attributes:
        selection: ``[num_tokens, num_experts], bool`` alpha*.
        subcarrier: ``[K, K], int64`` beta* for the links that carry tokens (-1 elsewhere).
        energy_comm, energy_comp: [J] of that schedule (eq 3, 4), recomputed exactly.
        feasible: ``[num_tokens], bool`` (False: Remark 2 Top-D fallback).
        status: solver message.
    """

    selection: np.ndarray
    subcarrier: np.ndarray
    energy_comm: float
    energy_comp: float
    feasible: np.ndarray
    status: str = "optimal"

    @property
    def energy(self) -> float:
        """Objective of P2 [J]."""
        return self.energy_comm + self.energy_comp


def eq13_bound(num_experts: int, num_subcarriers: int) -> float:
    """Theorem 1, eq (13): prod_{i=0}^{K(K-1)-1} (M - i) / M^{K(K-1)}.

    The probability that the K(K-1) links' best subcarriers are all distinct when each
    link's best subcarrier is uniform over the M subcarriers, independently across links.
    0 when M < K(K-1).
    """
    k, m = int(num_experts), int(num_subcarriers)
    links = k * (k - 1)
    if m < links:
        return 0.0
    # log-space product for large M
    return float(math.exp(sum(math.log((m - i) / m) for i in range(links))))


def distinct_best_subcarriers(rates) -> bool:
    """Theorem 1's event A: the best subcarriers of the K(K-1) links are all distinct."""
    rates = np.asarray(rates)
    k = rates.shape[0]
    off = ~np.eye(k, dtype=bool)
    best = np.argmax(rates, axis=2)[off]
    return bool(np.unique(best).size == best.size)


def _prepare(scores, source, rates, threshold, max_experts, system):
    scores = np.asarray(scores, dtype=np.float64)
    source = np.asarray(source, dtype=np.int64)
    rates = np.asarray(rates, dtype=np.float64)
    t, k = scores.shape
    if rates.shape[:2] != (k, k):
        raise ValueError(f"`rates` must be [K, K, M] with K = {k}, got {rates.shape}")
    if source.shape != (t,):
        raise ValueError(f"`source` must have shape [{t}], got {source.shape}")
    if not isinstance(system, SystemConfig) or system.num_nodes != k:
        raise ValueError(f"`system` must be a SystemConfig with num_nodes = {k}")
    if np.any(system.comp_energy_static_j > 0):
        raise NotImplementedError("the exact P2 solvers assume b_j = 0 (the paper's setting)")
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (t,)).copy()
    d = min(int(max_experts), k)
    # Remark 2: infeasible tokens take their Top-D experts by score (ties: lower index)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :d]
    top_sum = np.take_along_axis(scores, order, axis=1).sum(axis=1)
    feasible = top_sum >= thr - SCORE_TOL
    fallback = np.zeros((t, k), dtype=bool)
    np.put_along_axis(fallback, order, True, axis=1)
    return scores, source, rates, thr, d, feasible, fallback


def _bill(selection, source, subcarrier, rates, system):
    bill = schedule_energy(selection, source, subcarrier, rates, system, zero_rate="raise")
    return bill.comm, bill.comp


def solve_p2_exact(
    scores,
    source,
    rates,
    threshold,
    max_experts,
    *,
    system: SystemConfig,
    mip_rel_gap: float = 1e-9,
    time_limit: float | None = 60.0,
) -> ExactP2Result:
    """Solve P2 exactly by a MILP (module docstring); for small K and few tokens.

    Args:
        scores: ``[T, K]`` gating scores; source: ``[T]`` node of each token;
        rates: ``[K, K, M]`` r_ij^(m) [bit/s]; threshold: float or ``[T]`` (C1);
        max_experts: D (C2); system: P0, s0, a_j (b_j must be 0).
        mip_rel_gap: HiGHS relative optimality gap (default 1e-9, i.e. exact up to
            floating point).
        time_limit: seconds for HiGHS (None: unlimited).

    Returns:
        :class:`ExactP2Result`.

    Raises:
        RuntimeError: if HiGHS does not prove optimality.
    """
    scores, source, rates, thr, d, feasible, fallback = _prepare(scores, source, rates, threshold, max_experts, system)
    t, k = scores.shape
    a = system.comp_energy_per_token_j
    per_bit = system.tx_power_w * system.bits_per_token
    n_src = np.bincount(source, minlength=k)

    # links that can carry traffic: from a node holding tokens, with some positive rate
    links = [(i, j) for i in range(k) for j in range(k) if i != j and n_src[i] > 0 and np.any(rates[i, j] > 0)]
    n_links = len(links)
    pairs = []  # (link index, subcarrier, energy per token)
    for li, (i, j) in enumerate(links):
        r = rates[i, j]
        best = np.argsort(-r, kind="stable")[:n_links]
        for m in best:
            if r[m] > 0:
                pairs.append((li, int(m), per_bit / float(r[m])))
    n_pairs = len(pairs)
    link_of = {lj: li for li, lj in enumerate(links)}

    # variable layout: alpha [t*k] | beta [n_pairs] | y [n_pairs]
    n_alpha = t * k
    n_var = n_alpha + 2 * n_pairs
    scale = max(float(a.max()), max((p[2] for p in pairs), default=0.0))
    c = np.zeros(n_var)
    c[:n_alpha] = np.tile(a, t) / scale
    for p, (_, _, e) in enumerate(pairs):
        c[n_alpha + n_pairs + p] = e / scale

    lb = np.zeros(n_var)
    ub = np.ones(n_var)
    ub[n_alpha + n_pairs :] = np.inf
    integrality = np.zeros(n_var)
    integrality[: n_alpha + n_pairs] = 1
    alpha_idx = np.arange(n_alpha).reshape(t, k)
    for tok in range(t):
        i = source[tok]
        for j in range(k):
            v = alpha_idx[tok, j]
            reachable = j == i or (i, j) in link_of
            if not feasible[tok]:
                lb[v] = ub[v] = float(fallback[tok, j])
            elif scores[tok, j] <= 0 or not reachable:
                ub[v] = 0.0
    # a fallback token that needs an unreachable link makes the instance infeasible
    if np.any(lb > ub):
        raise ValueError("a Remark 2 token needs a link without any positive-rate subcarrier")

    rows, cols, vals, lo, hi = [], [], [], [], []
    r_count = 0

    def add(entries, lower, upper):
        nonlocal r_count
        for col, val in entries:
            rows.append(r_count)
            cols.append(col)
            vals.append(val)
        lo.append(lower)
        hi.append(upper)
        r_count += 1

    for tok in range(t):
        if not feasible[tok]:
            continue
        add([(alpha_idx[tok, j], scores[tok, j]) for j in range(k)], thr[tok] - SCORE_TOL, np.inf)  # C1
        add([(alpha_idx[tok, j], 1.0) for j in range(k)], -np.inf, d)  # C2
    pairs_of_link = [[] for _ in range(n_links)]
    pairs_of_sub: dict[int, list[int]] = {}
    for p, (li, m, _) in enumerate(pairs):
        pairs_of_link[li].append(p)
        pairs_of_sub.setdefault(m, []).append(p)
    for li, (i, j) in enumerate(links):
        toks = np.flatnonzero(source == i)
        # flow: sum_m y_lm - sum_t alpha_tj = 0
        add([(n_alpha + n_pairs + p, 1.0) for p in pairs_of_link[li]] + [(alpha_idx[tok, j], -1.0) for tok in toks], 0.0, 0.0)
        # one subcarrier per link (eq 16)
        add([(n_alpha + p, 1.0) for p in pairs_of_link[li]], -np.inf, 1.0)
        # y_lm <= N_i beta_lm
        for p in pairs_of_link[li]:
            add([(n_alpha + n_pairs + p, 1.0), (n_alpha + p, -float(toks.size))], -np.inf, 0.0)
    for ps in pairs_of_sub.values():
        if len(ps) > 1:
            add([(n_alpha + p, 1.0) for p in ps], -np.inf, 1.0)  # C3

    A = sparse.csr_array((vals, (rows, cols)), shape=(r_count, n_var))
    options = {"mip_rel_gap": float(mip_rel_gap), "presolve": True}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    res = milp(c, constraints=LinearConstraint(A, lo, hi), integrality=integrality, bounds=Bounds(lb, ub), options=options)
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"HiGHS did not prove optimality: {res.message}")
    x = res.x
    selection = x[:n_alpha].reshape(t, k) > 0.5
    beta = x[n_alpha : n_alpha + n_pairs] > 0.5
    subcarrier = np.full((k, k), -1, dtype=np.int64)
    demand = link_token_counts(selection, source, k)
    for p, (li, m, _) in enumerate(pairs):
        i, j = links[li]
        if beta[p] and demand[i, j] > 0:
            subcarrier[i, j] = m
    comm, comp = _bill(selection, source, subcarrier, rates, system)
    return ExactP2Result(selection, subcarrier, comm, comp, feasible, str(res.message))


def brute_force_p2(
    scores, source, rates, threshold, max_experts, *, system: SystemConfig, max_combinations: int = 200_000
) -> ExactP2Result:
    """P2 by enumerating every selection and solving P3 exactly for each (tiny instances).

    Raises:
        ValueError: if there are more than ``max_combinations`` selections to try.
    """
    scores, source, rates, thr, d, feasible, fallback = _prepare(scores, source, rates, threshold, max_experts, system)
    t, k = scores.shape
    choices = []
    for tok in range(t):
        if not feasible[tok]:
            choices.append([fallback[tok]])
            continue
        opts = []
        for size in range(0, d + 1):
            for subset in itertools.combinations(range(k), size):
                if scores[tok, list(subset)].sum() >= thr[tok] - SCORE_TOL:
                    row = np.zeros(k, dtype=bool)
                    row[list(subset)] = True
                    opts.append(row)
        choices.append(opts)
    total = math.prod(len(c) for c in choices)
    if total > max_combinations:
        raise ValueError(f"{total} selections to enumerate (> max_combinations={max_combinations})")
    a = system.comp_energy_per_token_j
    best = None
    for combo in itertools.product(*choices):
        selection = np.array(combo, dtype=bool).reshape(t, k)
        demand = link_token_counts(selection, source, k)
        alloc = allocate_subcarriers(rates, demand, tx_power_w=system.tx_power_w, bits_per_token=system.bits_per_token)
        if alloc.unserved.any():
            continue
        energy = alloc.total_energy + float((a * demand.sum(axis=0)).sum())
        if best is None or energy < best[0]:
            best = (energy, selection, alloc.subcarrier)
    if best is None:
        raise ValueError("no selection can be served with these rates")
    _, selection, subcarrier = best
    comm, comp = _bill(selection, source, subcarrier, rates, system)
    return ExactP2Result(selection, subcarrier, comm, comp, feasible, "enumerated")
