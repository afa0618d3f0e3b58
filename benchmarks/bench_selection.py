"""Side-by-side timing of expert selection P1(a) and JESA rounds (not a test).

Run:  python benchmarks/bench_selection.py [--seed 0] [--quick]

Instances: softmax gating scores (Gaussian logits, sd 1.5), costs in the paper's regime
e_j = a_j + P0 * 8 s0 / R_j (a_j = j * 1e-3 J * 8/K, Rayleigh rates with path loss 1e-2,
B0 = 1 MHz, P0/N0 = 10 dB, s0 = 8 kB; Section VII-A), thresholds between the Top-1 and
the Top-D score sums (25..75 %: most tokens feasible, none trivial).

Every DES time is compared with scipy.optimize.milp (HiGHS) solving the same instances
one by one (``select_experts(method="milp")``: one MILP per token, gaps 0). Energies are
checked against it (max relative difference over feasible tokens). Sections:

1. K = 8, D = 2 / 8, 20,000 tokens: throughput; MILP is timed on a subsample and
   extrapolated per token.
2. K = 64 (D = 4, 16) and K = 256 (D = 8): per-instance time (median, worst; each token
   timed alone, repeated to amortise the call), branch-and-bound nodes against the
   paper's Algorithm 1 (same order and bound, depth first: "des-paper"; and literally,
   breadth first from e_min = sum e: "paper-bfs", node cap), peak memory at K = 256.
3. JESA (Algorithm 2), K = 8 nodes x 128 tokens, M = 2048: time per round and per
   iteration, share of expert selection vs subcarrier assignment.
4. Growth: time against tokens, K, D and M.
5. enumerate vs DES crossover for K = 8..16 and what numba buys (compiled vs Python DES).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import resource
import subprocess
import time
import tracemalloc

import numpy as np
import scipy

from dmoe.channels.rates import draw_rates
from dmoe.optimize import _des, jesa, select_experts
from dmoe.system import SystemConfig

# the module (dmoe.optimize.jesa the attribute is the function)
jesa_module = importlib.import_module("dmoe.optimize.jesa")

BFS_CAP = 200_000
PAPER_CAP = 1_000_000


# ---------------------------------------------------------------------------- helpers


def instance(rng, k, d, n):
    """Softmax scores, paper-regime costs, thresholds between Top-1 and Top-D sums."""
    logits = rng.normal(0.0, 1.5, size=(n, k))
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    # [n, K] paper-regime costs: a_j (scaled to the K = 8 range) + P0 * 8 s0 / R
    rate = 1e6 * np.log2(1.0 + 10.0 * rng.exponential(1e-2, size=(n, k)))
    costs = np.arange(1, k + 1) * 1e-3 * 8.0 / k + 1e-2 * 65536 / rate
    top = np.sort(scores, axis=1)[:, ::-1]
    lo, hi = top[:, 0], top[:, :d].sum(axis=1)
    thr = lo + (hi - lo) * rng.uniform(0.25, 0.75, size=n)
    return scores, costs, thr


def best_time(fn, repeat=5):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def with_variant(variant, fn):
    old = _des.DEFAULT_VARIANT
    _des.DEFAULT_VARIANT = variant
    try:
        return fn()
    finally:
        _des.DEFAULT_VARIANT = old


def with_numba(flag, fn):
    old = _des.USE_NUMBA
    _des.USE_NUMBA = flag
    try:
        return fn()
    finally:
        _des.USE_NUMBA = old


def rel_diff(res, ref, mask=None):
    ok = ref.feasible & res.optimal[: ref.feasible.size]
    if mask is not None:
        ok &= mask
    e, r = res.energy[: ref.feasible.size][ok], ref.energy[ok]
    return float(np.max(np.abs(e - r) / r, initial=0.0))


def per_instance_times(scores, costs, thr, d, *, variant="strong", reps=16, node_limit=None):
    """Seconds per token, each token solved alone (batch of ``reps`` copies / reps)."""
    out = np.empty(scores.shape[0])
    for q in range(scores.shape[0]):
        s = np.repeat(scores[q : q + 1], reps, axis=0)
        c = np.repeat(costs[q : q + 1], reps, axis=0)
        t = np.repeat(thr[q : q + 1], reps)
        _, dt = best_time(
            lambda: with_variant(variant, lambda: select_experts(s, c, t, d, method="des", node_limit=node_limit)),
            repeat=3,
        )
        out[q] = dt / reps
    return out


def milp_per_instance(scores, costs, thr, d):
    times = np.empty(scores.shape[0])
    results = []
    for q in range(scores.shape[0]):
        t0 = time.perf_counter()
        results.append(select_experts(scores[q : q + 1], costs[q : q + 1], thr[q : q + 1], d, method="milp"))
        times[q] = time.perf_counter() - t0
    energy = np.concatenate([r.energy for r in results])
    feasible = np.concatenate([r.feasible for r in results])
    return times, energy, feasible


class _Ref:
    def __init__(self, energy, feasible):
        self.energy, self.feasible = energy, feasible


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    import numba

    return (
        f"{model}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"numba {numba.__version__} (compiled DES {'on' if _des.numba_enabled() else 'off'})"
    )


# ---------------------------------------------------------------------------- sections


def bench_small_k(rng, quick):
    n, n_milp, n_py = (20_000, 200, 2_000) if not quick else (2_000, 40, 300)
    print(f"1. K = 8: {n} tokens per case; MILP timed on the first {n_milp} tokens and extrapolated per token;")
    print(f"   Python DES (no numba) on the first {n_py}; times are the best of 5 runs")
    head = f"{'K':>3} {'D':>3} {'method':<18} {'tokens':>6} {'us/token':>9} {'vs milp':>9} {'nodes mean':>10} {'max':>5} {'rel diff':>8}"
    print(head)
    print("-" * len(head))
    for d in (2, 8):
        scores, costs, thr = instance(rng, 8, d, n)
        sub = slice(0, n_milp)
        ref, t_milp = best_time(lambda: select_experts(scores[sub], costs[sub], thr[sub], d, method="milp"), 1)
        milp_us = t_milp / n_milp * 1e6
        rows = []
        res, t = best_time(lambda: select_experts(scores, costs, thr, d))
        rows.append((f"auto (-> {res.method})", n, t / n * 1e6, res))
        res, t = best_time(lambda: select_experts(scores, costs, thr, d, method="des"))
        rows.append(("des (numba)", n, t / n * 1e6, res))
        res, t = best_time(lambda: select_experts(scores, costs, thr, d, method="enumerate"))
        rows.append(("enumerate", n, t / n * 1e6, res))
        pys = slice(0, n_py)
        res, t = best_time(lambda: with_numba(False, lambda: select_experts(scores[pys], costs[pys], thr[pys], d, method="des")), 1)
        rows.append(("des (Python)", n_py, t / n_py * 1e6, res))
        for name, count, us, res in rows:
            nodes = res.nodes
            nm = f"{nodes.mean():10.1f} {nodes.max():>5}" if nodes is not None else f"{'':>10} {'':>5}"
            print(f"{8:>3} {d:>3} {name:<18} {count:>6} {us:>9.2f} {milp_us / us:>8.0f}x {nm} {rel_diff(res, ref):>8.1e}")
        print(f"{8:>3} {d:>3} {'milp (HiGHS)':<18} {n_milp:>6} {milp_us:>9.1f} {1:>8.0f}x {'':>10} {'':>5} "
              f"{'':>8}  {ref.feasible.mean():.0%} feasible")
        print()


def bench_large_k(rng, quick):
    cases = [(64, 4, 200), (64, 16, 200), (256, 8, 100)] if not quick else [(64, 4, 20), (64, 16, 20), (256, 8, 10)]
    print("2. Large K: each token timed alone (median / worst instance); MILP solves the same tokens one by one")
    print("   des: each token alone (16 copies per call); des batch: all tokens in one call, per-token mean.")
    print("   nodes: des (C2-aware bound + dominance), des-paper (Algorithm 1 order/bound, depth first,")
    print(f"   same greedy incumbent, cap {PAPER_CAP}), paper-bfs (Algorithm 1 literally: BFS from e_min = sum e,")
    print(f"   cap {BFS_CAP}; 'capped' = tokens stopped at the cap, their counts are lower bounds)")
    head = (f"{'K':>4} {'D':>3} {'method':<10} {'tokens':>6} {'median us':>10} {'worst us':>10} {'mean us':>9} "
            f"{'vs milp':>8} {'nodes med':>9} {'mean':>8} {'max':>8} {'capped':>6} {'rel diff':>8}")
    print(head)
    print("-" * len(head))
    memory = None
    for k, d, n in cases:
        scores, costs, thr = instance(rng, k, d, n)
        m_times, m_energy, m_feas = milp_per_instance(scores, costs, thr, d)
        ref = _Ref(m_energy, m_feas)
        batch, t_batch = best_time(lambda: select_experts(scores, costs, thr, d, method="des"))
        des_t = per_instance_times(scores, costs, thr, d)
        paper = with_variant("paper", lambda: select_experts(scores, costs, thr, d, method="des", node_limit=PAPER_CAP))
        paper_t = per_instance_times(scores, costs, thr, d, variant="paper", reps=2, node_limit=PAPER_CAP)
        bfs = with_variant("paper-bfs", lambda: select_experts(scores, costs, thr, d, method="des", node_limit=BFS_CAP))
        milp_mean = m_times.mean()
        rows = [
            ("des", des_t, batch),
            ("des batch", np.full(n, t_batch / n), batch),
            ("des-paper", paper_t, paper),
            ("paper-bfs", None, bfs),
            ("milp", m_times, None),
        ]
        for name, times, res in rows:
            if times is not None:
                tcol = f"{np.median(times) * 1e6:>10.1f} {times.max() * 1e6:>10.1f} {times.mean() * 1e6:>9.1f} {milp_mean / times.mean():>7.0f}x"
            else:
                tcol = f"{'':>10} {'':>10} {'':>9} {'':>8}"
            if res is not None and name != "des batch":
                nodes = res.nodes
                capped = int((~res.optimal & res.feasible).sum())
                ncol = f"{np.median(nodes):>9.0f} {nodes.mean():>8.1f} {nodes.max():>8} {capped:>6} {rel_diff(res, ref):>8.1e}"
            elif name == "des batch":
                ncol = f"{'':>9} {'':>8} {'':>8} {'':>6} {rel_diff(res, ref):>8.1e}"
            else:
                ncol = f"{'':>9} {'':>8} {'':>8} {'':>6} {'':>8}  {m_feas.mean():.0%} feasible"
            print(f"{k:>4} {d:>3} {name:<10} {n:>6} {tcol} {ncol}")
        if k == 256:
            select_experts(scores[:2], costs[:2], thr[:2], d, method="des")
            tracemalloc.start()
            select_experts(scores, costs, thr, d, method="des")
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            memory = (n, k, d, peak, scores.nbytes)
        print()
    n, k, d, peak, nbytes = memory
    print(f"   peak memory, K = {k}, D = {d}, {n} tokens (tracemalloc, whole select_experts call): "
          f"{peak / 1024:.0f} KiB (the [T, K] scores array alone is {nbytes / 1024:.0f} KiB);")
    print(f"   per-batch workspace {(22 * (k + 2) * 8 + (k + 2)) / 1024:.1f} KiB, independent of tokens and nodes "
          f"(DFS stack depth <= K + 1); process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print()


def jesa_breakdown(k, per_node, m, seed, threshold=0.8, d=2, repeat=5):
    """Time jesa() with its selection and allocation calls wrapped: (total, iterations, sel, alloc)."""
    system = SystemConfig(num_nodes=k, num_subcarriers=m)
    rng = np.random.default_rng(seed)
    rates = draw_rates(system, rng)
    logits = rng.normal(0.0, 1.5, size=(k * per_node, k))
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    source = np.repeat(np.arange(k), per_node)
    spent = {"select": 0.0, "allocate": 0.0}
    orig_sel, orig_alloc = jesa_module.select_experts, jesa_module.allocate_subcarriers

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[name] += time.perf_counter() - t0
            return out

        return wrapper

    best = None
    for _ in range(repeat):
        spent["select"] = spent["allocate"] = 0.0
        jesa_module.select_experts = timed("select", orig_sel)
        jesa_module.allocate_subcarriers = timed("allocate", orig_alloc)
        try:
            t0 = time.perf_counter()
            res = jesa(scores, source, rates, threshold, d, system=system, rng=seed)
            total = time.perf_counter() - t0
        finally:
            jesa_module.select_experts, jesa_module.allocate_subcarriers = orig_sel, orig_alloc
        if best is None or total < best[0]:
            best = (total, res.iterations, spent["select"], spent["allocate"], res)
    return best


def bench_jesa(seed):
    k, per_node, m = 8, 128, 2048
    print(f"3. JESA (Algorithm 2): K = {k} nodes x {per_node} tokens = {k * per_node} tokens, M = {m}, "
          f"threshold 0.8, D = 2 (best of 5)")
    total, its, sel, alloc, res = jesa_breakdown(k, per_node, m, seed)
    other = total - sel - alloc
    print(f"   one jesa() round: {total * 1e3:.2f} ms, {its} BCD iterations ({res.stop_reason}), "
          f"{total / its * 1e3:.2f} ms per iteration")
    print(f"   per iteration: selection {sel / its * 1e3:.2f} ms ({sel / total:.0%}), "
          f"subcarrier assignment {alloc / its * 1e3:.2f} ms ({alloc / total:.0%}), "
          f"rest (costs, counts, energies) {other / its * 1e3:.2f} ms ({other / total:.0%})")
    print()


def bench_growth(rng, seed, quick):
    print("4. Growth (compiled DES through select_experts; best of 5)")
    print("   a) tokens, K = 8, D = 2:")
    print(f"   {'tokens':>8} {'total ms':>9} {'us/token':>9}")
    for n in (100, 1_000, 10_000, 100_000 if not quick else 20_000):
        scores, costs, thr = instance(rng, 8, 2, n)
        _, t = best_time(lambda: select_experts(scores, costs, thr, 2, method="des"))
        print(f"   {n:>8} {t * 1e3:>9.2f} {t / n * 1e6:>9.2f}")
    print("   b) experts K, D = 8 (D = K for K < 8):")
    print(f"   {'K':>8} {'tokens':>7} {'us/token':>9} {'nodes mean':>10} {'max':>6}")
    for k in (4, 8, 16, 32, 64, 128, 256):
        n = 2000 if k <= 64 else 300
        d = min(8, k)
        scores, costs, thr = instance(rng, k, d, n)
        res, t = best_time(lambda: select_experts(scores, costs, thr, d, method="des"))
        print(f"   {k:>8} {n:>7} {t / n * 1e6:>9.2f} {res.nodes.mean():>10.1f} {res.nodes.max():>6}")
    print("   c) max experts D, K = 64:")
    print(f"   {'D':>8} {'tokens':>7} {'us/token':>9} {'nodes mean':>10} {'max':>6}")
    for d in (1, 2, 4, 8, 16, 32, 64):
        scores, costs, thr = instance(rng, 64, d, 1000)
        res, t = best_time(lambda: select_experts(scores, costs, thr, d, method="des"))
        print(f"   {d:>8} {1000:>7} {t / 1000 * 1e6:>9.2f} {res.nodes.mean():>10.1f} {res.nodes.max():>6}")
    print("   d) subcarriers M, JESA K = 8 x 128 tokens, threshold 0.8, D = 2:")
    print(f"   {'M':>8} {'ms/round':>9} {'iters':>5} {'ms/iter':>8} {'select':>7} {'assign':>7}")
    for m in (64, 256, 1024, 2048, 4096):
        total, its, sel, alloc, _ = jesa_breakdown(8, 128, m, seed)
        print(f"   {m:>8} {total * 1e3:>9.2f} {its:>5} {total / its * 1e3:>8.2f} {sel / total:>7.0%} {alloc / total:>7.0%}")
    print()


def bench_crossover(rng, quick):
    print("5. a) enumerate vs compiled DES, us/token (2000 tokens, best of 5); auto picks DES when numba is on")
    print(f"   {'K':>3} " + " ".join(f"{'D=' + lab:>20}" for lab in ("2", "K/2", "K")))
    print(f"   {'':>3} " + " ".join(f"{'enum':>9} {'des':>10}" for _ in range(3)))
    for k in (8, 10, 12, 14, 16):
        cells = []
        for d in (2, k // 2, k):
            scores, costs, thr = instance(rng, k, d, 2000 if not quick else 300)
            n = scores.shape[0]
            _, te = best_time(lambda: select_experts(scores, costs, thr, d, method="enumerate"))
            _, td = best_time(lambda: select_experts(scores, costs, thr, d, method="des"))
            cells.append(f"{te / n * 1e6:>9.2f} {td / n * 1e6:>10.2f}")
        print(f"   {k:>3} " + " ".join(cells))
    print("   b) what numba buys: the same DES, compiled vs Python fallback (DMOE_DISABLE_NUMBA=1)")
    print(f"   {'K':>4} {'D':>3} {'tokens':>6} {'numba us/tok':>12} {'Python us/tok':>13} {'speed-up':>8}")
    for k, d, n in [(8, 2, 2000), (8, 8, 2000), (64, 4, 200), (64, 16, 200), (256, 8, 50)]:
        if quick:
            n = max(20, n // 10)
        scores, costs, thr = instance(rng, k, d, n)
        _, tn = best_time(lambda: select_experts(scores, costs, thr, d, method="des"))
        _, tp = best_time(lambda: with_numba(False, lambda: select_experts(scores, costs, thr, d, method="des")), 1)
        print(f"   {k:>4} {d:>3} {n:>6} {tn / n * 1e6:>12.2f} {tp / n * 1e6:>13.1f} {tp / tn:>7.0f}x")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer tokens (smoke run)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"machine: {machine()}")
    t1 = time.perf_counter()
    select_experts(np.array([[0.6, 0.4]]), np.array([1.0, 2.0]), 0.5, 1, method="des")
    for v in ("paper", "paper-bfs"):
        with_variant(v, lambda: select_experts(np.array([[0.6, 0.4]]), np.array([1.0, 2.0]), 0.5, 1, method="des"))
    print(f"first DES call in this process (load the compiled code from numba's cache, or compile it once): "
          f"{time.perf_counter() - t1:.2f} s")
    print("command: python benchmarks/bench_selection.py" + (" --quick" if args.quick else "") + f" --seed {args.seed}")
    print()
    rng = np.random.default_rng(args.seed)
    bench_small_k(rng, args.quick)
    bench_large_k(rng, args.quick)
    bench_jesa(args.seed)
    bench_growth(rng, args.seed, args.quick)
    bench_crossover(rng, args.quick)
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
