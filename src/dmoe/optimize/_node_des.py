"""Node-aware DES: exact branch and bound for P1(a) when several experts share a node.

Problem for one token at node i: experts j with score t_j > 0 and computation energy
a_j >= 0 live on nodes n(j); sending the token to node n costs c_n >= 0 once, however many
of its experts are used (c_i = 0 for the token's own node; ``inf`` = unreachable). Choose S,
|S| <= D (C2), sum_{j in S} t_j >= thr_eff (C1), minimising

    F(S) = sum_{n in n(S)} c_n + sum_{j in S} a_j.

With one expert per node this is P1(a) with e_j = a_j + c_{n(j)} (Algorithm 1).

Search (depth first, explicit stack of depth <= n + 1, "include" child first):

* decision order: *node blocks*. Each node's experts are sorted by ratio a_j / t_j
  (ties: lower index); nodes are ordered by the first slope of their envelope (below).
  Only the block being decided can be partially decided, so the state of a search node is
  (position, included score/energy/count, whether the current block's node is open).
* bound (valid, LP-style): the cheapest fractional cover of the residual score r by
  *pieces*. A node n not yet opened contributes its convex envelope: the lower convex hull
  of {(0, 0)} and {(s, c_n + g_n(s))}, where g_n(s) is the fractional cover cost of s
  with n's experts in ratio order; the hull is the tangent from the origin to the first
  breakpoint k* minimising (c_n + W_k)/T_k (slope sigma_n, capacity T_k*), then n's
  remaining experts one by one. Relaxing every node to its envelope and the choice to
  fractions gives a lower bound (each node's cost is >= its envelope, and the sum of
  convex piecewise-linear functions is minimised by filling the cheapest slopes first).
  An opened node contributes its undecided experts at slope a_j / t_j. The envelopes of
  the blocks after the current one are merged once per token into sorted piece lists
  per suffix of blocks (O(G n) memory), so a bound costs O(m_h log n) (m_h = experts of
  the current block): the current block's pieces are merged on the fly by binary search.
* C2: Lagrangian term as in :mod:`dmoe.optimize._des`: for mu >= 0 every a_j becomes
  a_j + mu and the bound subtracts mu (D - cnt) (weak duality, valid for any mu);
  mu is picked at the root by a golden-section search on the root bound. Plus C1/C2
  reachability cuts (open score < r; (D - cnt) max open score < r).
* dominance inside a block: expert p dominates q if both are on the same node,
  t_p >= t_q, a_p <= a_q and p is better in a way the canonical order sees (lower index,
  or a score/energy difference beyond a few ulps of the sums; :func:`_dominates`):
  swapping q for p keeps the node set and yields a canonically earlier selection, so the
  canonical optimum (below) never includes q without p; branches that do are cut.
* ties: the canonical order of issue 8 (:mod:`dmoe.optimize._ties`): smaller
  energy, then larger score sum, here both as correctly rounded sums (not exact real sums:
  the documented difference of the node-aware methods, :mod:`dmoe.optimize.selection`)
  (:func:`dmoe.optimize._ties.exact_sum`, equal to :func:`math.fsum`, so independent of
  summation order), then the expert-index rule (at
  the smallest index where two selections differ, the one containing it comes first).
  Nodes are pruned only when their bound exceeds the incumbent by more than the bound's
  float error (1e-12 relative), so every exact tie is reached and compared. A leaf is a
  search node whose included set meets C1 (adding experts only adds energy); with
  zero-energy experts a larger-score tie that adds a free expert is therefore not sought
  (the energy is still optimal).

The same kernel source runs compiled by numba (``njit(cache=True)``) or, when numba is
missing or disabled, as Python on numpy arrays (slow; fine for small instances).
"""

from __future__ import annotations

import math
import time
import types
import warnings

import numpy as np

from dmoe.optimize._ties import exact_sum

_EPS = 2.220446049250313e-16
_PRUNE_SLACK = 1e-12
_CLOCK_MASK = 1023
_MU_STEPS = 24


def _now():
    return time.perf_counter()


# ------------------------------------------------------------------------- kernels


def _partial(S, PT, PW, pos, end, r):
    """Cost of covering r with the list's pieces ``[pos, end)`` in order (they hold >= r)."""
    target = r + PT[pos]
    lo = pos
    hi = end - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if PT[mid + 1] >= target:
            hi = mid
        else:
            lo = mid + 1
    return PW[lo] - PW[pos] + (target - PT[lo]) * S[lo]


