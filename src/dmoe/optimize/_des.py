"""DES: exact branch and bound for P1(a) (paper Algorithm 1, Section V-B/C), depth first.

Problem for one token: choose S among the eligible experts (score t_j > 0, finite cost
e_j >= 0), |S| <= D, sum_{j in S} t_j >= thr_eff, minimising sum_{j in S} e_j.

Search kernels (one token each; plain scalars and 1-D sequences only, so the same source
runs as Python on lists and compiled by numba on arrays):

* :func:`search_canonical` (``select_experts(method="des")``, variant ``"canonical"``,
  the default) -- :func:`search_strong`'s order, bound and reachability tests, made to
  return the canonical optimum of :mod:`dmoe.optimize._ties` (least energy, then largest
  score sum, then the expert-index rule; candidates compared by exact
  real-number sums, ties explored instead of pruned, dominance tie-broken by index). The compiled and the
  Python fallback run this same kernel, so they return the same selection.
* :func:`search_strong` (variant ``"strong"``: some optimum, ties unresolved) -- depth first with an
  explicit stack of depth <= n + 1 (memory O(K), never a frontier), experts decided in
  ascending (e_j + mu)/t_j (best ratio first), "include" child first, and
    - the LP bound of eq (10)-(12) made C2-aware by a Lagrange term: for any mu >= 0,
      inc_e - mu (D - cnt) + cheapest fractional cover of the residual score with costs
      e_j + mu is a valid bound (weak duality, sum x <= D - cnt). mu is the root LP's
      optimal multiplier of C2 (0 when C2 does not bind), so at the root the bound equals
      the LP relaxation of P1(a) with both C1 and C2. The open items are a suffix of the
      decision order, so the bound is a binary search on prefix sums (O(log K));
    - C1/C2 reachability pruning (open score < residual; (D - cnt) * max open score <
      residual) and "included set meets C1" as a leaf (e_j >= 0);
    - dominance: if t_j >= t_i and e_j <= e_i (ties broken by position) some optimal
      solution that contains i also contains j (swap: same count, score not lower, energy
      not higher), so branches including i while j is excluded are cut; checked on
      demand at each branching (O(D) and O(depth)), no O(K^2) table. Zero-score and
      unavailable experts are removed before the search (never worth their energy).
  Pruning uses bound >= incumbent * (1 - 1e-12) (a pruned subtree can hide an
  improvement of 1e-12 relative at most, far inside the 1e-9 contract).
* :func:`search_paper` -- Algorithm 1's order and bound as written (experts by e/t
  descending, "exclude" child first, C2 dropped from the bound), depth first, same
  incumbent. Exact; kept as the reference of the paper's method.
* :func:`search_paper_bfs` -- Algorithm 1 literally: breadth-first queue, e_min starts at
  sum_j e_j (no incumbent), records nodes whose excluded count reaches n - D. Its queue
  grows with the frontier, so it needs a node limit (memory O(node_limit)); benchmark only.

Two drivers run a batch of tokens:

* numba available (default): :func:`solve_batch` runs the whole per-token pipeline in one
  compiled loop -- eligibility, Remark 2 feasibility and Top-D fallback (partial
  selection), three greedy incumbents (Top-score prefix, e/t prefix, (e + mu)/t prefix),
  mu by Kelley's cutting planes on the concave root Lagrangian (each evaluation a heap
  partial sort), decision order (merge sort), prefix sums, search. No per-token Python
  work and no allocation in the loop: workspaces are O(K), allocated once per batch.
* fallback (numba missing, ``DMOE_DISABLE_NUMBA=1`` or ``USE_NUMBA = False``):
  :func:`solve` -- numpy-vectorised preprocessing over the batch (in chunks, memory
  bounded) and the same search kernels run as Python over lists.

Without a limit and with the canonical variant, ``select_experts`` runs a third driver,
:mod:`dmoe.optimize._des_fast` (the same canonical optimum: an LP reduction of the
experts, then an enumeration of the few left or :func:`search_canonical` on them).

Both drivers here honour a per-token ``node_limit`` and a per-call wall-clock ``deadline``
(``time.perf_counter()`` value). A token stopped early keeps its best feasible selection
and a proven lower bound (min over the open nodes' bounds); tokens not reached before the
deadline keep their greedy incumbent and the bound thr_eff * min_j e_j/t_j.
"""

from __future__ import annotations

import math
import os
import time
import types

import numpy as np

from dmoe.optimize._ties import compare_sets, exact_diff_sign, exact_sum, lex_precedes, sorted_indices

# slack for floating-point error in pruning decisions (never changes the C1 definition)
_PRUNE_SLACK = 1e-12
_BOUND_REL = 1e-12
# absolute slack of the canonical search's pruning: covers the absolute rounding of
# subnormal costs (1e-305 is far below any physical energy and only weakens pruning)
_TINY = 1e-305
_MU_ITERATIONS = 60
_MU_REL_TOL = 1e-10
# the clock is read when (nodes & _CLOCK_MASK) == _CLOCK_MASK inside a token, and after
# about _CLOCK_WORK items + nodes between tokens
_CLOCK_MASK = 1023
_CLOCK_WORK = 4096
# insertion-sorted run length of the compiled merge sort
_SMALL_SORT = 24
# default node cap of the literal BFS (its queue holds up to 2 * cap + 1 nodes)
BFS_DEFAULT_NODE_LIMIT = 1_000_000

#: variant used by ``select_experts(method="des")``; tests and the benchmark switch it to
#: ``"paper"`` (Algorithm 1's order and bound, depth first) or ``"paper-bfs"``
#: (Algorithm 1 literally, breadth first).
DEFAULT_VARIANT = "canonical"
VARIANTS = ("canonical", "strong", "paper", "paper-bfs")

#: stop codes per token
STOP_NONE, STOP_NODES, STOP_TIME = 0, 1, 2

#: use the numba-compiled driver when numba imports (tests switch it off to run the fallback)
USE_NUMBA = os.environ.get("DMOE_DISABLE_NUMBA", "").strip().lower() not in ("1", "true", "yes")


def _now():
    """Wall clock [s] (``time.perf_counter``); an object-mode call to it when compiled."""
    return time.perf_counter()


# ---------------------------------------------------------------------------- kernels


