"""Real transformers MoE families through the DMoE protocol, on tiny random checkpoints.

For every family a tiny random config (2 layers, hidden 32, 4-8 experts, vocab 256) is
built with the transformers config class, saved with ``save_pretrained`` and loaded back
by path through :func:`dmoe.model.load_expert_model`. Checked (fp32):

(a) with the family's own top-k the runtime's logits equal the family's transformers
    forward, max |diff| <= 1e-4 (measured 3e-7 .. 1.3e-6 on logits of magnitude 1-5);
(b) with a policy picking other experts they equal the masked centralised reference
    (``forward_masked`` with the recorded selection), max |diff| <= 1e-4;
(c) g is non-negative and sums to 1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dmoe.data import load_mmlu, pack_question
from dmoe.data.packing import PackedQuery
from dmoe.energy import link_token_counts
from dmoe.model import (
    HFMoEModel,
    RouterOutputError,
    UnsupportedModelError,
    inspect_checkpoint,
    load_expert_model,
)
from dmoe.policies import Dense, JESAPolicy, Policy, Schedule, TopK
from dmoe.optimize.subcarrier import allocate_subcarriers
from dmoe.runtime import DMoERuntime
from dmoe.system import SystemConfig, default_num_subcarriers

ATOL = 1e-4
VOCAB = 256
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=512)


def _configs():
    import transformers as T

    return {
        "mixtral": T.MixtralConfig(**COMMON, intermediate_size=48, num_local_experts=6, num_experts_per_tok=2),
        "qwen2_moe": T.Qwen2MoeConfig(**COMMON, intermediate_size=48, moe_intermediate_size=24,
                                      shared_expert_intermediate_size=40, num_experts=6, num_experts_per_tok=2),
        "qwen3_moe": T.Qwen3MoeConfig(**COMMON, intermediate_size=48, moe_intermediate_size=24, head_dim=8,
                                      num_experts=6, num_experts_per_tok=2, norm_topk_prob=True),
        "olmoe": T.OlmoeConfig(**COMMON, intermediate_size=24, num_experts=8, num_experts_per_tok=2),
        "deepseek_v3": T.DeepseekV3Config(
            **{**COMMON, "num_key_value_heads": 4}, intermediate_size=64, moe_intermediate_size=16,
            n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
            q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
            n_shared_experts=1, routed_scaling_factor=2.5),
        "gpt_oss": T.GptOssConfig(**COMMON, intermediate_size=24, head_dim=8, num_local_experts=4,
                                  num_experts_per_tok=2, sliding_window=4),
        "granitemoe": T.GraniteMoeConfig(**COMMON, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
                                         embedding_multiplier=2.0, residual_multiplier=0.5, logits_scaling=3.0,
                                         attention_multiplier=0.3),
        "granitemoeshared": T.GraniteMoeSharedConfig(**COMMON, intermediate_size=24, shared_intermediate_size=40,
                                                     num_local_experts=4, num_experts_per_tok=2,
                                                     embedding_multiplier=2.0, residual_multiplier=0.5,
                                                     logits_scaling=3.0),
    }


FAMILY_NAMES = list(_configs())
#: routed experts per layer of each tiny config
NUM_EXPERTS = {"mixtral": 6, "qwen2_moe": 6, "qwen3_moe": 6, "olmoe": 8, "deepseek_v3": 8, "gpt_oss": 4,
               "granitemoe": 4, "granitemoeshared": 4}


def save_tiny_moe(family: str, directory, *, seed: int = 0, tokenizer=None):
    """Build a tiny random ``family`` model (weights N(0, 0.2^2)), save it to ``directory``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(_configs()[family]).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() > 1:
                p.normal_(std=0.2)
        if family == "deepseek_v3":  # a correction bias that changes the native choice
            for layer in hf.model.layers[hf.config.first_k_dense_replace:]:
                layer.mlp.gate.e_score_correction_bias.normal_(std=0.5)
    hf.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return hf


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """family -> (transformers model, dmoe model loaded back from disk by path)."""
    out = {}
    for family in FAMILY_NAMES:
        d = tmp_path_factory.mktemp(family)
        hf = save_tiny_moe(family, d)
        out[family] = (hf, load_expert_model(str(d)))
    return out


def _causal_query(ids: torch.Tensor) -> PackedQuery:
    n = ids.numel()
    rows = torch.arange(n)
    return PackedQuery(ids, rows, torch.ones(n, n, dtype=torch.bool).tril(), 1, ((1, n),), rows, ids, ids, 0)


