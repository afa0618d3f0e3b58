"""Issue 18, item 3: DES against the numpy subset enumeration and today's search (not a test).

Run:  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_des_speed.py [--reps 15] [--seed 0]

Everything runs in this one process, interleaved (ours, reference, ours, ...), so that the
load of a shared machine hits both alike; the figures are medians over the repetitions
(and the ratio is the median of the per-repetition ratios). Instances: those of
``bench_selection.py`` (softmax scores, paper-regime costs, thresholds between the Top-1
and Top-D sums).

* K = 8, D = 2 and D = 8, 20,000 tokens: ``select_experts`` (validation, the compiled
  search, energies: the whole call) against the plain numpy enumeration a user would
  write: the score and energy sums of every subset of <= D experts by two matrix
  products, infeasible ones masked, an argmin. Checked: our selections are the canonical
  optimum of ``select_experts(method="enumerate")`` and our energies equal the numpy
  enumeration's minimum (1e-12 relative).
* K = 256, D = 8, 200 tokens: each token alone (a batch of 16 copies, best of 3, /16),
  median over the tokens, against today's search (the compiled driver
  ``select_experts`` runs with a ``node_limit``); the same selections, bit for bit.
* single-token calls: the median time of ``select_experts`` on one token minus the
  per-token time of the batch (the call's overhead), K = 8 and K = 256.

Targets (issue 18): K = 8, D = 2 <= 150 ns/token and >= 4x the enumeration; K = 8, D = 8
>= 4x; K = 256, D = 8 median <= 5 us/token; single-token overhead <= 10 us.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_selection import instance  # noqa: E402

from dmoe.optimize import select_experts  # noqa: E402
from dmoe.optimize._enumerate import subset_matrix  # noqa: E402

BIG_LIMIT = 10**9  # a node limit that never binds: today's compiled search


def numpy_enumeration(scores, costs, thr, d):
    """What a user would write: every subset's sums by matrix products, mask, argmin."""
    st = subset_matrix(scores.shape[1], d).T
    ssum = scores @ st
    esum = np.where(ssum >= thr[:, None], costs @ st, np.inf)
    best = esum.argmin(axis=1)
    return best, esum[np.arange(len(best)), best]


def interleaved(fns, reps):
    """Median wall time of each function over ``reps`` interleaved rounds, and the median
    of each round's ratio to the first function."""
    times = np.empty((reps, len(fns)))
    for r in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[r, i] = time.perf_counter() - t0
    return np.median(times, axis=0), np.median(times / times[:, :1], axis=0)


def k8(d, n, reps, rng):
    scores, costs, thr = instance(rng, 8, d, n)
    ours = select_experts(scores, costs, thr, d)
    oracle = select_experts(scores, costs, thr, d, method="enumerate")
    assert np.array_equal(ours.selection, oracle.selection) and np.array_equal(ours.energy, oracle.energy)
    _, e_np = numpy_enumeration(scores, costs, thr - 1e-9, d)
    feas = ours.feasible
    assert np.allclose(ours.energy[feas], e_np[feas], rtol=1e-12, atol=0)
    med, ratio = interleaved(
        [lambda: numpy_enumeration(scores, costs, thr, d), lambda: select_experts(scores, costs, thr, d)], reps
    )
    ns = med / n * 1e9
    print(f"K = 8, D = {d}, {n} tokens: ours {ns[1]:7.1f} ns/token, numpy enumeration {ns[0]:7.1f} ns/token, "
          f"enumeration / ours = {1 / ratio[1]:.1f}x   (checked: canonical optimum of {n} tokens, "
          f"{int(feas.sum())} feasible)", flush=True)
    return ns[1], 1 / ratio[1]


def k256(n, reps, rng):
    scores, costs, thr = instance(rng, 256, 8, n)
    ours = select_experts(scores, costs, thr, 8)
    today = select_experts(scores, costs, thr, 8, node_limit=BIG_LIMIT)
    assert np.array_equal(ours.selection, today.selection) and np.array_equal(ours.energy, today.energy)
    per = np.empty((n, 2))
    for q in range(n):
        s, c, t = (np.repeat(x[q:q + 1], 16, axis=0) for x in (scores, costs, thr))
        best = np.full(2, np.inf)
        for _ in range(3):
            for i, kw in enumerate(({}, {"node_limit": BIG_LIMIT})):
                t0 = time.perf_counter()
                select_experts(s, c, t, 8, **kw)
                best[i] = min(best[i], time.perf_counter() - t0)
        per[q] = best / 16
    med, ratio = interleaved([lambda: select_experts(scores, costs, thr, 8, node_limit=BIG_LIMIT),
                              lambda: select_experts(scores, costs, thr, 8)], reps)
    us = np.median(per, axis=0) * 1e6
    print(f"K = 256, D = 8, {n} tokens: ours median {us[0]:6.2f} us/token (p90 {np.percentile(per[:, 0], 90) * 1e6:.1f}, "
          f"batch {med[1] / n * 1e6:.2f}), today's search median {us[1]:6.2f} us/token (batch {med[0] / n * 1e6:.2f}); "
          f"today / ours = {np.median(per[:, 1] / per[:, 0]):.1f}x per token, {1 / ratio[1]:.1f}x per batch "
          f"(checked: the same selections)", flush=True)
    return us[0]


def single(k, d, rng, calls=3000):
    scores, costs, thr = instance(rng, k, d, 200)
    select_experts(scores, costs, thr, d)
    out = {}
    for name, kw in (("ours", {}), ("today", {"node_limit": BIG_LIMIT})):
        batch = np.median([_timed(lambda: select_experts(scores, costs, thr, d, **kw)) for _ in range(15)]) / 200
        one = np.median([_timed(lambda q=q: select_experts(scores[q:q + 1], costs[q:q + 1], thr[q:q + 1], d, **kw))
                         for q in np.arange(calls) % 200])
        out[name] = (one, one - batch)
    print(f"single token, K = {k}, D = {d}: ours {out['ours'][0] * 1e6:.1f} us per call = {out['ours'][1] * 1e6:.1f} us "
          f"overhead; today's search {out['today'][0] * 1e6:.1f} us per call ({out['today'][1] * 1e6:.1f} us overhead)",
          flush=True)
    return out["ours"][1] * 1e6


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"numpy {np.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {os.getloadavg()[0]:.1f}")
    select_experts(*instance(rng, 8, 2, 4), 2)  # load the compiled kernels outside the timing
    ns2, r2 = k8(2, 20_000, args.reps, rng)
    ns8, r8 = k8(8, 20_000, args.reps, rng)
    us256 = k256(200, max(3, args.reps // 3), rng)
    ov8 = single(8, 2, rng)
    ov256 = single(256, 8, rng, calls=600)
    print(f"targets: K=8 D=2 {ns2:.0f} ns <= 150 ns: {ns2 <= 150}; >= 4x: {r2 >= 4} ({r2:.1f}x); K=8 D=8 >= 4x: "
          f"{r8 >= 4} ({r8:.1f}x); K=256 median {us256:.2f} us <= 5: {us256 <= 5}; single-token overhead "
          f"{ov8:.1f} / {ov256:.1f} us <= 10: {max(ov8, ov256) <= 10}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
