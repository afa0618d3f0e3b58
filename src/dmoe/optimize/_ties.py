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

Both sums are **correctly rounded** float64 sums of the exact real sum (Shewchuk's
algorithm, as :func:`math.fsum`), so they do not depend on summation order: the same set
has the same E and G in numba, Python and numpy, and permuting the experts permutes the
answer (except when rule 3 decides, which refers to expert indices). Energies are thus
compared with the tolerance of one float64 rounding, no more: two selections whose exact
energies round to the same float64 are tied and rule 2 decides. A larger relative
tolerance is deliberately not used: "within tol of the minimum" is not transitive and
makes the answer depend on the last bits of the minimum, which is what this order exists
to prevent.

The same order (restricted to single experts: score descending, then index ascending) is
the tie rule of Top-k and of Remark 2's fallback. The helpers here are plain scalar code
so that :mod:`dmoe.optimize._des` compiles them with numba and runs them as Python, with
bitwise-identical results; :func:`canonical_best` is the numpy form used by the
enumeration oracle.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["exact_sum", "lex_precedes", "key_precedes", "canonical_best", "row_exact_sums"]


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


def key_precedes(e_a, g_a, e_b, g_b):
    """Rules 1-2 as a three-way result: -1 if (E_a, G_a) comes first, 1 if (E_b, G_b)
    does, 0 on a tie (then :func:`lex_precedes` decides)."""
    if e_a < e_b:
        return -1
    if e_a > e_b:
        return 1
    if g_a > g_b:
        return -1
    if g_a < g_b:
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


def canonical_best(energy: np.ndarray, gain: np.ndarray, rows: np.ndarray) -> int:
    """Index of the canonical first among candidate selections (rules 1-3).

    Args:
        energy, gain: ``[n], float64`` correctly rounded E and G of each candidate.
        rows: ``[n, K], bool`` the candidates' selections.

    Returns:
        int position in ``0..n-1`` (``ValueError`` when n == 0).
    """
    if energy.size == 0:
        raise ValueError("`energy` must hold at least one candidate")
    # np.lexsort: last key primary. Rule 3 = rows descending as 0/1 strings, i.e. the
    # columns as keys from the last (least significant) to the first, each negated.
    keys = [~rows[:, j] for j in range(rows.shape[1] - 1, -1, -1)]
    order = np.lexsort(keys + [-gain, energy])
    return int(order[0])