def _cover(r, cur_s, cur_q, ncur, S, PT, PW, ln):
    """Cheapest fractional cover of r > 0: pieces ``cur_*[:ncur]`` (sorted by slope) merged
    with a sorted list (slopes ``S[:ln]``, prefix capacities ``PT``, prefix costs ``PW``).
    Returns inf if all pieces together cannot cover r."""
    total = 0.0
    pos = 0
    for q in range(ncur):
        s = cur_s[q]
        # list pieces cheaper than this one: [pos, lo)
        lo = pos
        hi = ln
        while lo < hi:
            mid = (lo + hi) // 2
            if S[mid] < s:
                lo = mid + 1
            else:
                hi = mid
        avail = PT[lo] - PT[pos]
        if avail >= r:
            return total + _partial(S, PT, PW, pos, lo, r)
        total += PW[lo] - PW[pos]
        r -= avail
        pos = lo
        if cur_q[q] >= r:
            return total + r * s
        total += cur_q[q] * s
        r -= cur_q[q]
    if PT[ln] - PT[pos] < r:
        return math.inf
    return total + _partial(S, PT, PW, pos, ln, r)


def _block_pieces(pt, pw, lo, hi, c, is_open, cur_s, cur_q):
    """Pieces of block items ``[lo, hi)`` (ratio order): the items themselves when the
    node is open, else the envelope (tangent bundle from the origin, then the items after
    it). Returns the number of pieces."""
    if hi <= lo:
        return 0
    if is_open:
        n = 0
        for p in range(lo, hi):
            cur_s[n] = pw[p] / pt[p]
            cur_q[n] = pt[p]
            n += 1
        return n
    best = math.inf
    kbest = lo
    tt = 0.0
    ww = c
    bt = 0.0
    for p in range(lo, hi):
        tt += pt[p]
        ww += pw[p]
        v = ww / tt
        if v < best:
            best = v
            kbest = p
            bt = tt
    cur_s[0] = best
    cur_q[0] = bt
    n = 1
    for p in range(kbest + 1, hi):
        cur_s[n] = pw[p] / pt[p]
        cur_q[n] = pt[p]
        n += 1
    return n


def _dominates(t_p, a_p, i_p, t_q, a_q, i_q, a_margin, t_margin):
    """Expert p dominates q (same node): swapping q for p gives a canonically earlier set.

    p's energy is not higher and its score not lower (the node set is unchanged), and one
    of: p has the lower index (equal sums at worst, and the set containing the smaller
    differing index comes first); p's score is higher by more than ``t_margin`` or its
    energy lower by more than ``a_margin`` (margins of a few ulps of the largest possible
    sums, so the correctly rounded sums differ too).
    """
    if a_p > a_q or t_p < t_q:
        return False
    return i_p < i_q or t_p > t_q + t_margin or a_p < a_q - a_margin


def _lex_first(a, na, b, nb):
    """Expert-index rule: does sorted index set ``a[:na]`` come before ``b[:nb]``? At the
    first differing position the smaller index wins; a strict prefix comes after."""
    m = min(na, nb)
    for i in range(m):
        if a[i] != b[i]:
            return a[i] < b[i]
    return na > nb


def _sort_small(a, n):
    for i in range(1, n):
        v = a[i]
        p = i - 1
        while p >= 0 and a[p] > v:
            a[p + 1] = a[p]
            p -= 1
        a[p + 1] = v


