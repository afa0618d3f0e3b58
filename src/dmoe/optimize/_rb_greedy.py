"""Heuristic for the resource-block problem: P3(a) start, repair, local improvement.

1. **Start**: the one-RB assignment (P3(a) with the per-node budget), optimal when it
   meets every deadline; and, when given, a rounding of the LP relaxation (pairs by
   decreasing LP share, each RB to its link while the link lacks capacity). Both starts
   run steps 2-4 and the better result (least stretch, then least energy) is kept.
2. **Repair**: while some served link misses its deadline T_l (its RBs' rates times T_l
   fall short of c_l) and free RBs remain, every such link whose node has budget left
   takes one more free RB, chosen jointly by an assignment (least seconds per bit, 1 / r)
   so that two late links do not grab the same RB; repeat.
3. **Fallback**: while links are still short, the latest one exchanges RBs with (or
   takes an RB from) another link whenever that lowers the larger of their two deadline
   stretches c_l / (T_l sum r); then every deadline is stretched by the largest of them,
   theta, and every link works to theta T_l.
4. **Local improvement** (energy at theta T_l, every link kept within it), until no move
   helps or :data:`MAX_PASSES` passes:
   * *upgrade*: a link swaps one of its RBs for a free RB it rates higher;
   * *exchange*: two links swap one RB each when the sum of their energies falls;
   * *take*: a link takes an RB of another link, which replaces it by its best free RB
     that keeps it in time, when the sum falls;
   after each move RBs that no longer carry bits are released.

Every move keeps C3, the per-node budget (counts never grow) and the deadlines, and
strictly lowers the energy, so the search ends. Its energy is compared with the LP
bound of :mod:`dmoe.optimize._rb_exact` (the reported ``gap``).
"""

from __future__ import annotations

import math

import numpy as np

from dmoe.optimize._rb_exact import stretch_of
from dmoe.optimize._rb_problem import Problem, assign_one, link_ontime

__all__ = ["solve_greedy", "MAX_PASSES"]

#: local-improvement passes at most
MAX_PASSES = 8
_IMPROVE = 1e-12  # a move must lower the energy by more than this fraction


class _State:
    """RB sets per link with their on-time sums, kept sorted by rate (descending)."""

    def __init__(self, prob: Problem, owner: np.ndarray, deadline: np.ndarray):
        self.prob = prob
        self.r = prob.r
        self.d = deadline
        self.owner = owner.copy()
        self.sets = [[] for _ in range(prob.num_links)]
        for m in np.flatnonzero(owner >= 0):
            self.sets[owner[m]].append(int(m))
        self.on = np.zeros(prob.num_links)
        for l in range(prob.num_links):
            self._sort(l)
            self.on[l] = self.ontime(l, self.sets[l]) if self.sets[l] else 0.0

    def _sort(self, l):
        row = self.r[l]
        self.sets[l].sort(key=lambda m: (-row[m], m))

    def ontime(self, l, rbs) -> float:
        row = self.r[l]
        return link_ontime(sorted((row[m] for m in rbs), reverse=True), self.prob.c[l], self.d[l])

    def trim(self, rbs, l):
        """``rbs`` without the RBs that carry no bits in link l's greedy fill (sorted)."""
        row = self.r[l]
        rbs = sorted(rbs, key=lambda m: (-row[m], m))
        rem, d = self.prob.c[l], self.d[l]
        for n, m in enumerate(rbs):
            rem -= row[m] * d
            if rem <= 0:
                return rbs[: n + 1]
        return rbs

    def set_link(self, l, rbs):
        for m in self.sets[l]:
            if self.owner[m] == l:  # an RB just handed to another link stays its
                self.owner[m] = -1
        rbs = self.trim(rbs, l)
        for m in rbs:
            self.owner[m] = l
        self.sets[l] = rbs
        self.on[l] = self.ontime(l, rbs)


