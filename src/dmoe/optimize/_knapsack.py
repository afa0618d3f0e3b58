"""Multiple-choice knapsack over layers: one QoS level per layer (issue 11).

Problem (MCKP): items are layers (or windows of layers) l = 1..L, each with V levels;
level v of item l has a predicted quality loss ``loss[l, v]`` [nat] and a predicted energy
``energy[l, v]`` [J/token]. Choose exactly one level per item to

* ``kind="loss"``:   minimise sum_l energy[l, v_l]  s.t.  sum_l loss[l, v_l] <= budget, or
* ``kind="energy"``: minimise sum_l loss[l, v_l]    s.t.  sum_l energy[l, v_l] <= budget.

Methods (all exact; ``brute`` is the oracle of the tests):

* ``"pareto"`` (default): dynamic programming over items on the *set of Pareto-optimal
  partial sums* (Nemhauser-Ullmann). After item l it keeps every non-dominated pair
  (sum of loss, sum of energy) of the first l items; a dominated partial solution can
  never complete into a better one, because adding the same remaining levels preserves
  the order (floating-point addition is monotone, and every method sums the items in the
  same order 1..L). Nothing is discretised, so the optimum is exact for the given floats,
  not only for a rounded budget. The final front also answers every budget at once.
* ``"milp"``: :func:`scipy.optimize.milp` (HiGHS) with binaries x[l, v] and
  ``mip_rel_gap=0``: exact up to HiGHS's feasibility tolerance (1e-7 absolute, so a budget
  met within 1e-7 counts as met); the independent reference of the tests.
* ``"brute"``: enumerates all V^L choices (at most 2,000,000).

Infeasible budget (below the least achievable sum): the *nearest feasible* allocation is
returned -- the one with the least constrained sum (ties: least objective) -- with
``feasible=False`` and a message.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["KnapsackResult", "solve_mckp", "pareto_front_mckp", "MCKP_METHODS"]

MCKP_METHODS = ("auto", "pareto", "milp", "brute")
BRUTE_MAX = 2_000_000


@dataclass(frozen=True)
class KnapsackResult:
    """Outcome of :func:`solve_mckp`.

    Attributes:
        levels: ``[num_items], int64`` chosen level per item.
        loss: sum of ``loss`` over the chosen levels [nat].
        energy: sum of ``energy`` over the chosen levels [J/token].
        feasible: whether the budget holds (False: the nearest feasible allocation).
        budget: the budget asked for.
        kind: ``"loss"`` or ``"energy"`` (what the budget bounds).
        method: the method that solved it.
        message: human-readable status.
    """

    levels: np.ndarray
    loss: float
    energy: float
    feasible: bool
    budget: float
    kind: str
    method: str
    message: str = ""


def _check_table(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{name}` must be a numeric array [num_items, num_levels]") from exc
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"`{name}` must be 2-D [num_items, num_levels] with both sizes >= 1, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite (no NaN or inf)")
    return arr


def _validate(loss, energy, budget, kind, method):
    loss = _check_table("loss", loss)
    energy = _check_table("energy", energy)
    if loss.shape != energy.shape:
        raise ValueError(f"`loss` {loss.shape} and `energy` {energy.shape} must have the same shape")
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)) or not math.isfinite(budget):
        raise ValueError(f"`budget` must be a finite number, got {budget!r}")
    if kind not in ("loss", "energy"):
        raise ValueError(f"`kind` must be 'loss' or 'energy', got {kind!r}")
    if method not in MCKP_METHODS:
        raise ValueError(f"`method` must be one of {MCKP_METHODS}, got {method!r}")
    return loss, energy, float(budget)


def pareto_front_mckp(loss, energy):
    """Every Pareto-optimal allocation (sum of loss, sum of energy) of the MCKP.

    Args:
        loss, energy: ``[num_items, num_levels], float64`` (finite).

    Returns:
        ``(front_loss [P], front_energy [P], levels [P, num_items] int64)`` sorted by
        increasing loss (hence decreasing energy); one allocation per distinct point.

    Raises:
        ValueError: malformed tables (naming the argument).
    """
    loss = _check_table("loss", loss)
    energy = _check_table("energy", energy)
    if loss.shape != energy.shape:
        raise ValueError(f"`loss` {loss.shape} and `energy` {energy.shape} must have the same shape")
    return _front(loss, energy)


def _prune(cl: np.ndarray, ce: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, sorted by (loss asc, energy asc); one per tie."""
    order = np.lexsort((ce, cl))
    ce_sorted = ce[order]
    # keep a point when its energy is strictly below every energy of smaller-or-equal loss before it
    running = np.minimum.accumulate(ce_sorted)
    keep = np.empty(order.size, dtype=bool)
    keep[0] = True
    keep[1:] = ce_sorted[1:] < running[:-1]
    return order[keep]