def _prepare(t_all, a_all, node_all, c_all, mu, idx, pt, pa, pw, pblk, blk_lo, blk_hi, blk_c, key, sel_node):
    """Eligible experts into node blocks (see module doc). Returns (n, number of blocks)."""
    e = t_all.shape[0]
    n = 0
    for j in range(e):
        if t_all[j] > 0.0 and a_all[j] < math.inf and c_all[node_all[j]] < math.inf:
            idx[n] = j
            n += 1
    if n == 0:
        return 0, 0
    # ratio order (stable: lower index first on ties), then stable by node
    for p in range(n):
        j = idx[p]
        key[p] = (a_all[j] + mu) / t_all[j]
    o1 = np.argsort(key[:n], kind="mergesort")
    for p in range(n):
        key[p] = node_all[idx[o1[p]]]
    o2 = np.argsort(key[:n], kind="mergesort")
    tmp_idx = np.empty(n, dtype=np.int64)
    for p in range(n):
        tmp_idx[p] = idx[o1[o2[p]]]
    # blocks by node, then nodes ordered by their envelope slope
    g = 0
    p = 0
    blo = np.empty(n + 1, dtype=np.int64)
    bnode = np.empty(n, dtype=np.int64)
    while p < n:
        nd = node_all[tmp_idx[p]]
        blo[g] = p
        bnode[g] = nd
        q = p
        while q < n and node_all[tmp_idx[q]] == nd:
            q += 1
        g += 1
        p = q
    blo[g] = n
    slope = np.empty(g)
    for b in range(g):
        best = math.inf
        tt = 0.0
        ww = c_all[bnode[b]]
        for q in range(blo[b], blo[b + 1]):
            j = tmp_idx[q]
            tt += t_all[j]
            ww += a_all[j] + mu
            v = ww / tt
            if v < best:
                best = v
        slope[b] = best
    border = np.argsort(slope, kind="mergesort")
    p = 0
    for h in range(g):
        b = border[h]
        blk_lo[h] = p
        blk_c[h] = c_all[bnode[b]]
        sel_node[h] = bnode[b]
        for q in range(blo[b], blo[b + 1]):
            j = tmp_idx[q]
            idx[p] = j
            pt[p] = t_all[j]
            pa[p] = a_all[j]
            pw[p] = a_all[j] + mu
            pblk[p] = h
            p += 1
        blk_hi[h] = p
    return n, g


def _suffix_lists(n, g, pt, pw, blk_lo, blk_hi, blk_c, S, PT, PW, L, cur_s, cur_q):
    """Sorted piece lists of blocks h..g-1 for every h (row h; row g empty)."""
    L[g] = 0
    PT[g, 0] = 0.0
    PW[g, 0] = 0.0
    for h in range(g - 1, -1, -1):
        m = _block_pieces(pt, pw, blk_lo[h], blk_hi[h], blk_c[h], False, cur_s, cur_q)
        PT[h, 0] = 0.0
        PW[h, 0] = 0.0
        a = 0
        b = 0
        d = 0
        lb = L[h + 1]
        while a < m or b < lb:
            if b >= lb or (a < m and cur_s[a] <= S[h + 1, b]):
                S[h, d] = cur_s[a]
                PT[h, d + 1] = PT[h, d] + cur_q[a]
                PW[h, d + 1] = PW[h, d] + cur_q[a] * cur_s[a]
                a += 1
            else:
                S[h, d] = S[h + 1, b]
                q = PT[h + 1, b + 1] - PT[h + 1, b]
                PT[h, d + 1] = PT[h, d] + q
                PW[h, d + 1] = PW[h, d] + q * S[h + 1, b]
                b += 1
            d += 1
        L[h] = d


def _root_bound(n, g, pt, pw, blk_lo, blk_hi, blk_c, thr, mu, d_max, S, PT, PW, L, cur_s, cur_q):
    _suffix_lists(n, g, pt, pw, blk_lo, blk_hi, blk_c, S, PT, PW, L, cur_s, cur_q)
    return _cover(thr, cur_s, cur_q, 0, S[0], PT[0], PW[0], L[0]) - mu * d_max


