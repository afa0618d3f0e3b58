"""Node-aware P1(a) when every node's experts cost the same: a search over nodes (issue 18).

With several experts per node (:mod:`dmoe.optimize._node_des`) the energy of a selection S
is ``sum_{n in nodes(S)} c_n + sum_{j in S} a_j``. In this project a_j is the same for all
experts of a node (:func:`dmoe.energy.expert_comp_energy`: a_{n(j)} N / E). Then a
selection is decided by how many experts ``k_n`` it takes from each node: for given counts
the energy is fixed, and the canonical optimum (:mod:`dmoe.optimize._node_des`: least
energy, then largest score sum, both as correctly rounded sums, then the expert-index rule)
takes each node's ``k_n`` best experts by score (ties: lower index). So the search runs
over the count vectors, a few nodes deep, instead of over the experts:

* per token, each node's eligible experts (score > 0, finite a_j and c_n) sorted by score
  (ties: index) and their prefix sums ``P_n(k)`` (k <= D); the option "k experts of node
  n" costs ``w_n(k) = c_n + k a_n``;
* depth-first over the nodes, most efficient first (least ``min_k w_n(k) / P_n(k)``),
  at each node k = (the fewest experts that surely complete ``thr``, or all) .. 0
  experts (more than completes ``thr`` only adds energy); a state (h, cost, score, slots
  left) is pruned when the largest scores of the later nodes that fit in the slots left
  cannot reach ``thr`` (exact suffix tables), or when its cost plus a Lagrangian bound of
  the rest exceeds the incumbent: for any lambda >= 0 the rest costs at least
  ``lambda r + sum_{later n} min(0, min_k [w_n(k) - lambda P_n(k)])`` (r: score still
  missing; weak duality). lambda is the ratio at which the nodes' most efficient options,
  in order, complete ``thr``, and a grid of multiples of it (the best lambda depends on
  r), each an O(1) look-up of suffix sums;
* a token whose search passes :data:`_BUDGET` nodes (typically: the cheap nodes would
  need more than D experts, which the Lagrangian bound does not see) is searched again
  from its incumbent with a second bound: the exact optimum of the rest after rounding
  every option's score up to a multiple of ``thr / 64`` (a relaxation), tabulated by
  dynamic programming over (node, slots left, score buckets);
* C1 is decided on the correctly rounded score sum (naive sums decide away from the
  threshold), candidates are compared by naive energies when they differ by more than
  their rounding bound, otherwise exactly in the canonical order.

Tokens this path does not take (returned as "general"): a node whose eligible experts
cost differently; two of a node's scores closer than a few ulps of the score total but
not equal (then a selection with the other expert may tie after rounding and win by the
index rule). :mod:`dmoe.optimize._node_des` solves those.

Infeasible tokens (the Top-D eligible score sum, correctly rounded, below ``thr``) get
their Top-D eligible experts by score, then lower ``a_j + c_n(j)``, then lower index
(Remark 2), as in :func:`dmoe.optimize.selection.select_experts`.
"""

from __future__ import annotations

import math

import numpy as np

from dmoe.optimize._des_fast import _row_energy
from dmoe.optimize._ties import exact_sum

_REL = 1e-12
_BOUND_REL = 1e-9
_TINY = 1e-305
_EPS = 2.220446049250313e-16
# factors applied to each root lambda (the bound takes the best of them per state)
_GRID = np.array([0.5, 0.7, 0.85, 1.15, 1.3, 1.6, 2.0, 3.0])
_PAIRS = 1 + _GRID.shape[0]
# search nodes before a token gets the root's optimal multipliers (see _solve_loop)
_BUDGET = 1000
# score buckets of the dynamic-programming bound of hard tokens
_BUCKETS = 64


