"""Issue 18, item 4 (start-up): ``dmoe run --help`` and a warm ``dmoe run`` until its first
progress bar, against today's start-up (not a test).

Run:  PYTHONPATH=src python benchmarks/bench_startup.py [--reps 3]

Each measurement is a fresh process (the start-up is what is measured), started from this
one, ours and today's alternately; medians over ``--reps``. "Today's" start-up is the same
code with the issue-18 start-up work undone inside the child process: ``dmoe.experiments``
imported up front (the old eager ``reproduce`` registration), the GGUF metadata parsed, the
build's 540 MB checksum hashed and the routing co-activation computed again on every run
(the uncached functions called in place of the cached ones). The warm run is
``dmoe run --limit 1 --policy Top-8 --ppl-texts 0`` on the cached default model (K = 32);
the child prints the time at which the first progress bar is created and exits.
Checked: the co-activation counts from the cache equal a fresh computation.

Targets (issue 18): ``dmoe run --help`` <= 1 s; the first progress bar within 3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TODAY = """
import dmoe.experiments.cli  # the old cli registered `reproduce` (and imported it) at import
from dmoe.model import sources as load, coactivation_cache
from dmoe.model.carved import build
from dmoe.runtime import routing
load.read_intermediate_size = lambda source, cache_dir=None: (
    load._read_gguf_intermediate_size(source) if source.kind == "gguf" else None)
build._verified_sha256 = lambda path, expected: build._sha256_file(path)
coactivation_cache.cached_coactivation = (
    lambda model, *, top_k, max_tokens=4000, cache_dir=None: routing.routing_coactivation(
        model, top_k=top_k, max_tokens=max_tokens))
"""

FIRST_BAR = """
import os, sys, time
T0 = time.perf_counter()
{today}
import tqdm, tqdm.auto
def first_bar(self, *a, **k):
    print(f"FIRST_BAR {{time.perf_counter() - T0:.3f}} {{time.process_time():.3f}}", flush=True)
    os._exit(0)
tqdm.tqdm.__init__ = first_bar
tqdm.auto.tqdm.__init__ = first_bar
from dmoe.cli import main
sys.argv = ["dmoe", "run", "--limit", "1", "--policy", "Top-8", "--ppl-texts", "0", "--output", {out!r}]
main()
"""


def child(code: str, env) -> tuple[float, float]:
    """Wall time of ``python -c code`` (or the FIRST_BAR line it prints: wall, cpu)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    for line in res.stdout.splitlines():
        if line.startswith("FIRST_BAR"):
            _, w, c = line.split()
            return float(w), float(c)
    if res.returncode != 0:
        raise RuntimeError(f"child failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return wall, float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    helps = {"ours": [], "today": []}
    help_code = "import sys; from dmoe.cli import main; sys.argv = ['dmoe', 'run', '--help']; main()"
    for _ in range(max(5, args.reps)):
        helps["ours"].append(child(help_code, env)[0])
        helps["today"].append(child("import dmoe.experiments.cli\n" + help_code, env)[0])
    h_ours, h_today = statistics.median(helps["ours"]), statistics.median(helps["today"])
    print(f"dmoe run --help: ours {h_ours:.2f} s, today {h_today:.2f} s (today / ours {h_today / h_ours:.1f}x)",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        # warm the caches once (the first run of a new checkout computes them)
        child(FIRST_BAR.format(today="", out=out), env)
        runs = {"ours": [], "today": []}
        for _ in range(args.reps):
            runs["ours"].append(child(FIRST_BAR.format(today="", out=out), env))
            runs["today"].append(child(FIRST_BAR.format(today=TODAY, out=out), env))
    w_ours = statistics.median(r[0] for r in runs["ours"])
    w_today = statistics.median(r[0] for r in runs["today"])
    c_ours = statistics.median(r[1] for r in runs["ours"])
    c_today = statistics.median(r[1] for r in runs["today"])
    print(f"warm `dmoe run --limit 1 --policy Top-8` to its first progress bar: ours {w_ours:.2f} s "
          f"(cpu {c_ours:.2f} s), today {w_today:.2f} s (cpu {c_today:.2f} s); today / ours {w_today / w_ours:.1f}x",
          flush=True)

    floor_code = ("import time; T0 = time.perf_counter(); import torch; import transformers.models.llama.modeling_llama\n"
                  "print(f'FIRST_BAR {time.perf_counter() - T0:.3f} {time.process_time():.3f}')")
    floor = [child(floor_code, env) for _ in range(args.reps)]
    print(f"floor: importing torch and transformers' Llama model alone takes "
          f"{statistics.median(f[0] for f in floor):.2f} s (cpu {statistics.median(f[1] for f in floor):.2f} s)",
          flush=True)

    # the cached co-activation counts are those a fresh computation gives
    check = """
import numpy as np
from dmoe.model import load_expert_model
from dmoe.model.coactivation_cache import cached_coactivation
from dmoe.runtime.routing import routing_coactivation
m = load_expert_model(None, num_experts=32, progress=False)
assert np.array_equal(cached_coactivation(m, top_k=8), routing_coactivation(m, top_k=8))
print("FIRST_BAR 0 0")
"""
    child(check, env)
    print("checked: cached co-activation counts == a fresh computation")
    print(f"targets: --help {h_ours:.2f} s <= 1 s: {h_ours <= 1}; first progress bar {w_ours:.2f} s <= 3 s: "
          f"{w_ours <= 3}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