def search_token(
    t_all, a_all, node_all, c_all, thr, d_max, inc_x, node_limit, deadline,
):
    """Exact node-aware P1(a) for one feasible token (thr > 0, some D experts reach it).

    Args:
        t_all, a_all: ``[E]`` scores and computation energies; node_all: ``[E]`` node ids;
        c_all: ``[N]`` transmission energy to each node (inf = unreachable).
        thr: threshold minus tolerance (> 0); d_max: D.
        inc_x: ``[E]`` bool, a feasible selection (in: incumbent, out: the best found).
        node_limit: nodes at most (0 = unlimited); deadline: perf_counter stop time (0 = none).

    Returns:
        (nodes, stop, lower): search nodes popped, stop code (0 done, 1 node limit, 2 time
        limit), a proven lower bound on the optimum (the optimum itself when done).
    """
    e = t_all.shape[0]
    idx = np.empty(e, dtype=np.int64)
    pt = np.empty(e)
    pa = np.empty(e)
    pw = np.empty(e)
    pblk = np.empty(e, dtype=np.int64)
    blk_lo = np.empty(e + 1, dtype=np.int64)
    blk_hi = np.empty(e + 1, dtype=np.int64)
    blk_c = np.empty(e + 1)
    key = np.empty(e)
    sel_node = np.empty(e + 1, dtype=np.int64)
    # incumbent
    best_set = np.empty(e, dtype=np.int64)
    terms_e = np.empty(2 * e + 1)
    terms_t = np.empty(e + 1)
    fbuf = np.empty(2 * e + 2)
    # positions 0..2e of the terms buffers (exact_sum sums vals[pos[:n]])
    seq = np.arange(2 * e + 1)
    nb = 0
    ne = 0
    used = np.zeros(c_all.shape[0], dtype=np.bool_)
    for j in range(e):
        if inc_x[j]:
            terms_e[ne] = a_all[j]
            ne += 1
            terms_t[nb] = t_all[j]
            best_set[nb] = j
            nb += 1
            if not used[node_all[j]]:
                used[node_all[j]] = True
                terms_e[ne] = c_all[node_all[j]]
                ne += 1
    best_e = exact_sum(terms_e, seq, ne, fbuf)
    best_s = exact_sum(terms_t, seq, nb, fbuf)
    # mu by golden-section search on the root bound (concave in mu)
    n, g = _prepare(t_all, a_all, node_all, c_all, 0.0, idx, pt, pa, pw, pblk, blk_lo, blk_hi, blk_c, key, sel_node)
    cur_s = np.empty(n + 2)
    cur_q = np.empty(n + 2)
    S = np.empty((g + 1, n + 1))
    PT = np.empty((g + 1, n + 2))
    PW = np.empty((g + 1, n + 2))
    L = np.empty(g + 1, dtype=np.int64)
    mu = 0.0
    if n > d_max:
        f0 = _root_bound(n, g, pt, pw, blk_lo, blk_hi, blk_c, thr, 0.0, d_max, S, PT, PW, L, cur_s, cur_q)
        amax = 0.0
        for p in range(n):
            if pa[p] > amax:
                amax = pa[p]
        cmax = 0.0
        for h in range(g):
            if blk_c[h] > cmax:
                cmax = blk_c[h]
        hi = 2.0 * (amax + cmax) + 1e-300
        lo = 0.0
        gr = 0.6180339887498949
        x1 = hi - gr * (hi - lo)
        x2 = lo + gr * (hi - lo)
        _prepare(t_all, a_all, node_all, c_all, x1, idx, pt, pa, pw, pblk, blk_lo, blk_hi, blk_c, key, sel_node)
        f1 = _root_bound(n, g, pt, pw, blk_lo, blk_hi, blk_c, thr, x1, d_max, S, PT, PW, L, cur_s, cur_q)
        _prepare(t_all, a_all, node_all, c_all, x2, idx, pt, pa, pw, pblk, blk_lo, blk_hi, blk_c, key, sel_node)
        f2 = _root_bound(n, g, pt, pw, blk_lo, blk_hi, blk_c, thr, x2, d_max, S, PT, PW, L, cur_s, cur_q)
        for _ in range(_MU_STEPS):
            if f1 >= f2:
                hi = x2
                x2 = x1
                f2 = f1
                x1 = hi - gr * (hi - lo)
                _prepare(t_all, a_all, node_all, c_all, x1, idx, pt, pa, pw, pblk, blk_lo, blk_hi, blk_c, key, sel_node)
                f1 = _root_bound(n, g, pt, pw, blk_lo, blk_hi, blk_c, thr, x1, d_max, S, PT, PW, L, cur_s, cur_q)
            else:
                lo = x1
                x1 = x2
                f1 = f2
                x2 = lo + gr * (hi - lo)
                _prepare(t_all, a_all, node_all, c_all, x2, idx, pt, pa, pw, pblk, blk_lo, blk_hi, blk_c, key, sel_node)
                f2 = _root_bound(n, g, pt, pw, blk_lo, blk_hi, blk_c, thr, x2, d_max, S, PT, PW, L, cur_s, cur_q)
        if f1 > f0 or f2 > f0:
            mu = x1 if f1 >= f2 else x2
    _prepare(t_all, a_all, node_all, c_all, mu, idx, pt, pa, pw, pblk, blk_lo, blk_hi, blk_c, key, sel_node)
    _suffix_lists(n, g, pt, pw, blk_lo, blk_hi, blk_c, S, PT, PW, L, cur_s, cur_q)
    a_margin = 8.0 * _EPS * best_e
    # suffix sums and maxima of the scores in decision order
    suft = np.zeros(n + 1)
    sufmax = np.zeros(n + 1)
    for p in range(n - 1, -1, -1):
        suft[p] = suft[p + 1] + pt[p]
        sufmax[p] = max(sufmax[p + 1], pt[p])
    t_margin = 8.0 * _EPS * suft[0]
    # stack
    st_j = np.empty(n + 2, dtype=np.int64)
    st_t = np.empty(n + 2)
    st_e = np.empty(n + 2)
    st_c = np.empty(n + 2, dtype=np.int64)
    st_d = np.empty(n + 2, dtype=np.int64)
    st_o = np.empty(n + 2, dtype=np.bool_)
    st_lb = np.empty(n + 2)
    x = np.zeros(n + 1, dtype=np.int64)
    cand = np.empty(n + 1, dtype=np.int64)
    best_pos = np.empty(n + 1, dtype=np.int64)
    improved = False
    nbp = 0
    st_j[0] = 0
    st_t[0] = 0.0
    st_e[0] = 0.0
    st_c[0] = 0
    st_d[0] = -1
    st_o[0] = False
    st_lb[0] = 0.0
    sp = 1
    nodes = 0
    stop = 0
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
        is_open = st_o[sp]
        nodes += 1
        if d >= 0:
            x[j - 1] = d
        r = thr - inc_t
        if r <= 0.0:
            # leaf: compare in the canonical order (exact sums, then the index rule)
            nc = 0
            ne = 0
            last_blk = -1
            for p in range(j):
                if x[p] == 1:
                    cand[nc] = idx[p]
                    terms_t[nc] = pt[p]
                    nc += 1
                    terms_e[ne] = pa[p]
                    ne += 1
                    if pblk[p] != last_blk:
                        last_blk = pblk[p]
                        terms_e[ne] = blk_c[last_blk]
                        ne += 1
            cand_e = exact_sum(terms_e, seq, ne, fbuf)
            better = False
            if cand_e < best_e:
                better = True
            elif cand_e == best_e:
                cand_t = exact_sum(terms_t, seq, nc, fbuf)
                if cand_t > best_s:
                    better = True
                elif cand_t == best_s:
                    _sort_small(cand, nc)
                    better = _lex_first(cand, nc, best_set, nb)
            if better:
                _sort_small(cand, nc)
                best_e = cand_e
                best_s = exact_sum(terms_t, seq, nc, fbuf)
                for p in range(nc):
                    best_set[p] = cand[p]
                nb = nc
                improved = True
                nbp = 0
                for p in range(j):
                    if x[p] == 1:
                        best_pos[nbp] = p
                        nbp += 1
            continue
        if j >= n or cnt >= d_max:
            continue
        rb = r - _PRUNE_SLACK
        if suft[j] < rb:
            continue
        q_left = d_max - cnt
        if q_left * sufmax[j] < rb:
            continue
        h = pblk[j]
        if j == 0 or pblk[j - 1] != h:
            is_open = False
        ncur = _block_pieces(pt, pw, j, blk_hi[h], blk_c[h], is_open, cur_s, cur_q)
        cover = _cover(rb, cur_s, cur_q, ncur, S[h + 1], PT[h + 1], PW[h + 1], L[h + 1])
        lb = inc_e + cover - mu * q_left
        if lb > best_e + 1e-12 * (best_e + cover + mu * q_left):
            continue
        # dominance inside the block
        tj = pt[j]
        aj = pa[j]
        ij = idx[j]
        can_inc = True
        can_exc = True
        for p in range(blk_lo[h], j):
            if x[p] == 0:
                if _dominates(pt[p], pa[p], idx[p], tj, aj, ij, a_margin, t_margin):
                    can_inc = False
            else:
                if _dominates(tj, aj, ij, pt[p], pa[p], idx[p], a_margin, t_margin):
                    can_exc = False
        if can_exc:
            st_j[sp] = j + 1
            st_t[sp] = inc_t
            st_e[sp] = inc_e
            st_c[sp] = cnt
            st_d[sp] = 0
            st_o[sp] = is_open
            st_lb[sp] = lb
            sp += 1
        if can_inc:
            st_j[sp] = j + 1
            st_t[sp] = inc_t + tj
            st_e[sp] = inc_e + aj + (0.0 if is_open else blk_c[h])
            st_c[sp] = cnt + 1
            st_d[sp] = 1
            st_o[sp] = True
            st_lb[sp] = lb
            sp += 1
    lower = best_e
    if stop != 0:
        for q in range(sp):
            if st_lb[q] < lower:
                lower = st_lb[q]
    if improved:
        for jj in range(e):
            inc_x[jj] = False
        for p in range(nbp):
            inc_x[idx[best_pos[p]]] = True
    return nodes, stop, lower


