"""One shared invariant checker for every solver result (used by all solver tests).

Each ``check_*`` function raises :class:`InvariantError` (an ``AssertionError``) with a
message saying which invariant broke, and returns ``None`` otherwise. Invariants:

* contract shapes and dtypes of the result objects;
* C1 (sum of selected scores >= threshold - SCORE_TOL) for tokens reported feasible;
* C2 (at most D experts) for every token;
* C3 (each subcarrier / resource block serves at most one link) for exclusive schedules,
  also when a link holds several resource blocks (``rb_share``);
* resource-block allocations (:func:`check_resource_blocks`): shares, per-node budget,
  the optimal bit split of each link over its RBs, air times, deadlines, the bound;
* only eligible experts are selected (finite cost, score > 0); ``feasible`` is False
  exactly where the Top-D eligible scores miss the threshold, and those tokens carry the
  Top-D eligible experts (Remark 2);
* every selected remote expert's link has a subcarrier with positive rate;
* reported energies equal the energies recomputed from the definitions (eq 3, 4).

:func:`check_schedule_output` applies the schedule invariants to what a policy returns at
run time (the runtime calls it through :func:`dmoe.policies.check_policy_schedule` on every
layer round) and raises :class:`InfeasibleScheduleError` naming the policy and the layer.
"""

from __future__ import annotations

import math

import numpy as np

from dmoe.optimize.selection import SCORE_TOL

__all__ = [
    "InvariantError",
    "check_selection",
    "check_subcarrier_allocation",
    "check_resource_blocks",
    "check_schedule",
    "check_schedule_output",
    "check_jesa",
    "InfeasibleScheduleError",
]

# slack for floating-point summation order when re-checking C1 / feasibility
_SUM_SLACK = 1e-12
_ENERGY_RTOL = 1e-9


class InvariantError(AssertionError):
    """A solver result violates a contract invariant."""


class InfeasibleScheduleError(InvariantError, ValueError):
    """A policy returned a schedule that breaks C1, C2, C3, the link-rate rule or the
    :class:`~dmoe.policies.base.Schedule` contract (also a ValueError, as a bad result of
    user code)."""


def _require(cond, message: str) -> None:
    if not bool(cond):
        raise InvariantError(message)


def _rows(mask: np.ndarray, limit: int = 5) -> list:
    return np.flatnonzero(mask)[:limit].tolist()


