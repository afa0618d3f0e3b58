"""Expert selection, problem P1(a) (paper Section V), batched over tokens.

For each token: choose experts S, |S| <= D (C2), sum_{j in S} g_j >= z gamma^(l) (C1),
minimising sum_{j in S} e_j. Three exact methods return the same canonical optimal
selection (below), hence the same energy:
``"des"`` (Algorithm 1, depth-first branch and bound; numba-compiled when numba imports,
see :mod:`dmoe.optimize._des`; without a node or time limit the compiled
:mod:`dmoe.optimize._des_fast` first drops the experts an LP bound excludes, then
enumerates or searches), ``"enumerate"`` (vectorised brute force, K <= 16) and
``"milp"`` (HiGHS reference); ``"auto"`` picks the fastest exact one. Timings:
docs/performance.md.

Conventions shared by all methods (decided here, relied on by tests):

* C1 tolerance: a subset is feasible iff ``sum(scores) >= threshold - SCORE_TOL`` with the
  single constant :data:`SCORE_TOL` = 1e-9, the sum correctly rounded (``math.fsum``;
  order-free, so every method and both DES builds decide C1 identically). Hence
  thresholds <= SCORE_TOL (in particular <= 0) give the empty selection with energy 0,
  feasible.
* Canonical optimum (:mod:`dmoe.optimize._ties`): among the feasible selections, the
  least energy E; among equal E, the largest score sum G; among equal (E, G), the one
  that holds the smallest expert index where they differ. E and G are compared exactly,
  as real-number sums of the float64 inputs (order-free; no tolerance: one would not be
  transitive). Every method (``des`` compiled or pure Python, ``enumerate``,
  ``milp``, ``auto``) returns exactly this selection, bit for bit.
* Eligible experts: score > 0 and finite cost. ``+inf`` cost = unavailable (e.g. a link
  without subcarrier): never selected. Zero-score experts are never selected either
  (they cannot help C1 and cost >= 0; dominance).
* Remark 2: a token is infeasible iff the Top-D eligible scores sum to less than
  ``threshold - SCORE_TOL``; it then gets its Top-D *eligible* experts by score (ties:
  lower cost, then lower index; the same order Top-k uses, score then index), so its
  energy stays finite. It may have fewer than D
  experts if fewer are eligible (possibly none).
* ``energy`` is always recomputed as the sum of the selected costs in expert-index order.

Node-aware P1(a) (several experts per node, issue 12): with ``placement`` (node of each
expert) and ``node_costs`` (transmission energy to each node), ``costs`` are the
computation energies a_j and a selection S costs
``sum_{n in nodes(S)} node_costs[n] + sum_{j in S} costs[j]``: one transmission serves
every selected expert of a node. Methods: ``"des"`` (with numba and no limit, a search
over how many experts each node gives, :mod:`dmoe.optimize._node_fast`, for the tokens
whose nodes' experts cost the same, as :func:`dmoe.energy.expert_comp_energy` makes them;
the node-aware branch and bound :mod:`dmoe.optimize._node_des` for the others),
``"enumerate"`` and ``"milp"`` (oracles). "des" and
"enumerate" return the canonical optimum in the order of :mod:`dmoe.optimize._ties`
(smaller energy, then larger score sum, then the expert-index rule: at the smallest index
where two selections differ, the one containing it comes first), with one documented
difference: the node-aware kernel and its enumeration oracle compare E and G as correctly
rounded sums (``math.fsum``) rather than exact real sums, so two selections whose
different exact sums round to the same float64 are ordered by the next rule (both
methods apply this same rule, so they agree). HiGHS returns *an* optimum, so "milp"
agrees on the energy. Eligibility adds: the expert's node has a finite
cost. Remark 2 ranks ties by the stand-alone cost ``costs[j] + node_costs[node[j]]``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from dmoe.optimize import _des, _des_fast, _enumerate, _milp, _node_des, _node_fast
from dmoe.optimize._validation import (
    SELECTION_METHODS,
    check_available,
    check_costs,
    check_int,
    check_method,
    check_node_costs,
    check_node_limit,
    check_positive,
    check_scores,
    check_threshold,
    mask_costs,
)

__all__ = ["SCORE_TOL", "SelectionResult", "node_energy", "select_experts", "top_d_fallback"]

#: Tolerance of C1 used by every method: feasible iff sum(scores) >= threshold - SCORE_TOL.
SCORE_TOL = 1e-9
_SCORE_TOL = SCORE_TOL

# "auto" without numba: enumerate while the number of subsets with <= D members is at most
# this (the Python DES is slower per token than the vectorised enumeration below it).
# With numba the compiled DES is at least as fast as enumeration for every K and D
# (benchmarks/bench_selection.py, section 5; docs/performance.md), so "auto" is DES.
_AUTO_MAX_SUBSETS = 2048

_STOP_NAMES = ("optimal", "node_limit", "time_limit")


@dataclass(frozen=True)
class SelectionResult:
    """Result of :func:`select_experts`.

    Attributes:
        selection: ``[num_tokens, num_experts], bool`` alpha (selected experts).
        energy: ``[num_tokens], float64`` [J] sum of the selected costs (finite).
        feasible: ``[num_tokens], bool``; False where C1 and C2 cannot both hold with the
            eligible experts (Remark 2 fallback returned).
        method: the method that ran (``"des"``, ``"enumerate"`` or ``"milp"``; ``"auto"``
            resolves to one of them).
        optimal: ``[num_tokens], bool``; False only where DES stopped at ``node_limit`` or
            ``time_limit`` before proving optimality (then ``selection`` is the best feasible
            selection found and ``gap`` >= 0 bounds its excess). Infeasible tokens count as
            optimal (their fallback is fixed by Remark 2).
        gap: ``[num_tokens], float64`` [J] energy minus a proven lower bound (0 when optimal).
        nodes: ``[num_tokens], int64`` B&B nodes visited (DES only, else None; 0 for tokens
            that needed no search).
        stop: ``[num_tokens], int8`` why the search of each token ended: 0 finished,
            1 ``node_limit``, 2 ``time_limit`` (DES only, else None).
    """

    selection: np.ndarray
    energy: np.ndarray
    feasible: np.ndarray
    method: str
    optimal: np.ndarray
    gap: np.ndarray
    nodes: np.ndarray | None = None
    stop: np.ndarray | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.selection.shape[0])

    @property
    def status(self) -> np.ndarray:
        """``[num_tokens]`` str: "optimal", "infeasible" (Remark 2 fallback), "node_limit"
        or "time_limit" (stopped early: best feasible selection found, see ``gap``)."""
        out = np.full(self.num_tokens, "optimal", dtype=object)
        out[~self.feasible] = "infeasible"
        stopped = ~self.optimal
        if stopped.any():
            codes = self.stop if self.stop is not None else np.ones(self.num_tokens, dtype=np.int8)
            out[stopped] = np.asarray(_STOP_NAMES, dtype=object)[np.maximum(codes[stopped], 1)]
        return out


def top_d_fallback(scores: np.ndarray, costs: np.ndarray, eligible: np.ndarray, max_experts: int):
    """Top-D eligible experts by score per token (Remark 2) and their cumulative score sums.

    Args:
        scores, costs: ``[T, K], float64``; eligible: ``[T, K], bool``; max_experts: D <= K.

    Returns:
        (order ``[T, D] int`` experts by descending score (ties: lower cost, lower index),
        valid ``[T, D] bool`` (eligible), csum ``[T, D] float64`` cumulative score over the
        valid prefix).
    """
    s_key = np.where(eligible, scores, -1.0)
    c_key = np.where(eligible, costs, np.inf)
    # [T, K] lexicographic: -score primary, cost secondary, index last (stable)
    order = np.lexsort((c_key, -s_key), axis=-1)[:, :max_experts]
    valid = np.take_along_axis(eligible, order, axis=1)
    top_scores = np.where(valid, np.take_along_axis(scores, order, axis=1), 0.0)
    return order, valid, np.cumsum(top_scores, axis=1)


def _top_d_into(selection, rows, order, valid) -> None:
    """Remark 2: the tokens of bool mask ``rows`` (``[T]``) take their Top-D eligible
    experts (``order``/``valid`` of :func:`top_d_fallback`), written into ``selection``."""
    bad = np.flatnonzero(rows)
    if bad.size:
        fb = np.zeros((bad.size, selection.shape[1]), dtype=bool)
        np.put_along_axis(fb, order[bad], valid[bad], axis=1)
        selection[bad] = fb


def _greedy_prefix(order, valid, csum, thr, num_experts: int) -> np.ndarray:
    """``[W, K] bool`` the shortest Top-score prefix reaching ``thr`` (``[W]``) per token:
    a feasible incumbent for every feasible token (``order``, ``valid``, ``csum``:
    :func:`top_d_fallback`'s rows of these tokens)."""
    reach = (csum >= thr[:, None]) & valid
    first = np.argmax(reach, axis=1)
    prefix = np.arange(order.shape[1])[None, :] <= first[:, None]
    greedy = np.zeros((order.shape[0], num_experts), dtype=bool)
    np.put_along_axis(greedy, order, prefix & valid, axis=1)
    return greedy


def _top_sum_exact(scores, order, valid, csum, thr_eff):
    """``[T]`` the Top-D eligible score sums, correctly rounded (``math.fsum``) where the
    naive cumulative sum is within rounding of ``thr_eff`` (C1 is decided exactly, as in
    every method; see :mod:`dmoe.optimize._ties`)."""
    top = csum[:, -1].copy()
    near = np.abs(top - thr_eff) <= 1e-12 * (np.abs(thr_eff) + top)
    for r in np.flatnonzero(near):
        top[r] = math.fsum(scores[r, order[r][valid[r]]].tolist())
    return top


def _resolve_auto(num_experts: int, max_experts: int) -> str:
    if _des.numba_enabled():
        return "des"
    if num_experts > _enumerate.MAX_EXPERTS:
        return "des"
    subsets = sum(math.comb(num_experts, size) for size in range(1, max_experts + 1))
    return "enumerate" if subsets <= _AUTO_MAX_SUBSETS else "des"


def select_experts(
    scores,
    costs,
    threshold,
    max_experts,
    *,
    placement=None,
    node_costs=None,
    method: str = "auto",
    node_limit: int | None = None,
    time_limit: float | None = None,
    available=None,
) -> SelectionResult:
    """Solve P1(a) for every token: min-energy experts meeting the QoS (Section V, Algorithm 1).

    Every method returns the **canonical optimal selection** of each feasible token: the
    feasible selection with (1) the least energy E = sum of its costs, then (2) the largest
    score sum G, then (3) at the smallest expert index where two candidates differ, the
    one holding that expert. E and G are compared exactly as real-number sums of the
    inputs (order-free, no tolerance). This makes the answer
    identical across methods and with or without numba (tests/test_edges.py,
    tests/test_properties.py, tests/test_determinism.py).

    Args:
        scores: ``[num_tokens, num_experts], float64`` gating scores g_j (eq 7), >= 0, finite.
        costs: ``[num_tokens, num_experts]`` or ``[num_experts]``, float64 energies e_j [J]
            >= 0; ``+inf`` = expert unavailable for that token (never selected). With
            ``placement``: the computation energy a_j [J] of expert j on the token only.
        threshold: float or ``[num_tokens]``: the QoS requirement z gamma^(l) of C1.
        max_experts: D >= 1 (C2); D > num_experts is clipped to num_experts.
        placement: ``[num_experts], int`` node n(j) in [0, num_nodes) of every expert
            (:mod:`dmoe.placement`), or None (one expert per node: the paper's P1(a)).
            Needs ``node_costs``.
        node_costs: ``[num_tokens, num_nodes]`` or ``[num_nodes]``, float64 [J] >= 0:
            energy of sending the token's hidden state to node n once (0 for the token's
            own node; ``+inf`` = unreachable). Only with ``placement``.
        method: all return the canonical optimum. ``"auto"`` (the fastest exact method:
            compiled DES when numba is available;
            without numba, enumerate when K <= 16 and there are at most 2048 subsets of
            <= D experts, DES otherwise), ``"des"`` (Algorithm 1 depth first, with its LP
            bound made C2-aware and dominance pruning; see :mod:`dmoe.optimize._des`),
            ``"enumerate"`` (K <= 16) or ``"milp"`` (scipy/HiGHS, one scaled MILP per token,
            its rounded solution verified against C1/C2 and HiGHS's dual bound, then
            polished to the canonical optimum by the exact search; see
            :mod:`dmoe.optimize._milp`).
        node_limit: DES nodes per token (None = unlimited).
        time_limit: DES wall-clock budget [s] for the whole call (None = unlimited). The
            token being searched when it runs out stops with its best feasible selection;
            tokens not reached keep their greedy incumbent. Tokens stopped by a limit are
            not guaranteed canonical.
            Tokens stopped by either limit report ``optimal=False``, a ``gap`` (energy minus
            a proven lower bound) and ``status`` "node_limit" / "time_limit". Both limits
            are ignored by "enumerate" and "milp" (exact oracles).
        available: None (every expert), or bool ``[num_experts]`` / ``[num_tokens,
            num_experts]``: experts that may serve (e.g. nodes still alive, issue 9).
            An unavailable expert is handled as cost ``+inf``: never selected; the
            optimum is exact over the remaining experts and Remark 2's fallback takes the
            best remaining ones.

    Returns:
        :class:`SelectionResult` (see there; Remark 2 fallback for infeasible tokens).

    Raises:
        ValueError / TypeError (:class:`~dmoe.optimize._validation.ArgumentTypeError` is
        both) naming the argument: non-2-D/NaN/inf/negative ``scores``; wrong shape, NaN or
        negative ``costs``; NaN/inf or mis-shaped ``threshold``; non-integer or < 1
        ``max_experts``; unknown ``method``; ``enumerate`` with more than 16 experts; bad
        ``node_limit`` or ``time_limit``; ``placement`` without ``node_costs`` (or the
        reverse), a ``placement`` that is not ``[num_experts]``, leaves a node empty, puts an
        expert outside ``[0, num_nodes)``; bad ``node_costs``; non-bool or mis-shaped
        ``available``. All checks run before any solver.
    """
    if time_limit is not None:
        _des.warm_clock()  # once per process, not charged to the budget
        start = time.perf_counter()
    scores = check_scores(scores)
    num_tokens, num_experts = scores.shape
    costs = mask_costs(check_costs(costs, num_tokens, num_experts), check_available(available, num_tokens, num_experts))
    thr = check_threshold(threshold, num_tokens)
    d = min(check_int("max_experts", max_experts, minimum=1), num_experts)
    method = check_method(method, SELECTION_METHODS)
    node_limit = check_node_limit(node_limit)
    deadline = 0.0 if time_limit is None else start + check_positive("time_limit", time_limit)
    if method == "enumerate" and num_experts > _enumerate.MAX_EXPERTS:
        raise ValueError(
            f"`method`='enumerate' supports at most {_enumerate.MAX_EXPERTS} experts, got {num_experts}; "
            "use 'des' or 'milp'"
        )
    if (placement is None) != (node_costs is None):
        raise ValueError("`placement` and `node_costs` go together: give both (node-aware P1(a)) or neither")
    if placement is not None:
        from dmoe.placement import check_placement

        ncost = check_node_costs(node_costs, num_tokens)
        try:
            place = check_placement(placement, ncost.shape[1], num_experts=num_experts)
        except ValueError as exc:
            raise ValueError(f"{exc} (N = {ncost.shape[1]} nodes from the columns of `node_costs`)") from None
        if place.ndim != 1:
            raise ValueError(f"`placement` must be [num_experts] = [{num_experts}] here (one layer), got {place.shape}")
        return _solve(scores, costs, thr, d, method, placement=place, node_costs=ncost, node_limit=node_limit,
                               deadline=deadline)
    return _solve(scores, costs, thr, d, method, node_limit=node_limit, deadline=deadline)


def _solve(scores, costs, thr, d, method, *, placement=None, node_costs=None, node_limit=None,
                    deadline=0.0) -> SelectionResult:
    """:func:`select_experts` on inputs it has validated (callers that validated once at
    their edge, e.g. JESA's iterations, call this): ``scores`` ``[T, E] float64``;
    ``costs`` ``[T, E] float64`` (available experts already masked to ``+inf``);
    ``thr`` ``[T] float64``; ``d`` in [1, E]; ``method`` one of
    :data:`~dmoe.optimize._validation.SELECTION_METHODS`; ``placement`` ``[E] int64``
    and ``node_costs`` ``[T, N] float64`` together or neither; ``deadline`` an absolute
    ``time.perf_counter()`` value or 0 (none). Same result as :func:`select_experts`."""
    num_tokens, num_experts = scores.shape
    if placement is not None:
        resolved = "des" if method == "auto" else method
        return _select_node_aware(scores, costs, placement, node_costs, thr, d, resolved, node_limit, deadline)
    resolved = _resolve_auto(num_experts, d) if method == "auto" else method

    if resolved == "des" and _des.numba_enabled():
        # the whole pipeline (classification, Remark 2, incumbents, search) is compiled
        try:
            if node_limit is None and not deadline and _des.DEFAULT_VARIANT == "canonical":
                # no limit: reduction + enumeration / search (same canonical optimum, faster)
                selection, energy, feasible, nodes = _des_fast.run(scores, costs, thr, d, SCORE_TOL)
                return SelectionResult(
                    selection, energy, feasible, resolved, np.ones(num_tokens, dtype=bool), np.zeros(num_tokens),
                    nodes, np.zeros(num_tokens, dtype=np.int8),
                )
            thr_eff = thr - SCORE_TOL
            selection, feasible, nodes, stop, lower = _des.run_compiled(
                scores, costs, thr_eff, d, node_limit, deadline, _des.DEFAULT_VARIANT
            )
        except Exception as exc:  # a numba that cannot compile the kernels: same search in Python
            if not type(exc).__module__.startswith("numba"):
                raise
            warnings.warn(
                f"numba could not compile DES ({type(exc).__name__}); using the Python search",
                RuntimeWarning,
                stacklevel=2,
            )
            _des.USE_NUMBA = False
        else:
            energy = np.where(selection, costs, 0.0).sum(axis=1)
            optimal = stop == 0
            gap = np.where(optimal, 0.0, np.maximum(energy - lower, 0.0))
            return SelectionResult(selection, energy, feasible, resolved, optimal, gap, nodes, stop)

    thr_eff = thr - SCORE_TOL
    selection = np.zeros((num_tokens, num_experts), dtype=bool)
    feasible = np.ones(num_tokens, dtype=bool)
    optimal = np.ones(num_tokens, dtype=bool)
    gap = np.zeros(num_tokens)
    nodes = np.zeros(num_tokens, dtype=np.int64) if resolved == "des" else None
    stop = np.zeros(num_tokens, dtype=np.int8) if resolved == "des" else None
    if num_tokens == 0:
        return SelectionResult(selection, np.zeros(0), feasible, resolved, optimal, gap, nodes, stop)

    # [T, K] experts that may be selected at all
    eligible = (scores > 0) & np.isfinite(costs)
    trivial = thr_eff <= 0
    order, valid, csum = top_d_fallback(scores, costs, eligible, d)
    feasible = trivial | (_top_sum_exact(scores, order, valid, csum, thr_eff) >= thr_eff)

    _top_d_into(selection, ~feasible, order, valid)

    work = np.flatnonzero(feasible & ~trivial)
    if work.size:
        w_scores = scores[work]
        w_costs = np.ascontiguousarray(costs[work])
        w_elig = eligible[work]
        w_thr = thr_eff[work]
        greedy = _greedy_prefix(order[work], valid[work], csum[work], w_thr, num_experts)

        if resolved == "des":
            sel, n_nodes, w_stop, lower = _des.solve(
                w_scores, w_costs, w_elig, w_thr, d, greedy, node_limit, deadline=deadline
            )
            nodes[work] = n_nodes
            stop[work] = w_stop
            opt = w_stop == 0
            optimal[work] = opt
            w_energy = np.where(sel, w_costs, 0.0).sum(axis=1)
            gap[work] = np.where(opt, 0.0, np.maximum(w_energy - lower, 0.0))
        else:
            if resolved == "enumerate":
                sel, found = _enumerate.solve(w_scores, w_costs, w_elig, w_thr, d)
            else:
                sel, found, _ = _milp.solve(w_scores, w_costs, w_elig, w_thr, d)
            # floating-point borderline (Top-D sum meets C1 but no subset did): use greedy
            sel[~found] = greedy[~found]
        selection[work] = sel

    energy = np.where(selection, costs, 0.0).sum(axis=1)
    return SelectionResult(selection, energy, feasible, resolved, optimal, gap, nodes, stop)


def node_energy(selection: np.ndarray, costs: np.ndarray, placement: np.ndarray, node_costs: np.ndarray) -> np.ndarray:
    """Energy of node-aware selections: ``[num_tokens]`` [J] = sum of the selected ``costs``
    plus ``node_costs`` of every node holding a selected expert (each node once).

    Args: selection ``[T, E] bool``; costs ``[T, E]``; placement ``[E]``; node_costs ``[T, N]``.
    """
    from dmoe.placement import node_selection

    used = node_selection(selection, placement, node_costs.shape[1])
    return np.where(selection, costs, 0.0).sum(axis=1) + np.where(used, node_costs, 0.0).sum(axis=1)


def _select_node_aware(scores, costs, placement, ncost, thr, d, resolved, node_limit, deadline) -> SelectionResult:
    """Node-aware P1(a) (validated inputs; see :func:`select_experts`).

    With numba and no limit, DES runs :mod:`dmoe.optimize._node_fast` (a search over how
    many experts each node gives) on the tokens whose nodes' experts cost the same, and
    :mod:`dmoe.optimize._node_des` on the others; both return the canonical optimum."""
    num_tokens = scores.shape[0]
    if resolved == "des" and node_limit is None and not deadline and num_tokens and _des.numba_enabled():
        try:
            sel, energy, feasible, nodes, general = _node_fast.run(scores, costs, placement, ncost, thr, d, SCORE_TOL)
        except Exception as exc:  # a numba that cannot compile the kernels: the general search
            if not type(exc).__module__.startswith("numba"):
                raise
            warnings.warn(
                f"numba could not compile node-aware DES ({type(exc).__name__}); using the general search",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            rows = np.flatnonzero(general)
            if rows.size:
                sub = _select_node_general(scores[rows], costs[rows], placement, ncost[rows], thr[rows] - SCORE_TOL, d,
                                           resolved, node_limit, deadline)
                sel[rows] = sub.selection
                energy[rows] = sub.energy
                feasible[rows] = sub.feasible
                nodes[rows] = sub.nodes
            return SelectionResult(sel, energy, feasible, resolved, np.ones(num_tokens, dtype=bool),
                                   np.zeros(num_tokens), nodes, np.zeros(num_tokens, dtype=np.int8))
    return _select_node_general(scores, costs, placement, ncost, thr - SCORE_TOL, d, resolved, node_limit, deadline)


def _select_node_general(scores, costs, placement, ncost, thr_eff, d, resolved, node_limit, deadline) -> SelectionResult:
    """Node-aware P1(a) by :mod:`dmoe.optimize._node_des` or an oracle (validated inputs)."""
    num_tokens, num_experts = scores.shape
    selection = np.zeros((num_tokens, num_experts), dtype=bool)
    optimal = np.ones(num_tokens, dtype=bool)
    gap = np.zeros(num_tokens)
    nodes = np.zeros(num_tokens, dtype=np.int64) if resolved == "des" else None
    stop = np.zeros(num_tokens, dtype=np.int8) if resolved == "des" else None
    # [T, E] transmission energy of each expert's node, stand-alone cost of each expert
    ecost = ncost[:, placement]
    eligible = (scores > 0) & np.isfinite(costs) & np.isfinite(ecost)
    trivial = thr_eff <= 0
    order, valid, csum = top_d_fallback(scores, costs + ecost, eligible, d) if num_tokens else (None, None, None)
    if num_tokens == 0:
        return SelectionResult(selection, np.zeros(0), np.ones(0, dtype=bool), resolved, optimal, gap, nodes, stop)
    feasible = trivial | (csum[:, -1] >= thr_eff)
    _top_d_into(selection, ~feasible, order, valid)
    work = np.flatnonzero(feasible & ~trivial)
    if work.size:
        w_thr = thr_eff[work]
        greedy = _greedy_prefix(order[work], valid[work], csum[work], w_thr, num_experts)
        w_scores = np.where(eligible[work], scores[work], 0.0)
        if resolved == "des":
            sel, n_nodes, w_stop, lower = _node_des.run(
                w_scores, costs[work], placement, ncost[work], w_thr, d, greedy, node_limit, deadline,
                use_numba=_des.USE_NUMBA,
            )
            nodes[work] = n_nodes
            stop[work] = w_stop
            opt = w_stop == 0
            optimal[work] = opt
            w_energy = node_energy(sel, costs[work], placement, ncost[work])
            gap[work] = np.where(opt, 0.0, np.maximum(w_energy - lower, 0.0))
        elif resolved == "enumerate":
            sel, found = _enumerate.solve_nodes(w_scores, costs[work], ncost[work], placement, eligible[work], w_thr, d)
            sel[~found] = greedy[~found]
        else:
            sel, found = _milp.solve_nodes(w_scores, costs[work], ncost[work], placement, eligible[work], w_thr, d)
            sel[~found] = greedy[~found]
        selection[work] = sel
    energy = node_energy(selection, costs, placement, ncost)
    return SelectionResult(selection, energy, feasible, resolved, optimal, gap, nodes, stop)