def solve_batch(scores, acost, node, ncost, thr, d_max, sel, nodes, stop, lower, node_limit, deadline):
    """Run :func:`search_token` over a batch; ``sel`` holds the incumbents on entry.

    Args:
        scores, acost: ``[W, E]``; node: ``[E]`` int64; ncost: ``[W, N]``; thr: ``[W]``.
        sel: ``[W, E]`` bool incumbents (in) / selections (out); nodes, stop, lower: ``[W]``
        outputs. Tokens after the deadline keep their incumbent (stop = 2).
    """
    timed_out = False
    for q in range(scores.shape[0]):
        if timed_out:
            stop[q] = 2
            lower[q] = 0.0
            continue
        nq, sq, lq = search_token(scores[q], acost[q], node, ncost[q], thr[q], d_max, sel[q], node_limit, deadline)
        nodes[q] = nq
        stop[q] = sq
        lower[q] = lq
        if sq == 2:
            timed_out = True
        elif deadline > 0.0 and _now() > deadline:
            timed_out = True


# ------------------------------------------------------------------------- compilation

_FUNCS = ("_partial", "_cover", "_block_pieces", "exact_sum", "_dominates", "_lex_first", "_sort_small", "_prepare", "_suffix_lists", "_root_bound",
          "search_token", "solve_batch")