def _repair(prob: Problem, owner: np.ndarray) -> np.ndarray:
    owner = owner.copy()
    caps = prob.caps
    while True:
        idx = np.flatnonzero(owner >= 0)
        cap_sum = np.bincount(owner[idx], weights=prob.r[owner[idx], idx], minlength=prob.num_links)
        with np.errstate(invalid="ignore"):
            late = (cap_sum > 0) & (cap_sum * prob.d < prob.c)
        if caps is not None:
            used = np.bincount(prob.node[owner[idx]], minlength=caps.shape[0])
            room = caps - used
            late &= room[prob.node] > 0
        free = np.flatnonzero(owner < 0)
        rows = np.flatnonzero(late)
        if rows.size == 0 or free.size == 0:
            return owner
        r = prob.r[np.ix_(rows, free)]
        usable = r > 0
        with np.errstate(divide="ignore"):
            weight = np.where(usable, 1.0 / np.where(usable, r, 1.0), np.inf)
        cols = assign_one(weight, usable, prob.node[rows], None if caps is None else room)
        got = cols >= 0
        if not got.any():
            return owner
        owner[free[cols[got]]] = rows[got]


def _lateness(prob: Problem, l: int, rate_sum: float) -> float:
    """Stretch c_l / (T_l * rate_sum) of link l's deadline with RBs of total rate ``rate_sum``
    all on (<= 1: in time)."""
    if not math.isfinite(prob.d[l]):
        return -math.inf
    return prob.c[l] / (prob.d[l] * rate_sum) if rate_sum > 0 else math.inf


def _reduce_lateness(prob: Problem, owner: np.ndarray, max_moves: int) -> np.ndarray:
    """Lower the largest deadline stretch by RB exchanges and transfers between links.

    Each step takes the latest link l (largest stretch c_l / (T_l sum r)) and the move that
    most lowers max(stretch of l, stretch of the other link l2): l gives one of its RBs (or
    none) for one of l2's (l2 keeps at least one); a move is applied only when that maximum
    falls below l's stretch, so the largest stretch never rises.

    The candidate moves are scanned on Python floats (the same IEEE operations in the same
    order as on numpy scalars, so the same moves bit for bit; a zero denominator goes to
    :func:`_lateness`), with each link's RB count taken once per step.
    """
    owner = owner.copy()
    r, caps = prob.r, prob.caps
    rows = r.tolist()
    c_list, d_list, node = prob.c.tolist(), prob.d.tolist(), prob.node.tolist()

    def lateness(l: int, rate_sum: float) -> float:  # _lateness(prob, l, rate_sum)
        d = d_list[l]
        if not math.isfinite(d):
            return -math.inf
        if not rate_sum > 0:
            return math.inf
        den = d * rate_sum
        return c_list[l] / den if den != 0 else _lateness(prob, l, np.float64(rate_sum))

    for _ in range(max_moves):
        idx = np.flatnonzero(owner >= 0)
        rate_sum = np.bincount(owner[idx], weights=r[owner[idx], idx], minlength=prob.num_links)
        late = np.array([_lateness(prob, l, rate_sum[l]) if rate_sum[l] > 0 else -math.inf
                         for l in range(prob.num_links)])
        l = int(np.argmax(late))
        if not late[l] > 1.0:
            return owner
        mine = np.flatnonzero(owner == l).tolist()
        count = np.bincount(prob.node[owner[idx]], minlength=1 if caps is None else caps.shape[0])
        owned = np.bincount(owner[idx], minlength=prob.num_links).tolist()
        full = caps is not None and count[node[l]] >= caps[node[l]]
        sums, own, row_l = rate_sum.tolist(), owner.tolist(), rows[l]
        best, best_val = None, float(late[l] * (1.0 - 1e-12))
        for m2 in idx.tolist():
            l2 = own[m2]
            if l2 == l or row_l[m2] <= 0:
                continue
            # transfer m2 to l (l2 keeps at least one RB, l's node has budget)
            gives = [None] if owned[l2] > 1 else []
            if full and node[l] != node[l2]:
                gives = []
            row_2 = rows[l2]
            gives += [m1 for m1 in mine if row_2[m1] > 0]
            for m1 in gives:
                s1 = sums[l] + row_l[m2] - (0.0 if m1 is None else row_l[m1])
                s2 = sums[l2] - row_2[m2] + (0.0 if m1 is None else row_2[m1])
                val = max(lateness(l, s1), lateness(l2, s2))
                if val < best_val:
                    best, best_val = (m1, m2, l2), val
        if best is None:
            return owner
        m1, m2, l2 = best
        owner[m2] = l
        if m1 is not None:
            owner[m1] = l2
    return owner


