"""Memory and time per MMLU question of `dmoe run` on a real-MoE checkpoint (not a test).

Run:  PYTHONPATH=src python benchmarks/bench_byo_moe.py [--limit 8]

Two random checkpoints built with transformers' config classes, saved with a small BPE
tokenizer (trained on MMLU text) and run through ``run_main_job`` exactly as
``dmoe run --model <dir> --policy Top-2 --policy "JESA(0.9,2)"`` does, each in its own
process (peak RSS from ``getrusage``):

* tiny:  Qwen2-MoE, 2 layers, hidden 32, 6 experts (+ shared), vocab 256 (~0.1 M parameters);
* small: Qwen3-MoE, 8 layers, hidden 512, 16 experts of FFN 512, top-2, vocab 32000
  (0.14 B parameters).

Printed per size: parameters, fp32 weight size, peak RSS, seconds per question per policy
(the full DMoE protocol: attention, gating, scheduling, experts, aggregation).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

SIZES = {
    "tiny": ("Qwen2MoeConfig", dict(vocab_size=256, hidden_size=32, intermediate_size=48, moe_intermediate_size=24,
                                    shared_expert_intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, num_experts=6, num_experts_per_tok=2)),
    "small": ("Qwen3MoeConfig", dict(vocab_size=32000, hidden_size=512, intermediate_size=1536,
                                     moe_intermediate_size=512, num_hidden_layers=8, num_attention_heads=8,
                                     num_key_value_heads=4, head_dim=64, num_experts=16, num_experts_per_tok=2,
                                     norm_topk_prob=True)),
}


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from dmoe.data import format_prompt, load_mmlu

    texts = []
    for q in load_mmlu("anatomy", limit=40):
        texts.append(format_prompt(q))
        texts.extend(" " + c for c in q.choices)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=256, special_tokens=["[UNK]"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def child(size: str, directory: str, limit: int) -> None:
    import torch
    import transformers

    from dmoe.main_job import run_main_job

    cls, kwargs = SIZES[size]
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls)(**kwargs))
    params = sum(p.numel() for p in hf.parameters())
    hf.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    del hf
    t = time.perf_counter()
    _, results = run_main_job(subjects="anatomy", limit=limit, policies=["Top-2", "JESA(0.9,2)"],
                              model_source=directory, output=None, progress=False, log=lambda *a: None)
    total = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # [MiB]
    print(json.dumps({"size": size, "parameters": params, "weights_mib": params * 4 / 2**20, "peak_rss_mib": rss,
                      "seconds_total": total,
                      "seconds_per_question": {r.policy: r.seconds / r.num_questions for r in results}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8, help="MMLU anatomy questions (default 8)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.limit)
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; {args.limit} questions")
    print(f"{'size':>6} {'params':>12} {'fp32 weights':>13} {'peak RSS':>10} {'s/question Top-2':>17} "
          f"{'s/question JESA':>16}")
    for size in SIZES:
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, __file__, "--limit", str(args.limit), "--child", size, d],
                                 capture_output=True, text=True, check=True)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        spq = rec["seconds_per_question"]
        print(f"{size:>6} {rec['parameters']:>12,} {rec['weights_mib']:>10.1f} MiB {rec['peak_rss_mib']:>6.0f} MiB "
              f"{spq['Top-2']:>17.3f} {spq['JESA(0.9,2)']:>16.3f}")


if __name__ == "__main__":
    main()