def _dp_table(g, d, thr, cn, an, mi, pp, tab, cov, wk):
    """``tab[h, s, b]``: a lower bound on the energy of the nodes h.. that reach score
    ``b * thr / B`` with at most s experts (B = ``tab.shape[2] - 1``): the exact minimum
    after rounding every option's score up to a multiple of thr / B (a relaxation: every
    real completion stays feasible), by dynamic programming over the nodes (``cov``,
    ``wk``: scratch >= D + 1)."""
    nb = tab.shape[2] - 1
    step = thr / nb
    for s in range(d + 1):
        tab[g, s, 0] = 0.0
        for b in range(1, nb + 1):
            tab[g, s, b] = math.inf
    for h in range(g - 1, -1, -1):
        for k in range(1, mi[h] + 1):
            # buckets option k covers, rounded up (1e-9: the rounding of the ratio)
            cov[k] = int(math.ceil(pp[h, k] / step + 1e-9))
            wk[k] = cn[h] + k * an[h]
        for s in range(d + 1):
            top = mi[h] if mi[h] < s else s
            for b in range(nb + 1):
                best = tab[h + 1, s, b]
                for k in range(1, top + 1):
                    rest = b - cov[k]
                    if rest < 0:
                        rest = 0
                    v = wk[k] + tab[h + 1, s - k, rest]
                    if v < best:
                        best = v
                tab[h, s, b] = best


def _cover_guess(g, cn, an, mi, pp, thr):
    """lambda of the LP that offers each node only its most efficient option (nodes in
    ascending min_k w(k) / P(k)): the ratio of the node that completes thr."""
    acc = 0.0
    lam = 0.0
    for h in range(g):
        best = math.inf
        bk = 1
        for k in range(1, mi[h] + 1):
            v = (cn[h] + k * an[h]) / pp[h, k]
            if v < best:
                best = v
                bk = k
        lam = best
        acc += pp[h, bk]
        if acc >= thr:
            break
    return lam


def _suffix_v(lam, g, cn, an, mi, pp, out):
    """``out[h]`` = sum over nodes h.. of min(0, min_k w(k) - lambda P(k)); out[g] = 0."""
    out[g] = 0.0
    for h in range(g - 1, -1, -1):
        best = 0.0
        for k in range(1, mi[h] + 1):
            v = cn[h] + k * an[h] - lam * pp[h, k]
            if v < best:
                best = v
        out[h] = out[h + 1] + best


def _cand_terms(g, kv, cn, an, pp_t, lst, terms_e, terms_t, idx_out):
    """Energy terms, score terms and sorted expert indices of the count vector ``kv``.

    Returns (number of energy terms, number of experts)."""
    ne = 0
    nt = 0
    for h in range(g):
        k = kv[h]
        if k > 0:
            terms_e[ne] = cn[h]
            ne += 1
            for i in range(k):
                terms_e[ne] = an[h]
                ne += 1
                terms_t[nt] = pp_t[h, i]
                idx_out[nt] = lst[h, i]
                nt += 1
    # sort the expert indices (insertion; <= D)
    for i in range(1, nt):
        v = idx_out[i]
        p = i - 1
        while p >= 0 and idx_out[p] > v:
            idx_out[p + 1] = idx_out[p]
            p -= 1
        idx_out[p + 1] = v
    return ne, nt


def _lex_first(a, na, b, nb):
    """Expert-index rule on sorted index sets: does ``a[:na]`` come before ``b[:nb]``?"""
    m = na if na < nb else nb
    for i in range(m):
        if a[i] != b[i]:
            return a[i] < b[i]
    return na > nb


def _first_option(m, s, t, thr_hi, p, c, a):
    """The largest count worth trying at a node (counts run from it down to 0): at most m
    and the s slots left, and no more than the fewest experts that surely reach thr_hi from
    score t, since more would only add energy (unless a is so small against the energy
    that the rounded sums could tie: then all counts are tried)."""
    top = m if m < s else s
    if a > _REL * (c + top * a) + _TINY:
        for k in range(1, top + 1):
            if t + p[k] >= thr_hi:
                return k
    return top


