"""The canonical order of expert selections: one optimum, the same from every method.

Several selections can be optimal for P1(a) (equal experts, equal energies), and which one
is returned decides which experts compute, hence the model's logits. Every exact method
(``select_experts`` with ``"des"``, ``"enumerate"``, ``"milp"``, ``"auto"``, with and
without numba) returns the **canonical optimal selection**, the first feasible selection
in this total order:

1. smaller energy ``E(S) = sum_{j in S} e_j``;
2. then larger score sum ``G(S) = sum_{j in S} g_j``;
3. then the expert-index rule: at the smallest expert index where two selections differ,
   the one that contains that expert comes first (e.g. {0, 3} before {1, 2}, and {0, 1}
   before {0}); this is the lexicographic order of the 0/1 rows with 1 before 0.

E and G are compared **exactly**, as real-number sums of the float64 inputs (Shewchuk's
error-free partials, :func:`exact_diff_sign`; the numpy oracle uses ``math.fsum`` and,
for equal rounded sums, :class:`fractions.Fraction`). No tolerance at all: exact
comparison is order-free (numba, Python and numpy agree, and permuting the experts
permutes the answer except where rule 3 decides), transitive (a relative tolerance
"within tol of the minimum" is not, and would make the answer depend on the minimum's
last bits), and strictly monotone, so an expert with no lower score and no higher cost
than another can always replace it (the dominance cuts of the search stay valid). Ties
of rule 1 are exact ties: equal experts, or sums that are equal as real numbers.

C1 itself is decided on the correctly rounded score sum (``math.fsum(g_S) >= thr - tol``),
also order-free, so every method accepts the same subsets.

The same order restricted to single experts (score descending, then index ascending) is
the tie rule of Top-k. The helpers here are plain scalar code so that
:mod:`dmoe.optimize._des` compiles them with numba and runs them as Python with
identical results; :func:`canonical_best` is the numpy form used by the enumeration
oracle. They are the one place that defines the order (reuse them, do not re-derive it).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = [
    "exact_sum",
    "exact_diff_sign",
    "lex_precedes",
    "sorted_indices",
    "compare_sets",
    "canonical_best",
    "row_exact_sums",
]


def exact_sum(vals, pos, cnt, buf):
    """Correctly rounded sum of ``vals[pos[i]]`` for ``i < cnt`` (Shewchuk / ``math.fsum``).

    Args:
        vals: 1-D float64 values (finite, any sign); pos: 1-D int positions;
        cnt: number of terms; buf: float64 scratch of length >= cnt + 1.

    Returns:
        float: the exact sum rounded to nearest-even; ``inf`` if it overflows. Equal to
        ``math.fsum`` of the same terms (tested), independent of their order.
    """
    m = 0
    for i in range(cnt):
        x = vals[pos[i]]
        k = 0
        for p in range(m):
            y = buf[p]
            if abs(x) < abs(y):
                tmp = x
                x = y
                y = tmp
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                buf[k] = lo
                k += 1
            x = hi
        if not math.isfinite(x):
            return x
        buf[k] = x
        m = k + 1
    if m == 0:
        return 0.0
    m -= 1
    hi = buf[m]
    lo = 0.0
    while m > 0:
        x = hi
        m -= 1
        y = buf[m]
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            break
    # round half to even across the remaining partials (as CPython's math.fsum)
    if m > 0 and ((lo < 0.0 and buf[m - 1] < 0.0) or (lo > 0.0 and buf[m - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        yr = x - hi
        if y == yr:
            hi = x
    return hi


def exact_diff_sign(vals, pos_a, na, pos_b, nb, buf):
    """Sign of the exact real difference ``sum vals[pos_a[:na]] - sum vals[pos_b[:nb]]``.

    Shewchuk's partials hold the difference exactly; its correctly rounded value is
    non-zero iff the difference is (a non-zero difference of float64 sums is at least
    2**-1074). ``buf``: float64 scratch of length >= na + nb + 1. Returns -1, 0 or 1.
    """
    m = 0
    for i in range(na + nb):
        x = vals[pos_a[i]] if i < na else -vals[pos_b[i - na]]
        k = 0
        for p in range(m):
            y = buf[p]
            if abs(x) < abs(y):
                tmp = x
                x = y
                y = tmp
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                buf[k] = lo
                k += 1
            x = hi
        if not math.isfinite(x):
            return 1 if x > 0 else (-1 if x < 0 else 0)
        buf[k] = x
        m = k + 1
    # the partials are non-overlapping and increasing in magnitude: the largest non-zero
    # one carries the sign of the exact sum
    for p in range(m - 1, -1, -1):
        if buf[p] != 0.0:
            return 1 if buf[p] > 0.0 else -1
    return 0


def lex_precedes(a, na, b, nb):
    """Rule 3: does index set ``a[:na]`` come before ``b[:nb]`` (both sorted ascending)?

    At the first position where they differ the smaller index wins (it belongs to one set
    only); when one is a prefix of the other, the longer set wins (it holds the smallest
    index not shared). Equal sets: False.
    """
    i = 0
    while i < na and i < nb:
        if a[i] != b[i]:
            return a[i] < b[i]
        i += 1
    return na > nb


def sorted_indices(gidx, pos, cnt, out):
    """``out[:cnt]`` = the expert indices ``gidx[pos[:cnt]]`` sorted ascending (insertion sort)."""
    for i in range(cnt):
        v = gidx[pos[i]]
        p = i - 1
        while p >= 0 and out[p] > v:
            out[p + 1] = out[p]
            p -= 1
        out[p + 1] = v


def compare_sets(e, t, gidx, pos_a, na, pos_b, nb, buf, idx_a, idx_b):
    """The canonical order between two selections: -1 if A comes first, 1 if B does, 0 if
    they are the same set.

    Args:
        e, t: 1-D costs and scores; gidx: expert index of each position;
        pos_a[:na], pos_b[:nb]: the two selections as positions into e, t, gidx;
        buf: float64 scratch >= na + nb + 1; idx_a, idx_b: int scratch >= na, nb.
    """
    c = exact_diff_sign(e, pos_a, na, pos_b, nb, buf)
    if c != 0:
        return c
    c = exact_diff_sign(t, pos_a, na, pos_b, nb, buf)
    if c != 0:
        return -c
    sorted_indices(gidx, pos_a, na, idx_a)
    sorted_indices(gidx, pos_b, nb, idx_b)
    if lex_precedes(idx_a, na, idx_b, nb):
        return -1
    if lex_precedes(idx_b, nb, idx_a, na):
        return 1
    return 0


def row_exact_sums(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[n]`` correctly rounded sums of ``values[i, mask[i]]`` (``math.fsum`` per row).

    Args:
        values, mask: ``[n, K]`` float64 and bool (masked entries may be non-finite).
    """
    out = np.empty(values.shape[0])
    for i in range(values.shape[0]):
        out[i] = math.fsum(values[i, mask[i]].tolist())
    return out


