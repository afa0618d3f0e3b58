"""The in-process engine against the Ray engine on the default main job, and the cost of
node failures.

Runs the default policies of ``dmoe run`` (dense, Top-1, Top-2, H(0.5,2), JESA(0.9,2),
LB(0.9,2)) on the first ``--limit`` MMLU anatomy questions (default 16, i.e. 2 rounds of
K = 8 queries) with both engines in this one process, on the same seed, and prints the
time per round of each engine and the ratio Ray / local (target: <= 2 on one machine).
It checks that both engines gave the same energies and the same option log-likelihoods.
Then it runs the same questions with ``--failure-rate`` p (per node and layer round,
failed nodes rejoin at the next round) and prints the extra energy and time against the
run without failures, per policy, for each engine.

Start-up (loading the model, starting Ray and the K actors) is timed separately and not
part of the per-round time.

    PYTHONPATH=src python benchmarks/bench_engines.py [--limit 16] [--failure-rate 0.01]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=16, help="anatomy questions (default 16)")
    ap.add_argument("--failure-rate", type=float, default=0.01, help="node failure rate p of the fault runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", nargs="*", default=None, help="policy names (default: dmoe run's)")
    ap.add_argument("--skip-failures", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the driver (local engine)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from dmoe.data import load_mmlu, pack_question
    from dmoe.main_job import DEFAULT_POLICIES
    from dmoe.model import load_moe_model
    from dmoe.policies import policy_from_name
    from dmoe.runtime import evaluate_policy, make_engine
    from dmoe.system import SystemConfig

    system = SystemConfig()
    names = args.policies or list(DEFAULT_POLICIES)
    t0 = time.perf_counter()
    model = load_moe_model(None, num_experts=system.num_nodes, progress=False)
    queries = [pack_question(model.tokenizer, q) for q in load_mmlu("anatomy", limit=args.limit)]
    print(f"model loaded in {time.perf_counter() - t0:.1f} s; {len(queries)} questions, "
          f"{sum(q.num_tokens for q in queries)} tokens, K = {system.num_nodes}, L = {model.num_layers}")
    print(f"machine: {os.cpu_count()} CPUs; driver torch threads {torch.get_num_threads()}; python {sys.version.split()[0]}")

    t0 = time.perf_counter()
    engines = {"local": make_engine("local", model), "ray": None}
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    engines["ray"] = make_engine("ray", model)
    t_ray = time.perf_counter() - t0
    print(f"start-up: local engine {t_local:.2f} s, Ray engine (ray.init + {system.num_nodes} actors) {t_ray:.1f} s")

    def run(engine, name, rate):
        return evaluate_policy(model, queries, policy_from_name(name), system=system, seed=args.seed,
                               progress=False, engine=engines[engine], node_failure_rate=rate)

    res = {}
    try:
        print("\n== time per round, no failures ==")
        print(f"{'policy':<14}{'local [s/round]':>17}{'ray [s/round]':>15}{'ray/local':>11}{'same energy':>13}{'max |dlogL|':>13}")
        tot = {"local": 0.0, "ray": 0.0}
        rounds = 0
        for name in names:
            a, b = run("local", name, 0.0), run("ray", name, 0.0)
            res[("local", name, 0.0)], res[("ray", name, 0.0)] = a, b
            same = bool(np.isclose(a.energy_j, b.energy_j, rtol=1e-9))
            dl = float(np.abs(a.logliks - b.logliks).max())
            print(f"{name:<14}{a.seconds_per_round:>17.2f}{b.seconds_per_round:>15.2f}"
                  f"{b.seconds_per_round / a.seconds_per_round:>11.2f}{str(same):>13}{dl:>13.2e}")
            tot["local"] += a.seconds
            tot["ray"] += b.seconds
            rounds += a.rounds
        print(f"{'all':<14}{tot['local'] / rounds:>17.2f}{tot['ray'] / rounds:>15.2f}{tot['ray'] / tot['local']:>11.2f}")

        if not args.skip_failures:
            p = args.failure_rate
            print(f"\n== node failures p = {p} per node and layer round (rejoin next round) vs none ==")
            print(f"{'engine':<7}{'policy':<14}{'failures':>9}{'replans':>8}{'rehosted':>9}{'energy [J]':>12}"
                  f"{'extra [J]':>11}{'extra %':>9}{'time [s]':>10}{'extra [s]':>10}{'lost [J]':>10}{'rehost [J]':>11}")
            for engine in ("local", "ray"):
                for name in names:
                    base = res[(engine, name, 0.0)]
                    f = run(engine, name, p)
                    de = f.energy_j - base.energy_j
                    print(f"{engine:<7}{name:<14}{f.node_failures:>9}{f.replans:>8}{f.rehosted_queries:>9}"
                          f"{f.energy_j:>12.2f}{de:>11.2f}{100 * de / base.energy_j:>9.2f}{f.seconds:>10.1f}"
                          f"{f.seconds - base.seconds:>10.1f}{f.energy_lost_j:>10.2f}{f.energy_rehost_j:>11.2f}")
    finally:
        for eng in engines.values():
            if eng is not None:
                eng.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