def search_strong(
    t, e, w, p_t, p_w, sufmax, n, thr_eff, max_experts, mu, best_e, node_limit, deadline,
    st_j, st_t, st_e, st_c, st_d, st_lb, x, inc_pos, best_x,
):
    """Strengthened branch and bound for one token (see module doc).

    Args:
        t, e: length >= n scores and costs in decision order (ascending (e + mu)/t).
        w: e + mu.
        p_t, p_w: length n+1 prefix sums of t and w (p[0] = 0).
        sufmax: length n+1 suffix maxima of t (sufmax[n] = 0).
        n: number of items; thr_eff: threshold - tolerance (> 0); max_experts: D.
        mu: Lagrange multiplier of C2 (>= 0).
        best_e: incumbent energy (of a feasible selection) or inf.
        node_limit: nodes to pop at most (0 = unlimited).
        deadline: ``perf_counter`` time to stop at (0 = none).
        st_*: stack buffers of length >= n + 2; x, inc_pos, best_x: int buffers of length
            >= n + 1 (decisions on the current path, its included positions, best found).

    Returns:
        (best_e, improved, nodes, stop, open_lb): ``best_x[:n]`` holds the 0/1 decisions of
        the best selection when ``improved``; stop is STOP_NONE/STOP_NODES/STOP_TIME;
        open_lb is the smallest bound among unexplored nodes when stopped (inf otherwise).

    Dominance (item a dominates b: t_a >= t_b, e_a <= e_b, and t_a > t_b or e_a < e_b or a
    comes first) is checked on demand at each branching: item j may be excluded only if it
    dominates no included item (O(cnt) <= D), included only if no excluded earlier item
    dominates it (O(j)). Some optimal solution obeys all these rules at once (among the
    optima take one maximising a linear extension of the order; a violating pair could
    be swapped), so the cuts keep exactness.
    """
    nodes = 0
    stop = 0
    improved = False
    st_j[0] = 0
    st_t[0] = 0.0
    st_e[0] = 0.0
    st_c[0] = 0
    st_d[0] = -1
    st_lb[0] = 0.0
    sp = 1
    while sp > 0:
        if node_limit > 0 and nodes >= node_limit:
            stop = 1
            break
        if deadline > 0.0 and (nodes & _CLOCK_MASK) == _CLOCK_MASK:
            if _now() > deadline:
                stop = 2
                break
        sp -= 1
        j = st_j[sp]
        inc_t = st_t[sp]
        inc_e = st_e[sp]
        cnt = st_c[sp]
        d = st_d[sp]
        nodes += 1
        if d >= 0:
            x[j - 1] = d
            if d == 1:
                inc_pos[cnt - 1] = j - 1
        r = thr_eff - inc_t
        if r <= 0.0:
            # leaf: the included set meets C1; more items only add energy
            if inc_e < best_e:
                best_e = inc_e
                improved = True
                for q in range(j):
                    best_x[q] = x[q]
                for q in range(j, n):
                    best_x[q] = 0
            continue
        if j >= n or cnt >= max_experts:
            continue
        rb = r - _PRUNE_SLACK
        if p_t[n] - p_t[j] < rb:
            continue
        q_left = max_experts - cnt
        if q_left * sufmax[j] < rb:
            continue
        if rb <= 0.0:
            lb = inc_e
            slack = _BOUND_REL * best_e
        else:
            # smallest k >= j with p_t[k + 1] - p_t[j] >= rb (cheapest open items first)
            target = rb + p_t[j]
            lo = j
            hi = n - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if p_t[mid + 1] >= target:
                    hi = mid
                else:
                    lo = mid + 1
            k = lo
            cover = p_w[k] - p_w[j] + (target - p_t[k]) * (w[k] / t[k])
            lb = inc_e + cover - mu * q_left
            # relative slack on all terms: the mu terms cancel in floating point
            slack = _BOUND_REL * (best_e + cover + mu * q_left)
        if lb >= best_e - slack:
            continue
        tj = t[j]
        ej = e[j]
        can_exc = True
        for q in range(cnt):
            i = inc_pos[q]
            if tj >= t[i] and ej <= e[i] and (tj > t[i] or ej < e[i]):
                can_exc = False
                break
        can_inc = True
        for i in range(j):
            if x[i] == 0 and t[i] >= tj and e[i] <= ej:
                can_inc = False
                break
        if can_exc:
            st_j[sp] = j + 1
            st_t[sp] = inc_t
            st_e[sp] = inc_e
            st_c[sp] = cnt
            st_d[sp] = 0
            st_lb[sp] = lb
            sp += 1
        if can_inc:
            st_j[sp] = j + 1
            st_t[sp] = inc_t + tj
            st_e[sp] = inc_e + ej
            st_c[sp] = cnt + 1
            st_d[sp] = 1
            st_lb[sp] = lb
            sp += 1
    open_lb = math.inf
    if stop != 0:
        for q in range(sp):
            if st_lb[q] < open_lb:
                open_lb = st_lb[q]
    return best_e, improved, nodes, stop, open_lb


def search_canonical(
    t, e, w, p_t, p_w, sufmax, sufmin, gidx, n, thr_eff, max_experts, mu, seed_x, node_limit, deadline,
    st_j, st_t, st_e, st_c, st_d, st_lb, x, inc_pos, best_x, fbuf, cand_idx, best_idx, best_pos,
):
    """Branch and bound for the canonical optimum of one token (see :mod:`dmoe.optimize._ties`).

    The order, bound and reachability tests are those of :func:`search_strong`, changed
    so that the first selection in the canonical order (least energy, then largest score
    sum, then the expert-index rule) is found, not merely some optimum:

    * a node whose path meets C1 (correctly rounded score sum, as everywhere) is a
      candidate, compared with the incumbent by the total order
      (:func:`~dmoe.optimize._ties.compare_sets`: exact energies, exact score sums, then
      the expert indices), so the result depends neither on the decision order nor on
      the incumbent;
    * a subtree is pruned only when its bound *exceeds* the incumbent by more than the
      floating-point slack (ties are explored); a candidate's supersets are explored only
      while the cheapest open expert could keep the energy tied (zero or tiny costs);
    * dominance: if ``t_a >= t_b``, ``e_a <= e_b`` and (``t_a > t_b`` or ``e_a < e_b``
      or index ``a < b``), the canonical optimum never holds b without a (swapping b for
      a lowers the exact E, or raises the exact G, or keeps both and wins rule 3), so
      "b included, a excluded" is cut. The cuts hold simultaneously for the canonical
      optimum (it satisfies every one), so they keep exactness.

    Args:
        t, e, w, p_t, p_w, sufmax: as :func:`search_strong`.
        sufmin: length n+1 suffix minima of e (``sufmin[n] = inf``).
        gidx: length >= n original expert index of each position.
        seed_x: length >= n 0/1 incumbent (positions); used only if it is feasible in
            exact arithmetic (correctly rounded score sum >= thr_eff, <= D experts).
        fbuf: float scratch of length >= 2 n + 2; cand_idx, best_idx, best_pos: int
            scratch >= n + 1.
        Others as :func:`search_strong`.

    Returns:
        (best_e, found, nodes, stop, open_lb): ``best_x[:n]`` holds the canonical optimum
        when ``found`` (always, unless a limit stopped the search with no feasible
        incumbent); best_e is its energy, correctly rounded.
    """
    nodes = 0
    stop = 0
    found = False
    best_e = math.inf
    best_cnt = 0
    cnt = 0
    for i in range(n):
        if seed_x[i] != 0:
            inc_pos[cnt] = i
            cnt += 1
    if cnt <= max_experts:
        g = exact_sum(t, inc_pos, cnt, fbuf)
        if g >= thr_eff:
            found = True
            best_e = exact_sum(e, inc_pos, cnt, fbuf)
            best_cnt = cnt
            for i in range(cnt):
                best_pos[i] = inc_pos[i]
            for i in range(n):
                best_x[i] = 1 if seed_x[i] != 0 else 0
    # floating-point slack of the approximate path and prefix sums (relative to the sums)
    tslack = _BOUND_REL * (abs(thr_eff) + p_t[n]) + _TINY
    st_j[0] = 0
    st_t[0] = 0.0
    st_e[0] = 0.0
    st_c[0] = 0
    st_d[0] = -1
    st_lb[0] = 0.0
    sp = 1
    while sp > 0:
        if node_limit > 0 and nodes >= node_limit:
            stop = 1
            break
        if deadline > 0.0 and (nodes & _CLOCK_MASK) == _CLOCK_MASK:
            if _now() > deadline:
                stop = 2
                break
        sp -= 1
        j = st_j[sp]
        inc_t = st_t[sp]
        inc_e = st_e[sp]
        cnt = st_c[sp]
        d = st_d[sp]
        nodes += 1
        if d >= 0:
            x[j - 1] = d
            if d == 1:
                inc_pos[cnt - 1] = j - 1
        if inc_t >= thr_eff - tslack:
            g = exact_sum(t, inc_pos, cnt, fbuf)
            if g >= thr_eff:
                if not found:
                    c = -1
                elif inc_e * (1.0 - _BOUND_REL) - _TINY > best_e:
                    c = 1  # clearly more energy (the path sum is within 1e-12 of exact)
                else:
                    c = compare_sets(e, t, gidx, inc_pos, cnt, best_pos, best_cnt, fbuf, cand_idx, best_idx)
                if c < 0:
                    found = True
                    best_e = exact_sum(e, inc_pos, cnt, fbuf)
                    best_cnt = cnt
                    for q in range(cnt):
                        best_pos[q] = inc_pos[q]
                    for q in range(j):
                        best_x[q] = x[q]
                    for q in range(j, n):
                        best_x[q] = 0
                if j >= n or cnt >= max_experts:
                    continue
                # supersets cost at least inc_e + the cheapest open expert
                if (inc_e + sufmin[j]) * (1.0 - _BOUND_REL) - _TINY > best_e:
                    continue
        if j >= n or cnt >= max_experts:
            continue
        rb = thr_eff - inc_t - tslack
        q_left = max_experts - cnt
        if rb <= 0.0:
            lb = inc_e
            slack = _BOUND_REL * best_e + _TINY
        else:
            if p_t[n] - p_t[j] < rb:
                continue
            if q_left * sufmax[j] < rb:
                continue
            target = rb + p_t[j]
            lo = j
            hi = n - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if p_t[mid + 1] >= target:
                    hi = mid
                else:
                    lo = mid + 1
            k = lo
            if w[k] / t[k] < math.inf:
                # fraction of the critical item first (<= 1): no overflow for huge costs
                cover = p_w[k] - p_w[j] + w[k] * ((target - p_t[k]) / t[k])
                if cover < 0.0:
                    cover = 0.0
                lb = inc_e + cover - mu * q_left
                slack = _BOUND_REL * (best_e + cover + mu * q_left) + _TINY
            else:
                # e/t overflows float64: the decision order among such items is arbitrary,
                # so the LP bound is not used (still exact, only weaker)
                lb = inc_e
                slack = _BOUND_REL * best_e + _TINY
        if lb > best_e + slack:
            continue
        tj = t[j]
        ej = e[j]
        gj = gidx[j]
        can_exc = True
        for q in range(cnt):
            i = inc_pos[q]
            if tj >= t[i] and ej <= e[i] and (tj > t[i] or ej < e[i] or gj < gidx[i]):
                can_exc = False
                break
        can_inc = True
        for i in range(j):
            if x[i] == 0 and t[i] >= tj and e[i] <= ej and (t[i] > tj or e[i] < ej or gidx[i] < gj):
                can_inc = False
                break
        if can_exc:
            st_j[sp] = j + 1
            st_t[sp] = inc_t
            st_e[sp] = inc_e
            st_c[sp] = cnt
            st_d[sp] = 0
            st_lb[sp] = lb
            sp += 1
        if can_inc:
            st_j[sp] = j + 1
            st_t[sp] = inc_t + tj
            st_e[sp] = inc_e + ej
            st_c[sp] = cnt + 1
            st_d[sp] = 1
            st_lb[sp] = lb
            sp += 1
    open_lb = math.inf
    if stop != 0:
        for q in range(sp):
            if st_lb[q] < open_lb:
                open_lb = st_lb[q]
    return best_e, found, nodes, stop, open_lb


