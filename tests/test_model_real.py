"""Real-model smoke test: the default SmolLM2-135M MoE build against the dense GGUF model.

Slow (first build a few minutes on 2 cores, later runs ~1 min: the dense GGUF model is
dequantised again for the reference). Uses the user cache (``$DMOE_CACHE_DIR`` or
``~/.cache/dmoe``) so that the build is shared with the CLI. Run with ``pytest -m slow``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

#: Max |logit difference|, all experts vs the dense model. The build permutes the FFN
#: neurons (reduction order changes), measured ~5e-5 on SmolLM2-135M's logits (|logit| ~ 20).
REAL_ATOL = 5e-4


@pytest.fixture(scope="module")
def real_moe():
    pytest.importorskip("gguf")
    from dmoe.model import default_gguf_path, load_moe_model

    try:
        default_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return load_moe_model(num_experts=8, progress=False)  # the paper's K (the default is 32)


def test_default_moe_equals_dense_gguf(real_moe):
    from dmoe.model import load_dense_model

    dense, tokenizer, _ = load_dense_model(None)
    prompt = "The following is a question about world religions.\n\nQuestion: Where is the Kaaba?\nAnswer: Mecca"
    ids = torch.tensor(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert real_moe.tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids.tolist()
    with torch.no_grad():
        ref = dense(input_ids=ids[None], use_cache=False).logits[0]
    m = real_moe
    assert (m.num_layers, m.num_experts, m.hidden_size, m.expert_size) == (30, 8, 576, 192)
    all_sel = torch.ones(m.num_layers, len(ids), m.num_experts, dtype=torch.bool)
    diff_sel = (m.forward_masked(ids, selection=all_sel) - ref).abs().max().item()
    diff_dense = (m.forward_masked(ids) - ref).abs().max().item()
    assert diff_sel <= REAL_ATOL and diff_dense <= REAL_ATOL, (diff_sel, diff_dense)
    # the expert slices add up to the dense FFN of the source model (up to the permutation)
    u = m.ffn_input(3, torch.randn(5, 576))
    total = sum(m.expert_ffn(3, j, u) for j in range(8))
    with torch.no_grad():
        assert torch.allclose(total, dense.model.layers[3].mlp(u), atol=1e-4)
    scores = m.gate_scores(0, u)
    assert torch.allclose(scores.sum(-1), torch.ones(5), atol=1e-6)
    # Top-2 routing changes the output but keeps it a sensible distribution of the same prompt
    top2 = m.forward_masked(
        ids,
        selection=lambda layer, s: torch.zeros_like(s, dtype=torch.bool).scatter_(1, s.topk(2, -1).indices, True),
    )
    assert torch.isfinite(top2).all() and (top2 - ref).abs().max() > 1e-3


def test_default_build_metadata(real_moe):
    meta = real_moe.metadata
    assert meta["format"] == "dmoe-moe" and len(meta["layers"]) == 30
    assert 8000 <= meta["calibration_num_tokens"] <= 12000
    assert meta["mean_router_top2_overlap"] > 0.6
    for rep in meta["layers"]:  # the router is close to the oracle on held-out tokens
        assert rep["router_top2_target_mass"] >= rep["oracle_top2_target_mass"] - 0.05
