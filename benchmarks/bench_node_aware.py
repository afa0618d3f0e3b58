"""Side-by-side timing of node-aware expert selection (issue 12): ours vs HiGHS (not a test).

Run:  PYTHONPATH=src python benchmarks/bench_node_aware.py [--tokens 100] [--seed 0]

Instances (E experts on N nodes, D = 8): softmax gating scores (Gaussian logits, sd 1.5),
round-robin placement, computation energy a_{n(j)} N / E with the paper's a_n = n * 1e-3 J,
transmission energy to node n = P0 * 8 s0 / R_in with R_in one Rayleigh subcarrier
(path loss 1e-2, B0 = 1 MHz, P0/N0 = 10 dB, s0 = 8 kB; Section VII-A) and 0 for the
token's own node; thresholds 50..95 % of the Top-D score sum (every token feasible).

Every token is solved alone by ``select_experts(placement=..., node_costs=..., method=m)``
for m = "des" (node-block branch and bound, compiled) and "milp" (scipy.optimize.milp /
HiGHS, x_j <= y_n node variables, gaps 0), timed per token (best of 3 for DES). Printed:
median and worst time per token, the ratio HiGHS / ours, the largest energy difference.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import scipy

from dmoe.channels.rates import draw_rates
from dmoe.optimize import select_experts
from dmoe.optimize._des import numba_enabled
from dmoe.energy import expert_comp_energy, transmission_costs
from dmoe.placement import round_robin_placement
from dmoe.system import SystemConfig


def instances(num_experts, num_nodes, tokens, d, seed):
    rng = np.random.default_rng(seed)
    system = SystemConfig(num_nodes=num_nodes, num_subcarriers=num_nodes * (num_nodes - 1))
    logits = rng.normal(0.0, 1.5, (tokens, num_experts))
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    placement = round_robin_placement(num_experts, num_nodes)
    a = expert_comp_energy(system, placement)
    rates = draw_rates(system, rng)
    # one subcarrier per link: the first one (i.i.d. Rayleigh, so any fixed choice is a draw)
    link = rates[:, :, 0]
    source = rng.integers(0, num_nodes, tokens)
    node_costs = transmission_costs(link, system)[source]
    top = np.sort(scores, axis=1)[:, ::-1][:, :d].sum(axis=1)
    thr = rng.uniform(0.5, 0.95, tokens) * top
    return scores, a, placement, node_costs, thr


def time_tokens(scores, a, placement, node_costs, thr, d, method, repeat):
    times = np.empty(len(thr))
    energy = np.empty(len(thr))
    for q in range(len(thr)):
        best = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            res = select_experts(scores[q : q + 1], a, thr[q : q + 1], d, placement=placement,
                                 node_costs=node_costs[q : q + 1], method=method)
            best = min(best, time.perf_counter() - t0)
        times[q] = best
        energy[q] = res.energy[0]
    return times, energy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    d = 8
    print(f"node-aware P1(a), D = {d}, {args.tokens} tokens per configuration, seed {args.seed}")
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, numba compiled: {numba_enabled()}, "
          f"{platform.processor() or platform.machine()}")
    # compile once outside the timing
    s, a, p, c, t = instances(16, 4, 4, d, 99)
    select_experts(s, a, t, d, placement=p, node_costs=c, method="des")
    print(f"{'E':>4} {'N':>3} | {'ours median':>12} {'ours worst':>11} | {'HiGHS median':>12} {'HiGHS worst':>12} |"
          f" {'ratio med':>9} {'ratio worst':>11} | {'max |dE|/E':>10}")
    for e, n in ((64, 8), (64, 16), (256, 8), (256, 16)):
        s, a, p, c, t = instances(e, n, args.tokens, d, args.seed)
        ours, e_ours = time_tokens(s, a, p, c, t, d, "des", 3)
        ref, e_ref = time_tokens(s, a, p, c, t, d, "milp", 1)
        rel = np.max(np.abs(e_ours - e_ref) / np.maximum(e_ref, 1e-300))
        print(f"{e:>4} {n:>3} | {np.median(ours) * 1e3:>9.3f} ms {ours.max() * 1e3:>8.2f} ms |"
              f" {np.median(ref) * 1e3:>9.2f} ms {ref.max() * 1e3:>9.2f} ms |"
              f" {np.median(ref) / np.median(ours):>8.1f}x {ref.max() / ours.max():>10.1f}x | {rel:>10.1e}", flush=True)


if __name__ == "__main__":
    main()