def search_paper(
    t, e, suf_t, suf_e, sufmax, n, thr_eff, max_experts, best_e, node_limit, deadline,
    st_j, st_t, st_e, st_c, st_d, st_lb, x, best_x,
):
    """Algorithm 1's order and bound, depth first, for one token.

    Args:
        t, e: length >= n scores and costs sorted by e/t descending.
        suf_t, suf_e: length n+1 suffix sums (suf[n] = 0); sufmax: suffix maxima of t.
        Others as :func:`search_strong`.

    Returns:
        As :func:`search_strong`.
    """
    nodes = 0
    stop = 0
    improved = False
    st_j[0] = 0
    st_t[0] = 0.0
    st_e[0] = 0.0
    st_c[0] = 0
    st_d[0] = -1
    st_lb[0] = 0.0
    sp = 1
    while sp > 0:
        if node_limit > 0 and nodes >= node_limit:
            stop = 1
            break
        if deadline > 0.0 and (nodes & _CLOCK_MASK) == _CLOCK_MASK:
            if _now() > deadline:
                stop = 2
                break
        sp -= 1
        j = st_j[sp]
        inc_t = st_t[sp]
        inc_e = st_e[sp]
        cnt = st_c[sp]
        d = st_d[sp]
        nodes += 1
        if d >= 0:
            x[j - 1] = d
        r = thr_eff - inc_t
        if r <= 0.0:
            if inc_e < best_e:
                best_e = inc_e
                improved = True
                for q in range(j):
                    best_x[q] = x[q]
                for q in range(j, n):
                    best_x[q] = 0
            continue
        if j >= n or cnt >= max_experts:
            continue
        rb = r - _PRUNE_SLACK
        if suf_t[j] < rb:
            continue
        if (max_experts - cnt) * sufmax[j] < rb:
            continue
        # LP bound (eq 10-12): the cheapest-ratio open items (a suffix) cover rb fractionally
        if rb <= 0.0:
            lb = inc_e
        else:
            lo = j
            hi = n - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if suf_t[mid] >= rb:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
            lb = inc_e + suf_e[k + 1] + (rb - suf_t[k + 1]) * (e[k] / t[k])
        if lb >= best_e - _BOUND_REL * best_e:
            continue
        # push include child first so that the exclude child is explored first
        st_j[sp] = j + 1
        st_t[sp] = inc_t + t[j]
        st_e[sp] = inc_e + e[j]
        st_c[sp] = cnt + 1
        st_d[sp] = 1
        st_lb[sp] = lb
        sp += 1
        st_j[sp] = j + 1
        st_t[sp] = inc_t
        st_e[sp] = inc_e
        st_c[sp] = cnt
        st_d[sp] = 0
        st_lb[sp] = lb
        sp += 1
    open_lb = math.inf
    if stop != 0:
        for q in range(sp):
            if st_lb[q] < open_lb:
                open_lb = st_lb[q]
    return best_e, improved, nodes, stop, open_lb


