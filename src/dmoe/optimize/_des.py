"""DES: branch and bound for P1(a) (paper Algorithm 1, Section V-B/C), depth first.

Problem for one token: choose S among the eligible experts (score t_j > 0, finite cost
e_j >= 0), |S| <= D, sum_{j in S} t_j >= thr_eff, minimising sum_{j in S} e_j.

Corrections to the paper's pseudo-code (documented decisions):

* The pseudo-code's ``w`` and ``s`` are typos for the accumulated score ``t``.
* Search is depth-first with an explicit stack (memory O(K)) instead of BFS with a queue
  holding the whole frontier; the "exclude" child is explored first.
* Items are sorted by e_j/t_j descending (paper step 1). A node at depth j has decided
  items 0..j-1 (included score ``inc_t``, energy ``inc_e``, count ``cnt``) and leaves
  j..n-1 open. The bound is the LP relaxation (eq 10-12) of the open part with C2 dropped:
  cover the residual r = thr_eff - inc_t fractionally with the cheapest-ratio open items,
  which are the *last* ones in the order. In the paper's "exclude" language this is
  e minus the greedy fractional exclusion of the open items in descending e/t order while
  t >= thr. Because the cheapest-ratio items are a suffix of the order, the bound only
  needs suffix sums and one binary search, and it is exact LP optimum whatever the tie
  order among equal ratios (ties cannot break exactness).
* Extra exact pruning: C1 unreachable (suffix score sum < r) and C2 unreachable
  ((D - cnt) * max open score < r). A node whose included set already meets C1 is a
  leaf (adding items cannot lower energy since e_j >= 0).
* A node is pruned when bound >= incumbent * (1 - 1e-12): a subtree can only hide an
  improvement below 1e-12 relative, far inside the 1e-9 contract.

The kernel uses plain Python sequences and scalars only (no objects in the loop) so it can
be compiled with numba later; here it runs as Python on ``list`` inputs.
"""

from __future__ import annotations

import numpy as np

# slack for floating-point error in pruning decisions (never changes the C1 definition)
_PRUNE_SLACK = 1e-12
_BOUND_REL = 1e-12


def des_kernel(t, e, suf_t, suf_e, sufmax, n, thr_eff, max_experts, best_e, node_limit):
    """Branch and bound for one token.

    Args:
        t, e: sequences of length >= n: scores and costs sorted by e/t descending.
        suf_t, suf_e: length n+1 suffix sums (suf[n] = 0).
        sufmax: length n+1 suffix maxima of t (sufmax[n] = 0).
        n: number of eligible items.
        thr_eff: threshold - tolerance (> 0).
        max_experts: D.
        best_e: incumbent energy (a feasible solution's energy, or inf).
        node_limit: max nodes to pop (0 = unlimited).

    Returns:
        (best_e, best_x, nodes, hit_limit, open_lb): best_x is a list of 0/1 over the sorted
        items if the search improved on the incumbent, else None; open_lb is the smallest
        bound among unexplored nodes when the limit was hit (inf otherwise).
    """
    size = n + 2
    st_j = [0] * size
    st_t = [0.0] * size
    st_e = [0.0] * size
    st_c = [0] * size
    st_d = [0] * size
    st_lb = [0.0] * size
    x = [0] * (n + 1)
    best_x = None
    nodes = 0
    hit = False
    sp = 0
    st_j[0] = 0
    st_t[0] = 0.0
    st_e[0] = 0.0
    st_c[0] = 0
    st_d[0] = -1
    st_lb[0] = 0.0
    sp = 1
    while sp > 0:
        if node_limit > 0 and nodes >= node_limit:
            hit = True
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
            # leaf: included set meets C1; more items only add energy
            if inc_e < best_e:
                best_e = inc_e
                best_x = [0] * n
                for q in range(j):
                    best_x[q] = x[q]
            continue
        if j >= n or cnt >= max_experts:
            continue
        rb = r - _PRUNE_SLACK
        if suf_t[j] < rb:
            continue
        if (max_experts - cnt) * sufmax[j] < rb:
            continue
        # LP bound (eq 10-12): cheapest-ratio open items (a suffix) cover rb fractionally
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
        # push include child first so the exclude child is explored first
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
    open_lb = float("inf")
    if hit:
        for q in range(sp):
            if st_lb[q] < open_lb:
                open_lb = st_lb[q]
    return best_e, best_x, nodes, hit, open_lb


