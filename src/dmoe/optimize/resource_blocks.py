"""Several resource blocks per link under a deadline (issue 16; generalises P3(a), Appendix B).

P3(a) (:func:`~dmoe.optimize.subcarrier.allocate_subcarriers`) gives every active link at
most one subcarrier, which eq (16) shows is optimal when time does not matter. Eq (2)
already sums a link's rate over its subcarriers, and in the NR presets a "subcarrier" is a
resource block (RB) of 12 subcarriers; this module lets a link take several RBs so that
its transfer finishes within a deadline.

Model (decided, issue 16):

* Link l = (i, j), i != j, with demand s_l tokens carries c_l = 8 s0 s_l bits. It may
  hold a set S_l of RBs; each RB serves at most one link (C3). The bits are split over
  S_l and every RB transmits from t = 0 in parallel, at power P0 (``tx_power_w``, the
  power per RB): x_lm bits on RB m take x_lm / r_lm seconds.
* Energy of the link = P0 * sum_m x_lm / r_lm (power times on-time, eq 3 generalised).
  With one RB it is P0 c_l / r_lm, eq (3) exactly.
* Deadline: every transfer finishes within T_l, x_lm / r_lm <= T_l for every RB
  (``deadline_s``, one number or one per link; ``None`` or ``inf`` = no deadline).
* Per-node budget: node i transmits on at most B_i = ``max_rbs_per_node`` RBs at once
  (``SystemConfig.max_rbs_per_node`` = floor(P_max / P0)), summed over its outgoing
  links: sum_{l out of i} |S_l| <= B_i.
* Given S_l, the optimal split fills the highest-rate RBs first, each for T_l seconds
  (a fractional knapsack); S_l can carry the link iff sum_{m in S_l} r_lm T_l >= c_l.

The problem (a MILP: min sum_lm P0 t_lm s.t. sum_m r_lm t_lm = c_l, 0 <= t_lm <= T_l y_lm,
sum_l y_lm <= 1, per-node sum y <= B_i, y binary) is NP-hard in general (a bin-covering
flavour), so :func:`allocate_resource_blocks` solves it exactly or reports a proven gap.

Rules kept from P3(a): the allocation first serves as many active links as possible (a
served link holds at least one RB of positive rate; the most that can be served is the
P3(a) matching, with the per-node budget), then minimises energy. Unserved links get
``energy = inf`` and ``unserved = True`` (callers reroute their tokens). A (link, RB) pair
of rate 0 (or so small that the energy overflows) is never used. With no deadline (or a
loose one) the optimum is exactly P3(a)'s: one RB per link, the same RB where P3(a)'s
optimum is unique, the same energy always (eq 16).

When no allocation serving that many links meets every deadline (the documented
fallback, never silent): every deadline is stretched by the least common factor
theta > 1 that some allocation meets (each link's RBs all on, the fastest it can finish),
energy is minimised at theta T_l, and the result reports it: ``deadline_stretch`` =
theta, ``deadline_met`` False and ``lateness_s`` > 0 for the links that finish after
their T_l, ``num_late`` counts them (a run summary counts these;
:class:`~dmoe.policies.deadline.Deadline` records them per round in ``Schedule.info``). A link meets its deadline when its air
time is at most T_l (1 + :data:`DEADLINE_RTOL`), the solvers' tolerance.

Methods (``method``):

* ``"milp"``: exact. HiGHS (:func:`scipy.optimize.milp`, relative gap 1e-9, presolve off)
  on the (link, RB) pairs an optimum may use (exact pruning,
  :func:`~dmoe.optimize._rb_problem.candidate_pairs`); two stages in the fallback (least
  stretch, then energy; :mod:`dmoe.optimize._rb_exact`).
* ``"greedy"``: P3(a) and LP-rounding starts, repair of late links, local improvement
  (:mod:`dmoe.optimize._rb_greedy`); ``lower_bound`` is the LP relaxation's value (its
  Lagrangian value, valid whatever the LP solver's tolerances), ``gap`` = energy /
  lower_bound - 1.
* ``"brute"``: every RB -> link map, for tiny instances (the test oracle).
* ``"auto"``: if P3(a)'s assignment meets every deadline it is optimal (P3(a) is this
  problem without the deadline) and is returned (``method`` = ``"assignment"``); else
  the greedy, returned as optimal when it meets every deadline with a gap below 1e-9;
  else the MILP when the pruned problem has at most :data:`AUTO_MILP_MAX_PAIRS` pairs
  (:data:`AUTO_STRETCH_MAX_PAIRS` in the fallback, whose max-min MILP is much harder),
  each HiGHS call limited to :data:`AUTO_MILP_NODES` branch-and-bound nodes (a
  deterministic limit, unlike a time limit), keeping the better of MILP and greedy;
  else the greedy with its gap. The thresholds keep one call within tens of
  milliseconds at the sizes the policies meet every layer round.

``gap`` and ``lower_bound`` refer to the energy at the deadlines used (theta T_l); a
larger deadline never raises the optimum, so ``lower_bound`` is also a lower bound on the
optimum of any method that stretches less. In the fallback only ``"milp"`` and
``"brute"`` prove the least stretch; ``"greedy"`` (and ``"auto"`` beyond
:data:`AUTO_STRETCH_MAX_PAIRS` pairs) may stretch more, and ``stretch_bound`` (the LP
relaxation of the stretch MILP) bounds how much.

Sources: eq (1)-(3) and (16), P3(a) and Appendix B of the paper; the deadline, the
per-node budget and the several-RB split are ours (issue 16).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from dmoe.energy import link_rates_from_allocation
from dmoe.latency import link_air_time
from dmoe.optimize._rb_exact import lp_bound, lp_relaxation, solve_brute, solve_milp, stretch_bound
from dmoe.optimize._rb_greedy import solve_greedy
from dmoe.optimize._rb_problem import Problem, assign_one, candidate_pairs, fill_bits
from dmoe.optimize._validation import ArgumentTypeError, check_demand, check_int, check_positive, check_rates

__all__ = [
    "ResourceBlockResult",
    "allocate_resource_blocks",
    "relaxed_resource_blocks",
    "RB_METHODS",
    "DEADLINE_RTOL",
    "AUTO_MILP_MAX_PAIRS",
    "AUTO_STRETCH_MAX_PAIRS",
    "AUTO_MILP_NODES",
]

RB_METHODS = ("auto", "milp", "greedy", "brute")
#: a link meets its deadline T when its air time is <= T (1 + DEADLINE_RTOL)
DEADLINE_RTOL = 1e-6
#: ``auto`` runs the exact MILP when the pruned problem has at most this many (link, RB) pairs
AUTO_MILP_MAX_PAIRS = 200
#: ... and, in the fallback (the stretch MILP is a max-min covering, much harder), at most this many
AUTO_STRETCH_MAX_PAIRS = 40
#: ... giving each HiGHS call at most this many branch-and-bound nodes (deterministic, unlike a time limit)
AUTO_MILP_NODES = 500
_OPTIMAL_GAP = 1e-9


@dataclass(frozen=True)
class ResourceBlockResult:
    """Result of :func:`allocate_resource_blocks` (K experts / nodes, M RBs).

    Attributes:
        rb_owner: ``[M], int64`` link of each RB as the flat index i * K + j, -1 = free.
        rb_share: ``[K, K, M], float64`` fraction of link i -> j's bits carried on RB m
            (sums to 1 over m on served links, 0 elsewhere).
        subcarrier: ``[K, K], int64`` each served link's highest-rate RB (the one-RB
            contract of :func:`~dmoe.optimize.subcarrier.allocate_subcarriers`), -1 = none;
            with ``assign_idle`` idle links may hold one (no bits).
        energy: ``[K, K], float64`` [J] P0 * sum of on-times of served links, ``inf`` on
            unserved active links, 0 elsewhere.
        airtime: ``[K, K], float64`` [s] completion time of each served link (its slowest RB).
        link_rate: ``[K, K], float64`` [bit/s] energy rate R^E (energy = P0 c_l / R^E;
            :func:`dmoe.energy.link_rates_from_allocation`), 0 if no RB.
        time_rate: ``[K, K], float64`` [bit/s] time rate R^T (air time = c_l / R^T).
        served, unserved: ``[K, K], bool`` active links with / without an RB.
        deadline_s: ``[K, K], float64`` [s] the deadline T_l asked for (``inf``: none).
        deadline_met: ``[K, K], bool`` False on served links later than T_l (1 +
            :data:`DEADLINE_RTOL`) and on unserved active links; True elsewhere.
        lateness_s: ``[K, K], float64`` [s] max(0, airtime - T_l) on served links, else 0.
        deadline_stretch: theta >= 1, the factor of the fallback that every deadline was
            stretched by (1 when every T_l is met).
        stretch_bound: proven lower bound on the least stretch theta* any allocation
            needs (1 <= stretch_bound <= deadline_stretch; equal when proven least; the LP
            relaxation of the stretch MILP otherwise).
        lower_bound: [J] proven lower bound on the optimal total energy at theta T_l.
        gap: energy / lower_bound - 1 (>= 0; 0 when proven optimal).
        optimal: True when the allocation is proven optimal (gap <= 1e-9).
        method: ``"assignment"``, ``"milp"``, ``"greedy"`` or ``"brute"``: what produced it.
    """

    rb_owner: np.ndarray
    rb_share: np.ndarray
    subcarrier: np.ndarray
    energy: np.ndarray
    airtime: np.ndarray
    link_rate: np.ndarray
    time_rate: np.ndarray
    served: np.ndarray
    unserved: np.ndarray
    deadline_s: np.ndarray
    deadline_met: np.ndarray
    lateness_s: np.ndarray
    deadline_stretch: float
    stretch_bound: float
    lower_bound: float
    gap: float
    optimal: bool
    method: str

    @property
    def active(self) -> np.ndarray:
        """``[K, K], bool`` links with demand (i != j, s_ij > 0)."""
        return self.served | self.unserved

    @property
    def allocation(self) -> np.ndarray:
        """``[K, K, M], bool`` RB m carries bits of link i -> j."""
        return self.rb_share > 0

    @property
    def num_rbs(self) -> np.ndarray:
        """``[K, K], int64`` RBs carrying each link's bits."""
        return self.allocation.sum(axis=2)

    @property
    def total_energy(self) -> float:
        """Sum of ``energy`` over served links [J] (finite)."""
        return float(self.energy[self.served].sum())

    @property
    def num_late(self) -> int:
        """Served links that miss their deadline (the fallback)."""
        return int(np.count_nonzero(self.served & ~self.deadline_met))

    @property
    def multi_rb(self) -> bool:
        """Whether some link carries its bits on more than one RB."""
        return bool((self.num_rbs > 1).any())