def search_paper_bfs(t, e, n, thr_eff, max_experts, node_limit, deadline, q_j, q_t, q_e, q_exc, q_inc, q_par, best_x):
    """Algorithm 1 exactly as printed (breadth first), for one token.

    Nodes hold (j, t, e, |P_exc|, |P_inc|) with t, e the score and energy of the experts
    not excluded; the root keeps everything and e_min starts at sum_j e_j. A node is a
    record when t >= thr, e < e_min and |P_exc| >= n - D. Children are enqueued when the
    LP bound (C2 dropped) is <= e_min; the include child only while |P_inc| < D. The
    queue never shrinks (parent links rebuild P_min), so it needs ``node_limit`` >= 1:
    buffers hold 2 * node_limit + 1 nodes.

    Args:
        t, e: length >= n, sorted by e/t descending. q_*: queue buffers (see above);
        best_x: length >= n 0/1 output (1 = selected). Others as :func:`search_strong`.

    Returns:
        (best_e, improved, nodes, stop, open_lb) as :func:`search_strong`; best_e is inf
        when no record was found.
    """
    tot_t = 0.0
    tot_e = 0.0
    for i in range(n):
        tot_t += t[i]
        tot_e += e[i]
    e_min = tot_e
    best = -1
    head = 0
    tail = 1
    q_j[0] = 0
    q_t[0] = tot_t
    q_e[0] = tot_e
    q_exc[0] = 0
    q_inc[0] = 0
    q_par[0] = -1
    nodes = 0
    stop = 0
    while head < tail:
        if nodes >= node_limit:
            stop = 1
            break
        if deadline > 0.0 and (nodes & _CLOCK_MASK) == _CLOCK_MASK:
            if _now() > deadline:
                stop = 2
                break
        v = head
        head += 1
        nodes += 1
        j = q_j[v]
        tv = q_t[v]
        ev = q_e[v]
        if tv >= thr_eff and q_exc[v] >= n - max_experts and (ev < e_min or best < 0):
            e_min = ev
            best = v
        if tv < thr_eff or j >= n:
            continue
        # bound(): exclude experts greedily (worst e/t first) while C1 still holds
        bt = tv
        be = ev
        jj = j
        if tv > thr_eff:
            while jj < n and bt - t[jj] >= thr_eff:
                bt -= t[jj]
                be -= e[jj]
                jj += 1
            if jj < n:
                be -= (bt - thr_eff) * e[jj] / t[jj]
        else:
            be = 0.0
        if be > e_min * (1.0 + _BOUND_REL):
            continue
        q_j[tail] = j + 1
        q_t[tail] = tv - t[j]
        q_e[tail] = ev - e[j]
        q_exc[tail] = q_exc[v] + 1
        q_inc[tail] = q_inc[v]
        q_par[tail] = v
        tail += 1
        if q_inc[v] < max_experts:
            q_j[tail] = j + 1
            q_t[tail] = tv
            q_e[tail] = ev
            q_exc[tail] = q_exc[v]
            q_inc[tail] = q_inc[v] + 1
            q_par[tail] = v
            tail += 1
    open_lb = math.inf
    if stop != 0:
        # unexplored nodes: their bound is at least 0; keep it simple and valid
        open_lb = 0.0
    if best < 0:
        return math.inf, False, nodes, stop, open_lb
    for i in range(n):
        best_x[i] = 1
    v = best
    while q_par[v] >= 0:
        u = q_par[v]
        # the child of u with q_exc increased excluded expert q_j[u]
        if q_exc[v] > q_exc[u]:
            best_x[q_j[u]] = 0
        v = u
    return e_min, True, nodes, stop, open_lb


# ---------------------------------------------------------------------------- compiled driver
# Everything below up to the numpy fallback runs compiled only. Helpers take 1-D buffers
# and are compiled without NRT reference counting (``_nrt=False``): at ~10 ns per atomic
# incref/decref, a call with 20 array arguments otherwise costs ~0.4 us, more than a token.


def _argsort(key, n, out, tmp):
    """``out[:n]`` = stable ascending argsort of ``key[:n]`` (``tmp``: scratch, length n).

    Insertion sort on runs of ``_SMALL_SORT``, then bottom-up merges (no allocation).
    """
    for i in range(n):
        out[i] = i
    run = _SMALL_SORT
    for lo in range(0, n, run):
        hi = min(lo + run, n)
        for i in range(lo + 1, hi):
            v = out[i]
            kv = key[v]
            p = i - 1
            while p >= lo and key[out[p]] > kv:
                out[p + 1] = out[p]
                p -= 1
            out[p + 1] = v
    src = out
    dst = tmp
    in_out = True
    width = run
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            a = lo
            b = mid
            d = lo
            while a < mid and b < hi:
                if key[src[b]] < key[src[a]]:
                    dst[d] = src[b]
                    b += 1
                else:
                    dst[d] = src[a]
                    a += 1
                d += 1
            while a < mid:
                dst[d] = src[a]
                a += 1
                d += 1
            while b < hi:
                dst[d] = src[b]
                b += 1
                d += 1
        src, dst = dst, src
        in_out = not in_out
        width *= 2
    if not in_out:
        for i in range(n):
            out[i] = tmp[i]


def _gather(scores, costs, q, idx, tt, ee):
    """Eligible experts of token q (score > 0, finite cost) -> their count n."""
    n = 0
    for j in range(scores.shape[1]):
        s = scores[q, j]
        c = costs[q, j]
        if s > 0.0 and c < math.inf:
            idx[n] = j
            tt[n] = s
            ee[n] = c
            n += 1
    return n


def _before(tt, ee, a, b):
    """Remark 2 order: higher score first, then lower cost, then lower index."""
    if tt[a] != tt[b]:
        return tt[a] > tt[b]
    if ee[a] != ee[b]:
        return ee[a] < ee[b]
    return a < b


def _top_prefix(tt, ee, n, m, thr, key, perm, tmp):
    """Experts by score (Remark 2 order) into ``perm`` until their sum reaches thr.

    Returns the position ``first`` of the pick that reaches thr (the Top-score greedy
    incumbent is ``perm[:first + 1]``), or -1 when the Top-m sum misses thr (Remark 2:
    ``perm[:m]`` is the Top-m). Partial selection for small m, merge sort otherwise; the
    sum runs in sorted order (as the numpy path's cumsum).
    """
    if m <= 16:
        for i in range(n):
            perm[i] = i
        acc = 0.0
        for i in range(m):
            b = i
            for a in range(i + 1, n):
                if _before(tt, ee, perm[a], perm[b]):
                    b = a
            v = perm[b]
            perm[b] = perm[i]
            perm[i] = v
            acc += tt[v]
            if acc >= thr:
                return i
        return -1
    for i in range(n):
        key[i] = -tt[i]
    _argsort(key, n, perm, tmp)
    i = 0
    while i < n:
        # equal-score runs: lower cost first (stable, so index order is kept)
        i2 = i + 1
        while i2 < n and tt[perm[i2]] == tt[perm[i]]:
            i2 += 1
        for a in range(i + 1, i2):
            v = perm[a]
            b = a - 1
            while b >= i and ee[perm[b]] > ee[v]:
                perm[b + 1] = perm[b]
                b -= 1
            perm[b + 1] = v
        i = i2
    acc = 0.0
    for i in range(m):
        acc += tt[perm[i]]
        if acc >= thr:
            return i
    return -1


def _sift_down(key, heap, i, size):
    """Restore the min-heap property (by ``key``) below position i of ``heap[:size]``."""
    v = heap[i]
    kv = key[v]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and key[heap[c + 1]] < key[heap[c]]:
            c += 1
        if key[heap[c]] >= kv:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = v


def _cover_eval(tt, ee, n, thr, mu, key, pre, heap):
    """Root Lagrangian at mu: cover thr fractionally by the cheapest (e + mu)/t items.

    The items come off a binary heap (O(n + k log n) for a k-item cover, no full sort);
    ``pre[:k + 1]`` receives them in order.

    Returns (count, cost, k): fractional item count, cover cost with costs e + mu
    (L(mu) = cost - mu D), and the position of the critical item in ``pre``.
    """
    for i in range(n):
        key[i] = (ee[i] + mu) / tt[i]
        heap[i] = i
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(key, heap, i, n)
    size = n
    acc = 0.0
    cost = 0.0
    for i in range(n):
        p = heap[0]
        pre[i] = p
        size -= 1
        heap[0] = heap[size]
        _sift_down(key, heap, 0, size)
        if acc + tt[p] >= thr:
            frac = (thr - acc) / tt[p]
            if frac < 0.0:
                frac = 0.0
            return i + frac, cost + frac * (ee[p] + mu), i
        acc += tt[p]
        cost += ee[p] + mu
    return n * 1.0, cost, n - 1