class NativeReplay(Policy):
    """The family's own top-k (recorded from the reference pass), with optimal subcarriers."""

    name = "native"

    def __init__(self, selections: list[np.ndarray]):
        self.selections = selections  # per layer (0-based): [T, K] bool for the round's tokens

    def params(self) -> dict:
        return {"policy": "NativeReplay", "name": self.name}

    def schedule(self, scores, source, rates, layer, *, system, rng=None) -> Schedule:
        sel = self.selections[layer - 1]
        assert sel.shape == scores.shape
        alloc = allocate_subcarriers(rates, link_token_counts(sel, source, scores.shape[1]),
                                     tx_power_w=system.tx_power_w, bits_per_token=system.bits_per_token)
        assert not alloc.unserved.any()
        return Schedule(sel, alloc.subcarrier, np.ones(sel.shape[0], dtype=bool))


def _system(model) -> SystemConfig:
    k = model.num_experts
    return SystemConfig(num_nodes=k, num_subcarriers=default_num_subcarriers(k))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_loaded_by_path_and_described(built, family):
    hf, model = built[family]
    assert isinstance(model, HFMoEModel) and model.family == family
    assert model.num_experts == NUM_EXPERTS[family]
    assert model.native_top_k == 2 and model.num_layers == 2
    info = model.describe()
    assert info["family"] == family and info["num_experts"] == model.num_experts and info["gate"]
    assert model.metadata["source"]["kind"] == "hf_dir"
    assert model.tokenizer is None  # tiny checkpoints ship none: token ids are fed directly
    assert model.is_moe_layer(0) == (family != "deepseek_v3") and model.is_moe_layer(1)
    has_shared = family in ("qwen2_moe", "deepseek_v3", "granitemoeshared")
    assert (model.always_on_size(1) > 0) == has_shared
    assert model.always_on_size(0) > 0 if family == "deepseek_v3" else True


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_full_reference_equals_transformers_forward(built, family):
    hf, model = built[family]
    ids = torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    got = model.forward_masked(ids)
    assert (got - ref).abs().max().item() <= ATOL


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gate_scores_are_a_distribution(built, family):
    _, model = built[family]
    x = torch.randn(50, model.hidden_size, generator=torch.Generator().manual_seed(2)) * 3
    layer = 1
    g = model.gate_scores(layer, x)
    assert g.shape == (50, model.num_experts) and g.dtype == torch.float32
    assert bool((g >= 0).all())
    torch.testing.assert_close(g.sum(-1), torch.ones(50), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_weights_on_native_selection_are_the_routers_own(built, family):
    _, model = built[family]
    x = torch.randn(30, model.hidden_size, generator=torch.Generator().manual_seed(3))
    block = model._moe_block(1)
    router = getattr(block, model.spec.router_attr)
    _, top_w, top_i = router(x)
    sel = model.native_selection(1, x)
    w = model.combine_weights(sel, model.gate_scores(1, x))
    expected = torch.zeros_like(w).scatter_(1, top_i.long(), top_w.float())
    expected = expected * model._residual_scale
    torch.testing.assert_close(w, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_runtime_with_native_top_k_equals_transformers(built, family):
    hf, model = built[family]
    gen = torch.Generator().manual_seed(4)
    k = model.num_experts
    queries = [_causal_query(torch.randint(0, VOCAB, (10 + 3 * i,), generator=gen)) for i in range(k)]
    if family == "deepseek_v3":  # bias + group limit: the native choice is not the top-k of g
        per_query = [model.native_selections(q.input_ids).numpy() for q in queries]
        policy = NativeReplay([np.concatenate([s[layer] for s in per_query]) for layer in range(model.num_layers)])
    else:
        policy = TopK(model.native_top_k)
    rt = DMoERuntime(model, policy, system=_system(model), seed=5, record_selection=True)
    out = rt.run_round(queries)
    for q, logits, sel in zip(queries, out.logits, out.selections):
        with torch.no_grad():
            ref = hf(q.input_ids[None]).logits[0]
        assert (logits - ref).abs().max().item() <= ATOL
        if family == "deepseek_v3":
            assert not sel[0].any()  # dense first layer: nothing scheduled
    totals = rt.ledger.per_layer()
    assert (totals.tokens == sum(q.num_tokens for q in queries)).all()
    if family in ("qwen2_moe", "deepseek_v3", "granitemoeshared"):
        assert rt.ledger.energy_always_on_j > 0
    else:
        assert rt.ledger.energy_always_on_j == 0


@pytest.fixture(scope="module")
def packed(tiny_tokenizer):
    return [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=8)]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_packed_tree_query_equals_separate_transformers_passes(built, packed, family):
    """A question packed with its options (tree mask, shared positions; GPT-OSS: sliding
    window 4 on positions) gives each option the logits of its own plain sequence."""
    hf, model = built[family]
    q = packed[0]
    logits = model.forward_masked(q.input_ids, positions=q.positions, attention_mask=q.attention_mask)
    c = q.context_len
    for start, end in q.option_spans:
        plain = torch.cat([q.input_ids[:c], q.input_ids[start:end]])
        with torch.no_grad():
            ref = hf(plain[None]).logits[0]
        assert (logits[start:end] - ref[c:]).abs().max().item() <= ATOL
        assert (logits[c - 1] - ref[c - 1]).abs().max().item() <= ATOL


@pytest.mark.parametrize("policy", [TopK(1), JESAPolicy(0.8, 3), Dense()], ids=lambda p: p.name)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_runtime_with_other_experts_equals_masked_reference(built, packed, family, policy):
    _, model = built[family]
    k = model.num_experts
    rt = DMoERuntime(model, policy, system=_system(model), seed=6, record_selection=True)
    queries = packed[: min(k, 4)]
    out = rt.run_round(queries)
    differs = False
    for q, logits, sel in zip(queries, out.logits, out.selections):
        sel_t = torch.from_numpy(sel)
        ref = model.forward_masked(q.input_ids, positions=q.positions, attention_mask=q.attention_mask,
                                   selection=sel_t)[q.score_rows]
        assert (logits - ref).abs().max().item() <= ATOL
        native = model.native_selections(q.input_ids, positions=q.positions, attention_mask=q.attention_mask)
        moe = [layer for layer in range(model.num_layers) if model.is_moe_layer(layer)]
        differs |= not torch.equal(native[moe], sel_t[moe])
    assert differs  # the policy really picked other experts than the family's own top-k


def test_always_on_is_charged_at_the_source_the_same_for_every_policy(built, packed):
    _, model = built["qwen2_moe"]
    energies = []
    for policy in (TopK(1), TopK(2), Dense()):
        rt = DMoERuntime(model, policy, system=_system(model), seed=7)
        rt.run_round(packed[: model.num_experts])
        energies.append(rt.ledger.energy_always_on_j)
    a = _system(model).comp_energy_per_token_j
    tokens = [q.num_tokens for q in packed[: model.num_experts]]
    expected = sum(model.always_on_size(layer) for layer in range(2)) * sum(a[i] * n for i, n in enumerate(tokens))
    np.testing.assert_allclose(energies, expected, rtol=1e-12)


# ----------------------------------------------------------------------------- bad input
def test_nan_router_names_the_layer(tmp_path):
    d = tmp_path / "nan"
    save_tiny_moe("mixtral", d)
    model = load_expert_model(str(d))
    with torch.no_grad():
        model._moe_block(1).gate.weight[0, 0] = float("nan")
    with pytest.raises(RouterOutputError, match="layer 1"):
        model.forward_masked(torch.arange(5))


def test_num_experts_contradicting_the_checkpoint(built, tmp_path):
    d = tmp_path / "m"
    save_tiny_moe("olmoe", d)
    with pytest.raises(ValueError, match=r"`num_experts`.*K = 8"):
        load_expert_model(str(d), num_experts=4)
    assert load_expert_model(str(d), num_experts=8).num_experts == 8
    with pytest.raises(ValueError, match="`combine`"):
        load_expert_model(str(d), combine="sum")


def test_missing_files(tmp_path):
    d = tmp_path / "m"
    save_tiny_moe("mixtral", d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="weight files"):
        load_expert_model(str(d))
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_expert_model(str(d))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_expert_model(str(tmp_path / "nowhere"))


def test_unsupported_moe_architecture_names_the_supported_families(tmp_path):
    d = tmp_path / "dbrx"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "jamba", "num_experts": 16}))
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnsupportedModelError, match="mixtral.*olmoe.*deepseek_v3.*gpt_oss"):
        inspect_checkpoint(str(d))