def _search(g, d, thr, cn, an, mi, pp, pp_t, lst, rr, vs, lam, mag, npair, wmin1, kv, best_kv, cost_st, score_st,
            slot_st, kk_st, terms_e, terms_t, idx_a, idx_b, seq, fbuf, found, budget, use_dp, tab):
    """Depth-first search over the count vectors (see module doc).

    ``best_kv[:g]`` holds an incumbent when ``found`` (its counts) and, on return, the
    best found. ``budget``: nodes at most (0 = none). Returns (found, nodes, complete):
    complete is False when the budget ran out (then the incumbent is only the best so far).
    """
    tsl = _REL * (abs(thr) + rr[0, d]) + _TINY
    thr_lo = thr - tsl
    best = math.inf
    best_hi = math.inf
    best_lo = math.inf
    if found:
        best = 0.0
        for i in range(g):
            if best_kv[i] > 0:
                best = best + (cn[i] + best_kv[i] * an[i])
        best_lo = best * (1.0 - _REL) - _TINY
        best_hi = best * (1.0 + _REL) + _TINY
    nodes = 0
    h = 0
    cost_st[0] = 0.0
    score_st[0] = 0.0
    slot_st[0] = d
    kk_st[0] = _first_option(mi[0], d, 0.0, thr + tsl, pp[0], cn[0], an[0])
    while h >= 0:
        if budget > 0 and nodes >= budget:
            return found, nodes, False
        if h >= g:
            h -= 1
            continue
        k = kk_st[h]
        if k < 0:
            h -= 1
            continue
        kk_st[h] = k - 1
        s = slot_st[h]
        if k > s:
            continue
        kv[h] = k
        if k == 0:
            c2 = cost_st[h]
            t2 = score_st[h]
        else:
            c2 = cost_st[h] + (cn[h] + k * an[h])
            t2 = score_st[h] + pp[h, k]
        s2 = s - k
        if c2 > best_hi:
            continue
        nodes += 1
        if t2 >= thr_lo:
            # C1 on the correctly rounded score sum of this selection (naive sums decide
            # away from the threshold)
            ok = t2 >= thr + tsl
            if not ok:
                ne, nt = _cand_terms(h + 1, kv, cn, an, pp_t, lst, terms_e, terms_t, idx_a)
                ok = exact_sum(terms_t, seq, nt, fbuf) >= thr
            if ok:
                if not found or c2 < best_lo:
                    better = True
                else:
                    ne, nt = _cand_terms(h + 1, kv, cn, an, pp_t, lst, terms_e, terms_t, idx_a)
                    ea = exact_sum(terms_e, seq, ne, fbuf)
                    ga = exact_sum(terms_t, seq, nt, fbuf)
                    ne2, nt2 = _cand_terms(g, best_kv, cn, an, pp_t, lst, terms_e, terms_t, idx_b)
                    eb = exact_sum(terms_e, seq, ne2, fbuf)
                    gb = exact_sum(terms_t, seq, nt2, fbuf)
                    if ea != eb:
                        better = ea < eb
                    elif ga != gb:
                        better = ga > gb
                    else:
                        better = _lex_first(idx_a, nt, idx_b, nt2)
                if better:
                    found = True
                    best = c2
                    best_lo = c2 * (1.0 - _REL) - _TINY
                    best_hi = c2 * (1.0 + _REL) + _TINY
                    for i in range(h + 1):
                        best_kv[i] = kv[i]
                    for i in range(h + 1, g):
                        best_kv[i] = 0
                # more experts can only tie (zero-cost options)
                if c2 + wmin1[h + 1] > best_hi:
                    continue
            if h + 1 >= g or s2 == 0:
                continue
        else:
            if h + 1 >= g or s2 == 0:
                continue
            # reachability: the s2 largest scores of the later nodes
            if t2 + rr[h + 1, s2] < thr_lo:
                continue
            # Lagrangian bound of the rest
            r = thr - t2
            cut = False
            for p in range(npair):
                if c2 + (lam[p] * r + vs[p, h + 1] - _BOUND_REL * mag[p]) > best_hi:
                    cut = True
                    break
            if cut:
                continue
            if use_dp:
                nb = tab.shape[2] - 1
                b = int(math.ceil(r / (thr / nb) - 1e-9))
                if b > nb:
                    b = nb
                if b > 0 and c2 + tab[h + 1, s2, b] * (1.0 - _REL) > best_hi:
                    continue
        # descend to node h + 1 with this state
        h += 1
        cost_st[h] = c2
        score_st[h] = t2
        slot_st[h] = s2
        kk_st[h] = _first_option(mi[h], s2, t2, thr + tsl, pp[h], cn[h], an[h])
        for i in range(h, g):
            kv[i] = 0
    return found, nodes, True


