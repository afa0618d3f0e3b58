"""Issue 18, item 2: node-aware exact selection against today's node-block search (not a test).

Run:  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_node_speed.py [--seed 0]

Instances: those of ``bench_node_aware.py`` (softmax scores, round-robin placement, the
paper's computation energies a_{n(j)} N / E, one Rayleigh subcarrier per link for the
transmission energy, thresholds 50..95 % of the Top-D score sum), D = 8:

* E = 32 experts on N = 8 nodes, 449 tokens (a layer round of ``dmoe run``'s default:
  8 anatomy questions);
* E = 256 on N = 16, 200 tokens.

Both sides run in this one process: ``select_experts(placement=..., node_costs=...)``
(the search over per-node counts, :mod:`dmoe.optimize._node_fast`) and today's node-block
branch and bound (:mod:`dmoe.optimize._node_des`, through
``selection._select_node_general``). Per token: each token alone as a batch of 16
copies, best of 3, /16 (ours), and best of 2 (today's, slower); the median over the
tokens, and the ratio per token. Per batch: the whole batch, median of 5 interleaved
repetitions. Checked: the same selections and energies, bit for bit, on every token.

Targets (issue 18): median <= 10 us per token at E = 32, N = 8, and <= 50 us at E = 256,
N = 16.
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

from bench_node_aware import instances  # noqa: E402

from dmoe.optimize import select_experts  # noqa: E402
from dmoe.optimize.selection import SCORE_TOL, _select_node_general  # noqa: E402

D = 8


def ours(scores, a, placement, ncost, thr):
    return select_experts(scores, a, thr, D, placement=placement, node_costs=ncost)


def today(scores, a, placement, ncost, thr):
    costs = np.broadcast_to(a, scores.shape)
    return _select_node_general(scores, costs, placement, ncost, thr - SCORE_TOL, D, "des", None, 0.0)


def per_token(fn, args, q, copies, repeat):
    rows = [np.repeat(x[q:q + 1], copies, axis=0) if x.ndim == 2 or x.shape[0] == args[0].shape[0] else x
            for x in args]
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*rows)
        best = min(best, time.perf_counter() - t0)
    return best / copies


def case(e, n, tokens, seed):
    scores, a, placement, ncost, thr = instances(e, n, tokens, D, seed)
    args = (scores, a, placement, ncost, thr)
    mine, ref = ours(*args), today(*args)
    assert np.array_equal(mine.selection, ref.selection) and np.array_equal(mine.energy, ref.energy)
    assert np.array_equal(mine.feasible, ref.feasible)
    t_ours = np.array([per_token(ours, args, q, 16, 3) for q in range(tokens)])
    t_today = np.array([per_token(today, args, q, 1, 2) for q in range(tokens)])
    batch = np.empty((5, 2))
    for r in range(5):
        for i, fn in enumerate((ours, today)):
            t0 = time.perf_counter()
            fn(*args)
            batch[r, i] = time.perf_counter() - t0
    med = np.median(t_ours) * 1e6
    print(f"E = {e:3d}, N = {n:2d}, {tokens} tokens: ours median {med:6.2f} us/token (p90 "
          f"{np.percentile(t_ours, 90) * 1e6:.1f}, max {t_ours.max() * 1e6:.0f}; batch {np.median(batch[:, 0]) / tokens * 1e6:.1f}"
          f" us/token), today median {np.median(t_today) * 1e6:7.1f} us/token (batch "
          f"{np.median(batch[:, 1]) / tokens * 1e6:.1f}); today / ours: {np.median(t_today / t_ours):.0f}x per token, "
          f"{np.median(batch[:, 1] / batch[:, 0]):.0f}x per batch; search nodes median {np.median(mine.nodes):.0f} "
          f"(today {np.median(ref.nodes):.0f})  [checked: same selections and energies]", flush=True)
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"numpy {np.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {os.getloadavg()[0]:.1f}")
    ours(*instances(16, 4, 4, D, 99))  # load the compiled kernels outside the timing
    today(*instances(16, 4, 4, D, 99))
    m32 = case(32, 8, 449, args.seed)
    m256 = case(256, 16, 200, args.seed)
    print(f"targets: E=32 N=8 median {m32:.2f} us <= 10: {m32 <= 10}; E=256 N=16 median {m256:.2f} us <= 50: "
          f"{m256 <= 50}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