def canonical_best(costs: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> int:
    """Index of the canonical first among candidate selections of one token (rules 1-3).

    Args:
        costs, scores: ``[K], float64`` e_j and g_j of the token (finite where selected).
        rows: ``[n, K], bool`` the candidates' selections (n >= 1).

    Returns:
        int position in ``0..n-1`` (``ValueError`` when n == 0).

    Rounded sums (``math.fsum``) order the candidates except among equal rounded sums,
    which are compared as exact fractions (rounding is monotone, so this is the exact
    order).
    """
    if rows.shape[0] == 0:
        raise ValueError("`rows` must hold at least one candidate")
    alive = np.arange(rows.shape[0])
    for values, sign in ((costs, 1), (scores, -1)):
        rounded = np.array([sign * math.fsum(values[rows[i]].tolist()) for i in alive])
        alive = alive[rounded == rounded.min()]
        if alive.size > 1:
            exact = [sign * sum(map(Fraction, values[rows[i]].tolist()), Fraction(0)) for i in alive]
            low = min(exact)
            alive = alive[[x == low for x in exact]]
        if alive.size == 1:
            return int(alive[0])
    # rule 3: rows descending as 0/1 strings
    best = alive[0]
    for i in alive[1:]:
        diff = np.flatnonzero(rows[i] != rows[best])
        if diff.size and rows[i][diff[0]]:
            best = i
    return int(best)