def _bound_tables(g, thr, total, cn, an, mi, pp, lam, vs, mag):
    """``lam[0]`` and its multiples by :data:`_GRID` into ``lam``; each one's suffix sums
    ``vs`` and rounding magnitude ``mag``. Returns how many lambdas."""
    npair = 1
    for f in range(_GRID.shape[0]):
        lam[npair] = lam[0] * _GRID[f]
        npair += 1
    for p in range(npair):
        _suffix_v(lam[p], g, cn, an, mi, pp, vs[p])
        mg = lam[p] * (thr + total)
        for h in range(g):
            mg += cn[h] + mi[h] * an[h]
        mag[p] = mg
    return npair


def _solve_loop(scores, acost, ncost, threshold, tol, d, members, sel, feasible, nodes, general, iw, fw, fw2, iw2, vs,
                tab):
    """The token loop (compiled, no reference counting). See :func:`solve_batch`."""
    n_tok = scores.shape[0]
    num_nodes = members.shape[0]
    per = members.shape[1]
    # per node slot (DFS order): node id, cost, a, options, prefix sums, expert lists
    nid = iw[0]
    mi = iw[1]
    kv = iw[2]
    best_kv = iw[3]
    slot_st = iw[4]
    kk_st = iw[5]
    idx_a = iw[6]
    idx_b = iw[7]
    seq = iw[8]
    head = iw[9]
    cnt = iw[10]
    ord_ = iw[11]
    cn = fw[0]
    an = fw[1]
    eff = fw[2]
    cost_st = fw[3]
    score_st = fw[4]
    terms_e = fw[5]
    terms_t = fw[6]
    fbuf = fw[7]
    wmin1 = fw[8]
    tmp_t = fw[9]
    mag = fw[10]
    lam = fw[11]
    # [num_nodes, D + 2] per-node data (rows in node-id order, then copied in DFS order)
    pp = fw2[0]
    pp_t = fw2[1]
    rr = fw2[2]
    lst = iw2[0]
    lst_raw = iw2[1]
    pt_raw = fw2[4]
    for i in range(seq.shape[0]):
        seq[i] = i
    for q in range(n_tok):
        thr = threshold[q] - tol
        if thr <= 0.0:
            continue
        # gather each reachable node's eligible experts, sorted by score (ties: index)
        g = 0
        total = 0.0
        uniform = True
        for n in range(num_nodes):
            c = ncost[q, n]
            if not c < math.inf:
                continue
            m = 0
            a0 = 0.0
            for i in range(per):
                j = members[n, i]
                if j < 0:
                    break
                t = scores[q, j]
                a = acost[q, j]
                if t > 0.0 and a < math.inf:
                    if m == 0:
                        a0 = a
                    elif a != a0:
                        uniform = False
                    tmp_t[m] = t
                    ord_[m] = j
                    m += 1
                    total += t
            if m == 0:
                continue
            # rank sort (score desc, index asc): members are in index order
            for i in range(m):
                ti = tmp_t[i]
                r = 0
                for i2 in range(m):
                    r += (tmp_t[i2] > ti) | ((tmp_t[i2] == ti) & (i2 < i))
                if r <= d:
                    pt_raw[g, r] = ti
                    lst_raw[g, r] = ord_[i]
            nid[g] = n
            cn[g] = c
            an[g] = a0
            cnt[g] = m
            g += 1
        if not uniform:
            general[q] = True
            continue
        # near ties between a node's consecutive scores (see module doc)
        tie_tol = 8.0 * _EPS * total
        for h in range(g):
            top = cnt[h] if cnt[h] < d + 1 else d + 1
            for i in range(top - 1):
                gap = pt_raw[h, i] - pt_raw[h, i + 1]
                if gap > 0.0 and gap <= tie_tol:
                    uniform = False
        if not uniform:
            general[q] = True
            continue
        # Remark 2 order across nodes (score desc, then a + c asc, then index): D-way merge
        for h in range(g):
            head[h] = 0
        acc = 0.0
        m_top = 0
        for step in range(d):
            b = -1
            for h in range(g):
                if head[h] < cnt[h] and head[h] <= d:
                    if b < 0:
                        b = h
                    else:
                        tb = pt_raw[b, head[b]]
                        th = pt_raw[h, head[h]]
                        if th > tb:
                            b = h
                        elif th == tb:
                            wb = an[b] + cn[b]
                            wh = an[h] + cn[h]
                            if wh < wb or (wh == wb and lst_raw[h, head[h]] < lst_raw[b, head[b]]):
                                b = h
            if b < 0:
                break
            terms_t[m_top] = pt_raw[b, head[b]]
            idx_a[m_top] = lst_raw[b, head[b]]
            acc += terms_t[m_top]
            m_top += 1
            head[b] += 1
        tsl = _REL * (abs(thr) + acc) + _TINY
        ok = acc >= thr + tsl
        if not ok and acc >= thr - tsl:
            ok = exact_sum(terms_t, seq, m_top, fbuf) >= thr
        if not ok:
            feasible[q] = False
            for i in range(m_top):
                sel[q, idx_a[i]] = True
            continue
        # DFS order: most efficient node first (least min_k w(k) / P(k))
        for h in range(g):
            mh = cnt[h] if cnt[h] < d else d
            acc = 0.0
            best = math.inf
            for k in range(1, mh + 1):
                acc += pt_raw[h, k - 1]
                v = (cn[h] + k * an[h]) / acc
                if v < best:
                    best = v
            eff[h] = best
            ord_[h] = h
        for i in range(1, g):
            v = ord_[i]
            p = i - 1
            while p >= 0 and eff[ord_[p]] > eff[v]:
                ord_[p + 1] = ord_[p]
                p -= 1
            ord_[p + 1] = v
        # copy in DFS order: options, prefix sums, expert lists
        for h in range(g):
            o = ord_[h]
            mh = cnt[o] if cnt[o] < d else d
            mi[h] = mh
            kv[h] = nid[o]  # scratch: node id in DFS order
            pp[h, 0] = 0.0
            for k in range(mh):
                pp_t[h, k] = pt_raw[o, k]
                lst[h, k] = lst_raw[o, k]
                pp[h, k + 1] = pp[h, k] + pt_raw[o, k]
        for h in range(g):
            o = ord_[h]
            eff[h] = cn[o]
            terms_e[h] = an[o]
        for h in range(g):
            cn[h] = eff[h]
            an[h] = terms_e[h]
            nid[h] = kv[h]
        # rr[h, s]: the s largest scores of nodes h.. (max-plus over the per-node prefixes)
        for s in range(d + 1):
            rr[g, s] = 0.0
        for h in range(g - 1, -1, -1):
            for s in range(d + 1):
                best = rr[h + 1, s]
                top = mi[h] if mi[h] < s else s
                for k in range(1, top + 1):
                    v = pp[h, k] + rr[h + 1, s - k]
                    if v > best:
                        best = v
                rr[h, s] = best
        # suffix minimum of the cheapest option (c + a): supersets that may tie
        wmin1[g] = math.inf
        for h in range(g - 1, -1, -1):
            v = cn[h] + an[h]
            wmin1[h] = v if v < wmin1[h + 1] else wmin1[h + 1]
        # Lagrange multipliers: lambda of the cover by each node's best option, and a grid
        # around it (the best lambda of a state depends on what it still misses; the
        # maximum over the grid follows it at O(1) per lambda)
        lam[0] = _cover_guess(g, cn, an, mi, pp, thr)
        npair = _bound_tables(g, thr, total, cn, an, mi, pp, lam, vs, mag)
        for h in range(g + 1):
            kv[h] = 0
            best_kv[h] = 0
        found, nn, done = _search(g, d, thr, cn, an, mi, pp, pp_t, lst, rr, vs, lam, mag, npair, wmin1, kv,
                                  best_kv, cost_st, score_st, slot_st, kk_st, terms_e, terms_t, idx_a, idx_b, seq,
                                  fbuf, False, _BUDGET, False, tab)
        if not done:
            # a hard token (typically: the cheap nodes would need more experts than D):
            # the dynamic-programming bound, then search again from the incumbent
            _dp_table(g, d, thr, cn, an, mi, pp, tab, head, terms_e)
            found, nn2, done = _search(g, d, thr, cn, an, mi, pp, pp_t, lst, rr, vs, lam, mag, npair, wmin1, kv,
                                       best_kv, cost_st, score_st, slot_st, kk_st, terms_e, terms_t, idx_a, idx_b,
                                       seq, fbuf, found, 0, True, tab)
            nn += nn2
        nodes[q] = nn
        if not found:  # pragma: no cover - the Top-D selection is feasible, so never
            general[q] = True
            continue
        for h in range(g):
            for i in range(best_kv[h]):
                sel[q, lst[h, i]] = True


