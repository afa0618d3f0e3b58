"""Fast compiled driver of the canonical DES (issue 18): reduce, then enumerate or search.

``select_experts(method="des" | "auto")`` with numba, the canonical variant and no
``node_limit`` / ``time_limit`` runs :func:`solve_batch` here: one compiled loop over the
tokens, workspaces allocated once per call. It returns the same selection as
:func:`dmoe.optimize._des.solve_batch` (the canonical optimum of
:mod:`dmoe.optimize._ties` is unique, so any exact method gives it bit for bit; tested
against brute force, HiGHS and that driver). Per token:

0. **Few experts** (K <= :data:`SMALL`, D <= 8): while gathering, the D largest eligible
   scores by a branch-free insertion. If their sum surely reaches ``thr_eff``, only the
   experts whose score plus the D - 1 largest others can reach it take part (the
   others are in no subset meeting C1), and with D <= 2 the singles and pairs among them
   are scanned branch free (:func:`_pairs_best`), else they are enumerated (step 4).
   Whatever naive sums cannot decide (a sum within rounding of the threshold, energies
   within rounding of each other) goes through the general steps below.
1. **Eligible experts** (score > 0, finite cost) in index order, and the Top-m
   (m = min(D, n)) by the Remark 2 order (score descending, then cost ascending, then
   index) by bounded insertion in the same pass (all of them, rank-sorted, when at most
   :data:`SMALL`).
2. **Remark 2**: the token is feasible iff the correctly rounded Top-m score sum reaches
   ``thr_eff``. The naive sum decides unless it is within ``_REL`` of the threshold, where
   :func:`~dmoe.optimize._ties.exact_sum` does. Infeasible tokens take their Top-m.
3. **Reduction** (n > :data:`SMALL`): the LP of P1(a) without C2 (fractional cover of
   ``thr_eff`` in ascending e/t) gives lambda, its critical ratio, and with it the
   Lagrangian bound ``LB = lambda thr + sum_j min(0, e_j - lambda t_j)`` on every
   selection meeting C1 (weak duality, any lambda >= 0). An expert j with
   ``LB + max(0, e_j - lambda t_j)`` above the energy of a feasible incumbent (the best
   of: the shortest Top-score prefix meeting C1, the LP's e/t prefix when it has <= D
   experts, the LP's first f items completed by the cheapest expert that covers the rest)
   is in no selection of smaller or equal energy, so not in the canonical optimum, and is
   dropped (with a relative slack of ``_FILTER_REL`` = 1e-9 against rounding, far above
   the error of sums of float64 terms). The LP only looks at the experts with e/t <= the
   largest e/t of the Top-score incumbent: they already cover ``thr_eff``, so the LP's
   critical item is among them.
4. **Enumeration** (<= :data:`SMALL` experts left): depth first over the subsets of at
   most D experts in the Remark 2 order (lexicographic in positions), pruned by
   energy (costs >= 0: a superset never costs less), by the Lagrangian bound of step 3
   (``LB + sum over the subset of max(0, e_j - lambda t_j)``), and by reachability (the
   next D - |S| scores in descending order cannot reach ``thr_eff``: neither can any
   later ones); the last expert of a D-subset is chosen by one scan (among completions of
   the same prefix the canonical order is that of the single experts). Candidates meeting
   C1 are compared in the canonical order: naive sums decide when they differ by more
   than their rounding bound, otherwise :func:`~dmoe.optimize._ties.compare_sets` does
   (exact sums, then the index rule), so the result is the canonical optimum regardless
   of the enumeration order.
5. **Search** (more than :data:`SMALL` experts left): the canonical branch and bound of
   :mod:`dmoe.optimize._des` (:func:`~dmoe.optimize._des.search_canonical`, its mu and
   incumbents by :func:`~dmoe.optimize._des._root`) on the experts left, seeded with the
   incumbent.

Energies are computed in the kernel exactly as ``np.where(selection, costs, 0).sum(axis=1)``
(numpy's pairwise order; tested bit for bit). No token allocates: every workspace is
O(K), allocated once per call; the loop runs without numba's reference counting (a call
passing arrays would otherwise cost an atomic increment and decrement per array).
"""

from __future__ import annotations

import math

import numpy as np

from dmoe.optimize import _des
from dmoe.optimize._des import _arrange, _root, search_canonical
from dmoe.optimize._ties import compare_sets, exact_sum