def _prefix_incumbent(ee, perm, k, n, best_e, inc_x):
    """Replace the incumbent by ``perm[:k + 1]`` when cheaper. Returns the best energy."""
    en = 0.0
    for i in range(k + 1):
        en += ee[perm[i]]
    if en < best_e:
        for i in range(n):
            inc_x[i] = False
        for i in range(k + 1):
            inc_x[perm[i]] = True
        return en
    return best_e


def _root(tt, ee, n, thr, max_experts, strong, best_e, inc_x, key, perm, heap):
    """Greedy incumbents 2 and 3 and the root multiplier mu of C2.

    Incumbent 2: the e/t prefix covering thr (valid when <= D experts). For the strong
    variant when C2 binds at mu = 0, mu maximises the concave piecewise-linear
    L(mu) = cover(e + mu) - mu D by Kelley's cutting planes in 1-D (the intersection of
    the supporting lines at lo (slope > 0) and hi (slope <= 0); finite for piecewise-linear
    L, capped at ``_MU_ITERATIONS``). Every hi (count <= D) offers incumbent 3, its
    (e + mu)/t prefix, which then has <= D experts. ``perm``, ``heap``: scratch.

    Returns (mu, best_e).
    """
    c0, v0, k0 = _cover_eval(tt, ee, n, thr, 0.0, key, perm, heap)
    if k0 + 1 <= max_experts:
        best_e = _prefix_incumbent(ee, perm, k0, n, best_e, inc_x)
    if not strong or c0 <= max_experts + 1e-12:
        return 0.0, best_e
    lo = 0.0
    l_lo = v0
    s_lo = c0 - max_experts
    hi = 0.0
    for i in range(n):
        if ee[i] > hi:
            hi = ee[i]
    hi += 1.0
    c, v, k = _cover_eval(tt, ee, n, thr, hi, key, perm, heap)
    it = 0
    while c > max_experts + 1e-12 and it < 200:
        lo = hi
        l_lo = v - hi * max_experts
        s_lo = c - max_experts
        hi *= 2.0
        c, v, k = _cover_eval(tt, ee, n, thr, hi, key, perm, heap)
        it += 1
    if c > max_experts + 1e-12:
        return lo, best_e  # pragma: no cover - feasible tokens reach count <= D
    best_e = _prefix_incumbent(ee, perm, k, n, best_e, inc_x)
    l_hi = v - hi * max_experts
    s_hi = c - max_experts
    best_mu = lo if l_lo > l_hi else hi
    best_l = l_lo if l_lo > l_hi else l_hi
    for it in range(_MU_ITERATIONS):
        den = s_lo - s_hi
        if den <= 0.0:
            break
        mid = (l_hi - l_lo + s_lo * lo - s_hi * hi) / den
        if not (mid > lo and mid < hi):
            break
        pred = l_lo + s_lo * (mid - lo)
        c, v, k = _cover_eval(tt, ee, n, thr, mid, key, perm, heap)
        l_mid = v - mid * max_experts
        if l_mid > best_l:
            best_l = l_mid
            best_mu = mid
        if l_mid >= pred - _MU_REL_TOL * (abs(pred) + 1e-300):
            break  # the upper envelope is attained: mid maximises L
        if c > max_experts + 1e-12:
            lo = mid
            l_lo = l_mid
            s_lo = c - max_experts
        else:
            best_e = _prefix_incumbent(ee, perm, k, n, best_e, inc_x)
            hi = mid
            l_hi = l_mid
            s_hi = c - max_experts
        if hi - lo <= _MU_REL_TOL * hi:
            break
    return best_mu, best_e


def _arrange(tt, ee, n, mu, strong, key, tmp, order, t_s, e_s, w_s, pa, pb, sufmax, sufmin):
    """Decision order and the sums the bound needs (prefix sums for strong, suffix for paper;
    ``sufmin``: suffix minima of the costs, for the canonical search)."""
    if strong:
        for i in range(n):
            key[i] = (ee[i] + mu) / tt[i]
    else:
        for i in range(n):
            key[i] = -(ee[i] / tt[i])
    _argsort(key, n, order, tmp)
    for i in range(n):
        p = order[i]
        t_s[i] = tt[p]
        e_s[i] = ee[p]
        w_s[i] = ee[p] + mu
    sufmax[n] = 0.0
    for i in range(n - 1, -1, -1):
        sufmax[i] = t_s[i] if t_s[i] > sufmax[i + 1] else sufmax[i + 1]
    sufmin[n] = math.inf
    for i in range(n - 1, -1, -1):
        sufmin[i] = e_s[i] if e_s[i] < sufmin[i + 1] else sufmin[i + 1]
    if strong:
        pa[0] = 0.0
        pb[0] = 0.0
        for i in range(n):
            pa[i + 1] = pa[i] + t_s[i]
            pb[i + 1] = pb[i] + w_s[i]
    else:
        pa[n] = 0.0
        pb[n] = 0.0
        for i in range(n - 1, -1, -1):
            pa[i] = pa[i + 1] + t_s[i]
            pb[i] = pb[i + 1] + e_s[i]


def _prepare(scores, costs, thr, q, max_experts, strong, timed_out, idx, tt, ee, key, perm, tmp, order,
             t_s, e_s, w_s, pa, pb, sufmax, sufmin, fbuf, inc_x, sel, feasible, stop, lower):
    """Per-token pipeline up to the search (compiled path).

    Gathers the eligible experts, applies Remark 2, builds the incumbents, mu (strong) and
    the decision order with its sums. Tokens that need no search (infeasible, or not
    reached before the deadline) are written to the outputs here.

    Returns:
        (search, n, best_e, mu): search is False when the token is finished.
    """
    n = _gather(scores, costs, q, idx, tt, ee)
    m = max_experts if max_experts < n else n
    first = _top_prefix(tt, ee, n, m, thr, key, perm, tmp)
    # C1 in exact arithmetic (correctly rounded sums, as every method): the naive prefix
    # sums decide only away from the boundary
    if first >= 0 and exact_sum(tt, perm, first + 1, fbuf) < thr:
        first = _top_prefix(tt, ee, n, m, math.inf, key, perm, tmp)
    if first < 0 and m > 0 and exact_sum(tt, perm, m, fbuf) >= thr:
        first = m - 1
    if first < 0:
        # Remark 2: C1 and C2 cannot both hold -> Top-D eligible experts
        feasible[q] = False
        for i in range(m):
            sel[q, idx[perm[i]]] = True
        return False, n, 0.0, 0.0
    # incumbent 1: Top-score prefix meeting C1
    for i in range(n):
        inc_x[i] = False
    best_e = 0.0
    for i in range(first + 1):
        inc_x[perm[i]] = True
        best_e += ee[perm[i]]
    if timed_out:
        # not searched: keep the incumbent, bound thr * min e/t
        rmin = math.inf
        for i in range(n):
            if ee[i] / tt[i] < rmin:
                rmin = ee[i] / tt[i]
        lower[q] = thr * rmin
        stop[q] = 2
        for i in range(n):
            if inc_x[i]:
                sel[q, idx[i]] = True
        return False, n, best_e, 0.0
    mu, best_e = _root(tt, ee, n, thr, max_experts, strong, best_e, inc_x, key, perm, order)
    _arrange(tt, ee, n, mu, strong, key, tmp, order, t_s, e_s, w_s, pa, pb, sufmax, sufmin)
    return True, n, best_e, mu