def test_dense_model_where_a_moe_is_needed(tiny_llama, tmp_path):
    from dmoe.model import load_hf_moe_model

    d = tmp_path / "llama"
    tiny_llama.save_pretrained(d)
    assert inspect_checkpoint(str(d)).kind == "carved"  # dense: carved by load_expert_model
    with pytest.raises(UnsupportedModelError, match="supported"):
        load_hf_moe_model(str(d))
    with pytest.raises(UnsupportedModelError, match="supported"):
        HFMoEModel(tiny_llama)


def test_selection_shape_is_checked(built):
    _, model = built["mixtral"]
    with pytest.raises(ValueError, match="`selection`"):
        model.forward_masked(torch.arange(4), selection=torch.zeros(2, 3, model.num_experts, dtype=torch.bool))


# ----------------------------------------------------------------------------- CLI end to end
def _read_summary(out):
    return json.loads((out / "summary.json").read_text())


def test_dmoe_run_on_a_moe_checkpoint(tmp_path, tiny_tokenizer):
    from click.testing import CliRunner

    from dmoe.cli import main

    d = tmp_path / "qwen"
    save_tiny_moe("qwen2_moe", d, tokenizer=tiny_tokenizer)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--limit", "3", "--policy", "Top-2",
                                    "--policy", "JESA(0.9,2)", "--device", "cpu", "--quiet", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "Qwen2-MoE" in res.output and "K = 6" in res.output and "native top-k = 2" in res.output
    assert "shared expert" in res.output and "gating scores: g = softmax" in res.output
    cfg = _read_summary(out)["config"]
    assert cfg["expert_model"]["family"] == "qwen2_moe" and cfg["expert_model"]["native_top_k"] == 2
    assert cfg["system"]["num_nodes"] == 6 and cfg["system"]["num_subcarriers"] == 32
    assert cfg["combine"] == "family"
    # quality against the full model = the family's own top-2 routing
    assert cfg["full_model"]["definition"] == "the family's own top-2 routing"
    rows = {r["policy"]: r for r in _read_summary(out)["results"]}
    assert rows["Top-2"]["agreement"] == 1.0 and rows["Top-2"]["mean_kl"] < 1e-9
    assert rows["JESA(0.9,2)"]["mean_kl"] >= 0 and rows["Top-2"]["perplexity"] == pytest.approx(
        cfg["full_model"]["perplexity"], rel=1e-5)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--policy", "JESA(0.9,7)"], "`max_experts` D = 7 must not exceed K = 6"),
        (["--policy", "Top-7"], "`k` must not exceed K = 6"),
        (["--num-experts", "8"], "contradicts the checkpoint"),
        (["--combine", "weighted"], "`combine`"),
        (["--policy", "Dense", "-M", "8"], "--num-subcarriers"),
    ],
)
def test_dmoe_run_bad_input_writes_nothing(tmp_path, tiny_tokenizer, extra, needle):
    from click.testing import CliRunner

    from dmoe.cli import main

    d = tmp_path / "qwen"
    save_tiny_moe("qwen2_moe", d, tokenizer=tiny_tokenizer)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--limit", "2", "--quiet", "-o", str(out)] + extra)
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_dmoe_run_unsupported_architecture(tmp_path):
    from click.testing import CliRunner

    from dmoe.cli import main

    d = tmp_path / "x"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "dbrx", "num_local_experts": 16}))
    (d / "model.safetensors").write_bytes(b"")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--quiet", "-o", str(out)])
    assert res.exit_code != 0 and "supported families: mixtral" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_build_model_and_top_level_api_accept_a_moe_checkpoint(built, tmp_path):
    from click.testing import CliRunner

    import dmoe
    from dmoe.cli import main

    d = tmp_path / "gpt"
    save_tiny_moe("gpt_oss", d)
    res = CliRunner().invoke(main, ["build-model", "--model", str(d)])
    assert res.exit_code == 0 and "gpt_oss model ready: 2 layers x 4 experts" in res.output, res.output
    model = dmoe.load_moe_model(str(d))
    assert isinstance(model, dmoe.ExpertModel) and model.family == "gpt_oss"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--device", "nonsense", "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "--device" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("top_k, needle", [(7, "must lie in [1, 6]"), (0, "must lie in [1, 6]")])