def _energies(sel, acost, node, ncost, energy, general, used, buf, iw, vals):
    """Energy of every token not left to the general path: its selected a_j, then its
    nodes' c_n, each summed as numpy sums a row, then added (as
    :func:`dmoe.optimize.selection.node_energy`)."""
    k = sel.shape[1]
    num_nodes = ncost.shape[1]
    for q in range(sel.shape[0]):
        if general[q]:
            continue
        for n in range(num_nodes):
            used[0, n] = False
        for j in range(k):
            if sel[q, j]:
                used[0, node[j]] = True
        e1 = _row_energy(sel, acost, q, k, buf, iw[0], iw[1], iw[2], vals)
        e2 = _row_energy(used, ncost[q:q + 1], 0, num_nodes, buf, iw[0], iw[1], iw[2], vals)
        energy[q] = e1 + e2


def solve_batch(scores, acost, node, ncost, threshold, tol, d, members, sel, energy, feasible, nodes, general):
    """Node-aware canonical P1(a) over a batch (compiled; see module doc).

    Args:
        scores, acost: ``[T, E] float64`` (validated; acost may be +inf); node: ``[E] int64``;
        ncost: ``[T, N] float64`` (may be +inf); threshold: ``[T]``; tol: C1 tolerance
        (C1: sum >= threshold - tol); d: D (1 <= D <= E); members: ``[N, P] int64``
        each node's experts in index order, padded with -1.
        sel ``[T, E] bool``, energy ``[T]``, feasible ``[T] bool``, nodes ``[T] int64``,
        general ``[T] bool``: outputs (any content on entry). ``general`` marks the tokens
        left to :mod:`dmoe.optimize._node_des` (their other outputs are not set).
    """
    t, e = scores.shape
    sel[:] = False
    feasible[:] = True
    nodes[:] = 0
    general[:] = False
    g = members.shape[0]
    width = max(2 * e + 2, g + 2, 16)
    width = max(width, _PAIRS + 2)
    # workspaces (uninitialised: every entry is written before it is read)
    iw = np.empty((12, width), np.int64)
    fw = np.empty((13, width))
    fw2 = np.empty((5, g + 1, d + 2))
    iw2 = np.empty((2, g + 1, d + 2), np.int64)
    vs = np.empty((_PAIRS, g + 1))
    tab = np.empty((g + 1, d + 1, _BUCKETS + 1))
    _solve_loop(scores, acost, ncost, threshold, tol, d, members, sel, feasible, nodes, general, iw, fw, fw2, iw2, vs,
                tab)
    _energies(sel, acost, node, ncost, energy, general, np.empty((1, ncost.shape[1]), np.bool_), np.empty(width),
              np.empty((3, 130), np.int64), np.empty(130))


