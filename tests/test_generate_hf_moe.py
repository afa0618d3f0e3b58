"""Generation through the DMoE protocol on tiny checkpoints of every real MoE family.

With the family's own top-k (``Top-k`` with k = the native top-k; DeepSeek-V3 with a zero
correction bias and no group limit, so that its native choice is the top-k of g) the
generated tokens equal the family's own ``generate`` (transformers, greedy, its own KV
cache), and at every step the logits equal the family's full forward without a cache
(``forward_masked``, the transformers forward) within 1e-4. GPT-OSS has a sliding window
of 4 tokens, shorter than the sequences: the cached mask applies it on positions.
"""

from __future__ import annotations

import pytest
import torch

from dmoe.model import load_expert_model
from dmoe.policies import TopK
from dmoe.runtime import DMoERuntime
from dmoe.runtime.generate import GenerationConfig, generate
from test_hf_moe import FAMILY_NAMES, VOCAB, _configs, _system

ATOL = 1e-4
NEW = 10


def _save(family, directory):
    from transformers import AutoModelForCausalLM

    cfg = _configs()[family]
    if family == "deepseek_v3":
        cfg.topk_group = cfg.n_group  # no group limit: the native choice is the top-k of g
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(std=0.2)
    hf.save_pretrained(directory)
    return hf


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_native_top_k_generation_equals_the_familys_generate(family, tmp_path):
    hf = _save(family, tmp_path)
    model = load_expert_model(str(tmp_path))
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (5, 9, 3)]
    rt = DMoERuntime(model, TopK(model.native_top_k), system=_system(model), seed=1)
    res = generate(rt, prompts, GenerationConfig(max_new_tokens=NEW, stop_token_ids=()), return_logits=True)
    for p, o in zip(prompts, res.outputs):
        ids = torch.tensor([p])
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, len(p):].tolist()
        assert o.token_ids == ref
        seq = torch.tensor(p + o.token_ids[:-1])
        with torch.no_grad():
            full = hf(seq[None]).logits[0, len(p) - 1:]
        assert (o.logits - full).abs().max().item() <= ATOL
    if family in ("qwen2_moe", "deepseek_v3", "granitemoeshared"):
        assert rt.ledger.energy_always_on_j > 0