def test_native_top_k_outside_one_to_k_is_refused_before_loading(tmp_path, tiny_tokenizer, top_k, needle):
    """Issue 20: top-k > K died deep in the routing with a raw RuntimeError; top-0 was accepted."""
    from click.testing import CliRunner

    from dmoe.cli import main

    d = tmp_path / "mixtral"
    save_tiny_moe("mixtral", d, tokenizer=tiny_tokenizer)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_experts_per_tok"] = top_k
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--limit", "1", "--quiet", "-o", str(out)])
    assert res.exit_code != 0 and "`num_experts_per_tok`" in res.output and needle in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_a_policy_given_twice_runs_once(tmp_path, tiny_tokenizer):
    """Issue 20: the same --policy given twice ran twice."""
    from click.testing import CliRunner

    from dmoe.cli import main

    d = tmp_path / "qwen"
    save_tiny_moe("qwen2_moe", d, tokenizer=tiny_tokenizer)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--limit", "1", "--quiet", "--ppl-texts", "0",
                                    "-o", str(out), "--policy", "Top-2", "--policy", "top-2", "--policy", "dense"])
    assert res.exit_code == 0, res.output
    assert "note: policy 'top-2' is given more than once; it runs once" in res.output
    summary = json.loads((out / "summary.json").read_text())
    names = [p["policy"] if isinstance(p, dict) else p for p in summary["config"]["policies"]]
    assert len(names) == 2, names


