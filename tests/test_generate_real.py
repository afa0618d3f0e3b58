"""Real-model smoke test of generation (slow): the default deployment (SmolLM2-135M-Instruct
carved into K = 32 experts on 8 nodes) with ``dense`` and ``combine="sum"`` generates, token
for token, what transformers' greedy ``generate`` of the dense GGUF model generates.

Uses the cached build (``$DMOE_CACHE_DIR`` or ``~/.cache/dmoe``). Run with ``pytest -m slow``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

NEW = 24


@pytest.fixture(scope="module")
def deployment():
    pytest.importorskip("gguf")
    from dmoe.deployment import deploy
    from dmoe.model import default_gguf_path

    try:
        default_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return deploy(progress=False)


def test_dense_sum_equals_smollm2_greedy_generate(deployment):
    from dmoe.model import load_dense_model
    from dmoe.runtime.generate import GenerationConfig, generate

    dep = deployment
    assert (dep.num_experts, dep.system.num_nodes, dep.model.combine) == (32, 8, "sum")
    tok = dep.model.tokenizer
    texts = ["The capital of France is", "Question: Which bone is the longest in the human body?\nAnswer:"]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    rt = dep.runtime(dep.policy("dense"))
    res = generate(rt, prompts, GenerationConfig(max_new_tokens=NEW, stop_token_ids=()))
    dense, _, _ = load_dense_model(None)
    for p, o in zip(prompts, res.outputs):
        ids = torch.tensor([p])
        with torch.no_grad():
            ref = dense.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False,
                                 eos_token_id=None, pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        assert o.token_ids == ref
    s = res.summary()
    assert s["prefill"]["rounds"] == 1 and s["decode"]["rounds"] == NEW - 1
    assert s["decode"]["energy_per_token_mj"] > 0 and s["ttft_s"] > 0 and s["tpot_s"] > 0


def test_default_tokenizer_has_a_chat_template(deployment):
    tok = deployment.model.tokenizer
    assert tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.eos_token == "<|im_end|>"
