"""Cost of the canonical optimum (issue #8), side by side (not a test).

Run:  python benchmarks/bench_canonical.py [--seed 0]

1. DES: the default ``"canonical"`` search (exact sums, ties explored, index dominance)
   against the ``"strong"`` search it extends (some optimum, ties unresolved), compiled,
   same instances (Dirichlet scores, uniform costs, threshold half-way between the
   Top-1 and Top-D sums); best of 3 calls.
2. MILP: raw HiGHS per token (``_milp.highs_solve``: scaled, rounded, verified) against
   ``select_experts(method="milp")``, which adds the exact canonical polish.
Prints time per token and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dmoe.optimize import SCORE_TOL, _des, _milp, select_experts


def thresholds(s, d):
    """Half-way between the Top-1 and the Top-D score sums: feasible, never trivial."""
    top = np.sort(s, axis=1)[:, ::-1]
    return 0.5 * (top[:, 0] + top[:, :d].sum(axis=1))


def best_of(fn, reps=3):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"numba: {_des.numba_enabled()}")
    print("1. DES canonical vs strong (compiled)")
    print(f"{'K':>4} {'D':>3} {'tokens':>7} {'strong us/tok':>14} {'canonical us/tok':>17} {'ratio':>6}")
    for k, d, t in [(8, 2, 20000), (8, 8, 20000), (64, 4, 2000), (64, 16, 2000), (256, 8, 200)]:
        s = rng.dirichlet(np.ones(k) * 0.5, t)
        c = rng.uniform(0.5, 2.0, (t, k))
        thr = thresholds(s, d)
        times = {}
        sel = {}
        for v in ("strong", "canonical"):
            _des.DEFAULT_VARIANT = v
            select_experts(s[:10], c[:10], thr[:10], d, method="des")  # compile / warm
            times[v] = best_of(lambda: select_experts(s, c, thr, d, method="des")) / t * 1e6
            sel[v] = select_experts(s, c, thr, d, method="des")
        _des.DEFAULT_VARIANT = "canonical"
        same_e = np.allclose(sel["strong"].energy, sel["canonical"].energy, rtol=1e-12)
        print(
            f"{k:>4} {d:>3} {t:>7} {times['strong']:>14.2f} {times['canonical']:>17.2f} "
            f"{times['canonical'] / times['strong']:>6.2f}  same energies: {same_e}"
        )
    print("2. MILP: raw HiGHS vs select_experts(method='milp') (HiGHS + canonical polish)")
    for k, d, t in [(8, 2, 200), (64, 8, 50)]:
        s = rng.dirichlet(np.ones(k) * 0.5, t)
        c = rng.uniform(0.5, 2.0, (t, k))
        thr = thresholds(s, d)
        t0 = time.perf_counter()
        cert = 0
        for q in range(t):
            _, ok, _ = _milp.highs_solve(s[q], c[q], thr[q] - SCORE_TOL, d)
            cert += ok
        raw = (time.perf_counter() - t0) / t * 1e3
        full = best_of(lambda: select_experts(s, c, thr, d, method="milp"), reps=1) / t * 1e3
        print(f"K={k} D={d}: raw HiGHS {raw:.2f} ms/tok (certified {cert}/{t}), with polish {full:.2f} ms/tok, ratio {full / raw:.2f}")


if __name__ == "__main__":
    main()