def _front(loss: np.ndarray, energy: np.ndarray):
    n, v = loss.shape
    # state arrays of the current front: sums, parent state index, level, per item
    fl = loss[0].copy()
    fe = energy[0].copy()
    keep = _prune(fl, fe)
    fl, fe = fl[keep], fe[keep]
    parents = [np.full(keep.size, -1, dtype=np.int64)]
    levels = [keep.astype(np.int64)]
    for item in range(1, n):
        # [P, V] candidate sums: previous state p plus level j of this item
        cl = (fl[:, None] + loss[item][None, :]).ravel()
        ce = (fe[:, None] + energy[item][None, :]).ravel()
        keep = _prune(cl, ce)
        parents.append(keep // v)
        levels.append(keep % v)
        fl, fe = cl[keep], ce[keep]
    # backtrack every final state
    p = fl.size
    out = np.empty((p, n), dtype=np.int64)
    idx = np.arange(p)
    for item in range(n - 1, -1, -1):
        out[:, item] = levels[item][idx]
        idx = parents[item][idx]
    return fl, fe, out


def _choose(fl, fe, kind, budget):
    """Index into a front (sorted by loss asc / energy desc) of the optimum, and feasibility."""
    if kind == "loss":
        ok = np.nonzero(fl <= budget)[0]
        if ok.size:
            return int(ok[-1]), True  # largest loss within budget = least energy
        return 0, False  # least loss (ties resolved to least energy by the front)
    ok = np.nonzero(fe <= budget)[0]
    if ok.size:
        return int(ok[0]), True  # least loss whose energy fits
    return fl.size - 1, False  # least energy


def _sums(loss, energy, levels):
    """Sums in item order 1..L (the order every method uses)."""
    s_l = 0.0
    s_e = 0.0
    for item, lv in enumerate(levels):
        s_l = s_l + float(loss[item, lv])
        s_e = s_e + float(energy[item, lv])
    return s_l, s_e


def _brute(loss, energy, kind, budget):
    n, v = loss.shape
    if v**n > BRUTE_MAX:
        raise ValueError(f"method='brute' enumerates V^L = {v}^{n} > {BRUTE_MAX} allocations; use 'pareto'")
    combos = np.array(list(itertools.product(range(v), repeat=n)), dtype=np.int64).reshape(-1, n)
    sl = np.zeros(combos.shape[0])
    se = np.zeros(combos.shape[0])
    for item in range(n):
        sl = sl + loss[item, combos[:, item]]
        se = se + energy[item, combos[:, item]]
    obj, con = (se, sl) if kind == "loss" else (sl, se)
    ok = con <= budget
    if ok.any():
        best = np.lexsort((con, obj))  # least objective, ties: least constrained sum
        best = best[ok[best]][0]
        return combos[best], True
    best = np.lexsort((obj, con))[0]
    return combos[best], False


def _milp(loss, energy, kind, budget):
    from scipy.optimize import Bounds, LinearConstraint, milp

    n, v = loss.shape
    obj, con = (energy, loss) if kind == "loss" else (loss, energy)
    one = np.zeros((n, n * v))
    for item in range(n):
        one[item, item * v : (item + 1) * v] = 1.0
    opts = {"mip_rel_gap": 0.0}
    cons = [LinearConstraint(one, 1.0, 1.0), LinearConstraint(con.ravel()[None, :], -np.inf, budget)]
    res = milp(obj.ravel(), constraints=cons, integrality=np.ones(n * v), bounds=Bounds(0, 1), options=opts)
    if res.status == 0 and res.x is not None:
        return np.argmax(res.x.reshape(n, v), axis=1).astype(np.int64), True
    if res.status != 2:  # 2 = infeasible
        raise RuntimeError(f"HiGHS failed on the MCKP: {res.message}")
    # nearest feasible: least constrained sum, then least objective
    res = milp(con.ravel(), constraints=[LinearConstraint(one, 1.0, 1.0)], integrality=np.ones(n * v),
               bounds=Bounds(0, 1), options=opts)
    levels = np.argmax(res.x.reshape(n, v), axis=1)
    least = float(np.sum(con[np.arange(n), levels]))
    res = milp(obj.ravel(), constraints=[LinearConstraint(one, 1.0, 1.0),
                                         LinearConstraint(con.ravel()[None, :], -np.inf, least + 1e-9 * max(1.0, abs(least)))],
               integrality=np.ones(n * v), bounds=Bounds(0, 1), options=opts)
    return np.argmax(res.x.reshape(n, v), axis=1).astype(np.int64), False


def solve_mckp(loss, energy, budget, *, kind: str = "loss", method: str = "auto") -> KnapsackResult:
    """Choose one level per item optimally (multiple-choice knapsack; see module docstring).

    Args:
        loss: ``[num_items, num_levels], float64`` predicted quality loss per level [nat]
            (any sign; an NLL increase may be negative).
        energy: ``[num_items, num_levels], float64`` predicted energy per level [J/token].
        budget: bound on the summed ``loss`` (``kind="loss"``) or ``energy``
            (``kind="energy"``).
        kind: ``"loss"`` (min energy s.t. loss <= budget) or ``"energy"`` (min loss s.t.
            energy <= budget).
        method: ``"auto"`` (= ``"pareto"``), ``"pareto"``, ``"milp"`` or ``"brute"``.

    Returns:
        :class:`KnapsackResult`; ``feasible=False`` with the nearest feasible allocation
        (least constrained sum) when no allocation meets the budget.

    Raises:
        ValueError: malformed ``loss``/``energy`` (not 2-D, NaN/inf, shapes differ), a
        non-finite ``budget``, an unknown ``kind`` or ``method``, or ``brute`` on more
        than 2,000,000 allocations.
    """
    loss, energy, budget = _validate(loss, energy, budget, kind, method)
    method = "pareto" if method == "auto" else method
    if method == "pareto":
        fl, fe, allocs = _front(loss, energy)
        i, feasible = _choose(fl, fe, kind, budget)
        levels = allocs[i]
    elif method == "brute":
        levels, feasible = _brute(loss, energy, kind, budget)
    else:
        levels, feasible = _milp(loss, energy, kind, budget)
    s_l, s_e = _sums(loss, energy, levels)
    what = "predicted loss" if kind == "loss" else "predicted energy"
    if feasible:
        msg = f"optimal: {what} {s_l if kind == 'loss' else s_e:.6g} <= budget {budget:.6g}"
    else:
        least = s_l if kind == "loss" else s_e
        msg = (f"`budget` {budget:.6g} cannot be met: the least achievable {what} is {least:.6g}; "
               f"returned that nearest feasible allocation")
    return KnapsackResult(np.asarray(levels, dtype=np.int64), s_l, s_e, bool(feasible), budget, kind, method, msg)
