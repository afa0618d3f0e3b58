"""Joint expert and subcarrier allocation, problem P2 (paper Section VI, Algorithm 2).

:func:`jesa` is block coordinate descent between expert selection (P1(a), exact per token
by :func:`~dmoe.optimize.selection.select_experts`) and subcarrier allocation (P3(a), exact
by :func:`~dmoe.optimize.subcarrier.allocate_subcarriers`):

1. alpha <- all experts; beta <- a random assignment of distinct subcarriers to the K(K-1)
   links (to min(K(K-1), M) randomly chosen links when M < K(K-1)).
2. repeat: R <- rates of beta (eq 2); per-token costs e_ij from R (links without a usable
   subcarrier cost inf, i.e. tokens are rerouted); alpha' <- DES for every token;
   s_ij <- token counts; beta' <- optimal allocation for s (free subcarriers also go to
   idle links, ``assign_idle=True``, so later selections can re-open links);
   until alpha' = alpha and beta' = beta, or ``max_iterations``.

Decided details:

* Every selection step only uses links that hold a positive-rate subcarrier, and the
  previous beta restricted to those links is a feasible assignment, so the optimal
  allocation serves every active link: the schedule is always feasible (no inf).
* The objective F(alpha, beta) = comm + comp energy (eq 3, 4) of the schedule after each
  iteration is recorded in ``energy_history``; it cannot rise (eq 17) when all tokens are
  feasible and b_j = 0. Two things outside the paper's argument can make a step raise F:
  the Remark 2 fallback of infeasible tokens (Top-D depends on which links are
  available) and b_j > 0 (not part of the per-token cost). If a step would raise F, JESA
  keeps the previous schedule and stops (``stop_reason="objective_increase"``), so
  ``energy_history`` is non-increasing in every case.
* Deadline (``deadline_s`` = T, beyond the paper; issue 16): the allocation step becomes
  :func:`~dmoe.optimize.resource_blocks.allocate_resource_blocks`, links taking several
  resource blocks so that each transfer fits its air-time budget (T - n_j / c_j) / 2
  (:func:`dmoe.latency.air_time_budget`: forward and backward on the same RBs), within
  the per-node budget ``system.max_rbs_per_node``; free RBs still go to idle links. The
  selection step prices a link by its energy rate R^E (the mean energy per bit of its
  current RBs, :func:`dmoe.energy.link_rates_from_allocation`). With a loose deadline the
  allocation is P3(a)'s and JESA is unchanged. A system with a per-node budget uses the
  same step (without deadline: one RB per link, at most B_i per node, and the random
  initial beta keeps B_i links per node). ``deadline_s=None`` on a system without budget
  is the paper's algorithm, bit for bit.

Speed (issue 18): inputs are validated once, at the entry; inside the loop a token at node
i is solved again only when the cost row of node i changed
(:class:`~dmoe.optimize._jesa_steps.SelectionStep`: a token's canonical selection depends
on that row only), and an allocation is reused when its demand (and air-time budget) was
seen before, e.g. at the iteration that confirms convergence. The answers are those of
the plain algorithm, :mod:`dmoe.optimize._jesa_reference`, bit for bit
(tests/test_jesa_fast.py; timings: benchmarks/bench_jesa_round.py, docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dmoe.rng import as_generator
from dmoe.energy import (
    computation_energy,
    expert_comp_energy,
    link_rates_from_allocation,
    link_token_counts,
    node_computation_energy,
    token_costs,
    transmission_costs,
)
from dmoe.latency import air_time_budget
from dmoe.optimize._validation import (
    SELECTION_METHODS,
    check_available,
    check_int,
    check_method,
    check_rates,
    check_scores,
    check_source,
    check_system,
    check_threshold,
    mask_costs,
)
from dmoe.optimize.resource_blocks import allocate_resource_blocks
from dmoe.optimize.selection import select_experts
from dmoe.optimize._enumerate import MAX_EXPERTS as MAX_ENUMERATE_EXPERTS
from dmoe.optimize._jesa_steps import SelectionStep
from dmoe.optimize.subcarrier import _allocate, allocate_subcarriers

__all__ = ["JESAResult", "LowerBoundResult", "jesa", "lower_bound", "random_subcarriers"]

_INITS = ("random", "assignment")
_RISE_RTOL = 1e-12


@dataclass(frozen=True)
class JESAResult:
    """Result of :func:`jesa` (one layer round).

    Attributes:
        selection: ``[num_tokens, num_experts], bool`` alpha.
        subcarrier: ``[K, K], int64`` beta (-1 = none); links without traffic may hold one.
        link_rate: ``[K, K], float64`` [bit/s] rate of each link's subcarrier (0 if none).
        tokens: ``[K, K], int64`` s_ij [tokens] (diagonal: local tokens).
        energy_comm: total communication energy [J] (eq 3).
        energy_comm_links: ``[K, K], float64`` [J] per link.
        energy_comp: total computation energy [J] (eq 4).
        energy_comp_experts: ``[K], float64`` [J] per expert.
        iterations: BCD iterations run (selection + allocation each).
        converged: True when alpha and beta stopped changing.
        stop_reason: "converged", "max_iterations" or "objective_increase".
        feasible: ``[num_tokens], bool`` (False: Remark 2 fallback).
        energy_history: F after each accepted iteration [J], non-increasing.
        threshold: ``[num_tokens], float64`` the C1 thresholds used.
        rb_share: None, or ``[K, K, M], float64`` the share of each link's bits on each
            resource block when some link holds several (deadline; ``link_rate`` is then
            the energy rate R^E and ``subcarrier`` each link's best RB).
        rb_info: None (P3(a) allocation), or the last allocation's outcome under the
            deadline / budget: ``late_links`` (served links later than their air-time
            budget), ``deadline_stretch`` (the fallback's factor, 1 when met), ``gap``,
            ``method``, ``multi_rb_links``, ``rbs_used``.
    """

    selection: np.ndarray
    subcarrier: np.ndarray
    link_rate: np.ndarray
    tokens: np.ndarray
    energy_comm: float
    energy_comm_links: np.ndarray
    energy_comp: float
    energy_comp_experts: np.ndarray
    iterations: int
    converged: bool
    stop_reason: str
    feasible: np.ndarray
    energy_history: list = field(default_factory=list)
    threshold: np.ndarray | None = None
    rb_share: np.ndarray | None = None
    rb_info: dict | None = None

    @property
    def energy(self) -> float:
        """Objective of P2: energy_comm + energy_comp [J]."""
        return self.energy_comm + self.energy_comp


@dataclass(frozen=True)
class LowerBoundResult:
    """Result of :func:`lower_bound`: same fields as :class:`JESAResult` minus the BCD ones.

    ``subcarrier`` holds each link's best subcarrier; links may share one (C3 ignored).
    """

    selection: np.ndarray
    subcarrier: np.ndarray
    link_rate: np.ndarray
    tokens: np.ndarray
    energy_comm: float
    energy_comm_links: np.ndarray
    energy_comp: float
    energy_comp_experts: np.ndarray
    feasible: np.ndarray
    threshold: np.ndarray | None = None

    @property
    def energy(self) -> float:
        """LB(gamma0, D) objective [J]."""
        return self.energy_comm + self.energy_comp


def random_subcarriers(num_nodes: int, num_subcarriers: int, rng=None) -> np.ndarray:
    """Algorithm 2's initial beta: distinct random subcarriers for random links.

    min(K(K-1), M) links chosen uniformly at random get distinct subcarriers chosen
    uniformly at random.

    Returns:
        ``[num_nodes, num_nodes], int64`` subcarrier index, -1 = none (diagonal -1).
    """
    gen = as_generator(rng)
    k, m = int(num_nodes), int(num_subcarriers)
    off = np.argwhere(~np.eye(k, dtype=bool))
    n = min(off.shape[0], m)
    links = gen.permutation(off.shape[0])[:n]
    subs = gen.permutation(m)[:n]
    beta = np.full((k, k), -1, dtype=np.int64)
    beta[off[links, 0], off[links, 1]] = subs
    return beta


def check_layer_placement(placement, num_nodes: int, num_experts: int):
    """Validate a one-layer placement (``[num_experts]``) or None (requires E = N)."""
    if placement is None:
        if num_nodes != num_experts:
            raise ValueError(
                f"`rates` describes {num_nodes} nodes but `scores` has {num_experts} experts; "
                "give a `placement` (node of each expert) when experts outnumber nodes"
            )
        return None
    from dmoe.placement import check_placement

    place = check_placement(placement, num_nodes, num_experts=num_experts)
    if place.ndim != 1:
        raise ValueError(f"`placement` must be one layer's [num_experts] = [{num_experts}] here, got {place.shape}")
    return place


def _prepare(scores, source, rates, threshold, max_experts, system, method, placement=None, available=None):
    scores = check_scores(scores)
    rates = check_rates(rates)
    t, e = scores.shape
    k = rates.shape[0]
    system = check_system(system, k)
    placement = check_layer_placement(placement, k, e)
    source = check_source(source, t, k)
    thr = check_threshold(threshold, t)
    d = check_int("max_experts", max_experts, minimum=1)
    method = check_method(method, SELECTION_METHODS)
    if method == "enumerate" and e > MAX_ENUMERATE_EXPERTS:
        # as select_experts says it (the iterations call the solver without its checks)
        raise ValueError(
            f"`method`='enumerate' supports at most {MAX_ENUMERATE_EXPERTS} experts, got {e}; use 'des' or 'milp'"
        )
    avail = check_available(available, t, e)
    return scores, source, rates, thr, d, system, method, placement, avail


def _select(scores, source, link_rate, thr, d, system, method, placement, avail=None):
    """One expert-selection step on given link rates: (result, demand [N, N], comp [N]).

    Without placement: P1(a) with e_ij (one expert per node). With placement: node-aware
    P1(a) (one transmission per token and remote node), demand = tokens from i needing node n.
    ``avail`` ``[T, E]`` (issue 9): unavailable experts cost ``+inf`` (never selected).
    """
    k = system.num_nodes
    if placement is None:
        costs = mask_costs(token_costs(link_rate, system)[source], avail)
        res = select_experts(scores, costs, thr, d, method=method)
        demand = link_token_counts(res.selection, source, k)
        return res, demand, computation_energy(demand, system)
    from dmoe.placement import node_selection

    node_costs = transmission_costs(link_rate, system)[source]
    a_exp = expert_comp_energy(system, placement)
    if avail is not None:
        a_exp = mask_costs(np.broadcast_to(a_exp, avail.shape), avail)
    res = select_experts(scores, a_exp, thr, d, placement=placement, node_costs=node_costs, method=method)
    demand = link_token_counts(node_selection(res.selection, placement, k), source, k)
    return res, demand, node_computation_energy(res.selection, placement, system)


def jesa(
    scores,
    source,
    rates,
    threshold,
    max_experts,
    *,
    system,
    max_iterations: int = 20,
    rng=None,
    method: str = "auto",
    init: str = "random",
    placement=None,
    available=None,
    deadline_s=None,
) -> JESAResult:
    """JESA: block coordinate descent for P2 (Algorithm 2, Section VI-B).

    Args:
        scores: ``[num_tokens, num_experts], float64`` gating scores (eq 7).
        source: ``[num_tokens], int`` node holding each token, in [0, K).
        rates: ``[K, K, M], float64`` r_ij^(m) [bit/s] (eq 1); diagonal ignored.
        threshold: float or ``[num_tokens]``: z gamma^(l) (C1).
        max_experts: D (C2).
        system: :class:`~dmoe.system.SystemConfig` with ``num_nodes == K`` (P0, s0, a_j,
            b_j; M comes from ``rates``).
        max_iterations: BCD iterations at most (>= 1).
        rng: Generator / int seed / None for the random initial beta.
        method: expert-selection method (see :func:`select_experts`).
        init: ``"random"`` (the paper's random assignment) or ``"assignment"`` (the optimal
            allocation for one token on every link, deterministic).
        placement: ``[num_experts], int`` node of each expert (several experts per node,
            :mod:`dmoe.placement`), or None (one expert per node, E = N). With a
            placement, ``rates`` is ``[N, N, M]`` over node pairs, ``source`` holds node ids,
            ``system.num_nodes`` = N, selection is node-aware P1(a)
            (:func:`select_experts` with ``node_costs``) and the demand of link (i, n) is the
            number of tokens from i that need node n; ``tokens`` is then ``[N, N]`` and
            ``energy_comp_experts`` is per node ``[N]``.
        available: None (all experts) or bool ``[K]`` / ``[num_tokens, K]``: experts that
            may serve this round (issue 9: failed nodes are unavailable). Unavailable
            experts cost ``+inf`` in every selection step, so each step is exact on the
            remaining experts and infeasible tokens fall back to their best remaining ones.
        deadline_s: None (the paper) or T [s] > 0, the layer round's deadline: the
            allocation step gives links several resource blocks to fit it (module doc).

    Returns:
        :class:`JESAResult`; every selected remote expert's link has a subcarrier with
        positive rate, energies are finite.

    Raises:
        ValueError / TypeError naming the argument for invalid inputs (shapes, NaN, source
        out of range, K mismatch between ``rates``, ``scores`` and ``system``, unknown
        ``method`` or ``init``).
    """
    scores, source, rates, thr, d, system, method, placement, avail = _prepare(
        scores, source, rates, threshold, max_experts, system, method, placement, available
    )
    max_iterations = check_int("max_iterations", max_iterations, minimum=1)
    if init not in _INITS:
        raise ValueError(f"`init` must be one of {', '.join(repr(i) for i in _INITS)}; got {init!r}")
    deadline_s = _check_round_deadline(deadline_s)
    k, _, m = rates.shape
    p0, bits = system.tx_power_w, system.bits_per_token
    budget = system.max_rbs_per_node
    # the resource-block step (issue 16) replaces P3(a) under a deadline or a node budget
    use_rb = deadline_s is not None or budget is not None

    # allocations already computed, by demand (and air-time budget): the allocation is a
    # function of them, so a demand seen before (e.g. the iteration that confirms convergence)
    # is not solved again
    allocated = {}

    def allocate(demand, selection):
        air = None
        if deadline_s is not None:
            air = air_time_budget(demand, deadline_s, system, load=_node_load(selection, placement, k))
        key = (demand.tobytes(), None if air is None else air.tobytes())
        if key in allocated:
            return allocated[key]
        if not use_rb:
            out = _allocate(rates, demand.astype(np.float64), p0, bits, True)
        else:
            out = allocate_resource_blocks(
                rates, demand, tx_power_w=p0, bits_per_token=bits, deadline_s=air, max_rbs_per_node=budget,
                assign_idle=True,
            )
        allocated[key] = out
        return out

    if init == "random":
        gen = as_generator(rng)
        beta = random_subcarriers(k, m, gen)
        if budget is not None:
            beta = _within_budget(beta, budget, gen)
    else:
        ones = (~np.eye(k, dtype=bool)).astype(np.float64)
        if use_rb:
            beta = allocate_resource_blocks(rates, ones, tx_power_w=p0, bits_per_token=bits, max_rbs_per_node=budget,
                                            assign_idle=True).subcarrier
        else:
            beta = allocate_subcarriers(rates, ones, tx_power_w=p0, bits_per_token=bits, assign_idle=True).subcarrier
    share = None
    select = SelectionStep(scores, source, thr, d, system, method, placement, avail)
    ii, jj = np.indices((k, k))

    prev_sel = None
    history: list[float] = []
    state = None
    iterations = 0
    stop_reason = "max_iterations"
    for it in range(1, max_iterations + 1):
        iterations = it
        # [K, K] eq (2) -> [K, K] per-token costs; a token from node i sees row i
        if share is None:
            link_rate = np.where(beta >= 0, rates[ii, jj, np.maximum(beta, 0)], 0.0)
            link_rate[ii == jj] = 0.0
        else:
            link_rate = link_rates_from_allocation(rates, beta, share)[0]
        selection, feasible, demand, comp = select(link_rate)
        res = _Selected(selection, feasible)
        alloc = allocate(demand, selection)
        if alloc.unserved.any():  # pragma: no cover - excluded by construction (module doc)
            raise RuntimeError("internal error: JESA allocation left an active link unserved")
        new_share = alloc.rb_share if use_rb and alloc.multi_rb else None
        objective = float(alloc.energy[alloc.served].sum() + comp.sum())
        if history and objective > history[-1] * (1.0 + _RISE_RTOL):
            stop_reason = "objective_increase"
            iterations = it - 1
            break
        fixed = (
            prev_sel is not None
            and np.array_equal(res.selection, prev_sel)
            and np.array_equal(alloc.subcarrier, beta)
            and _same_share(new_share, share)
        )
        state = (res, alloc, demand, comp)
        history.append(objective)
        prev_sel = res.selection
        beta = alloc.subcarrier
        share = new_share
        if fixed:
            stop_reason = "converged"
            break

    res, alloc, demand, comp = state
    comm_links = np.where(alloc.served, alloc.energy, 0.0)
    rb_info = None
    if use_rb:
        rb_info = {
            "late_links": alloc.num_late,
            "deadline_stretch": alloc.deadline_stretch,
            "gap": alloc.gap,
            "method": alloc.method,
            "multi_rb_links": int(np.count_nonzero(alloc.num_rbs > 1)),
            "rbs_used": int(np.count_nonzero(alloc.rb_share.sum(axis=(0, 1)) > 0)),
        }
    return JESAResult(
        selection=res.selection,
        subcarrier=alloc.subcarrier,
        link_rate=alloc.link_rate,
        tokens=demand,
        energy_comm=float(comm_links.sum()),
        energy_comm_links=comm_links,
        energy_comp=float(comp.sum()),
        energy_comp_experts=comp,
        iterations=iterations,
        converged=stop_reason == "converged",
        stop_reason=stop_reason,
        feasible=res.feasible,
        energy_history=history,
        threshold=thr,
        rb_share=alloc.rb_share if use_rb and alloc.multi_rb else None,
        rb_info=rb_info,
    )


@dataclass(frozen=True)
class _Selected:
    """A selection step's outcome as JESA keeps it (``[T, E]`` bool, ``[T]`` bool)."""

    selection: np.ndarray
    feasible: np.ndarray


def _check_round_deadline(deadline_s):
    """None or a finite number > 0 [s] (the layer round's deadline T)."""
    if deadline_s is None:
        return None
    if isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float, np.integer, np.floating)):
        raise ValueError(f"`deadline_s` must be a number [s] or None, got {deadline_s!r}")
    value = float(deadline_s)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`deadline_s` must be a finite number > 0 [s], got {deadline_s!r}")
    return value