def _finish(found_e, improved, cnt, st, open_lb, best_e, n, q, idx, order, inc_x, best_x, sel, nodes, stop, lower):
    """Write one searched token's outcome (search result or incumbent) into the outputs."""
    if improved and found_e >= best_e:
        improved = False  # paper-bfs: its record may be worse than the greedy incumbent
    if improved:
        best_e = found_e
        for i in range(n):
            if best_x[i] != 0:
                sel[q, idx[order[i]]] = True
    else:
        for i in range(n):
            if inc_x[i]:
                sel[q, idx[i]] = True
    nodes[q] = cnt
    stop[q] = st
    lower[q] = open_lb if (st != 0 and open_lb < best_e) else best_e
    return cnt + n


def solve_batch(scores, costs, thr_eff, max_experts, node_limit, deadline, variant, sel, feasible, nodes, stop,
                lower, iw, fw, bw, qi, qf):
    """Whole DES pipeline over a batch (compiled by numba; see module doc).

    Args:
        scores, costs: ``[T, K] float64`` (validated; costs may be +inf).
        thr_eff: ``[T] float64`` threshold - SCORE_TOL.
        max_experts: D (1 <= D <= K). node_limit: per token, 0 = none (>= 1 for paper-bfs).
        deadline: perf_counter time or 0. variant: 0 strong, 1 paper, 2 paper-bfs, 3 canonical.
        sel: ``[T, K] bool`` zeros (output); feasible ``[T] bool`` ones, nodes ``[T] int64``,
        stop ``[T] int8``, lower ``[T] float64`` zeros (outputs).
        iw ``[15, K + 2] int64``, fw ``[14, 2 K + 2] float64``, bw ``[K + 2] bool``,
        qi ``[4, cap] int64``, qf ``[2, cap] float64``:
        workspaces (allocated by :func:`run_compiled`; this function allocates nothing,
        so it runs without reference counting).
    """
    strong = variant == 0 or variant == 3
    idx = iw[0]
    perm = iw[1]
    tmp = iw[2]
    order = iw[3]
    x = iw[4]
    best_x = iw[5]
    st_j = iw[6]
    st_c = iw[7]
    st_d = iw[8]
    inc_pos = iw[9]
    gidx = iw[10]
    seed = iw[11]
    cand_idx = iw[12]
    best_idx = iw[13]
    best_pos = iw[14]
    tt = fw[0]
    ee = fw[1]
    key = fw[2]
    t_s = fw[3]
    e_s = fw[4]
    w_s = fw[5]
    pa = fw[6]
    pb = fw[7]
    sufmax = fw[8]
    st_t = fw[9]
    st_e = fw[10]
    st_lb = fw[11]
    sufmin = fw[12]
    fbuf = fw[13]
    inc_x = bw
    q_j = qi[0]
    q_exc = qi[1]
    q_inc = qi[2]
    q_par = qi[3]
    q_t = qf[0]
    q_e = qf[1]
    timed_out = False
    work = _CLOCK_WORK  # read the clock before the first token
    for q in range(scores.shape[0]):
        thr = thr_eff[q]
        if thr <= 0.0:
            continue
        if deadline > 0.0 and not timed_out and work >= _CLOCK_WORK:
            work = 0
            timed_out = _now() > deadline
        go, n, best_e, mu = _prepare(
            scores, costs, thr, q, max_experts, strong, timed_out, idx, tt, ee, key, perm, tmp, order,
            t_s, e_s, w_s, pa, pb, sufmax, sufmin, fbuf, inc_x, sel, feasible, stop, lower,
        )
        work += n
        if not go:
            continue
        if variant == 3:
            for i in range(n):
                gidx[i] = idx[order[i]]
                seed[i] = 1 if inc_x[order[i]] else 0
            found_e, improved, cnt, st, open_lb = search_canonical(
                t_s, e_s, w_s, pa, pb, sufmax, sufmin, gidx, n, thr, max_experts, mu, seed, node_limit, deadline,
                st_j, st_t, st_e, st_c, st_d, st_lb, x, inc_pos, best_x, fbuf, cand_idx, best_idx, best_pos,
            )
            # the canonical optimum may tie the incumbent's energy: always take it
            work += _finish(
                found_e, improved, cnt, st, open_lb, math.inf, n, q, idx, order, inc_x, best_x, sel, nodes, stop,
                lower,
            )
            if st == 2:
                timed_out = True
            continue
        if variant == 0:
            found_e, improved, cnt, st, open_lb = search_strong(
                t_s, e_s, w_s, pa, pb, sufmax, n, thr, max_experts, mu, best_e, node_limit, deadline,
                st_j, st_t, st_e, st_c, st_d, st_lb, x, inc_pos, best_x,
            )
        elif variant == 1:
            found_e, improved, cnt, st, open_lb = search_paper(
                t_s, e_s, pa, pb, sufmax, n, thr, max_experts, best_e, node_limit, deadline,
                st_j, st_t, st_e, st_c, st_d, st_lb, x, best_x,
            )
        else:
            found_e, improved, cnt, st, open_lb = search_paper_bfs(
                t_s, e_s, n, thr, max_experts, node_limit, deadline, q_j, q_t, q_e, q_exc, q_inc, q_par, best_x
            )
        work += _finish(
            found_e, improved, cnt, st, open_lb, best_e, n, q, idx, order, inc_x, best_x, sel, nodes, stop, lower
        )
        if st == 2:
            timed_out = True


_VARIANT_CODE = {"strong": 0, "paper": 1, "paper-bfs": 2, "canonical": 3}
_NO_NRT = (
    "_sift_down", "_argsort", "_gather", "_before", "_top_prefix", "_cover_eval", "_prefix_incumbent",
    "_root", "_arrange", "_prepare", "_finish", "search_strong", "search_paper", "search_paper_bfs", "solve_batch",
    "exact_sum", "exact_diff_sign", "lex_precedes", "sorted_indices", "compare_sets", "search_canonical",
)
_NUMBA_NS = None


def _numba_namespace():
    """Globals holding the compiled copies of this module's functions (None without numba).

    Each function is compiled lazily on first call and cached on disk (``cache=True``:
    about 20 s once per installation, then ~1 s to load per process).
    """
    global _NUMBA_NS
    if _NUMBA_NS is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - depends on the environment
            _NUMBA_NS = False
            return None

        @numba.njit(cache=True)
        def now_nb():
            with numba.objmode(t="float64"):
                t = time.perf_counter()
            return t

        _NUMBA_NS = compile_kernels(globals(), _NO_NRT, no_nrt=_NO_NRT, overrides={"_now": now_nb})
    return _NUMBA_NS or None


def compile_kernels(module_globals: dict, names, *, no_nrt=(), inline=(), overrides=None) -> dict:
    """A copy of ``module_globals`` in which every function of ``names`` is replaced by its
    numba-compiled copy (``cache=True``), so that compiled kernels call each other.

    Args:
        module_globals: the kernels' module namespace (``globals()``).
        names: the functions to compile.
        no_nrt: of those, the ones compiled without numba's reference counting (``_nrt=False``).
        inline: of those, the ones inlined into their callers at the numba IR level.
        overrides: names bound in the namespace before compiling (e.g. kernels of another
            module's compiled namespace).

    Returns:
        the namespace (dict); its compiled functions are looked up there.
    """
    import numba

    ns = dict(module_globals)
    ns.update(overrides or {})
    for name in names:
        fn = module_globals[name]
        copy = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
        copy.__qualname__ = fn.__qualname__
        copy.__module__ = fn.__module__
        options = {"cache": True}
        if name in no_nrt:
            options["_nrt"] = False
        if name in inline:
            options["inline"] = "always"
        ns[name] = numba.njit(**options)(copy)
    return ns


def warm_clock() -> None:
    """Run the compiled clock once (its first object-mode call takes ~0.1 s), so that a
    ``time_limit`` does not pay for it."""
    ns = _numba_namespace() if USE_NUMBA else None
    if ns is not None:
        ns["_now"]()


