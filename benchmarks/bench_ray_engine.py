"""The Ray engine on the default deployment: each actor's memory, and its round time
against the in-process engine's (issue 18 item 5; not a test).

Run:  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_ray_engine.py [--repeats 5]
      [--policy Top-8] [--limit 8]

Deployment: ``dmoe run``'s default, the carved SmolLM2-135M with K = 32 experts on N = 8
nodes (co-activation placement), from the cache at ``~/.cache/dmoe``. Ray starts embedded
as the engine starts it (``connect_ray(num_cpus=2)``: no dashboard, the object-size setting
``EMBEDDED_SYSTEM_CONFIG``); the driver's torch runs on one
thread, like each actor.

Memory: for every actor, the parameter bytes it holds (``ExpertNode.held_parameters``: the
shared blocks plus its own experts, eq 6) and its process's resident memory (RSS) and
unique memory (USS, what killing it would free), next to the full model's parameter bytes,
an actor holding the full model as the engine shipped it before (one extra actor started
from ``ray.put(model)``) and a bare actor (Python, torch, transformers' Llama, Ray, dmoe's
node; no weights).

Time: the first ``--limit`` MMLU anatomy questions (8: one round, one query per node) with
``--policy``, one round per engine, the two engines alternating ``--repeats`` times in this
process on the same seed; the median time per round and per layer round of each and the
ratio Ray / in-process (target: at most 2). Each repetition checks that the two engines
gave the same logits (bit for bit) and selections. ``--profile`` adds the number of
remote calls per layer round and the time the driver spends waiting in ``Engine.get``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


class _Counting:
    """Counts an engine's submit calls per method and times its get calls by the method
    whose results they wait for (--profile)."""

    def __init__(self, engine):
        self.calls, self.waits = {}, {}
        self._method = {}
        submit, get = engine.submit, engine.get

        def counted_submit(node, method, *args, num_returns=1):
            self.calls[method] = self.calls.get(method, 0) + 1
            out = submit(node, method, *args, num_returns=num_returns)
            for h in out:
                self._method[id(h)] = method
            return out

        def timed_get(handles):
            t = time.perf_counter()
            try:
                return get(handles)
            finally:
                what = self._method.get(id(handles[0]), "?") if len(handles) else "?"
                self.waits[what] = self.waits.get(what, 0.0) + time.perf_counter() - t

        engine.submit, engine.get = counted_submit, timed_get

    def reset(self):
        self.calls.clear()
        self.waits.clear()
        self._method.clear()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="rounds per engine (alternating; default 5)")
    ap.add_argument("--policy", default="Top-8", help="policy of the timed rounds (default Top-8)")
    ap.add_argument("--limit", type=int, default=8, help="anatomy questions (default 8: one round)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="count remote calls and time the driver's waits")
    ap.add_argument("--ray-object-defaults", action="store_true",
                    help="start Ray with its own object-size setting instead of EMBEDDED_SYSTEM_CONFIG (to compare)")
    args = ap.parse_args()

    import psutil
    import ray
    import torch

    torch.set_num_threads(1)
    from dmoe.data import load_mmlu, pack_question
    from dmoe.deployment import deploy
    from dmoe.policies import policy_from_name
    from dmoe.runtime import DMoERuntime, LocalEngine
    from dmoe.runtime.ray_engine import RayEngine, connect_ray
    from dmoe.runtime.shard import tensor_bytes

    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, python "
          f"{sys.version.split()[0]}, torch {torch.__version__}, ray {ray.__version__}; driver torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")
    dep = deploy(progress=False)
    model, system, place = dep.model, dep.system, dep.placement
    N, L, K = int(system.num_nodes), int(model.num_layers), int(model.num_experts)
    layer_place = np.broadcast_to(np.asarray(place), (L, K))
    node_experts = [[tuple(np.flatnonzero(layer_place[l] == n).tolist()) for l in range(L)] for n in range(N)]
    queries = [pack_question(model.tokenizer, q) for q in load_mmlu("anatomy", limit=args.limit)]
    tokens = sum(q.num_tokens for q in queries)
    print(f"deployment: K = {K} experts on N = {N} nodes ({dep.placement_kind} placement), L = {L}; "
          f"{len(queries)} questions, {tokens} tokens")

    # Ray embedded as the engine starts it (dmoe.runtime.ray_engine.connect_ray: its object-size setting)
    connect_ray(num_cpus=2, _system_config={"max_direct_call_object_size": 100 * 1024} if args.ray_object_defaults else {})
    try:
        t0 = time.perf_counter()
        eng = RayEngine(model, N, node_experts=node_experts)
        print(f"Ray engine start-up ({N} actors): {time.perf_counter() - t0:.1f} s")
        local = LocalEngine(model, N, node_experts=node_experts)

        # ------------------------------------------------------------ memory
        full_bytes = tensor_bytes(list(model.parameters()) + list(model.buffers()))
        expert_bytes = tensor_bytes(p for n, p in model.named_parameters() if n in set(model.expert_parameter_names()))

        def proc_mem(pid):
            info = psutil.Process(pid).memory_full_info()
            return info.rss, info.uss

        @ray.remote(num_cpus=0)
        class Bare:
            def pid(self):
                import torch  # noqa: F401 - what every node imports
                import transformers.models.llama.modeling_llama  # noqa: F401

                import dmoe.model.carved.moe  # noqa: F401
                import dmoe.runtime.node  # noqa: F401

                return os.getpid()

        bare = Bare.remote()
        bare_rss, bare_uss = proc_mem(ray.get(bare.pid.remote()))
        # before: an actor holding the whole model, as the engine shipped it before eq (6) shares
        full_ref = ray.put(model)
        whole = eng._actor_cls.remote(0, full_ref, node_experts[0])
        whole_held = ray.get(whole.held_parameters.remote())["bytes"]
        whole_rss, whole_uss = proc_mem(ray.get(whole.pid.remote()))
        ray.kill(whole)
        ray.kill(bare)
        del full_ref

        print("\n== memory per actor (MiB) ==")
        print(f"full model: parameters + buffers {_mib(full_bytes)} MiB, of which routed experts "
              f"{_mib(expert_bytes)} MiB ({100 * expert_bytes / full_bytes:.0f}%)")
        print(f"{'actor':<26}{'param bytes':>12}{'RSS':>8}{'USS':>8}{'RSS - bare':>12}")
        print(f"{'bare (imports, no model)':<26}{'0':>12}{_mib(bare_rss):>8}{_mib(bare_uss):>8}{'0':>12}")
        print(f"{'whole model (before)':<26}{_mib(whole_held):>12}{_mib(whole_rss):>8}{_mib(whole_uss):>8}"
              f"{_mib(whole_rss - bare_rss):>12}")
        rss, uss, held = [], [], []
        for n in range(N):
            h = ray.get(eng._actors[n].held_parameters.remote())
            r, u = proc_mem(eng.pid(n))
            rss.append(r), uss.append(u), held.append(h["bytes"])
            ne = sum(len(x) for x in h["experts"] if x)
            print(f"{f'node {n} ({ne // L} experts/layer)':<26}{_mib(h['bytes']):>12}{_mib(r):>8}{_mib(u):>8}"
                  f"{_mib(r - bare_rss):>12}")
        print(f"median actor: params {_mib(statistics.median(held))} MiB ({statistics.median(held) / whole_held:.2f}x "
              f"the whole model's), RSS {_mib(statistics.median(rss))} MiB "
              f"({statistics.median(rss) / whole_rss:.2f}x), RSS above a bare actor "
              f"{_mib(statistics.median(rss) - bare_rss)} MiB vs {_mib(whole_rss - bare_rss)} MiB "
              f"({(statistics.median(rss) - bare_rss) / (whole_rss - bare_rss):.2f}x), USS above a bare actor "
              f"{_mib(statistics.median(uss) - bare_uss)} MiB vs {_mib(whole_uss - bare_uss)} MiB "
              f"({(statistics.median(uss) - bare_uss) / (whole_uss - bare_uss):.2f}x)")

        # ------------------------------------------------------------ time
        policy = policy_from_name(args.policy)
        engines = {"local": local, "ray": eng}
        counter = _Counting(eng) if args.profile else None
        calls, waits, driver = {}, {}, []
        times = {"local": [], "ray": []}
        for rep in range(args.repeats):
            order = ("local", "ray") if rep % 2 == 0 else ("ray", "local")
            outs = {}
            for name in order:
                rt = DMoERuntime(model, policy, system=system, seed=args.seed, placement=place,
                                 engine=engines[name], record_selection=True)
                if counter is not None:
                    counter.reset()
                t = time.perf_counter()
                out = rt.run_round(queries[:N])
                times[name].append(time.perf_counter() - t)
                if counter is not None and name == "ray":
                    for k, v in counter.calls.items():
                        calls[k] = calls.get(k, 0) + v
                    for k, v in counter.waits.items():
                        waits.setdefault(k, []).append(v)
                    driver.append(times[name][-1] - sum(counter.waits.values()))
                outs[name] = out
            a, b = outs["local"], outs["ray"]
            same = all(bool(torch.equal(x, y)) for x, y in zip(a.logits, b.logits)) and all(
                np.array_equal(x, y) for x, y in zip(a.selections, b.selections))
            if not same:
                raise SystemExit("the engines disagree: logits or selections differ")
            print(f"repeat {rep}: local {times['local'][-1]:.2f} s, ray {times['ray'][-1]:.2f} s "
                  f"(ratio {times['ray'][-1] / times['local'][-1]:.2f}); same logits and selections")
        ml, mr = statistics.median(times["local"]), statistics.median(times["ray"])
        ratios = [r / l for l, r in zip(times["local"], times["ray"])]
        print(f"\n== round time, {args.policy}, {len(queries[:N])} queries, L = {L} ==")
        print(f"in-process: median {ml:.2f} s/round = {1e3 * ml / L:.1f} ms per layer round")
        print(f"Ray:        median {mr:.2f} s/round = {1e3 * mr / L:.1f} ms per layer round")
        print(f"Ray / in-process: {mr / ml:.2f} (median of per-repeat ratios {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}); target <= 2")
        if counter is not None:
            print("remote calls per layer round: "
                  + ", ".join(f"{k} {v / args.repeats / L:.1f}" for k, v in sorted(calls.items()))
                  + "\ndriver waiting in Engine.get for, per layer round (median): "
                  + ", ".join(f"{k} {1e3 * statistics.median(v) / L:.1f} ms" for k, v in sorted(waits.items()))
                  + f"; driver's own work (scheduling, submitting): {1e3 * statistics.median(driver) / L:.1f} ms")
        eng.shutdown()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
