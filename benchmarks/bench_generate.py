"""Generation speed through the DMoE protocol against transformers' own ``generate`` (not a test).

Run:  python benchmarks/bench_generate.py [--tokens 32] [--repeats 3] [--engine local] [--json PATH]

The default deployment of ``dmoe generate`` (SmolLM2-135M-Instruct carved into K = 32 experts
on N = 8 nodes, co-activation placement, the paper's radio; the cached build) generates
``--tokens`` greedy tokens after a short prompt with ``dense``, ``Top-8`` and ``JESA(0.9,8)``;
transformers' greedy ``generate`` (its own KV cache) of the dense model from the GGUF file is
the reference. Reported per policy: wall-clock ms per output token (prefill included, the
median over repeats), its ratio to transformers', tokens per second, and the radio
ledger's energy and air time split into prefill and decode. torch runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from dmoe.deployment import deploy
from dmoe.runtime.generate import GenerationConfig, generate

PROMPT = "The capital of France is"
POLICIES = ("dense", "Top-8", "JESA(0.9,8)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", choices=["local", "ray"], default="local")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    dep = deploy(progress=False)
    tok = dep.model.tokenizer
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    cfg = GenerationConfig(max_new_tokens=args.tokens, stop_token_ids=())

    from dmoe.model import load_dense_model

    dense, _, _ = load_dense_model(None)
    x = torch.tensor([ids])

    def hf_once() -> tuple[float, list[int]]:
        with torch.no_grad():
            t = time.perf_counter()
            out = dense.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.tokens, do_sample=False,
                                 eos_token_id=None, pad_token_id=tok.pad_token_id)
            return (time.perf_counter() - t) / args.tokens, out[0, len(ids):].tolist()

    runtimes = {p: dep.runtime(dep.policy(p), engine=args.engine) for p in POLICIES}

    def ours_once(policy):
        rt = runtimes[policy]
        t = time.perf_counter()
        res = generate(rt, [ids], cfg)
        return (time.perf_counter() - t) / args.tokens, res

    hf_once()
    for p in POLICIES:  # warm-up
        ours_once(p)
    hf_times, hf_tokens = [], None
    times = {p: [] for p in POLICIES}
    last = {}
    for _ in range(args.repeats):
        t, hf_tokens = hf_once()
        hf_times.append(t)
        for p in POLICIES:
            t, res = ours_once(p)
            times[p].append(t)
            last[p] = res
    hf = statistics.median(hf_times)
    rows = []
    print(f"{args.tokens} greedy tokens after {PROMPT!r}; K = {dep.num_experts} experts on N = "
          f"{dep.system.num_nodes} nodes, {args.engine} engine, torch on 1 thread, median of {args.repeats}")
    print(f"{'':<14}{'ms/token':>10}{'x HF':>7}{'tok/s':>8}{'prefill J':>11}{'decode J':>10}"
          f"{'mJ/token':>10}{'TTFT s':>9}{'TPOT s':>9}")
    print(f"{'transformers':<14}{hf * 1e3:>10.1f}{1.0:>7.2f}{1 / hf:>8.2f}")
    for p in POLICIES:
        m = statistics.median(times[p])
        s = last[p].summary()
        same = last[p].outputs[0].token_ids == hf_tokens
        rows.append({"policy": p, "ms_per_token": m * 1e3, "ratio_to_transformers": m / hf, "tokens_per_s": 1 / m,
                     "same_tokens_as_transformers": same, **{k: s[k] for k in ("energy_j", "ttft_s", "tpot_s")},
                     "prefill_energy_j": s["prefill"]["energy_j"], "decode_energy_j": s["decode"]["energy_j"],
                     "prefill_air_time_s": s["prefill"]["air_time_s"], "decode_air_time_s": s["decode"]["air_time_s"],
                     "energy_per_output_token_mj": s["energy_per_output_token_mj"]})
        print(f"{p:<14}{m * 1e3:>10.1f}{m / hf:>7.2f}{1 / m:>8.2f}{s['prefill']['energy_j']:>11.3f}"
              f"{s['decode']['energy_j']:>10.3f}{s['energy_per_output_token_mj']:>10.1f}{s['ttft_s']:>9.2f}"
              f"{s['tpot_s']:>9.2f}" + ("" if p != "dense" else f"   same tokens as transformers: {same}"))
    for rt in runtimes.values():
        rt.close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"tokens": args.tokens, "prompt": PROMPT, "engine": args.engine, "repeats": args.repeats,
                       "transformers_ms_per_token": hf * 1e3, "policies": rows, "machine": platform.platform()},
                      fh, indent=2, allow_nan=False)


if __name__ == "__main__":
    main()