def numba_enabled() -> bool:
    """True when :func:`select_experts` runs DES through the compiled driver."""
    return USE_NUMBA and _numba_namespace() is not None


def run_compiled(scores, costs, thr_eff, max_experts, node_limit, deadline, variant):
    """Run the compiled :func:`solve_batch` for ``variant`` over a batch.

    Returns:
        (selection ``[T, K] bool``, feasible ``[T] bool``, nodes ``[T] int64``,
        stop ``[T] int8``, lower ``[T] float64``).
    """
    if variant not in _VARIANT_CODE:
        raise ValueError(f"unknown DES variant {variant!r}")
    fn = _numba_namespace()["solve_batch"]
    n_tok, k = scores.shape
    sel = np.zeros((n_tok, k), dtype=np.bool_)
    feasible = np.ones(n_tok, dtype=np.bool_)
    nodes = np.zeros(n_tok, dtype=np.int64)
    stop = np.zeros(n_tok, dtype=np.int8)
    lower = np.zeros(n_tok)
    limit = int(node_limit or 0)
    code = _VARIANT_CODE[variant]
    if code == 2 and limit == 0:
        limit = BFS_DEFAULT_NODE_LIMIT
    # workspaces: O(K) rows, O(node_limit) for the BFS queue
    cap = 2 * limit + 2 if code == 2 else 1
    fn(
        np.ascontiguousarray(scores, dtype=np.float64),
        np.ascontiguousarray(costs, dtype=np.float64),
        np.ascontiguousarray(thr_eff, dtype=np.float64),
        int(max_experts), limit, float(deadline or 0.0), code,
        sel, feasible, nodes, stop, lower,
        np.zeros((15, k + 2), np.int64), np.zeros((14, 2 * k + 2)), np.zeros(k + 2, np.bool_),
        np.zeros((4, cap), np.int64), np.zeros((2, cap)),
    )
    return sel, feasible, nodes, stop, lower


# ---------------------------------------------------------------------------- numpy fallback