def test_deadline_misses_are_on_the_record(tmp_path, tiny_tokenizer):
    """Issue 20: `[T=1e-9s]` ran silently; misses are now counted per policy and per layer."""
    import csv

    from click.testing import CliRunner

    from dmoe.cli import main

    d = tmp_path / "qwen"
    save_tiny_moe("qwen2_moe", d, tokenizer=tiny_tokenizer)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--limit", "2", "--quiet", "--ppl-texts", "0",
                                    "-o", str(out), "--policy", "Top-2[T=1e-9s]", "--policy", "Top-2[T=1e3s]",
                                    "--policy", "Top-2"])
    assert res.exit_code == 0, res.output
    assert "note: Top-2[T=1e-09s]: every layer round missed the deadline T = 1e-09 s" in res.output, res.output
    assert "T missed" in res.output and "Top-2[T=1000s]:" not in res.output
    summary = {r["policy"]: r for r in json.loads((out / "summary.json").read_text())["results"]}
    tight, loose, free = summary["Top-2[T=1e-09s]"], summary["Top-2[T=1000s]"], summary["Top-2"]
    assert tight["deadline_missed"] == tight["deadline_rounds"] > 0 and tight["deadline_miss_max_s"] > 0
    assert loose["deadline_missed"] == 0 and loose["deadline_miss_max_s"] == 0.0 and loose["deadline_s"] == 1e3
    assert free["deadline_s"] is None and free["deadline_missed"] is None
    with (out / "per_layer.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    per_layer = [int(r["deadline_missed"]) for r in rows if r["policy"] == "Top-2[T=1e-09s]"]
    assert sum(per_layer) == tight["deadline_missed"]
    assert all(r["deadline_missed"] == "" for r in rows if r["policy"] == "Top-2")


def test_every_node_failing_and_absurd_energies_still_give_strict_files_and_aligned_columns(tmp_path, tiny_tokenizer):
    """Issue 20: when every node failed summary.json held bare NaN (rejected by JSON.parse / jq);
    `--snr-db -300` printed energies of 1e31 J that ran the table's columns together."""
    from click.testing import CliRunner

    from dmoe.cli import main

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    d = tmp_path / "qwen"
    save_tiny_moe("qwen2_moe", d, tokenizer=tiny_tokenizer)
    out = tmp_path / "dead"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--limit", "2", "--quiet", "--ppl-texts", "0",
                                    "-o", str(out), "--policy", "Top-2", "--node-failure-rate", "0.95",
                                    "--no-node-rejoin"])
    assert res.exit_code != 0 and "have failed" in res.output and "Traceback" not in res.output, res.output
    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert summary["results"] and summary["results"][0]["complete"] is False
    out = tmp_path / "weak"
    res = CliRunner().invoke(main, ["run", "--model", str(d), "--limit", "1", "--quiet", "--ppl-texts", "0",
                                    "-o", str(out), "--policy", "Top-2", "--policy", "dense", "--snr-db", "-300"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("policy "))
    table = lines[head:head + 4]
    assert len({len(line) for line in table}) == 1, table  # every row as wide as the header
    assert "e+" in table[2] or "e+" in table[3]
    json.loads((out / "summary.json").read_text(), parse_constant=refuse)