def _upgrade(st: _State) -> bool:
    changed = False
    free = st.owner < 0
    for l in range(len(st.sets)):
        if not st.sets[l] or not free.any():
            continue
        row = st.r[l]
        cand = np.where(free & (row > 0), row, -1.0)
        while True:
            best = int(np.argmax(cand))
            worst = st.sets[l][-1]
            if cand[best] <= row[worst]:
                break
            rbs = st.sets[l][:-1] + [best]
            new = st.ontime(l, rbs)
            if not new < st.on[l] * (1 - _IMPROVE):
                break
            st.set_link(l, rbs)
            free[:] = st.owner < 0
            cand = np.where(free & (row > 0), row, -1.0)
            changed = True
    return changed


def _exchange(st: _State) -> bool:
    """Apply improving one-for-one swaps between two links (best first per RB)."""
    changed = False
    used = np.flatnonzero(st.owner >= 0)
    if used.size < 2:
        return False
    own = st.owner[used]
    r = st.r
    # [U, U] rate of m1's owner on m2 vs on m1, and of m2's owner on m1 vs on m2
    r_own = r[own, used]
    gain1 = r[own[:, None], used[None, :]] > r_own[:, None]
    gain2 = r[own[None, :], used[:, None]] > r_own[None, :]
    cand = (gain1 | gain2) & (own[:, None] != own[None, :])
    cand = np.triu(cand, 1)
    for a, b in zip(*np.nonzero(cand)):
        m1, m2 = int(used[a]), int(used[b])
        l1, l2 = int(st.owner[m1]), int(st.owner[m2])
        if l1 < 0 or l2 < 0 or l1 == l2:
            continue
        if m1 not in st.sets[l1] or m2 not in st.sets[l2]:
            continue
        s1 = [m for m in st.sets[l1] if m != m1] + [m2]
        s2 = [m for m in st.sets[l2] if m != m2] + [m1]
        if r[l1, m2] <= 0 or r[l2, m1] <= 0:
            continue
        e1, e2 = st.ontime(l1, s1), st.ontime(l2, s2)
        old = st.on[l1] + st.on[l2]
        if e1 + e2 < old * (1 - _IMPROVE):
            st.set_link(l1, s1)
            st.set_link(l2, s2)
            changed = True
    return changed


def _take(st: _State) -> bool:
    """Link l2 takes RB m of link l1; l1 replaces it by its best free RB that fits."""
    changed = False
    r = st.r
    for m in np.flatnonzero(st.owner >= 0):
        l1 = int(st.owner[m])
        if l1 < 0:
            continue
        # links that rate m above their worst RB
        for l2 in range(len(st.sets)):
            if l2 == l1 or not st.sets[l2] or r[l2, m] <= r[l2, st.sets[l2][-1]]:
                continue
            if st.owner[m] != l1:
                break
            s2 = st.sets[l2] + [int(m)]
            e2 = st.ontime(l2, s2)
            gain = st.on[l2] - e2
            if not gain > 0:
                continue
            rest = [x for x in st.sets[l1] if x != m]
            free = np.flatnonzero(st.owner < 0)
            row = r[l1, free]
            order = np.argsort(-row, kind="stable")
            best_e1, best_set = math.inf, None
            if rest and st.ontime(l1, rest) < math.inf:
                best_e1, best_set = st.ontime(l1, rest), rest
            for q in order[:4]:  # the best few free RBs of l1
                if row[q] <= 0:
                    break
                s1 = rest + [int(free[q])]
                e1 = st.ontime(l1, s1)
                if e1 < best_e1:
                    best_e1, best_set = e1, s1
            if best_set is None:
                continue
            if st.prob.caps is not None:
                n1, n2 = int(st.prob.node[l1]), int(st.prob.node[l2])
                grow = len(st.trim(s2, l2)) - len(st.sets[l2])
                if n1 == n2:
                    grow += len(best_set) - len(st.sets[l1])
                if grow > 0 and _node_count(st, n2) + grow > st.prob.caps[n2]:
                    continue
            old = st.on[l1] + st.on[l2]
            if best_e1 + e2 < old * (1 - _IMPROVE):
                st.set_link(l1, best_set)
                st.set_link(l2, s2)
                changed = True
    return changed