def check_selection(result, scores, costs, threshold, max_experts, *, optimal_energy=None) -> None:
    """Check a :class:`~dmoe.optimize.selection.SelectionResult` against its inputs.

    Args:
        result: the result of ``select_experts(scores, costs, threshold, max_experts)``.
        scores: ``[T, K]``; costs: ``[T, K]`` or ``[K]``; threshold: scalar or ``[T]``;
        max_experts: D.
        optimal_energy: optional ``[T]`` reference optimum (e.g. from another method):
            feasible tokens must match it within 1e-9 relative.
    """
    scores = np.asarray(scores, dtype=np.float64)
    t, k = scores.shape
    costs = np.broadcast_to(np.asarray(costs, dtype=np.float64), (t, k))
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (t,))
    d = min(int(max_experts), k)
    sel = result.selection
    _require(isinstance(sel, np.ndarray) and sel.dtype == bool, "selection must be a bool ndarray")
    _require(sel.shape == (t, k), f"selection shape {sel.shape} != {(t, k)}")
    for name in ("energy", "feasible", "optimal", "gap"):
        arr = getattr(result, name)
        _require(isinstance(arr, np.ndarray) and arr.shape == (t,), f"{name} must be an ndarray of shape {(t,)}")
    _require(result.feasible.dtype == bool, "feasible must be bool")
    _require(result.energy.dtype == np.float64, "energy must be float64")
    _require(isinstance(result.method, str) and result.method in ("des", "enumerate", "milp"), "method name")
    if result.nodes is not None:
        _require(result.nodes.shape == (t,) and np.issubdtype(result.nodes.dtype, np.integer), "nodes [T] int")
    if t == 0:
        return

    eligible = (scores > 0) & np.isfinite(costs)
    _require(not (sel & ~np.isfinite(costs)).any(), f"unavailable (inf-cost) expert selected in rows {_rows((sel & ~np.isfinite(costs)).any(1))}")
    _require(not (sel & (scores <= 0)).any(), "zero-score expert selected")
    count = sel.sum(axis=1)
    _require((count <= d).all(), f"C2 violated (more than D={d} experts) in rows {_rows(count > d)}")

    energy = np.where(sel, costs, 0.0).sum(axis=1)
    _require(np.isfinite(result.energy).all(), "energy must be finite")
    _require(
        np.allclose(result.energy, energy, rtol=1e-12, atol=0.0), "energy differs from the sum of selected costs"
    )

    # Top-D eligible score sum decides feasibility (Remark 2); C1 is decided with correctly
    # rounded sums (math.fsum), the definition every method uses (dmoe.optimize._ties)
    top_vals = np.sort(np.where(eligible, scores, 0.0), axis=1)[:, ::-1][:, :d]
    top = np.array([math.fsum(row.tolist()) for row in top_vals])
    need = thr - SCORE_TOL
    trivial = need <= 0
    clearly_ok = trivial | (top >= need)
    clearly_bad = ~trivial & (top < need)
    fe = result.feasible
    _require(fe[clearly_ok].all(), f"token reported infeasible although Top-D meets C1: rows {_rows(clearly_ok & ~fe)}")
    _require(not fe[clearly_bad].any(), f"token reported feasible although Top-D misses C1: rows {_rows(clearly_bad & fe)}")

    got = np.array([math.fsum(scores[i, sel[i]].tolist()) for i in range(t)])
    c1 = got >= need
    _require(c1[fe].all(), f"C1 violated for feasible tokens in rows {_rows(fe & ~c1)}")
    _require(not sel[fe & trivial].any(), "threshold <= SCORE_TOL must give the empty selection")

    inf_rows = ~fe
    if inf_rows.any():
        n_elig = eligible.sum(axis=1)
        _require(
            (count[inf_rows] == np.minimum(d, n_elig[inf_rows])).all(),
            "infeasible tokens must carry min(D, #eligible) experts (Remark 2)",
        )
        _require(
            np.allclose(got[inf_rows], top[inf_rows], rtol=1e-12, atol=0),
            "infeasible tokens must carry the Top-D eligible experts by score (Remark 2)",
        )

    _require((result.gap >= 0).all() and np.isfinite(result.gap).all(), "gap must be finite and >= 0")
    _require((result.gap[result.optimal] == 0).all(), "optimal tokens must have gap 0")

    if optimal_energy is not None:
        ref = np.asarray(optimal_energy, dtype=np.float64)
        mask = fe & result.optimal
        _require(
            np.allclose(result.energy[mask], ref[mask], rtol=_ENERGY_RTOL, atol=1e-300),
            f"energy not optimal: max rel diff "
            f"{np.max(np.abs(result.energy[mask] - ref[mask]) / np.maximum(np.abs(ref[mask]), 1e-300), initial=0):.3g}",
        )


def check_subcarrier_allocation(result, rates, demand, *, tx_power_w, bits_per_token, assign_idle=False) -> None:
    """Check a :class:`~dmoe.optimize.subcarrier.SubcarrierResult` (C3, shapes, energies)."""
    rates = np.asarray(rates, dtype=np.float64)
    k, _, m = rates.shape
    demand = np.asarray(demand, dtype=np.float64)
    off = ~np.eye(k, dtype=bool)
    active = off & (demand > 0)
    sub = result.subcarrier
    _require(sub.shape == (k, k) and np.issubdtype(sub.dtype, np.integer), "subcarrier must be int [K, K]")
    _require(((sub >= -1) & (sub < m)).all(), "subcarrier index out of range")
    _require((np.diag(sub) == -1).all(), "diagonal links must have no subcarrier")
    used = sub[sub >= 0]
    _require(np.unique(used).size == used.size, "C3 violated: a subcarrier serves more than one link")
    for name in ("served", "unserved"):
        arr = getattr(result, name)
        _require(arr.shape == (k, k) and arr.dtype == bool, f"{name} must be bool [K, K]")
    _require((result.served == (active & (sub >= 0))).all(), "served must be active links with a subcarrier")
    _require((result.unserved == (active & (sub < 0))).all(), "unserved must be active links without one")
    if not assign_idle:
        _require((sub[~active] == -1).all(), "inactive links must have no subcarrier without assign_idle")
    i, j = np.indices((k, k))
    rate = np.where(sub >= 0, rates[i, j, np.maximum(sub, 0)], 0.0)
    _require(np.allclose(result.link_rate, rate, rtol=0, atol=0), "link_rate must be the assigned subcarrier's rate")
    _require((rate[sub >= 0] > 0).all(), "a zero-rate subcarrier was assigned")
    expected = np.zeros((k, k))
    served = result.served
    expected[served] = tx_power_w * bits_per_token * demand[served] / rate[served]
    expected[result.unserved] = np.inf
    _require(np.array_equal(np.isinf(result.energy), result.unserved), "energy must be inf exactly on unserved links")
    fin = ~result.unserved
    _require(np.allclose(result.energy[fin], expected[fin], rtol=1e-12, atol=0), "energy mismatch (eq 3)")