# ---------------------------------------------------------------------------- compilation

_NO_NRT = ("_dp_table", "_first_option", "_cover_guess", "_bound_tables", "_suffix_v", "_cand_terms", "_lex_first", "_search", "_solve_loop",
           "_energies")
_NUMBA_NS = None


def _numba_namespace():
    """Compiled copies of the kernels (None without numba); cached on disk."""
    global _NUMBA_NS
    if _NUMBA_NS is None:
        from dmoe.optimize import _des, _des_fast

        base = _des_fast._numba_namespace()
        if base is None:
            _NUMBA_NS = False
            return None
        shared = {"_row_energy": base["_row_energy"], "exact_sum": base["exact_sum"]}
        _NUMBA_NS = _des.compile_kernels(globals(), _NO_NRT + ("solve_batch",), no_nrt=_NO_NRT, overrides=shared)
    return _NUMBA_NS or None


_MEMBERS: dict = {}


def _members(placement: np.ndarray, num_nodes: int) -> np.ndarray:
    """:func:`node_members`, remembered for the last few placements (JESA calls the kernel
    with the same placement at every iteration)."""
    key = (placement.tobytes(), int(num_nodes))
    out = _MEMBERS.get(key)
    if out is None:
        if len(_MEMBERS) >= 16:
            _MEMBERS.clear()
        out = _MEMBERS[key] = node_members(placement, num_nodes)
    return out