def _node_count(st: _State, node: int) -> int:
    return sum(len(st.sets[l]) for l in np.flatnonzero(st.prob.node == node))


def _lp_start(prob: Problem, one: np.ndarray, lp: np.ndarray) -> np.ndarray | None:
    """Round the LP relaxation: pairs by decreasing LP share, each RB to its link while the
    link still lacks capacity (within the node budget); links left without an RB get one
    by assignment. None when some link P3(a) serves cannot get one."""
    served = one >= 0
    owner = np.full(prob.num_rbs, -1, dtype=np.int64)
    cap = np.zeros(prob.num_links)
    count = None if prob.caps is None else np.zeros(prob.caps.shape[0], dtype=np.int64)
    rows, cols = np.nonzero((lp > 1e-9) & served[:, None])
    order = np.lexsort((cols, rows, -lp[rows, cols]))
    for q in order:
        l, m = int(rows[q]), int(cols[q])
        if owner[m] >= 0 or (cap[l] > 0 and cap[l] * prob.d[l] >= prob.c[l]):
            continue
        if count is not None:
            if count[prob.node[l]] >= prob.caps[prob.node[l]]:
                continue
            count[prob.node[l]] += 1
        owner[m] = l
        cap[l] += prob.r[l, m]
    bare = np.flatnonzero(served & (cap == 0))
    if bare.size:
        free = np.flatnonzero(owner < 0)
        r = prob.r[np.ix_(bare, free)]
        usable = r > 0
        room = None if count is None else prob.caps - count
        cols2 = assign_one(np.where(usable, 1.0 / np.where(usable, r, 1.0), np.inf), usable, prob.node[bare], room)
        if (cols2 < 0).any():
            return None
        owner[free[cols2]] = bare
    return owner


def _pipeline(prob: Problem, owner: np.ndarray, passes: int):
    owner = _repair(prob, owner)
    if stretch_of(prob, owner) > 1.0:
        owner = _reduce_lateness(prob, owner, 4 * prob.num_rbs)
        owner = _repair(prob, owner)
    theta = stretch_of(prob, owner)
    deadline = prob.d * theta * (1.0 + 1e-12) if theta > 1.0 else prob.d
    st = _State(prob, owner, deadline)
    for l in range(prob.num_links):
        if st.sets[l]:
            st.set_link(l, st.sets[l])  # release RBs that carry nothing
    for _ in range(passes):
        changed = _upgrade(st)
        changed |= _exchange(st)
        changed |= _take(st)
        if not changed:
            break
    return st.owner, theta, float(st.on.sum())


def solve_greedy(prob: Problem, one: np.ndarray, *, lp=None, passes: int = MAX_PASSES):
    """The heuristic (module doc). ``one``: ``[L]`` the one-RB assignment (-1 = unserved);
    ``lp``: ``[L, M]`` an LP relaxation's solution (:func:`~dmoe.optimize._rb_exact.lp_relaxation`)
    for a second start, or None.

    Returns:
        (owner ``[M] int64``, deadline stretch theta >= 1): the better start (least theta,
        then least energy).
    """
    owner = np.full(prob.num_rbs, -1, dtype=np.int64)
    got = one >= 0
    owner[one[got]] = np.flatnonzero(got)
    best = _pipeline(prob, owner, passes)
    if lp is not None:
        start = _lp_start(prob, one, lp)
        if start is not None:
            other = _pipeline(prob, start, passes)
            if other[1] < best[1] * (1 - 1e-12) or (other[1] <= best[1] * (1 + 1e-12) and other[2] < best[2]):
                best = other
    return best[0], best[1]