def check_resource_blocks(
    result, rates, demand, *, tx_power_w, bits_per_token, deadline_s=None, max_rbs_per_node=None, assign_idle=False
) -> None:
    """Check a :class:`~dmoe.optimize.resource_blocks.ResourceBlockResult` against its inputs.

    Recomputes from the definitions (module doc of :mod:`dmoe.optimize.resource_blocks`):
    C3 and the per-node budget, shares (sum 1 on served links, only on positive-rate RBs),
    served / unserved, each served link's subcarrier (its highest-rate RB), the energy
    P0 * sum_m c_l share_m / r_m and air time max_m c_l share_m / r_m, the optimal split
    over the link's RBs (all but its slowest RB on for theta T_l, or all equally long when the
    link is late), deadline_met / lateness / stretch, and lower_bound <= energy <=
    lower_bound (1 + gap); no NaN.
    """
    from dmoe.optimize.resource_blocks import DEADLINE_RTOL

    rates = np.asarray(rates, dtype=np.float64)
    k, _, m = rates.shape
    demand = np.asarray(demand, dtype=np.float64)
    off = ~np.eye(k, dtype=bool)
    active = off & (demand > 0)
    if deadline_s is None:
        dl = np.full((k, k), np.inf)
    else:
        dl = np.broadcast_to(np.asarray(deadline_s, dtype=np.float64), (k, k)).copy()
    np.fill_diagonal(dl, np.inf)
    own, share, sub = result.rb_owner, result.rb_share, result.subcarrier
    _require(own.shape == (m,) and np.issubdtype(own.dtype, np.integer), "rb_owner must be int [M]")
    _require(share.shape == (k, k, m) and share.dtype == np.float64, "rb_share must be float64 [K, K, M]")
    _require(sub.shape == (k, k) and np.issubdtype(sub.dtype, np.integer), "subcarrier must be int [K, K]")
    for name in ("energy", "airtime", "link_rate", "time_rate", "deadline_s", "lateness_s"):
        arr = getattr(result, name)
        _require(arr.shape == (k, k) and arr.dtype == np.float64, f"{name} must be float64 [K, K]")
        _require(not np.isnan(arr).any(), f"{name} must not contain NaN")
    for name in ("served", "unserved", "deadline_met"):
        arr = getattr(result, name)
        _require(arr.shape == (k, k) and arr.dtype == bool, f"{name} must be bool [K, K]")
    _require(((own >= -1) & (own < k * k)).all(), "rb_owner out of range")
    _require(not np.isin(own, np.arange(k) * (k + 1)).any(), "an RB is owned by a diagonal link")
    _require(np.isfinite(share).all() and (share >= 0).all(), "rb_share must be finite and >= 0")
    carried = share > 0
    # C3: one link per RB, and it is the RB's owner
    _require((carried.sum(axis=(0, 1)) <= 1).all(), "C3 violated: an RB carries bits of two links")
    flat = carried.reshape(k * k, m)
    holder = np.where(flat.any(axis=0), np.argmax(flat, axis=0), -1)
    _require(np.all((holder < 0) | (own == holder)), "rb_owner differs from the link carrying the RB's bits")
    _require(not (carried & ~(rates > 0)).any(), "bits carried on a zero-rate RB")
    total = share.sum(axis=2)
    served = active & (total > 0)
    _require(np.allclose(total[served], 1.0, rtol=0, atol=1e-9), "shares of a served link must sum to 1")
    _require(not carried[~active].any(), "bits on an inactive link")
    _require((result.served == served).all(), "served must be the active links carrying bits")
    _require((result.unserved == (active & ~served)).all(), "unserved must be the active links without an RB")
    idle_owned = (own >= 0) & (holder < 0)
    if not assign_idle:
        _require(not idle_owned.any(), "an RB owned without bits (only idle links under assign_idle)")
    else:
        idle_links = own[idle_owned]
        _require(not active.ravel()[idle_links].any(), "an active link holds an RB without bits")
        _require(np.unique(idle_links).size == idle_links.size, "an idle link holds two RBs")
    if max_rbs_per_node is not None:
        per_node = np.bincount(own[own >= 0] // k, minlength=k)
        _require((per_node <= int(max_rbs_per_node)).all(),
                 f"per-node budget violated: {per_node.tolist()} RBs > {max_rbs_per_node}")
    # subcarrier: each served link's highest-rate RB; idle links their owned RB
    expect = np.full((k, k), -1, dtype=np.int64)
    key = np.where(carried, rates, -1.0)
    expect[served] = np.argmax(key, axis=2)[served]
    for mm in np.flatnonzero(idle_owned):
        expect.ravel()[own[mm]] = mm
    _require((sub == expect).all(), "subcarrier must be each served link's highest-rate RB (idle: its RB)")
    # energy and air time from the definitions
    c = demand * float(bits_per_token)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(carried, c[:, :, None] * share / np.where(rates > 0, rates, 1.0), 0.0)  # [K, K, M] on-time
    energy = float(tx_power_w) * t.sum(axis=2)
    air = t.max(axis=2)
    _require(np.array_equal(np.isinf(result.energy), result.unserved), "energy must be inf exactly on unserved links")
    _require(np.allclose(result.energy[served], energy[served], rtol=1e-9, atol=0), "energy mismatch (P0 x on-time)")
    _require((result.energy[~active] == 0).all(), "energy must be 0 on inactive links")
    _require(np.allclose(result.airtime[served], air[served], rtol=1e-9, atol=0), "airtime mismatch (slowest RB)")
    _require((result.airtime[~served] == 0).all(), "airtime must be 0 on links without bits")
    # deadlines, lateness, stretch
    theta = float(result.deadline_stretch)
    _require(math.isfinite(theta) and theta >= 1.0, "deadline_stretch must be finite and >= 1")
    sb = float(result.stretch_bound)
    _require(1.0 <= sb <= theta, "stretch_bound must lie in [1, deadline_stretch]")
    _require(np.array_equal(result.deadline_s[off], dl[off]), "deadline_s must echo the deadlines asked for")
    fin = served & np.isfinite(dl)
    late = fin & (air > dl * (1 + DEADLINE_RTOL))
    _require((result.deadline_met == ~(late | result.unserved)).all(), "deadline_met inconsistent with air times")
    lat = np.where(fin, np.maximum(air - np.where(fin, dl, 0.0), 0.0), 0.0)
    _require(np.allclose(result.lateness_s, lat, rtol=1e-9, atol=1e-12 * np.max(air, initial=1.0)), "lateness_s mismatch")
    if theta == 1.0:
        _require(not late.any(), "a link is late although the deadlines were not stretched")
    ext = dl * theta
    _require((air[fin] <= ext[fin] * (1 + DEADLINE_RTOL)).all(), "a link finishes after its stretched deadline")
    # optimal split over each served link's RBs: fastest first, each for theta T (or all equal when late)
    for i, j in np.argwhere(served):
        rbs = np.flatnonzero(carried[i, j])
        tm = t[i, j, rbs]
        if rbs.size == 1 or not np.isfinite(ext[i, j]):
            _require(rbs.size == 1, f"link {i}->{j} without a deadline must use one RB (eq 16)")
            continue
        order = np.argsort(-rates[i, j, rbs], kind="stable")
        full = tm[order[:-1]]
        if np.allclose(tm, tm[0], rtol=1e-9):
            continue  # every RB on equally long: the fastest finish (late) or all full
        _require(np.allclose(full, ext[i, j], rtol=1e-6), f"link {i}->{j}: its faster RBs are not filled for theta T")
        _require(tm[order[-1]] <= ext[i, j] * (1 + 1e-6), f"link {i}->{j}: its slowest RB runs past theta T")
    # bound and gap
    tot = float(energy[served].sum())
    lb, gap = float(result.lower_bound), float(result.gap)
    _require(math.isfinite(lb) and lb >= 0, "lower_bound must be finite and >= 0")
    _require(math.isfinite(gap) and gap >= 0, "gap must be finite and >= 0")
    _require(lb <= tot * (1 + 1e-9) + 1e-300, "lower_bound exceeds the energy")
    _require(tot <= lb * (1 + gap) * (1 + 1e-9) + 1e-300, "energy exceeds lower_bound * (1 + gap)")
    if result.optimal:
        _require(gap <= 1e-9, "optimal results must have gap <= 1e-9")
    _require(result.method in ("assignment", "milp", "greedy", "brute"), "method name")


def check_schedule(
    selection,
    subcarrier,
    source,
    rates,
    *,
    threshold=None,
    max_experts=None,
    scores=None,
    feasible=None,
    exclusive: bool = True,
    rb_share=None,
    placement=None,
    available=None,
) -> None:
    """Check a joint schedule (selection + subcarriers), as produced by JESA or a policy.

    Cost O(K^2 M + T E) with vectorised numpy (no Python loop over tokens or links).

    Args:
        selection: ``[T, E] bool`` (E = K without a ``placement``); subcarrier: ``[K, K] int``
            (-1 none); source: ``[T] int`` node of each token; rates: ``[K, K, M]``.
        threshold, max_experts, scores, feasible: when given, C1 is checked for tokens with
            ``feasible`` True (all tokens if ``feasible`` is None) and C2 for all tokens.
        exclusive: check C3 (False for the lower bound, which shares subcarriers).
        rb_share: None or ``[K, K, M]`` the share of each link's bits per resource block
            (several RBs per link): shares sum to 1 on links that hold any, a link's
            ``subcarrier`` is one of its RBs, and with ``exclusive`` no RB serves two links
            (the RBs of links with shares and the subcarriers of the others together).
        placement: None (expert j on node j) or ``[E] int`` node of each expert; links and
            rates are per node pair.
        available: None or ``[E]`` / ``[T, E]`` bool: no unavailable expert is selected.
    """
    rates = np.asarray(rates, dtype=np.float64)
    k, _, m = rates.shape
    sel = np.asarray(selection)
    src = np.asarray(source)
    sub = np.asarray(subcarrier)
    place = None if placement is None else np.asarray(placement, dtype=np.int64)
    e = k if place is None else place.shape[0]
    _require(sel.dtype == bool and sel.ndim == 2 and sel.shape[1] == e,
             f"selection must be bool [T, {e}], got {sel.dtype} {sel.shape}")
    t = sel.shape[0]
    _require(src.shape == (t,), "source must be [T]")
    if available is not None:
        avail = np.broadcast_to(np.asarray(available, dtype=bool), (t, e))
        off = sel & ~avail
        _require(not off.any(), f"unavailable expert selected in rows {_rows(off.any(1))}")
    _require(sub.shape == (k, k) and np.issubdtype(sub.dtype, np.integer), "subcarrier must be int [K, K]")
    _require(((sub >= -1) & (sub < m)).all(),
             f"subcarrier index out of range (each must lie in -1 .. M-1 = {m - 1}, -1 = none)")
    _require((np.diag(sub) == -1).all(), "diagonal links must have no subcarrier")
    if rb_share is None:
        if exclusive:
            used = sub[sub >= 0]
            _require(np.unique(used).size == used.size, "C3 violated: a subcarrier serves more than one link")
        i, j = np.indices((k, k))
        rate = np.where(sub >= 0, rates[i, j, np.maximum(sub, 0)], 0.0)
    else:
        share = np.asarray(rb_share, dtype=np.float64)
        _require(share.shape == (k, k, m), "rb_share must be [K, K, M]")
        _require(np.isfinite(share).all() and (share >= 0).all(), "rb_share must be finite and >= 0")
        total = share.sum(axis=2)
        has = total > 0
        _require(np.allclose(total[has], 1.0, rtol=0, atol=1e-9), "rb_share of a link must sum to 1")
        _require(not has[np.arange(k), np.arange(k)].any(), "diagonal links must hold no resource block")
        carried = share > 0
        _require(not (carried & ~(rates > 0)).any(), "bits on a zero-rate resource block")
        _require((sub[has] >= 0).all() and carried[has, np.maximum(sub[has], 0)].all() if has.any() else True,
                 "a link's subcarrier must be one of its resource blocks")
        if exclusive:
            # every RB: the links carrying bits on it plus the links whose only RB it is
            plain = ~has & (sub >= 0)
            load = carried.sum(axis=(0, 1)) + np.bincount(sub[plain], minlength=m)
            _require((load <= 1).all(), "C3 violated: a resource block serves more than one link")
        from dmoe.energy import link_rates_from_allocation

        rate = link_rates_from_allocation(rates, sub, share)[0]
    if t == 0:
        return
    # [T, E] rate of the link each token would use for each expert
    node = np.arange(k) if place is None else place
    token_rate = rate[src][:, node]
    remote = sel & (node[None, :] != src[:, None])
    bad = remote & ~(token_rate > 0)
    _require(not bad.any(), f"selected remote expert without a positive-rate subcarrier in rows {_rows(bad.any(1))}")
    if max_experts is not None:
        d = min(int(max_experts), e)
        count = sel.sum(axis=1)
        _require((count <= d).all(), f"C2 violated (more than D = {d} experts) in rows {_rows(count > d)}")
    if threshold is not None and scores is not None:
        fe = np.ones(t, dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
        thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (t,))
        got = np.where(sel, np.asarray(scores, dtype=np.float64), 0.0).sum(axis=1)
        ok = got >= thr - SCORE_TOL - _SUM_SLACK
        _require(ok[fe].all(), f"C1 violated for feasible tokens in rows {_rows(fe & ~ok)}")


def check_jesa(result, scores, source, rates, threshold, max_experts, *, system, exclusive: bool = True) -> None:
    """Check a JESA / lower-bound result: schedule invariants, finite energies, eq (3)-(4)."""
    from dmoe.energy import schedule_energy

    sel = result.selection
    t = np.asarray(scores).shape[0]
    _require(result.feasible.shape == (t,) and result.feasible.dtype == bool, "feasible must be bool [T]")
    check_schedule(
        sel,
        result.subcarrier,
        source,
        rates,
        threshold=threshold,
        max_experts=max_experts,
        scores=scores,
        feasible=result.feasible,
        exclusive=exclusive,
        rb_share=getattr(result, "rb_share", None),
    )
    br = schedule_energy(sel, source, result.subcarrier, rates, system, rb_share=getattr(result, "rb_share", None))
    for name in ("energy_comm_links", "energy_comp_experts"):
        arr = getattr(result, name)
        _require(np.isfinite(arr).all(), f"{name} must be finite")
    _require(np.isfinite(result.energy_comm) and np.isfinite(result.energy_comp), "energies must be finite")
    _require(np.allclose(result.energy_comm_links, br.comm_links, rtol=1e-12, atol=0), "comm energy mismatch (eq 3)")
    _require(np.allclose(result.energy_comp_experts, br.comp_experts, rtol=1e-12, atol=0), "comp energy mismatch (eq 4)")
    _require(np.isclose(result.energy_comm, br.comm, rtol=1e-12, atol=0), "total comm energy mismatch")
    _require(np.isclose(result.energy_comp, br.comp, rtol=1e-12, atol=0), "total comp energy mismatch")
    history = getattr(result, "energy_history", None)
    if history is not None:
        h = np.asarray(history, dtype=np.float64)
        _require(np.isfinite(h).all(), "energy_history must be finite")
        if h.size:
            _require(np.all(np.diff(h) <= 1e-12 * np.abs(h[:-1])), "energy_history rose (Proposition 2)")
            _require(np.isclose(h[-1], br.total, rtol=1e-12, atol=0), "last energy_history entry != final energy")


def check_schedule_output(
    schedule, scores, source, rates, *, label: str, layer: int, max_experts=None, placement=None, available=None
) -> None:
    """Check what a policy's ``schedule(...)`` returned for one layer round.

    Checks the :class:`~dmoe.policies.base.Schedule` contract (``selection`` bool ``[T, E]``,
    ``subcarrier`` int ``[N, N]``, ``feasible`` bool ``[T]``, ``threshold`` None or ``[T]``
    finite, ``exclusive`` bool, ``rb_share`` None or ``[N, N, M]``), then
    :func:`check_schedule`: C2 (at most ``max_experts`` D experts per token) when D is given,
    C3 when ``schedule.exclusive``, C1 for the tokens marked feasible when
    ``schedule.threshold`` is given, that every selected remote expert's link holds a
    subcarrier with positive rate in ``rates``, and that no unavailable expert is selected.
    Cost O(N^2 M + T E), vectorised.

    Args:
        schedule: the policy's result (a Schedule or an object with its attributes).
        scores: ``[T, E] float64`` gating scores the policy got; source: ``[T] int``;
        rates: ``[N, N, M] float64`` [bit/s] the rates the policy got.
        label: the policy's name (for the message); layer: l >= 1 (for the message).
        max_experts: D of C2, or None (not checked).
        placement: None or ``[E] int`` node of each expert; available: None or ``[E]`` /
            ``[T, E]`` bool.

    Raises:
        InfeasibleScheduleError: ``"policy 'X' at layer l returned an infeasible schedule:
        C3 violated: ..."`` naming the violated constraint.

    Source: constraints C1-C3 of problem P1/P2 (Section IV-V, eq 7-9).
    """
    scores = np.asarray(scores, dtype=np.float64)
    t, e = scores.shape

    def arr(name, ndim):
        value = getattr(schedule, name, None)
        _require(isinstance(value, np.ndarray) and value.ndim == ndim, f"`{name}` must be a {ndim}-D ndarray, "
                 f"got {type(value).__name__}{'' if not isinstance(value, np.ndarray) else f' of shape {value.shape}'}")
        return value

    try:
        missing = [a for a in ("selection", "subcarrier", "feasible") if not hasattr(schedule, a)]
        _require(not missing, f"`schedule` must return a dmoe.policies.Schedule, got {type(schedule).__name__}"
                 f"{'' if schedule is None else ' without ' + ', '.join(missing)}")
        sel = arr("selection", 2)
        _require(sel.dtype == bool and sel.shape == (t, e),
                 f"`selection` must be bool [num_tokens, num_experts] = [{t}, {e}], got {sel.dtype} {sel.shape}")
        sub = arr("subcarrier", 2)
        _require(np.issubdtype(sub.dtype, np.integer), f"`subcarrier` must be an integer array, got {sub.dtype}")
        fe = arr("feasible", 1)
        _require(fe.dtype == bool and fe.shape == (t,), f"`feasible` must be bool [{t}], got {fe.dtype} {fe.shape}")
        exclusive = getattr(schedule, "exclusive", None)
        _require(isinstance(exclusive, (bool, np.bool_)), f"`exclusive` must be a bool, got {exclusive!r}")
        thr = getattr(schedule, "threshold", None)
        if thr is not None:
            try:
                thr = np.asarray(thr, dtype=np.float64)
            except (TypeError, ValueError):
                _require(False, f"`threshold` must be None or a float array, got {type(thr).__name__}")
            _require(thr.shape in ((), (t,)), f"`threshold` must be None or [{t}], got shape {thr.shape}")
            _require(np.isfinite(thr).all(), f"`threshold` must be finite, got {int((~np.isfinite(thr)).sum())} "
                     "NaN or infinite entries")
        check_schedule(
            sel, sub, source, rates, threshold=thr, max_experts=max_experts, scores=scores if thr is not None else None,
            feasible=fe, exclusive=bool(exclusive), rb_share=getattr(schedule, "rb_share", None),
            placement=placement, available=available,
        )
    except InvariantError as exc:
        raise InfeasibleScheduleError(
            f"policy {label!r} at layer {int(layer)} returned an infeasible schedule: {exc}"
        ) from None