_NUMBA_NS = None


def _numba_namespace():
    """Compiled copies of the kernels (None without numba); cached on disk."""
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

        ns = dict(globals())
        ns["_now"] = now_nb
        for name in _FUNCS:
            fn = globals()[name]
            copy = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
            copy.__qualname__ = fn.__qualname__
            copy.__module__ = fn.__module__
            ns[name] = numba.njit(cache=True)(copy)
        _NUMBA_NS = ns
    return _NUMBA_NS or None


def run(scores, acost, node, ncost, thr_eff, max_experts, incumbent, node_limit, deadline, *, use_numba: bool):
    """Solve a batch of feasible, non-trivial tokens.

    Args:
        scores, acost: ``[W, E], float64``; node: ``[E], int64``; ncost: ``[W, N], float64``;
        thr_eff: ``[W]`` (> 0); incumbent: ``[W, E] bool`` feasible selections.
        node_limit: int or None; deadline: perf_counter value or 0.
        use_numba: run the compiled kernels (falls back to Python when numba is missing).

    Returns:
        (selection ``[W, E] bool``, nodes ``[W] int64``, stop ``[W] int8``, lower ``[W]``).
    """
    w = scores.shape[0]
    sel = np.array(incumbent, dtype=np.bool_, copy=True)
    nodes = np.zeros(w, dtype=np.int64)
    stop = np.zeros(w, dtype=np.int8)
    lower = np.zeros(w)
    ns = _numba_namespace() if use_numba else None
    args = (
        np.ascontiguousarray(scores, dtype=np.float64),
        np.ascontiguousarray(acost, dtype=np.float64),
        np.ascontiguousarray(node, dtype=np.int64),
        np.ascontiguousarray(ncost, dtype=np.float64),
        np.ascontiguousarray(thr_eff, dtype=np.float64),
        int(max_experts), sel, nodes, stop, lower, int(node_limit or 0), float(deadline or 0.0),
    )
    if ns is not None:
        try:
            ns["solve_batch"](*args)
            return sel, nodes, stop, lower
        except Exception as exc:  # a numba that cannot compile the kernels: same search in Python
            if not type(exc).__module__.startswith("numba"):
                raise
            warnings.warn(
                f"numba could not compile node-aware DES ({type(exc).__name__}); using the Python search",
                RuntimeWarning,
                stacklevel=3,
            )
            sel[:] = incumbent
    solve_batch(*args)
    return sel, nodes, stop, lower
