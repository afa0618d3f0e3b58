"""One DMoE layer round at K = 64 (OLMoE-like): scheduling vs model compute (not a test).

Run:  PYTHONPATH=src python benchmarks/bench_k64_round.py [--tokens 32] [--rounds 2] [--seed 0]

Model: an OLMoE-like MoE built with transformers' ``OlmoeConfig`` and random weights:
OLMoE-1B-7B's layer widths (hidden 2048, 16 heads, K = 64 routed experts of
intermediate size 1024, native top-8) but 1 decoder layer and a 128-token vocabulary
(what the layer round costs does not depend on depth or vocabulary; 1.6 GB fp32), saved
and loaded back through :func:`dmoe.model.load_expert_model`. For contrast the same round
on a tiny config (hidden 64, K = 64, intermediate 32).

A round: K = 64 queries of ``--tokens`` tokens, one per node. M = 4096 (the smallest
power of two >= K(K-1) = 4032). For JESA(0.9,8) and Top-8 the runtime's round is timed
and split into

* channel draw: the i.i.d. Rayleigh realisation r_ij^(m), [64, 64, 4096] (the simulated
  world, not part of the system's work),
* scheduling: ``policy.schedule`` (DES + optimal subcarriers, JESA Algorithm 2),
* model compute: everything else (attention at the sources, gating, the selected
  experts' FFNs, aggregation, logits).

and the ratio scheduling / model compute is printed (< 1: scheduling is cheaper).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch

from dmoe.channels.rates import draw_rates
from dmoe.data.packing import PackedQuery
from dmoe.model import load_expert_model
from dmoe.policies import JESAPolicy, TopK
from dmoe.runtime import DMoERuntime
from dmoe.system import SystemConfig, default_num_subcarriers


class Timed:
    """Wrap a policy (or the channel model) and add up the time spent inside it."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds = 0.0
        self.name = getattr(inner, "name", "rates")

    def schedule(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.inner.schedule(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        return out

    def __call__(self, rng):
        t = time.perf_counter()
        out = self.inner(rng)
        self.seconds += time.perf_counter() - t
        return out


def build(directory: str, *, hidden: int, heads: int, intermediate: int, k: int, top_k: int, seed: int):
    from transformers import AutoModelForCausalLM, OlmoeConfig

    cfg = OlmoeConfig(vocab_size=128, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=1,
                      num_attention_heads=heads, num_key_value_heads=heads, num_experts=k,
                      num_experts_per_tok=top_k, max_position_embeddings=4096)
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(cfg)
    hf.save_pretrained(directory)
    del hf
    return load_expert_model(directory)


def queries(k: int, tokens: int, seed: int) -> list[PackedQuery]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        ids = torch.randint(0, 128, (tokens,), generator=gen)
        rows = torch.arange(tokens)
        out.append(PackedQuery(ids, rows, torch.ones(tokens, tokens, dtype=torch.bool).tril(), 1, ((1, tokens),),
                               rows, ids, ids, 0))
    return out


def bench(model, label: str, *, tokens: int, rounds: int, seed: int) -> None:
    k = model.num_experts
    system = SystemConfig(num_nodes=k, num_subcarriers=default_num_subcarriers(k))
    qs = queries(k, tokens, seed)
    print(f"\n{label}: K = {k}, M = {system.num_subcarriers}, {k} queries x {tokens} tokens = {k * tokens} "
          f"tokens per layer round, {model.num_layers} layer(s)")
    print(f"{'policy':>12} {'round [s]':>10} {'channel [s]':>12} {'schedule [s]':>13} {'model [s]':>10} "
          f"{'schedule/model':>15} {'experts/token':>14}")
    DMoERuntime(model, TopK(8), system=system, seed=seed).run_round(qs[:2])  # warm-up (not timed)
    for policy in (TopK(8), JESAPolicy(0.9, 8)):
        for r in range(rounds):
            pol = Timed(policy)
            rates = Timed(type("Draw", (), {"__call__": lambda self, rng: draw_rates(system, rng)})())
            rt = DMoERuntime(model, pol, system=system, seed=seed + r, rates_fn=rates, record_selection=True)
            t = time.perf_counter()
            out = rt.run_round(qs)
            total = time.perf_counter() - t
            compute = total - pol.seconds - rates.seconds
            per_layer = model.num_layers
            experts = float(np.mean([s.sum(-1).mean() for s in out.selections]))
            print(f"{policy.name:>12} {total / per_layer:>10.2f} {rates.seconds / per_layer:>12.2f} "
                  f"{pol.seconds / per_layer:>13.2f} {compute / per_layer:>10.2f} {pol.seconds / compute:>15.3f} "
                  f"{experts:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32, help="tokens per query (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions per policy (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        tiny = build(os.path.join(d, "tiny"), hidden=64, heads=4, intermediate=32, k=64, top_k=8, seed=args.seed)
        bench(tiny, "tiny OLMoE-like (hidden 64, expert FFN 32)", tokens=args.tokens, rounds=args.rounds,
              seed=args.seed)
        del tiny
        olmoe = build(os.path.join(d, "olmoe"), hidden=2048, heads=16, intermediate=1024, k=64, top_k=8,
                      seed=args.seed)
        bench(olmoe, "OLMoE-1B-7B layer widths (hidden 2048, expert FFN 1024)", tokens=args.tokens,
              rounds=args.rounds, seed=args.seed)


if __name__ == "__main__":
    main()