def solve(
    scores: np.ndarray,
    costs: np.ndarray,
    eligible: np.ndarray,
    thr_eff: np.ndarray,
    max_experts: int,
    incumbent: np.ndarray,
    node_limit: int | None,
):
    """DES over a batch of tokens (each solved by :func:`des_kernel`).

    Args:
        scores, costs: ``[n, K], float64``.
        eligible: ``[n, K], bool`` (score > 0 and finite cost).
        thr_eff: ``[n], float64`` > 0 (C1: sum >= thr_eff).
        max_experts: D (<= K).
        incumbent: ``[n, K], bool`` a feasible selection per token (the greedy Top-score
            prefix), used as the first incumbent.
        node_limit: nodes per token or None.

    Returns:
        (selection ``[n, K] bool``, nodes ``[n] int64``, optimal ``[n] bool``,
        lower_bound ``[n] float64``).
    """
    n_tok, k = scores.shape
    # [n, K] ratio e/t, ineligible last (ratio -inf in a descending sort)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(eligible, costs / np.where(eligible, scores, 1.0), -np.inf)
    order = np.argsort(-ratio, axis=1, kind="stable")
    t_s = np.take_along_axis(np.where(eligible, scores, 0.0), order, axis=1)
    e_s = np.take_along_axis(np.where(eligible, costs, 0.0), order, axis=1)
    n_elig = eligible.sum(axis=1)
    # [n, K+1] suffix sums / maxima over the sorted items
    suf_t = np.zeros((n_tok, k + 1))
    suf_e = np.zeros((n_tok, k + 1))
    sufmax = np.zeros((n_tok, k + 1))
    suf_t[:, :k] = np.cumsum(t_s[:, ::-1], axis=1)[:, ::-1]
    suf_e[:, :k] = np.cumsum(e_s[:, ::-1], axis=1)[:, ::-1]
    sufmax[:, :k] = np.maximum.accumulate(t_s[:, ::-1], axis=1)[:, ::-1]

    # second incumbent: ratio greedy = cheapest-ratio suffix covering the threshold
    inc_sel = incumbent.copy()
    inc_e = np.where(inc_sel, costs, 0.0).sum(axis=1)
    covers = suf_t[:, :k] >= thr_eff[:, None]
    kk = np.where(covers.any(axis=1), k - 1 - np.argmax(covers[:, ::-1], axis=1), -1)
    rows = np.arange(n_tok)
    greedy_ok = (kk >= 0) & ((n_elig - kk) <= max_experts) & (kk < n_elig)
    greedy_e = np.where(greedy_ok, suf_e[rows, np.maximum(kk, 0)], np.inf)
    better = greedy_ok & (greedy_e < inc_e)
    if better.any():
        pos = np.arange(k)[None, :]
        mask_sorted = (pos >= kk[:, None]) & (pos < n_elig[:, None])
        gsel = np.zeros((n_tok, k), dtype=bool)
        np.put_along_axis(gsel, order, mask_sorted, axis=1)
        inc_sel[better] = gsel[better]
        inc_e[better] = np.where(gsel[better], costs[better], 0.0).sum(axis=1)

    selection = inc_sel
    nodes = np.zeros(n_tok, dtype=np.int64)
    optimal = np.ones(n_tok, dtype=bool)
    lower = np.zeros(n_tok)
    limit = 0 if node_limit is None else int(node_limit)
    t_l, e_l = t_s.tolist(), e_s.tolist()
    st_l, se_l, sm_l = suf_t.tolist(), suf_e.tolist(), sufmax.tolist()
    n_l, thr_l, inc_l = n_elig.tolist(), thr_eff.tolist(), inc_e.tolist()
    for q in range(n_tok):
        best_e, best_x, cnt, hit, open_lb = des_kernel(
            t_l[q], e_l[q], st_l[q], se_l[q], sm_l[q], n_l[q], thr_l[q], max_experts, inc_l[q], limit
        )
        nodes[q] = cnt
        if best_x is not None:
            row = np.zeros(k, dtype=bool)
            row[order[q, : n_l[q]][np.asarray(best_x, dtype=bool)]] = True
            selection[q] = row
        if hit:
            optimal[q] = False
            lower[q] = min(best_e, open_lb)
        else:
            lower[q] = best_e
    return selection, nodes, optimal, lower