def cardinality_multiplier(scores, costs, eligible, thr_eff, max_experts, iterations=_MU_ITERATIONS):
    """Optimal Lagrange multiplier mu of C2 in the root LP relaxation, per token (numpy).

    L(mu) = min { sum (e + mu) x : sum t x >= thr_eff, x in [0, 1] } - mu D is concave; its
    slope is (fractional item count at mu) - D. mu = 0 when the unconstrained LP uses at
    most D items; otherwise bisection brackets the slope change and the better end is
    returned. Any mu >= 0 gives a valid bound, so precision only affects strength.

    Args:
        scores, costs: ``[n, K], float64``; eligible: ``[n, K], bool``;
        thr_eff: ``[n]`` (each token feasible: its eligible scores can reach thr_eff).

    Returns:
        ``[n], float64`` mu >= 0.
    """
    n_tok, k = scores.shape
    rows = np.arange(n_tok)
    t = np.where(eligible, scores, 0.0)
    e = np.where(eligible, costs, 0.0)

    def count_and_value(mu):
        # [n, K] modified costs, ineligible last
        w = e + mu[:, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = np.where(eligible, w / np.where(eligible, t, 1.0), np.inf)
        order = np.argsort(ratio, axis=1, kind="stable")
        ts = np.take_along_axis(t, order, axis=1)
        ws = np.take_along_axis(w, order, axis=1)
        ct = np.cumsum(ts, axis=1)
        cw = np.cumsum(ws, axis=1)
        reach = ct >= thr_eff[:, None]
        kk = np.where(reach.any(axis=1), np.argmax(reach, axis=1), k - 1)
        prev_t = ct[rows, kk] - ts[rows, kk]
        tk = np.where(ts[rows, kk] > 0, ts[rows, kk], 1.0)
        frac = np.clip((thr_eff - prev_t) / tk, 0.0, 1.0)
        count = kk + frac
        value = cw[rows, kk] - ws[rows, kk] + frac * ws[rows, kk] - mu * max_experts
        return count, value

    mu = np.zeros(n_tok)
    count0, _ = count_and_value(mu)
    binding = count0 > max_experts + 1e-12
    if not binding.any():
        return mu
    if not binding.all():
        sub = np.flatnonzero(binding)
        mu[sub] = cardinality_multiplier(
            scores[sub], costs[sub], eligible[sub], thr_eff[sub], max_experts, iterations
        )
        return mu
    lo = np.zeros(n_tok)
    hi = np.max(e, axis=1) + 1.0
    for _ in range(200):
        c_hi, _ = count_and_value(hi)
        grow = c_hi > max_experts + 1e-12
        if not grow.any():
            break
        lo = np.where(grow, hi, lo)
        hi = np.where(grow, hi * 2.0, hi)
    for _ in range(iterations):
        if np.all(hi - lo <= _MU_REL_TOL * hi):
            break
        mid = 0.5 * (lo + hi)
        c_mid, _ = count_and_value(mid)
        above = c_mid > max_experts + 1e-12
        lo = np.where(above, mid, lo)
        hi = np.where(~above, mid, hi)
    _, v_lo = count_and_value(lo)
    _, v_hi = count_and_value(hi)
    return np.where(v_hi >= v_lo, hi, lo)


def _ratio_greedy(scores, costs, eligible, thr_eff, max_experts, mu=None):
    """Ratio-greedy incumbent: cheapest (e + mu)/t experts until C1 holds (valid if <= D).

    Returns (selection ``[n, K] bool``, ok ``[n] bool``).
    """
    n_tok, k = scores.shape
    w = costs if mu is None else costs + mu[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(eligible, w / np.where(eligible, scores, 1.0), np.inf)
    order = np.argsort(ratio, axis=1, kind="stable")
    ts = np.take_along_axis(np.where(eligible, scores, 0.0), order, axis=1)
    reach = np.cumsum(ts, axis=1) >= thr_eff[:, None]
    has = reach.any(axis=1)
    kk = np.argmax(reach, axis=1)
    ok = has & (kk + 1 <= max_experts)
    take = (np.arange(k)[None, :] <= kk[:, None]) & ok[:, None]
    sel = np.zeros((n_tok, k), dtype=bool)
    np.put_along_axis(sel, order, take, axis=1)
    return sel & eligible, ok


# entries of one [chunk, K] work array of the fallback's vectorised preprocessing
_CHUNK_ENTRIES = 1 << 20


def solve(
    scores: np.ndarray,
    costs: np.ndarray,
    eligible: np.ndarray,
    thr_eff: np.ndarray,
    max_experts: int,
    incumbent: np.ndarray,
    node_limit: int | None,
    *,
    variant: str | None = None,
    deadline: float = 0.0,
):
    """DES over a batch of feasible tokens, numpy preprocessing + Python kernels (fallback).

    Args:
        scores, costs: ``[n, K], float64``.
        eligible: ``[n, K], bool`` (score > 0 and finite cost).
        thr_eff: ``[n], float64`` > 0 (C1: sum >= thr_eff); every token feasible.
        max_experts: D (<= K).
        incumbent: ``[n, K], bool`` a feasible selection per token (greedy Top-score prefix).
        node_limit: nodes per token or None.
        variant: ``"strong"``, ``"paper"`` or ``"paper-bfs"``; None = :data:`DEFAULT_VARIANT`.
        deadline: ``time.perf_counter()`` value to stop at (0 = none).

    Returns:
        (selection ``[n, K] bool``, nodes ``[n] int64``, stop ``[n] int8``,
        lower_bound ``[n] float64``).
    """
    n_tok, k = scores.shape
    variant = DEFAULT_VARIANT if variant is None else variant
    if variant not in VARIANTS:
        raise ValueError(f"unknown DES variant {variant!r}")
    selection = np.empty((n_tok, k), dtype=bool)
    nodes = np.zeros(n_tok, dtype=np.int64)
    stop = np.zeros(n_tok, dtype=np.int8)
    lower = np.zeros(n_tok)
    chunk = max(1, _CHUNK_ENTRIES // k)
    timed_out = False
    for lo in range(0, n_tok, chunk):
        hi = min(n_tok, lo + chunk)
        sl = slice(lo, hi)
        if not timed_out and deadline and _now() > deadline:
            timed_out = True
        timed_out = _solve_chunk(
            scores[sl], costs[sl], eligible[sl], thr_eff[sl], max_experts, incumbent[sl], node_limit,
            variant, deadline, timed_out, selection[sl], nodes[sl], stop[sl], lower[sl],
        )
    return selection, nodes, stop, lower


def _solve_chunk(scores, costs, eligible, thr_eff, max_experts, incumbent, node_limit, variant, deadline, timed_out, selection, nodes, stop, lower):
    n_tok, k = scores.shape
    selection[:] = incumbent
    inc_e = np.where(selection, costs, 0.0).sum(axis=1)
    t_el = np.where(eligible, scores, 0.0)
    e_el = np.where(eligible, costs, 0.0)
    if timed_out:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            rmin = np.where(eligible, e_el / np.where(eligible, t_el, 1.0), np.inf).min(axis=1)
        lower[:] = thr_eff * rmin
        stop[:] = STOP_TIME
        return True
    g_sel, g_ok = _ratio_greedy(scores, costs, eligible, thr_eff, max_experts)
    g_e = np.where(g_sel, costs, 0.0).sum(axis=1)
    better = g_ok & (g_e < inc_e)
    selection[better] = g_sel[better]
    inc_e[better] = g_e[better]

    n_elig = eligible.sum(axis=1)
    strong = variant in ("strong", "canonical")
    if strong:
        mu = cardinality_multiplier(scores, costs, eligible, thr_eff, max_experts)
        binding = mu > 0
        if binding.any():
            m_sel, m_ok = _ratio_greedy(scores, costs, eligible, thr_eff, max_experts, mu)
            m_e = np.where(m_sel, costs, 0.0).sum(axis=1)
            better = m_ok & (m_e < inc_e)
            selection[better] = m_sel[better]
            inc_e[better] = m_e[better]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            key = np.where(eligible, (e_el + mu[:, None]) / np.where(eligible, t_el, 1.0), np.inf)
        # eligible first even where e/t overflows to inf (lexsort is stable)
        order = np.lexsort((key, ~eligible), axis=-1)
    else:
        mu = np.zeros(n_tok)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            key = np.where(eligible, e_el / np.where(eligible, t_el, 1.0), -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")
    t_s = np.take_along_axis(t_el, order, axis=1)
    e_s = np.take_along_axis(e_el, order, axis=1)
    sufmax = np.zeros((n_tok, k + 1))
    sufmax[:, :k] = np.maximum.accumulate(t_s[:, ::-1], axis=1)[:, ::-1]
    if variant == "paper":
        # [n, K+1] suffix sums over the descending order
        suf_t = np.zeros((n_tok, k + 1))
        suf_e = np.zeros((n_tok, k + 1))
        suf_t[:, :k] = np.cumsum(t_s[:, ::-1], axis=1)[:, ::-1]
        suf_e[:, :k] = np.cumsum(e_s[:, ::-1], axis=1)[:, ::-1]
        a_l, b_l = suf_t.tolist(), suf_e.tolist()
    elif strong:
        w_s = e_s + mu[:, None]
        # [n, K+1] prefix sums over the ascending order
        p_t = np.zeros((n_tok, k + 1))
        p_w = np.zeros((n_tok, k + 1))
        p_t[:, 1:] = np.cumsum(t_s, axis=1)
        p_w[:, 1:] = np.cumsum(w_s, axis=1)
        a_l, b_l, w_l = p_t.tolist(), p_w.tolist(), w_s.tolist()

    limit = 0 if node_limit is None else int(node_limit)
    if variant == "paper-bfs" and limit == 0:
        limit = BFS_DEFAULT_NODE_LIMIT
    t_l, e_l, m_l = t_s.tolist(), e_s.tolist(), sufmax.tolist()
    if variant == "canonical":
        sufmin = np.full((n_tok, k + 1), np.inf)
        sufmin[:, :k] = np.minimum.accumulate(np.where(np.arange(k)[None, :] < n_elig[:, None], e_s, np.inf)[:, ::-1], axis=1)[:, ::-1]
        mn_l = sufmin.tolist()
        g_l = order.tolist()
        seed_l = np.take_along_axis(selection, order, axis=1).astype(np.int64).tolist()
        fbuf, cand_idx, best_idx, best_pos = [0.0] * (2 * k + 2), [0] * (k + 2), [0] * (k + 2), [0] * (k + 2)
    n_l, thr_l, inc_l, mu_l = n_elig.tolist(), thr_eff.tolist(), inc_e.tolist(), mu.tolist()
    size = k + 2
    stack = ([0] * size, [0.0] * size, [0.0] * size, [0] * size, [0] * size, [0.0] * size)
    x, inc_pos, best_x = [0] * size, [0] * size, [0] * size
    if variant == "paper-bfs":
        cap = 2 * limit + 2
        queue = ([0] * cap, [0.0] * cap, [0.0] * cap, [0] * cap, [0] * cap, [0] * cap)
    work = 0
    for q in range(n_tok):
        n = n_l[q]
        if timed_out:
            rmin = min(e_l[q][i] / t_l[q][i] for i in range(n))
            lower[q] = thr_l[q] * rmin
            stop[q] = STOP_TIME
            continue
        if variant == "paper-bfs":
            best_e, improved, cnt, st, open_lb = search_paper_bfs(
                t_l[q], e_l[q], n, thr_l[q], max_experts, limit, deadline, *queue, best_x
            )
            if improved and best_e >= inc_l[q]:
                improved = False
        elif variant == "canonical":
            best_e, improved, cnt, st, open_lb = search_canonical(
                t_l[q], e_l[q], w_l[q], a_l[q], b_l[q], m_l[q], mn_l[q], g_l[q], n, thr_l[q], max_experts, mu_l[q],
                seed_l[q], limit, deadline, *stack, x, inc_pos, best_x, fbuf, cand_idx, best_idx, best_pos,
            )
        elif variant == "paper":
            best_e, improved, cnt, st, open_lb = search_paper(
                t_l[q], e_l[q], a_l[q], b_l[q], m_l[q], n, thr_l[q], max_experts, inc_l[q], limit,
                deadline, *stack, x, best_x,
            )
        else:
            best_e, improved, cnt, st, open_lb = search_strong(
                t_l[q], e_l[q], w_l[q], a_l[q], b_l[q], m_l[q], n, thr_l[q], max_experts, mu_l[q],
                inc_l[q], limit, deadline, *stack, x, inc_pos, best_x,
            )
        if not improved:
            best_e = inc_l[q]
        nodes[q] = cnt
        stop[q] = st
        if improved:
            row = np.zeros(k, dtype=bool)
            row[order[q, :n][np.asarray(best_x[:n], dtype=bool)]] = True
            selection[q] = row
        lower[q] = min(best_e, open_lb) if st else best_e
        if st == STOP_TIME:
            timed_out = True
        work += cnt + n
        if deadline and not timed_out and work >= _CLOCK_WORK:
            work = 0
            timed_out = _now() > deadline
    return timed_out
