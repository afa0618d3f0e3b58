"""Several resource blocks per link under a deadline: auto / greedy against HiGHS (not a test).

Run:  python benchmarks/bench_resource_blocks.py [--seeds 3] [--milp-time 600] [--quick]

Instances (NR FR1, 30 kHz / 100 MHz-like): K = 8 nodes, all 56 links active, M = 106 or
273 resource blocks of 12 x 30 kHz = 360 kHz each; TDL-C fading (TR 38.901, 300 ns delay
spread) per link and RB, a per-link mean SNR uniform in [0, 25] dB (distance and shadowing
spread), rate B0 log2(1 + SNR |h|^2); 4..24 tokens per link of s0 = 1152 bytes (576 dims in
fp16). Deadlines: loose (none: P3(a)) and tight: T = the 25 % quantile of the links' P3(a)
air times (three links in four need more RBs) and T = 0.6 x that (scarce RBs).

For every instance it times ``allocate_resource_blocks`` with ``method="auto"`` and
``"greedy"`` and the reference ``method="milp"`` (HiGHS, gap 1e-9, ``--milp-time`` s per
HiGHS call), all in this one process, and prints the time ratio, the greedy's reported gap
(to its LP bound), its true excess over the MILP's energy, the deadline stretch and the RBs
used.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import scipy

from dmoe.channels import channel_model
from dmoe.channels.base import power_gain
from dmoe.optimize.resource_blocks import allocate_resource_blocks

K = 8
B0 = 12 * 30e3
S0 = 1152
P0 = 0.2 / 273  # 23 dBm over the 273 RBs of a 100 MHz carrier


def instance(m: int, seed: int):
    rng = np.random.default_rng([seed, m])
    model = channel_model("tdl-c", delay_spread_ns=300.0)
    h = model.draw(K, m, B0, rng).response
    snr = 10 ** (rng.uniform(0.0, 25.0, size=(K, K)) / 10)
    rates = B0 * np.log2(1.0 + snr[..., None] * power_gain(h, 1.0))
    rates[np.arange(K), np.arange(K)] = 0.0
    demand = rng.integers(4, 25, size=(K, K))
    np.fill_diagonal(demand, 0)
    return rates, demand


def run(rates, demand, deadline, method, milp_time):
    t0 = time.perf_counter()
    res = allocate_resource_blocks(
        rates, demand, tx_power_w=P0, bits_per_token=8 * S0, deadline_s=deadline, method=method,
        time_limit_s=milp_time if method == "milp" else None,
    )
    return res, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--milp-time", type=float, default=600.0, help="time limit of each HiGHS call [s]")
    ap.add_argument("--quick", action="store_true", help="one seed, M = 106 only")
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    sizes = (106,) if args.quick else (106, 273)
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"K = {K} nodes, 56 links, B0 = {B0 / 1e3:g} kHz, s0 = {S0} B, P0 = {P0 * 1e3:.3f} mW per RB")
    head = (f"{'M':>4} {'deadline':>9} {'seed':>4} | {'auto ms':>8} {'by':>10} {'greedy ms':>9} {'milp ms':>9} "
            f"{'milp/auto':>9} | {'gap(greedy)':>11} {'greedy/milp-1':>13} {'gap(milp)':>9} "
            f"{'stretch g/m':>13} {'RBs g/m':>9}")
    print(head)
    print("-" * len(head))
    for m in sizes:
        for seed in range(seeds):
            rates, demand = instance(m, seed)
            free, _ = run(rates, demand, None, "auto", None)
            q = float(np.quantile(free.airtime[free.served], 0.25))
            for label, deadline in (("none", None), ("q25", q), ("0.6*q25", 0.6 * q)):
                auto, t_auto = run(rates, demand, deadline, "auto", None)
                greedy, t_greedy = run(rates, demand, deadline, "greedy", None)
                ref, t_milp = run(rates, demand, deadline, "milp", args.milp_time)
                excess = greedy.total_energy / ref.total_energy - 1.0
                rbs_g = int(greedy.allocation.any(axis=(0, 1)).sum())
                rbs_m = int(ref.allocation.any(axis=(0, 1)).sum())
                print(
                    f"{m:>4} {label:>9} {seed:>4} | {t_auto * 1e3:>8.1f} {auto.method:>10} {t_greedy * 1e3:>9.1f} "
                    f"{t_milp * 1e3:>9.1f} {t_milp / t_auto:>9.1f} | {greedy.gap:>11.2e} {excess:>13.2e} "
                    f"{ref.gap:>9.1e} {greedy.deadline_stretch:>6.3f}/{ref.deadline_stretch:<6.3f} "
                    f"{rbs_g:>4}/{rbs_m:<4}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
