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
the child prints the time at which the first work bar is created and exits (the start-up
bar before it is let through).
Checked: the co-activation counts from the cache equal a fresh computation.

Also (issue 18, item 4, second pass): the real CLI, ``python -m dmoe run --limit 1 --policy
Top-8 --ppl-texts 0`` in a subprocess, timed from its start to the first byte of its first
tqdm write on stderr (a carriage return: the start-up bar, drawn once the options are
checked, before torch loads) and to the first write of the first work bar (matched by its
description: the full model's reference pass over the questions, "full model"; the child is
then stopped), and the same with the ``--ppl-texts`` default (16 held-out texts); the
in-process children (warm, phases) stop at the first work bar, not at the
start-up bar; and where the time goes: a child that imports torch, transformers' Llama model
and dmoe first, then runs the same command and prints the wall and CPU time of each phase
(question loading, the build's load, the co-activation, the placement, the engine) up to
the first work bar. Every line gives the load average (the
machine is shared) at its start and end.

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
from pathlib import Path
from dmoe.data import mmlu  # no subject index: every row parsed (an unwritable index path)
mmlu._index_path = lambda path, _f=mmlu._index_path: (Path("/proc/dmoe-no-index/x.json"), _f(path)[1])
"""

PHASES = """
import os, sys, time, functools
T0, C0 = time.perf_counter(), time.process_time()
LAST = [T0, C0]
def mark(label):
    w, c = time.perf_counter(), time.process_time()
    print(f"PHASE {label}|{w - LAST[0]:.3f}|{c - LAST[1]:.3f}", flush=True)
    LAST[0], LAST[1] = w, c
import torch
mark("import torch")
import transformers.models.llama.modeling_llama
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
mark("import transformers (Llama, Auto*)")
import dmoe.cli, dmoe.main_job, dmoe.deployment, dmoe.runtime.evaluate
mark("import dmoe (cli, main_job, runtime)")
import tqdm, tqdm.auto
INIT = tqdm.tqdm.__init__
def first_bar(self, *a, **k):
    if str(k.get("desc", "")).startswith("start-up:"):  # dmoe run's start-up bar: not a work bar
        return INIT(self, *a, **k)
    mark("other work up to the first bar")
    print(f"FIRST_BAR {time.perf_counter() - T0:.3f} {time.process_time():.3f}", flush=True)
    os._exit(0)
tqdm.tqdm.__init__ = first_bar
tqdm.auto.tqdm.__init__ = first_bar
def wrap(obj, name, label):
    f = getattr(obj, name)
    @functools.wraps(f)
    def g(*a, **k):
        mark("other work")
        r = f(*a, **k)
        mark(label)
        return r
    setattr(obj, name, g)
from dmoe import main_job, placement
from dmoe.model.carved import build
from dmoe.model import coactivation_cache
wrap(main_job, "resolve_subjects", "questions: subjects")
wrap(main_job, "load_mmlu", "questions: MMLU rows")
wrap(build, "load_built_model", "build load (config, 540 MB safetensors, tokenizer)")
wrap(coactivation_cache, "cached_coactivation", "co-activation (cached)")
wrap(placement, "make_placement", "placement")
wrap(main_job, "full_reference", "full model reference pass (1 question)")
wrap(main_job, "make_engine", "engine")
from dmoe.cli import main
sys.argv = ["dmoe", "run", "--limit", "1", "--policy", "Top-8", "--ppl-texts", "0", "--output", __OUT__]
main()
"""

FIRST_BAR = """
import os, sys, time
T0 = time.perf_counter()
{today}
import tqdm, tqdm.auto
INIT = tqdm.tqdm.__init__
def first_bar(self, *a, **k):
    if str(k.get("desc", "")).startswith("start-up:"):  # dmoe run's start-up bar: not a work bar
        return INIT(self, *a, **k)
    print(f"FIRST_BAR {{time.perf_counter() - T0:.3f}} {{time.process_time():.3f}}", flush=True)
    os._exit(0)
tqdm.tqdm.__init__ = first_bar
tqdm.auto.tqdm.__init__ = first_bar
from dmoe.cli import main
sys.argv = ["dmoe", "run", "--limit", "1", "--policy", "Top-8", "--ppl-texts", "0", "--output", __OUT__]
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


def cli_first_bar(out: str, env, work: bytes, extra=()) -> tuple[float, float]:
    """Seconds from starting ``python -m dmoe run --limit 1 --policy Top-8 ...`` to the first
    byte of its first tqdm write on stderr (a carriage return: the start-up bar), and to the
    first write of the first work bar (whose description is ``work``); the child is then killed."""
    cmd = [sys.executable, "-m", "dmoe", "run", "--limit", "1", "--policy", "Top-8", "--output", out, *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seen, first = b"", None
    try:
        while True:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"`dmoe run` ended without a progress bar:\n{seen[-4000:].decode(errors='replace')}")
            now = time.perf_counter() - t0
            seen += chunk
            if first is None and b"\r" in chunk:
                first = now
            if b"\r" + work in seen:
                return first, now
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def phases(out: str, env) -> list[tuple[str, float, float]]:
    res = subprocess.run([sys.executable, "-c", PHASES.replace("__OUT__", repr(out))], capture_output=True, text=True, env=env,
                         timeout=1800)
    rows = [line.split(" ", 1)[1].split("|") for line in res.stdout.splitlines() if line.startswith("PHASE ")]
    if not any(line.startswith("FIRST_BAR") for line in res.stdout.splitlines()):
        raise RuntimeError(f"phases child failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return [(name, float(w), float(c)) for name, w, c in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--parts", default="help,warm,floor,cli,phases,check",
                    help="comma-separated subset of: help, warm (ours against today's), floor, cli, phases, check")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    h_ours = w_ours = None
    if "help" in parts:
        helps = {"ours": [], "today": []}
        help_code = "import sys; from dmoe.cli import main; sys.argv = ['dmoe', 'run', '--help']; main()"
        for _ in range(max(5, args.reps)):
            helps["ours"].append(child(help_code, env)[0])
            helps["today"].append(child("import dmoe.experiments.cli\n" + help_code, env)[0])
        h_ours, h_today = statistics.median(helps["ours"]), statistics.median(helps["today"])
        print(f"dmoe run --help: ours {h_ours:.2f} s, today {h_today:.2f} s (today / ours {h_today / h_ours:.1f}x)",
              flush=True)

    if "warm" in parts:
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
        print(f"warm `dmoe run --limit 1 --policy Top-8` to its first work bar: ours {w_ours:.2f} s "
              f"(cpu {c_ours:.2f} s), today {w_today:.2f} s (cpu {c_today:.2f} s); today / ours {w_today / w_ours:.1f}x",
              flush=True)

    if "floor" in parts:
        floor_code = ("import time; T0 = time.perf_counter(); import torch; import transformers.models.llama.modeling_llama\n"
                      "print(f'FIRST_BAR {time.perf_counter() - T0:.3f} {time.process_time():.3f}')")
        floor = [child(floor_code, env) for _ in range(args.reps)]
        print(f"floor: importing torch and transformers' Llama model alone takes "
              f"{statistics.median(f[0] for f in floor):.2f} s (cpu {statistics.median(f[1] for f in floor):.2f} s)",
              flush=True)

    cli_bar = None
    if "cli" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run")
            for label, extra, work in (
                ("--ppl-texts 0", ("--ppl-texts", "0"), b"full model:"),
                ("the default --ppl-texts 16", (), b"full model:"),
            ):
                l0 = load()
                runs = [cli_first_bar(out, env, work, extra) for _ in range(args.reps)]
                first, work_bar = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
                cli_bar = first if cli_bar is None else cli_bar
                print(f"the CLI (`python -m dmoe run --limit 1 --policy Top-8`, {label}; a subprocess) to its first "
                      f"tqdm write on stderr (the start-up bar): median {first:.2f} s; to the first write of the first "
                      f"work bar ({work.decode().strip()!r}): median {work_bar:.2f} s (runs: "
                      f"{', '.join(f'{a:.2f}/{b:.2f}' for a, b in runs)}; load {l0} -> {load()})", flush=True)
    if "phases" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run")
            l0 = load()
            table: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.reps):
                merged: dict[str, list[float]] = {}
                for name, w, c in phases(out, env):
                    acc = merged.setdefault(name, [0.0, 0.0])
                    acc[0] += w
                    acc[1] += c
                for name, (w, c) in merged.items():
                    table.setdefault(name, []).append((w, c))
            print(f"where the time goes (medians of {args.reps} runs, wall / cpu seconds; load {l0} -> {load()}):")
            for name, vals in table.items():
                print(f"  {name:<58} {statistics.median(v[0] for v in vals):6.3f} / "
                      f"{statistics.median(v[1] for v in vals):6.3f}")
            print(f"  {'total':<58} {statistics.median(sum(v[0] for v in vals) for vals in zip(*table.values())):6.3f} / "
                  f"{statistics.median(sum(v[1] for v in vals) for vals in zip(*table.values())):6.3f}", flush=True)

    if "check" in parts:
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
    if h_ours is not None and w_ours is not None:
        print(f"targets: --help {h_ours:.2f} s <= 1 s: {h_ours <= 1}; first work bar (in-process child) "
              f"{w_ours:.2f} s; load average now {os.getloadavg()[0]:.1f}")
    if cli_bar is not None:
        print(f"target: first progress bar {cli_bar:.2f} s <= 3 s: {cli_bar <= 3} (the CLI's start-up bar)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