def node_members(placement: np.ndarray, num_nodes: int) -> np.ndarray:
    """``[N, P] int64``: the experts of each node in index order, padded with -1."""
    counts = np.bincount(placement, minlength=num_nodes)
    out = np.full((num_nodes, max(int(counts.max()), 1)), -1, dtype=np.int64)
    order = np.argsort(placement, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(placement.shape[0]) - np.repeat(start, counts)
    out[placement[order], col] = order
    return out


def run(scores, acost, placement, ncost, threshold, max_experts, tol):
    """Run the compiled :func:`solve_batch` (numba must be available).

    Returns:
        (selection ``[T, E] bool``, energy ``[T]``, feasible ``[T] bool``, nodes ``[T] int64``,
        general ``[T] bool``).
    """
    fn = _numba_namespace()["solve_batch"]
    placement = np.ascontiguousarray(placement, dtype=np.int64)
    t, e = scores.shape
    sel = np.empty((t, e), dtype=np.bool_)
    energy = np.empty(t)
    feasible = np.empty(t, dtype=np.bool_)
    nodes = np.empty(t, dtype=np.int64)
    general = np.empty(t, dtype=np.bool_)
    fn(
        np.ascontiguousarray(scores, dtype=np.float64),
        np.ascontiguousarray(acost, dtype=np.float64),
        placement,
        np.ascontiguousarray(ncost, dtype=np.float64),
        np.ascontiguousarray(threshold, dtype=np.float64),
        float(tol), int(max_experts), _members(placement, ncost.shape[1]),
        sel, energy, feasible, nodes, general,
    )
    return sel, energy, feasible, nodes, general