def _node_load(selection, placement, num_nodes):
    """``[N]`` FFN work per node for the latency model (None: s_ij sums, one expert per node)."""
    if placement is None:
        return None
    calls = np.asarray(selection, dtype=bool).sum(axis=0).astype(np.float64)
    return np.bincount(placement, weights=calls, minlength=num_nodes) * (num_nodes / placement.shape[0])


def _same_share(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def _within_budget(beta: np.ndarray, budget: int, gen: np.random.Generator) -> np.ndarray:
    """Algorithm 2's random beta with at most ``budget`` links per node (random ones kept)."""
    beta = beta.copy()
    for i in range(beta.shape[0]):
        links = np.flatnonzero(beta[i] >= 0)
        if links.size > budget:
            beta[i, gen.permutation(links)[budget:]] = -1
    return beta


def lower_bound(
    scores, source, rates, threshold, max_experts, *, system, method: str = "auto", placement=None, available=None
) -> LowerBoundResult:
    """LB(gamma0, D) of Section VII-A: DES with C3 ignored.

    Every link uses its best subcarrier (argmax_m r_ij^(m); several links may share one),
    then DES selects experts with those costs. Its energy is a lower bound on P2 for
    tokens that are feasible (per-token costs are elementwise minimal).

    Args / Raises: as :func:`jesa` (no BCD arguments; ``placement`` and ``available`` as there).

    Returns:
        :class:`LowerBoundResult`; ``subcarrier[i, j]`` = best subcarrier of every
        off-diagonal link with some positive rate (-1 otherwise).
    """
    scores, source, rates, thr, d, system, method, placement, avail = _prepare(
        scores, source, rates, threshold, max_experts, system, method, placement, available
    )
    k = rates.shape[0]
    off = ~np.eye(k, dtype=bool)
    # [K, K] best subcarrier and its rate
    best = np.argmax(rates, axis=2)
    best_rate = np.where(off, np.max(rates, axis=2), 0.0)
    subcarrier = np.where(off & (best_rate > 0), best, -1).astype(np.int64)
    best_rate = np.where(subcarrier >= 0, best_rate, 0.0)
    res, demand, comp = _select(scores, source, best_rate, thr, d, system, method, placement, avail)
    loaded = off & (demand > 0)
    with np.errstate(divide="ignore"):
        comm_links = np.where(
            loaded, system.tx_power_w * system.bits_per_token * demand / np.where(loaded, best_rate, 1.0), 0.0
        )
    return LowerBoundResult(
        selection=res.selection,
        subcarrier=subcarrier,
        link_rate=best_rate,
        tokens=demand,
        energy_comm=float(comm_links.sum()),
        energy_comm_links=comm_links,
        energy_comp=float(comp.sum()),
        energy_comp_experts=comp,
        feasible=res.feasible,
        threshold=thr,
    )