#: at most this many eligible experts (after the reduction) are enumerated; more are searched
SMALL = 12
# the D largest scores are tracked while gathering when D <= _TRACK
_TRACK = 8
# relative rounding bound of a naive sum of <= K float64 terms (K u <= 1e-12 up to K ~ 1e4)
_REL = 1e-12
# relative slack of the reduction (step 3): covers the rounding of LB and the reduced costs
_FILTER_REL = 1e-9
_TINY = 1e-305
_BIG = 1.7976931348623157e308  # largest finite float64


def _before(tt, ee, a, b):
    """Remark 2 order: higher score first, then lower cost, then lower position."""
    if tt[a] != tt[b]:
        return tt[a] > tt[b]
    if ee[a] != ee[b]:
        return ee[a] < ee[b]
    return a < b


def _pairwise_block(v, lo, n):
    """numpy's pairwise sum of ``v[lo:lo + n]`` for n <= 128: sequential below 8 terms,
    else eight interleaved partial sums combined as a tree, then the rest."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += v[i]
        return res
    r0 = v[lo]
    r1 = v[lo + 1]
    r2 = v[lo + 2]
    r3 = v[lo + 3]
    r4 = v[lo + 4]
    r5 = v[lo + 5]
    r6 = v[lo + 6]
    r7 = v[lo + 7]
    end = lo + n - n % 8
    i = lo + 8
    while i < end:
        r0 += v[i]
        r1 += v[i + 1]
        r2 += v[i + 2]
        r3 += v[i + 3]
        r4 += v[i + 4]
        r5 += v[i + 5]
        r6 += v[i + 6]
        r7 += v[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += v[i]
        i += 1
    return res


def _pairwise_sum(v, n, f_lo, f_n, f_st, vals):
    """``sum(v[:n])`` in numpy's pairwise order, so that the energies equal
    ``np.where(selection, costs, 0.0).sum(axis=1)`` bit for bit (tested): blocks of <= 128
    (:func:`_pairwise_block`), above that the two halves (the first a multiple of 8)
    summed separately and added. Iterative (a recursive kernel does not load from numba's
    cache); ``f_lo``, ``f_n``, ``f_st``, ``vals``: scratch >= 2 log2(n) + 2."""
    if n <= 128:
        return _pairwise_block(v, 0, n)
    top = 0
    f_lo[0] = 0
    f_n[0] = n
    f_st[0] = 0
    nv = 0
    while top >= 0:
        lo = f_lo[top]
        m = f_n[top]
        if m <= 128:
            vals[nv] = _pairwise_block(v, lo, m)
            nv += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        st = f_st[top]
        f_st[top] = st + 1
        if st == 0:
            top += 1
            f_lo[top] = lo
            f_n[top] = half
            f_st[top] = 0
        elif st == 1:
            top += 1
            f_lo[top] = lo + half
            f_n[top] = m - half
            f_st[top] = 0
        else:
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
            top -= 1
    return vals[0]


def _row_energy(sel, costs, q, k, buf, f_lo, f_n, f_st, vals):
    """Energy of token q: its selected costs summed as numpy sums a row (``buf``: scratch >= k).

    The term of expert j is ``min(c_j, DBL_MAX) * sel_j``: c_j when selected (always
    finite), an exact 0.0 otherwise (also for c_j = inf), without a branch. Up to 128
    experts the block sum reads the row directly (adding 0.0 is exact, so starting the
    partial sums at 0 changes nothing)."""
    if k < 8:
        res = 0.0
        for j in range(k):
            res += min(costs[q, j], _BIG) * sel[q, j]
        return res
    if k <= 128:
        r0 = 0.0
        r1 = 0.0
        r2 = 0.0
        r3 = 0.0
        r4 = 0.0
        r5 = 0.0
        r6 = 0.0
        r7 = 0.0
        end = k - k % 8
        for j in range(0, end, 8):
            r0 += min(costs[q, j], _BIG) * sel[q, j]
            r1 += min(costs[q, j + 1], _BIG) * sel[q, j + 1]
            r2 += min(costs[q, j + 2], _BIG) * sel[q, j + 2]
            r3 += min(costs[q, j + 3], _BIG) * sel[q, j + 3]
            r4 += min(costs[q, j + 4], _BIG) * sel[q, j + 4]
            r5 += min(costs[q, j + 5], _BIG) * sel[q, j + 5]
            r6 += min(costs[q, j + 6], _BIG) * sel[q, j + 6]
            r7 += min(costs[q, j + 7], _BIG) * sel[q, j + 7]
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for j in range(end, k):
            res += min(costs[q, j], _BIG) * sel[q, j]
        return res
    for j in range(k):
        buf[j] = min(costs[q, j], _BIG) * sel[q, j]
    return _pairwise_sum(buf, k, f_lo, f_n, f_st, vals)


def _rank_place(tt, ee, ii, n, cut, t_out, e_out, i_out):
    """Write the experts with score >= ``cut`` (score, cost, index) in the Remark 2 order
    into the ``*_out`` arrays (length >= n + 1), by counting over all n (fixed trip counts:
    branch free, O(n^2)). Returns how many were written."""
    m = 0
    for i in range(n):
        ti = tt[i]
        ei = ee[i]
        r = 0
        for j in range(n):
            tj = tt[j]
            ej = ee[j]
            r += (tj >= cut) & ((tj > ti) | ((tj == ti) & ((ej < ei) | ((ej == ei) & (j < i)))))
        keep = ti >= cut
        m += keep
        r = r if keep else n
        t_out[r] = ti
        e_out[r] = ei
        i_out[r] = ii[i]
    return m


def _pairs_best(tt, ee, n, d, thr, tsl):
    """D <= 2: the cheapest single expert or pair (in any order) that surely meets C1.

    Branch free but for a new incumbent (a few times per token): the tests mispredict
    otherwise, and they are most of the work.

    Returns:
        (clean, a, b): ``clean`` is False when naive sums cannot decide (a score sum within
        ``tsl`` of thr, or two energies within the 1e-12 relative rounding bound: then the
        exact enumeration decides); otherwise positions a (and b, or -1) of the canonical
        optimum, a = -1 when nothing meets C1.
    """
    ba = -1
    bb = -1
    # the incumbent's energy window (finite: an infeasible candidate's inf is outside it)
    lo = _BIG
    hi = _BIG
    unclear = False
    thr_hi = thr + tsl
    thr_lo = thr - tsl
    for a in range(n):
        ta = tt[a]
        ea = ee[a]
        for b in range(a, n if d > 1 else a + 1):
            t2 = ta + (tt[b] if b != a else 0.0)
            e2 = ea + (ee[b] if b != a else 0.0)
            sure = t2 >= thr_hi
            ev = e2 if sure else math.inf
            unclear |= ((t2 >= thr_lo) & (t2 < thr_hi)) | ((ev >= lo) & (ev <= hi))
            if ev < lo:
                ba = a
                bb = b
                lo = ev * (1.0 - _REL) - _TINY
                hi = ev * (1.0 + _REL) + _TINY
    return not unclear, ba, (bb if bb != ba else -1)


def _rank_sort(tt, ee, n, out):
    """``out[:n]`` = positions ``0..n-1`` in the Remark 2 order, by counting (branch free,
    O(n^2): for the few experts that are enumerated; insertion sort mispredicts)."""
    for i in range(n):
        ti = tt[i]
        ei = ee[i]
        r = 0
        for j in range(n):
            tj = tt[j]
            ej = ee[j]
            r += (tj > ti) | ((tj == ti) & ((ej < ei) | ((ej == ei) & (j < i))))
        out[r] = i


def _meets(tt, pos, cnt, naive, thr, tsl, fbuf):
    """C1 for the set ``pos[:cnt]`` with naive score sum ``naive``: the correctly rounded
    sum >= thr (exact sum only when the naive one is within ``tsl`` of thr)."""
    if naive >= thr + tsl:
        return True
    if naive < thr - tsl:
        return False
    return exact_sum(tt, pos, cnt, fbuf) >= thr


def _reduce(tt, ee, idx, n, d, thr, tsl, top, k_top, key, cand, rank, rc, inc, fbuf):
    """Step 3: a good incumbent, then drop the experts that cannot be in the canonical optimum.

    Incumbents (each checked against C1 exactly, <= D experts): the Top-score prefix
    ``top[:k_top]``; the e/t prefix of the LP; the LP's first f items (f = k, k - 1,
    k - 2 for the critical item k) completed by the cheapest single expert that covers
    the rest of ``thr``. The cheapest one bounds the optimum from above (ub).

    Args:
        tt, ee, idx: the n eligible experts (score, cost, expert index); compacted in place.
        top: positions of the Top-score prefix, ``top[:k_top]`` (feasible).
        key, cand, rank: scratch (length >= n); rc: out (length >= n);
        inc: out, the incumbent as positions of the compacted experts (length >= D);
        fbuf: float scratch >= 2 n + 2.

    Returns:
        (n_left, lb, k_inc): experts left (same relative order); the Lagrangian bound
        lowered by its rounding slack (``lb + sum of rc`` over a set is a valid bound on its
        energy, up to the 1e-12 relative slack of the energies); the incumbent's size
        (``inc[:k_inc]``; 0 if one of its experts was dropped, which rounding beyond the
        slack could only cause). ``rc[:n_left]`` holds max(0, e_j - lambda t_j).
    """
    ub = 0.0
    rho = 0.0
    for i in range(k_top):
        p = top[i]
        inc[i] = p
        ub += ee[p]
        r = ee[p] / tt[p]
        if r > rho:
            rho = r
    k_inc = k_top
    # LP without C2 over the experts with e/t <= rho (they cover thr), ascending e/t
    nc = 0
    rho_hi = rho * (1.0 + 1e-12)
    for j in range(n):
        rank[j] = n
        if ee[j] > rho_hi * tt[j]:  # e / t > rho: no division for most experts
            continue
        r = ee[j] / tt[j]
        if r <= rho:
            key[j] = r
            p = nc - 1
            while p >= 0 and key[cand[p]] > r:
                cand[p + 1] = cand[p]
                p -= 1
            cand[p + 1] = j
            nc += 1
    acc = 0.0
    kk = nc - 1
    for i in range(nc):
        j = cand[i]
        rank[j] = i
        acc += tt[j]
        if acc >= thr:
            kk = i
            break
    for i in range(kk + 1, nc):
        rank[cand[i]] = i
    lam = key[cand[kk]]
    # incumbent: the e/t prefix cand[:kk + 1]
    if kk + 1 <= d:
        en = 0.0
        for i in range(kk + 1):
            en += ee[cand[i]]
        if en < ub and _meets(tt, cand, kk + 1, acc, thr, tsl, fbuf):
            ub = en
            k_inc = kk + 1
            for i in range(k_inc):
                inc[i] = cand[i]
    # incumbents: cand[:f] + the cheapest expert covering the rest, f = kk, kk - 1, kk - 2
    # (one pass over the experts for the three; rank[j] >= f: j is not in cand[:f])
    bt0 = 0.0
    be0 = 0.0
    bt1 = 0.0
    be1 = 0.0
    bt2 = 0.0
    be2 = 0.0
    for i in range(kk):
        t = tt[cand[i]]
        e = ee[cand[i]]
        bt0 += t
        be0 += e
        if i < kk - 1:
            bt1 += t
            be1 += e
        if i < kk - 2:
            bt2 += t
            be2 += e
    r0 = thr - tsl - bt0
    r1 = thr - tsl - bt1
    r2 = thr - tsl - bt2
    c0 = ub - be0
    c1 = ub - be1
    c2 = ub - be2
    j0 = -1
    j1 = -1
    j2 = -1
    # the same pass adds up LB(lambda) and the magnitude of every term it and the path
    # bounds add (rounding slack)
    lb = lam * thr
    mag = lam * thr
    for j in range(n):
        t = tt[j]
        e = ee[j]
        r = e - lam * t
        mag += lam * t
        if r < 0.0:
            lb += r
            mag += e
        rk = rank[j]
        if rk >= kk and t >= r0 and e < c0:
            c0 = e
            j0 = j
        if rk >= kk - 1 and t >= r1 and e < c1:
            c1 = e
            j1 = j
        if rk >= kk - 2 and t >= r2 and e < c2:
            c2 = e
            j2 = j
    for f in range(kk, kk - 3, -1):
        if f < 0 or f + 1 > d:
            continue
        if f == kk:
            best_j, base_t, base_e = j0, bt0, be0
        elif f == kk - 1:
            best_j, base_t, base_e = j1, bt1, be1
        else:
            best_j, base_t, base_e = j2, bt2, be2
        if best_j >= 0 and base_e + ee[best_j] < ub:
            cand[f] = best_j  # cand[f:] is not read again (f decreases)
            if _meets(tt, cand, f + 1, base_t + tt[best_j], thr, tsl, fbuf):
                ub = base_e + ee[best_j]
                k_inc = f + 1
                for i in range(k_inc):
                    inc[i] = cand[i]
    mag += ub
    slack = _FILTER_REL * mag + _TINY
    cap = ub - lb
    m = 0
    for j in range(n):
        r = ee[j] - lam * tt[j]
        if r < 0.0:
            r = 0.0
        rank[j] = -1
        if r <= cap + slack + _FILTER_REL * ee[j]:
            rank[j] = m
            tt[m] = tt[j]
            ee[m] = ee[j]
            idx[m] = idx[j]
            rc[m] = r
            m += 1
    for i in range(k_inc):
        p = rank[inc[i]]
        if p < 0:  # pragma: no cover - the incumbent's experts survive (see above)
            return m, lb - slack, 0
        inc[i] = p
    return m, lb - slack, k_inc


def _enumerate(tt, ee, gidx, rc, n, d, thr, lb, use_lb, pref, sufmin, path, ts, es, bs, nxt, best_pos, best_cnt,
               fbuf, ia, ib):
    """Step 4: canonical optimum over the subsets of <= d of n experts sorted in the
    Remark 2 order (positions ``0..n-1``; ``gidx`` their expert indices).

    Args:
        rc, lb, use_lb: max(0, e - lambda t) per position and the Lagrangian bound of step 3
            (ignored unless ``use_lb``).
        pref: out, length n + 1 (prefix score sums); sufmin: out, length n + 1.
        path, nxt: int scratch >= d + 1; ts, es, bs: float scratch >= d + 1.
        best_pos, best_cnt: a feasible incumbent (positions), or best_cnt = -1; out: the optimum.
        fbuf: float scratch >= 2 n + 2; ia, ib: int scratch >= n.

    Returns:
        (best_cnt, nodes): ``best_pos[:best_cnt]`` the optimum (positions); best_cnt is
        -1 when no subset meets C1.
    """
    pref[0] = 0.0
    for i in range(n):
        pref[i + 1] = pref[i] + tt[i]
    sufmin[n] = math.inf
    for i in range(n - 1, -1, -1):
        sufmin[i] = ee[i] if ee[i] < sufmin[i + 1] else sufmin[i + 1]
    tsl = _REL * (abs(thr) + pref[n]) + _TINY
    thr_lo = thr - tsl
    best_e = math.inf
    best_hi = math.inf
    if best_cnt >= 0:
        best_e = 0.0
        for i in range(best_cnt):
            best_e += ee[best_pos[i]]
        best_hi = best_e * (1.0 + _REL) + _TINY
    nodes = 0
    depth = 0
    nxt[0] = 0
    ts[0] = 0.0
    es[0] = 0.0
    bs[0] = lb
    while depth >= 0:
        q = nxt[depth]
        if q >= n:
            depth -= 1
            continue
        nxt[depth] = q + 1
        # reachability: the next d - depth scores are the largest left
        hi = q + d - depth
        if hi > n:
            hi = n
        if ts[depth] + (pref[hi] - pref[q]) < thr_lo:
            depth -= 1
            continue
        e_new = es[depth] + ee[q]
        if e_new > best_hi:
            continue
        b_new = 0.0
        if use_lb:
            b_new = bs[depth] + rc[q]
            if b_new > best_hi:
                continue
        nodes += 1
        t_new = ts[depth] + tt[q]
        path[depth] = q
        cnt = depth + 1
        if t_new >= thr_lo and _meets(tt, path, cnt, t_new, thr, tsl, fbuf):
            if best_cnt < 0 or e_new < best_e * (1.0 - _REL) - _TINY:
                c = -1
            else:
                c = compare_sets(ee, tt, gidx, path, cnt, best_pos, best_cnt, fbuf, ia, ib)
            if c < 0:
                best_cnt = cnt
                for i in range(cnt):
                    best_pos[i] = path[i]
                best_e = e_new
                best_hi = e_new * (1.0 + _REL) + _TINY
        # children: more experts, only while they could still tie or win
        if cnt >= d or q + 1 >= n or e_new + sufmin[q + 1] > best_hi:
            continue
        if cnt < d - 1:
            ts[cnt] = t_new
            es[cnt] = e_new
            bs[cnt] = b_new
            nxt[cnt] = q + 1
            depth = cnt
            continue
        # the last expert (|S| = D): path + {q2} for q2 > q. Among these, the canonical
        # order is that of the single experts (the path cancels exactly): lower cost, then
        # higher score, then lower index. Scores descend, so the feasible q2 are a prefix.
        bj = -1
        for q2 in range(q + 1, n):
            t2 = t_new + tt[q2]
            if t2 < thr_lo:
                break
            e2 = ee[q2]
            if e_new + e2 > best_hi:
                continue
            if use_lb and b_new + rc[q2] > best_hi:
                continue
            nodes += 1
            if bj >= 0 and (e2 > ee[bj] or (e2 == ee[bj] and (tt[q2] < tt[bj] or (tt[q2] == tt[bj] and gidx[q2] > gidx[bj])))):
                continue
            if t2 < thr + tsl:
                path[cnt] = q2
                if not _meets(tt, path, cnt + 1, t2, thr, tsl, fbuf):
                    continue
            bj = q2
        if bj < 0:
            continue
        path[cnt] = bj
        e2 = e_new + ee[bj]
        if best_cnt < 0 or e2 < best_e * (1.0 - _REL) - _TINY:
            c = -1
        else:
            c = compare_sets(ee, tt, gidx, path, cnt + 1, best_pos, best_cnt, fbuf, ia, ib)
        if c < 0:
            best_cnt = cnt + 1
            for i in range(cnt + 1):
                best_pos[i] = path[i]
            best_e = e2
            best_hi = e2 * (1.0 + _REL) + _TINY
    return best_cnt, nodes


def solve_batch(scores, costs, threshold, tol, max_experts, sel, energy, feasible, nodes):
    """Canonical DES over a batch (compiled; see module doc).

    Args:
        scores, costs: ``[T, K] float64`` (validated; costs may be +inf).
        threshold: ``[T] float64``; tol: the C1 tolerance (C1: sum >= threshold - tol).
        max_experts: D (1 <= D <= K).
        sel ``[T, K] bool``, energy ``[T] float64``, feasible ``[T] bool``, nodes
        ``[T] int64``: outputs (any content on entry): the selections, their energies
        (the selected costs summed as numpy sums them), Remark 2 feasibility, and the
        enumeration or search nodes per token.
    """
    k = scores.shape[1]
    sel[:] = False
    energy[:] = np.nan
    feasible[:] = True
    nodes[:] = 0
    # workspaces, allocated here (with reference counting); the loop runs without it, since
    # every array passed to a helper would otherwise cost an atomic incref/decref pair
    # (uninitialised: every scratch entry is written before it is read, and zeroing
    # 130 KB at K = 256 would cost more than a token)
    fw = np.empty((20, 2 * k + 2))
    _solve_loop(scores, costs, threshold, tol, max_experts, sel, energy, feasible, nodes, np.empty((24, k + 2), np.int64),
                fw, np.empty(k + 2, np.bool_))
    _energies(sel, costs, energy, fw[0], np.empty((3, 130), np.int64), np.empty(130))


def _energies(sel, costs, energy, buf, iw, vals):
    """``energy[q]`` = token q's selected costs, summed as numpy sums a row, where the token
    loop left it NaN (scratch: ``buf`` >= K, ``iw`` [3, >= 130], ``vals`` >= 130)."""
    k = costs.shape[1]
    for q in range(costs.shape[0]):
        if energy[q] != energy[q]:  # NaN: not set by the token loop
            energy[q] = _row_energy(sel, costs, q, k, buf, iw[0], iw[1], iw[2], vals)


def _solve_loop(scores, costs, threshold, tol, max_experts, sel, energy, feasible, nodes, iw, fw, inc_x):
    """The token loop of :func:`solve_batch` (``iw``, ``fw``, ``inc_x``: workspaces)."""
    n_tok, k = scores.shape
    d = max_experts
    idx, top, cand, rank, path, nxt, best_pos, ia = iw[0], iw[1], iw[2], iw[3], iw[4], iw[5], iw[6], iw[7]
    ib, perm, order, tmp, gidx, seed, x, best_x = iw[8], iw[9], iw[10], iw[11], iw[12], iw[13], iw[14], iw[15]
    st_j, st_c, st_d, inc_pos, cand_idx, best_idx, bpos2, inc = (
        iw[16], iw[17], iw[18], iw[19], iw[20], iw[21], iw[22], iw[23]
    )
    tt, ee, key, rc, pref, sufmin, ts, es, bs, fbuf = fw[0], fw[1], fw[2], fw[3], fw[4], fw[5], fw[6], fw[7], fw[8], fw[9]
    t_s, e_s, w_s, pa, pb, sufmax, st_t, st_e, st_lb = fw[10], fw[11], fw[12], fw[13], fw[14], fw[15], fw[16], fw[17], fw[18]
    # the D largest scores, kept sorted by a branch-free insertion while gathering (D <= 8;
    # only used when all K experts can be enumerated)
    track = d <= _TRACK and k <= SMALL
    mx = fw[19]
    for q in range(n_tok):
        thr = threshold[q] - tol
        if thr <= 0.0:
            continue
        for i in range(d if track else 0):
            mx[i] = -math.inf
        n = 0
        for j in range(k):
            s = scores[q, j]
            c = costs[q, j]
            if s > 0.0 and c < math.inf:
                idx[n] = j
                tt[n] = s
                ee[n] = c
                if track:
                    xv = s
                    for i in range(d):
                        hv = mx[i] if mx[i] > xv else xv
                        xv = xv if mx[i] > xv else mx[i]
                        mx[i] = hv
                else:
                    # the Top-D by the Remark 2 order, by bounded insertion as they come
                    # (every expert but a few is rejected by one comparison)
                    if n < d:
                        p = n - 1
                    elif _before(tt, ee, n, top[d - 1]):
                        p = d - 2
                    else:
                        p = -2
                    if p > -2:
                        while p >= 0 and _before(tt, ee, n, top[p]):
                            top[p + 1] = top[p]
                            p -= 1
                        top[p + 1] = n
                n += 1
        if track and 0 < n <= SMALL:
            # step 1': reachability. An expert fits a subset meeting C1 only if its score
            # plus the D - 1 largest others reaches thr: t_j >= thr - (Top-(D-1) sum)
            # (the Top-(D-1) experts themselves always pass when the token is feasible)
            m = d if d < n else n
            top_m = 0.0
            for i in range(m - 1):
                top_m += mx[i]
            top_m1 = top_m
            top_m += mx[m - 1]
            tsl = _REL * (abs(thr) + top_m) + _TINY
            if top_m >= thr + tsl:
                cut = thr - top_m1 - 2.0 * tsl
                if d <= 2:
                    n2 = 0
                    for i in range(n):
                        t_s[n2] = tt[i]
                        e_s[n2] = ee[i]
                        gidx[n2] = idx[i]
                        n2 += tt[i] >= cut
                    clean, a, b = _pairs_best(t_s, e_s, n2, d, thr, tsl)
                    if clean and a >= 0:
                        nodes[q] = n2
                        sel[q, gidx[a]] = True
                        # one or two nonzero terms: numpy's sum of the row is (0 + e_a) + e_b
                        # whatever its order (adding zeros is exact)
                        en = 0.0 + e_s[a]
                        if b >= 0:
                            sel[q, gidx[b]] = True
                            en += e_s[b]
                        energy[q] = en
                        continue
                else:
                    n2 = _rank_place(tt, ee, idx, n, cut, t_s, e_s, perm)
                    cnt, nn = _enumerate(t_s, e_s, perm, rc, n2, d, thr, 0.0, False, pref, sufmin, path, ts, es, bs,
                                         nxt, best_pos, -1, fbuf, ia, ib)
                    nodes[q] = nn
                    for i in range(cnt):
                        sel[q, perm[best_pos[i]]] = True
                    continue
            # infeasible or within rounding of thr: the general steps below
        m = d if d < n else n
        small = n <= SMALL
        # Remark 2 order: all n experts when they will be enumerated, else the Top-m
        if small:
            _rank_sort(tt, ee, n, top)
        acc = 0.0
        for i in range(m):
            acc += tt[top[i]]
        tsl = _REL * (abs(thr) + acc) + _TINY
        if not _meets(tt, top, m, acc, thr, tsl, fbuf):
            feasible[q] = False
            for i in range(m):
                sel[q, idx[top[i]]] = True
            continue
        if small:
            for i in range(n):
                p = top[i]
                t_s[i] = tt[p]
                e_s[i] = ee[p]
                gidx[i] = idx[p]
            cnt, nn = _enumerate(t_s, e_s, gidx, rc, n, d, thr, 0.0, False, pref, sufmin, path, ts, es, bs, nxt,
                                 best_pos, -1, fbuf, ia, ib)
            nodes[q] = nn
            for i in range(cnt):
                sel[q, gidx[best_pos[i]]] = True
            continue
        # the shortest Top-score prefix meeting C1: the first incumbent
        acc = 0.0
        k_top = m
        for i in range(m):
            acc += tt[top[i]]
            if acc >= thr - tsl and _meets(tt, top, i + 1, acc, thr, tsl, fbuf):
                k_top = i + 1
                break
        n, lb, k_inc = _reduce(tt, ee, idx, n, d, thr, tsl, top, k_top, key, cand, rank, rc, inc, fbuf)
        if n <= SMALL:
            _rank_sort(tt, ee, n, perm)
            for i in range(n):
                p = perm[i]
                t_s[i] = tt[p]
                e_s[i] = ee[p]
                w_s[i] = rc[p]
                gidx[i] = idx[p]
                rank[p] = i
            for i in range(k_inc):
                best_pos[i] = rank[inc[i]]
            cnt, nn = _enumerate(t_s, e_s, gidx, w_s, n, d, thr, lb, True, pref, sufmin, path, ts, es, bs, nxt,
                                 best_pos, k_inc if k_inc > 0 else -1, fbuf, ia, ib)
            nodes[q] = nn
            for i in range(cnt):
                sel[q, gidx[best_pos[i]]] = True
            continue
        # step 5: canonical branch and bound on the experts left, seeded with the incumbent
        for i in range(n):
            inc_x[i] = False
        best_e = math.inf
        if k_inc > 0:
            best_e = 0.0
            for i in range(k_inc):
                inc_x[inc[i]] = True
                best_e += ee[inc[i]]
        mu, best_e = _root(tt, ee, n, thr, d, True, best_e, inc_x, key, perm, order)
        _arrange(tt, ee, n, mu, True, key, tmp, order, t_s, e_s, w_s, pa, pb, sufmax, sufmin)
        for i in range(n):
            gidx[i] = idx[order[i]]
            seed[i] = 1 if inc_x[order[i]] else 0
        found_e, found, cnt, st, open_lb = search_canonical(
            t_s, e_s, w_s, pa, pb, sufmax, sufmin, gidx, n, thr, d, mu, seed, 0, 0.0,
            st_j, st_t, st_e, st_c, st_d, st_lb, x, inc_pos, best_x, fbuf, cand_idx, best_idx, bpos2,
        )
        nodes[q] = cnt
        for i in range(n if found else 0):
            if best_x[i] != 0:
                sel[q, gidx[i]] = True


# ---------------------------------------------------------------------------- compilation

_NO_NRT = ("_rank_place", "_pairs_best", "_pairwise_block", "_pairwise_sum", "_row_energy", "_energies", "_before", "_rank_sort", "_meets", "_reduce", "_enumerate", "_solve_loop")
# small helpers called per token or per expert: inlined (numba IR), since a call passing
# arrays copies their descriptors (tens of ns, more than the work)
_INLINE = ("_pairwise_block", "_row_energy", "_before", "_meets", "_rank_sort", "_rank_place")
_NUMBA_NS = None


def _numba_namespace():
    """Compiled copies of this module's kernels (None without numba); cached on disk."""
    global _NUMBA_NS
    if _NUMBA_NS is None:
        base = _des._numba_namespace()
        if base is None:
            _NUMBA_NS = False
            return None
        shared = {name: base[name] for name in ("_root", "_arrange", "search_canonical", "exact_sum", "compare_sets")}
        _NUMBA_NS = _des.compile_kernels(globals(), _NO_NRT + ("solve_batch",), no_nrt=_NO_NRT, inline=_INLINE,
                                         overrides=shared)
    return _NUMBA_NS or None


def run(scores, costs, threshold, max_experts, tol=0.0):
    """Run the compiled :func:`solve_batch` (numba must be available).

    Args:
        scores, costs: ``[T, K]`` validated (costs may be +inf); threshold: ``[T]``;
        max_experts: D (1 <= D <= K); tol: C1 is ``sum >= threshold - tol``.

    Returns:
        (selection ``[T, K] bool``, energy ``[T] float64``, feasible ``[T] bool``,
        nodes ``[T] int64``).
    """
    fn = _numba_namespace()["solve_batch"]
    n_tok, k = scores.shape
    sel = np.empty((n_tok, k), dtype=np.bool_)
    energy = np.empty(n_tok)
    feasible = np.empty(n_tok, dtype=np.bool_)
    nodes = np.empty(n_tok, dtype=np.int64)
    fn(
        np.ascontiguousarray(scores, dtype=np.float64),
        np.ascontiguousarray(costs, dtype=np.float64),
        np.ascontiguousarray(threshold, dtype=np.float64),
        float(tol), int(max_experts), sel, energy, feasible, nodes,
    )
    return sel, energy, feasible, nodes