def _check_deadline(deadline_s, k: int) -> np.ndarray:
    """``[K, K]`` deadlines [s] > 0 (inf = none) from None, a number or a ``[K, K]`` array."""
    if deadline_s is None:
        return np.full((k, k), np.inf)
    if isinstance(deadline_s, bool):
        raise ArgumentTypeError(f"`deadline_s` must be a number [s] or a [{k}, {k}] array, got {deadline_s!r}")
    arr = np.asarray(deadline_s)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ArgumentTypeError(f"`deadline_s` must be a real number [s] or a [{k}, {k}] array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        arr = np.full((k, k), float(arr))
    elif arr.shape != (k, k):
        raise ValueError(f"`deadline_s` must be a number or have shape [{k}, {k}] like `demand`, got {arr.shape}")
    off = ~np.eye(k, dtype=bool)
    vals = arr[off]
    if np.isnan(vals).any():
        raise ValueError("`deadline_s` must not be NaN")
    if (vals <= 0).any():
        raise ValueError(f"`deadline_s` must be > 0 [s] (inf: no deadline), got min {vals.min()!r}")
    arr = arr.copy()
    np.fill_diagonal(arr, np.inf)
    return arr


def _check_budget(max_rbs_per_node) -> int | None:
    if max_rbs_per_node is None:
        return None
    if isinstance(max_rbs_per_node, numbers.Integral) and not isinstance(max_rbs_per_node, bool) and max_rbs_per_node < 1:
        raise ValueError(
            f"`max_rbs_per_node` must be >= 1: a per-node power budget that cannot carry one resource block "
            f"is an error, got {max_rbs_per_node!r}"
        )
    return check_int("max_rbs_per_node", max_rbs_per_node, minimum=1)


def _problem(rates, demand, p0, bits, deadline, budget):
    k = rates.shape[0]
    off = ~np.eye(k, dtype=bool)
    active = off & (demand > 0)
    act = np.argwhere(active)
    r_act = rates[act[:, 0], act[:, 1], :]
    s = demand[act[:, 0], act[:, 1]]
    with np.errstate(divide="ignore", over="ignore"):
        # [L, M] P3(a)'s energy of link l alone on RB m (eq 3), exactly as allocate_subcarriers
        weight = (p0 * bits * s)[:, None] / r_act
    usable = (r_act > 0) & np.isfinite(weight)
    caps = None if budget is None else np.full(k, budget, dtype=np.int64)
    prob = Problem(
        r=np.where(usable, r_act, 0.0),
        c=s * float(bits),
        d=deadline[act[:, 0], act[:, 1]],
        node=act[:, 0].astype(np.int64),
        caps=caps,
        weight=weight,
    )
    return prob, act, active, usable


def _deadline_used(prob: Problem, theta: float) -> np.ndarray:
    return prob.d * theta * (1.0 + 1e-12) if theta > 1.0 else prob.d


def _fits(prob: Problem, owner: np.ndarray) -> bool:
    return not fill_bits(prob, owner, prob.d)[1].any()


def _owner_of(one: np.ndarray, m: int) -> np.ndarray:
    owner = np.full(m, -1, dtype=np.int64)
    got = one >= 0
    owner[one[got]] = np.flatnonzero(got)
    return owner


def _ontime_total(prob: Problem, owner: np.ndarray, theta: float) -> float:
    x, _ = fill_bits(prob, owner, _deadline_used(prob, theta))
    idx = np.flatnonzero(owner >= 0)
    return float(np.sum(x[idx] / prob.r[owner[idx], idx]))


def _check_inputs(rates, demand, tx_power_w, bits_per_token, deadline_s, max_rbs_per_node):
    """The validated inputs of :func:`allocate_resource_blocks` and :func:`relaxed_resource_blocks`:
    ``(rates [K, K, M], demand [K, K], P0, bits per token, deadline, per-node budget)``."""
    rates = check_rates(rates)
    demand = check_demand(demand, rates.shape[0])
    p0 = check_positive("tx_power_w", tx_power_w)
    bits = check_positive("bits_per_token", bits_per_token)
    deadline = _check_deadline(deadline_s, rates.shape[0])
    return rates, demand, p0, bits, deadline, _check_budget(max_rbs_per_node)


def allocate_resource_blocks(
    rates,
    demand,
    *,
    tx_power_w,
    bits_per_token,
    deadline_s=None,
    max_rbs_per_node=None,
    assign_idle: bool = False,
    method: str = "auto",
    time_limit_s=None,
) -> ResourceBlockResult:
    """Minimum-energy allocation of resource blocks to links under a deadline (module doc).

    Args:
        rates: ``[K, K, M], float64`` r_ij^(m) [bit/s] >= 0 (eq 1); diagonal ignored.
        demand: ``[K, K]`` s_ij [tokens] >= 0 (int or float); diagonal ignored.
        tx_power_w: P0 [W] > 0, the power of one RB.
        bits_per_token: 8 * s0 [bit] > 0.
        deadline_s: T [s] > 0 for every link, a ``[K, K]`` array of per-link deadlines
            (``inf`` entries: none), or None (no deadline: P3(a)).
        max_rbs_per_node: B_i >= 1, the RBs one node may transmit on at once
            (``SystemConfig.max_rbs_per_node``), or None (no budget).
        assign_idle: also give free RBs to idle links (one each, as P3(a) does), within
            the per-node budget.
        method: ``"auto"``, ``"milp"``, ``"greedy"`` or ``"brute"`` (module doc).
        time_limit_s: seconds for each HiGHS MILP of ``"milp"`` (None: no limit); when it
            runs out, the best allocation found (or the greedy's) is returned with its gap.

    Returns:
        :class:`ResourceBlockResult`.

    Raises:
        ValueError / TypeError naming the argument: ``rates`` not [K, K, M] or with
        negative / NaN / inf entries off the diagonal; ``demand`` not [K, K] or negative /
        NaN; non-positive ``tx_power_w`` / ``bits_per_token``; ``deadline_s`` NaN, <= 0 or
        of the wrong shape; ``max_rbs_per_node`` < 1 (a budget that cannot carry one RB);
        unknown ``method``; ``"brute"`` on an instance too large to enumerate.
    """
    rates, demand, p0, bits, deadline, budget = _check_inputs(rates, demand, tx_power_w, bits_per_token, deadline_s,
                                                              max_rbs_per_node)
    k, _, m = rates.shape
    if not isinstance(method, str) or method not in RB_METHODS:
        raise ValueError(f"`method` must be one of {', '.join(repr(x) for x in RB_METHODS)}; got {method!r}")
    if time_limit_s is not None:
        time_limit_s = check_positive("time_limit_s", time_limit_s)

    prob, act, active, _ = _problem(rates, demand, p0, bits, deadline, budget)
    one = assign_one(prob.weight, prob.r > 0, prob.node, prob.caps) if prob.num_links else np.zeros(0, np.int64)
    n_serve = int(np.count_nonzero(one >= 0))
    start = _owner_of(one, m)
    theta, bound_s, optimal, used = 1.0, None, False, method
    if prob.num_links == 0:
        owner, optimal, used = start, True, "assignment"
    elif method == "brute":
        owner, theta = solve_brute(prob)
        optimal = True
    elif method == "milp":
        cand = candidate_pairs(prob)
        owner, theta, dual, optimal = solve_milp(
            prob, cand, n_serve, None if time_limit_s is None else ("time", time_limit_s)
        )
        if owner is None:
            owner, theta = solve_greedy(prob, one)
            optimal = False
        bound_s = dual if math.isfinite(dual) else None
        if not optimal:
            lp = lp_bound(prob, cand, _deadline_used(prob, theta), n_serve)
            bound_s = lp if bound_s is None else max(bound_s, lp)
    elif method == "auto" and _fits(prob, start):
        owner, optimal, used = start, True, "assignment"
    else:
        cand = candidate_pairs(prob)
        bound_s, lp = lp_relaxation(prob, cand, prob.d, n_serve)
        owner, theta = solve_greedy(prob, one, lp=lp)
        if theta > 1.0:
            bound_s = lp_bound(prob, cand, _deadline_used(prob, theta), n_serve)
        used = "greedy"
        total = _ontime_total(prob, owner, theta)
        # the LP bound is at the greedy's own deadlines: only theta = 1 proves optimality
        optimal = theta == 1.0 and total <= bound_s * (1.0 + _OPTIMAL_GAP)
        pairs = int(cand.sum())
        exact = pairs <= AUTO_MILP_MAX_PAIRS if theta == 1.0 else pairs <= AUTO_STRETCH_MAX_PAIRS
        if method == "auto" and not optimal and exact:
            o2, t2, dual, opt2 = solve_milp(prob, cand, n_serve, ("nodes", AUTO_MILP_NODES))
            if o2 is not None:
                e2 = _ontime_total(prob, o2, t2)
                if t2 < theta * (1 - 1e-9) or (t2 <= theta * (1 + 1e-9) and e2 <= total):
                    owner, theta, used, optimal = o2, t2, "milp", opt2
                    if not opt2:
                        lp = lp_bound(prob, cand, _deadline_used(prob, t2), n_serve)
                        bound_s = max(lp, dual) if math.isfinite(dual) else lp
    least = theta
    if theta > 1.0 and not optimal:
        least = min(theta, stretch_bound(prob, candidate_pairs(prob), n_serve))
    return _build(rates, demand, p0, bits, deadline, prob, act, active, owner, theta, least, bound_s, optimal, used,
                  budget, assign_idle)


def _build(rates, demand, p0, bits, deadline, prob, act, active, owner, theta, least, bound_s, optimal, method,
           budget, assign_idle) -> ResourceBlockResult:
    k, _, m = rates.shape
    x, _ = fill_bits(prob, owner, _deadline_used(prob, theta))
    owner = np.where(x > 0, owner, -1)  # an RB that carries no bits is released
    share = np.zeros((k, k, m))
    idx = np.flatnonzero(owner >= 0)
    li = owner[idx]
    share[act[li, 0], act[li, 1], idx] = x[idx] / prob.c[li]
    rb_owner = np.full(m, -1, dtype=np.int64)
    rb_owner[idx] = act[li, 0] * k + act[li, 1]
    served = np.zeros((k, k), dtype=bool)
    served[act[li, 0], act[li, 1]] = True
    unserved = active & ~served
    # each served link's highest-rate RB (ties: lowest index)
    subcarrier = np.full((k, k), -1, dtype=np.int64)
    key = np.where(share > 0, rates, -1.0)
    best = np.argmax(key, axis=2)
    subcarrier[served] = best[served]

    if assign_idle:
        off = ~np.eye(k, dtype=bool)
        idle = np.argwhere(off & ~active)
        free = np.flatnonzero(rb_owner < 0)
        if idle.size and free.size:
            room = None
            if budget is not None:
                room = budget - np.bincount(rb_owner[idx] // k, minlength=k)
            # [I, F] rates of idle links on free RBs, as allocate_subcarriers weighs them
            r_idle = rates[idle[:, 0], idle[:, 1], :][:, free]
            with np.errstate(divide="ignore", over="ignore"):
                weight = (p0 * bits) / r_idle
            usable = (r_idle > 0) & np.isfinite(weight)
            cols = assign_one(weight, usable, idle[:, 0].astype(np.int64), room)
            got = cols >= 0
            subcarrier[idle[got, 0], idle[got, 1]] = free[cols[got]]
            rb_owner[free[cols[got]]] = idle[got, 0] * k + idle[got, 1]

    energy_rate, time_rate = link_rates_from_allocation(rates, subcarrier, share)
    with np.errstate(divide="ignore", over="ignore"):
        energy = np.where(served, p0 * bits * demand / np.where(served, energy_rate, 1.0), 0.0)
    energy[unserved] = np.inf
    airtime = link_air_time(np.where(served, demand, 0.0), np.where(served, time_rate, 1.0), bits)
    finite = served & np.isfinite(deadline)
    lateness = np.where(finite, np.maximum(airtime - np.where(finite, deadline, 0.0), 0.0), 0.0)
    met = ~(finite & (airtime > deadline * (1.0 + DEADLINE_RTOL))) & ~unserved
    total = float(energy[served].sum())
    if optimal or bound_s is None:
        lower = total
    else:
        lower = min(total, p0 * bound_s)
    gap = 0.0 if total <= 0 or lower >= total else (math.inf if lower <= 0 else total / lower - 1.0)
    if not math.isfinite(gap):
        gap = float(np.finfo(np.float64).max)
    return ResourceBlockResult(
        rb_owner=rb_owner,
        rb_share=share,
        subcarrier=subcarrier,
        energy=energy,
        airtime=airtime,
        link_rate=np.where(served | (subcarrier >= 0), energy_rate, 0.0),
        time_rate=np.where(served | (subcarrier >= 0), time_rate, 0.0),
        served=served,
        unserved=unserved,
        deadline_s=deadline,
        deadline_met=met,
        lateness_s=lateness,
        deadline_stretch=float(theta),
        stretch_bound=float(least),
        lower_bound=float(lower),
        gap=float(gap),
        optimal=bool(optimal or (theta == 1.0 and gap <= _OPTIMAL_GAP)),
        method=method,
    )


def relaxed_resource_blocks(rates, demand, *, tx_power_w, bits_per_token, deadline_s=None, max_rbs_per_node=None):
    """Each link alone on its best RBs, C3 ignored (RBs shared): the lower bound's allocation.

    Every active link with a positive rate takes its own fastest RBs (at most
    ``max_rbs_per_node``), filled greedily within its deadline (module doc); a link that
    cannot meet its deadline even so runs all of them to finish as early as it can. This is
    the per-link minimum of the energy under the deadline, a lower bound on any exclusive
    allocation's link energy (used by LB(gamma0, D) under a deadline).

    Args / Raises: as :func:`allocate_resource_blocks` (no method).

    Returns:
        (subcarrier ``[K, K] int64`` each link's best RB, rb_share ``[K, K, M] float64``).
    """
    rates, demand, p0, bits, deadline, budget = _check_inputs(rates, demand, tx_power_w, bits_per_token, deadline_s,
                                                              max_rbs_per_node)
    k, _, m = rates.shape
    prob, act, _, _ = _problem(rates, demand, p0, bits, deadline, None)
    share = np.zeros((k, k, m))
    subcarrier = np.full((k, k), -1, dtype=np.int64)
    take = m if budget is None else min(m, budget)
    for l in range(prob.num_links):
        row = prob.r[l]
        order = np.lexsort((np.arange(m), -row))[:take]
        order = order[row[order] > 0]
        if order.size == 0:
            continue
        single = Problem(row[None, :], prob.c[l : l + 1], prob.d[l : l + 1], np.zeros(1, np.int64), None, prob.weight[l : l + 1])
        owner = np.full(m, -1, dtype=np.int64)
        owner[order] = 0
        x, _ = fill_bits(single, owner, single.d)
        i, j = act[l]
        share[i, j] = x / prob.c[l]
        subcarrier[i, j] = order[0]
    return subcarrier, share
