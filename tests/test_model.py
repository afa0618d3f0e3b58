"""dmoe.model on tiny random Llama models (milliseconds each, no downloads).

Equivalence tolerance: max |logit difference| <= 1e-4 between the all-experts MoE model
and the dense model (measured ~1e-7 here; 5e-5 to 8e-5 on SmolLM2-135M, see test_model_real.py).
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from dmoe.model import (
    CacheDirError,
    MoEModel,
    Router,
    UnsupportedModelError,
    balanced_kmeans,
    build_moe_model,
    partition_neurons,
    train_router,
)
from dmoe.model.router import router_targets

ATOL = 1e-4
K = 4
VOCAB = 256


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads; one avoids OpenMP stalls on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**overrides):
    from transformers import LlamaConfig

    cfg = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def make_dense(seed=0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(**overrides)).eval()


def calib_ids(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (int(torch.randint(8, 30, (1,), generator=g)),), generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense") / "tiny-llama"
    make_dense().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dense(dense_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(dense_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def moe(dense_dir, cache_root):
    return build_moe_model(dense_dir, num_experts=K, cache_dir=cache_root, calibration_ids=calib_ids(), progress=False)


def dense_logits(model, ids, positions=None, mask=None):
    with torch.no_grad():
        kwargs = {"use_cache": False}
        if positions is not None:
            kwargs["position_ids"] = positions[None]
        if mask is not None:
            kwargs["attention_mask"] = mask[None, None]
        return model(input_ids=ids[None], **kwargs).logits[0]


def random_ids(n=17, seed=3):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- structure
def test_partition_is_exact(moe):
    F = moe.intermediate_size
    assert moe.expert_neurons.shape == (moe.num_layers, K, F // K)
    for layer in range(moe.num_layers):
        assert torch.equal(moe.expert_neurons[layer].flatten().sort().values, torch.arange(F))
        assert torch.equal(moe.source_neuron_ids[layer].sort().values, torch.arange(F))
    assert (moe.num_layers, moe.num_experts, moe.hidden_size) == (2, K, 32)
    assert moe.config.model_type == "llama" and moe.combine == "sum"


def test_all_experts_equal_dense(moe, dense):
    ids = random_ids()
    ref = dense_logits(dense, ids)
    all_sel = torch.ones(moe.num_layers, len(ids), K, dtype=torch.bool)
    assert (moe.forward_masked(ids) - ref).abs().max() <= ATOL
    assert (moe.forward_masked(ids, selection=all_sel) - ref).abs().max() <= ATOL
    assert moe.metadata["dense_check_max_abs_diff"] <= ATOL


def test_tree_mask_and_positions_match_separate_passes(moe, dense):
    ctx, opt_a, opt_b = random_ids(7, 1), random_ids(3, 2), random_ids(4, 3)
    ids = torch.cat([ctx, opt_a, opt_b])
    c, a, b = len(ctx), len(opt_a), len(opt_b)
    positions = torch.cat([torch.arange(c), torch.arange(c, c + a), torch.arange(c, c + b)])
    mask = torch.zeros(len(ids), len(ids), dtype=torch.bool)
    mask[:, :c] = True
    mask[:c, :c] = torch.ones(c, c, dtype=torch.bool).tril()
    mask[c : c + a, c : c + a] = torch.ones(a, a, dtype=torch.bool).tril()
    mask[c + a :, c + a :] = torch.ones(b, b, dtype=torch.bool).tril()
    out = moe.forward_masked(ids, positions=positions, attention_mask=mask)
    ref_a = dense_logits(dense, torch.cat([ctx, opt_a]))
    ref_b = dense_logits(dense, torch.cat([ctx, opt_b]))
    assert (out[: c + a] - ref_a).abs().max() <= ATOL
    assert (out[c + a :] - ref_b[c:]).abs().max() <= ATOL


def test_eager_attention_matches_sdpa(moe):
    ids = random_ids()
    mask = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()
    ref = moe.forward_masked(ids)
    impl = moe.config._attn_implementation
    try:
        moe.dense.set_attn_implementation("eager")
        assert (moe.forward_masked(ids) - ref).abs().max() <= ATOL
        assert (moe.forward_masked(ids, attention_mask=mask) - ref).abs().max() <= ATOL
    finally:
        moe.dense.set_attn_implementation(impl)


def test_expert_ffns_sum_to_dense_mlp(moe):
    x = torch.randn(9, moe.hidden_size, generator=torch.Generator().manual_seed(0))
    for layer in range(moe.num_layers):
        mlp = moe.dense.model.layers[layer].mlp
        total = sum(moe.expert_ffn(layer, j, x) for j in range(K))
        assert torch.allclose(total, mlp(x), atol=1e-5)
        params = moe.expert_parameters(layer, 1)
        m = moe.expert_size
        assert params["gate"].shape == (m, moe.hidden_size) and params["down"].shape == (moe.hidden_size, m)
        # contiguous layout after a build: views of the dense weights
        assert params["gate"].data_ptr() == mlp.gate_proj.weight[m:].data_ptr()
        copies = moe.expert_parameters(layer, 1, copy=True)
        assert copies["down"].is_contiguous() and copies["gate"].data_ptr() != params["gate"].data_ptr()
        assert torch.allclose(moe.apply_expert(layer, copies, x), moe.expert_ffn(layer, 1, x))


def test_non_contiguous_partition(dense):
    F = dense.config.intermediate_size
    g = torch.Generator().manual_seed(5)
    parts = torch.stack([torch.randperm(F, generator=g).view(K, F // K) for _ in range(2)])
    model = MoEModel(dense, parts)
    x = torch.randn(5, 32, generator=g)
    for layer in range(2):
        total = sum(model.expert_ffn(layer, j, x) for j in range(K))
        assert torch.allclose(total, dense.model.layers[layer].mlp(x), atol=1e-5)
        p = model.expert_parameters(layer, 2)
        assert torch.equal(p["up"], dense.model.layers[layer].mlp.up_proj.weight[parts[layer, 2]])
    ids = random_ids()
    all_sel = torch.ones(2, len(ids), K, dtype=torch.bool)
    assert (model.forward_masked(ids, selection=all_sel) - dense_logits(dense, ids)).abs().max() <= ATOL
    assert torch.allclose(model.gate_scores(0, x), torch.full((5, K), 1 / K))  # default routers: uniform


def test_gate_scores_are_softmax(moe):
    x = torch.randn(11, moe.hidden_size) * 3
    for layer in range(moe.num_layers):
        s = moe.gate_scores(layer, x)
        assert s.shape == (11, K) and s.dtype == torch.float32
        assert (s >= 0).all() and torch.allclose(s.sum(-1), torch.ones(11), atol=1e-6)
        logits = moe.routers[layer].logits(x)
        assert torch.allclose(s, torch.softmax(logits, -1))


def hand_forward(model, ids, selection):
    """The DMoE protocol by hand: attention, gate, per-expert FFN, combine_outputs."""
    h = model.embed(ids)
    pe = model.position_embeddings(torch.arange(len(ids)))
    for layer in range(model.num_layers):
        h = model.attention_block(layer, h, pe, None)
        u = model.ffn_input(layer, h)
        scores = model.gate_scores(layer, u)
        outs = torch.stack([model.expert_ffn(layer, j, u) for j in range(model.num_experts)], 1)
        h = h + model.combine_outputs(outs, selection[layer], scores)
    return model.logits(h)


@pytest.mark.parametrize("combine", ["sum", "weighted"])
def test_masked_forward_matches_hand_computation(moe, combine):
    ids = random_ids(13)
    g = torch.Generator().manual_seed(7)
    sel = torch.rand(moe.num_layers, len(ids), K, generator=g) < 0.5
    sel[:, 0] = False  # a token with nothing selected: the FFN adds nothing
    moe.combine = combine
    try:
        with torch.no_grad():
            ref = hand_forward(moe, ids, sel)
        out = moe.forward_masked(ids, selection=sel)
    finally:
        moe.combine = "sum"
    assert (out - ref).abs().max() <= ATOL


def test_callable_selection(moe):
    ids = random_ids(9)

    def top1(layer, scores):
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.argmax(-1, keepdim=True), True)

    explicit = []
    h = moe.embed(ids)
    pe = moe.position_embeddings(torch.arange(len(ids)))
    with torch.no_grad():
        for layer in range(moe.num_layers):
            h = moe.attention_block(layer, h, pe)
            u = moe.ffn_input(layer, h)
            s = top1(layer, moe.gate_scores(layer, u))
            explicit.append(s)
            h = h + moe.masked_ffn(layer, u, s.float())
    assert torch.allclose(moe.forward_masked(ids, selection=top1), moe.forward_masked(ids, selection=torch.stack(explicit)))


def test_weighted_combine_is_eq8(moe):
    g = torch.Generator().manual_seed(1)
    n, H = 6, moe.hidden_size
    outs = torch.randn(n, K, H, generator=g)
    scores = torch.softmax(torch.randn(n, K, generator=g), -1)
    sel = torch.rand(n, K, generator=g) < 0.6
    sel[0] = False
    sel[1] = True
    outs[~sel] = float("nan")  # unselected outputs are never read
    moe.combine = "weighted"
    try:
        got = moe.combine_outputs(outs, sel, scores)
        got_list = moe.combine_outputs([outs[:, j] for j in range(K)], sel, scores)
    finally:
        moe.combine = "sum"
    for i in range(n):
        js = torch.nonzero(sel[i]).flatten().tolist()
        if not js:
            expected = torch.zeros(H)
        else:
            w = scores[i, js] / scores[i, js].sum()
            expected = sum(w[t] * outs[i, j] for t, j in enumerate(js))
        assert torch.allclose(got[i], expected, atol=1e-6)
    assert torch.allclose(got, got_list)
    plain = moe.combine_outputs(torch.nan_to_num(outs), sel, scores)
    assert torch.allclose(plain, (torch.nan_to_num(outs) * sel[..., None]).sum(1))
    with pytest.raises(ValueError, match="combine"):
        moe.combine = "mean"


def test_logits_and_embed_shapes(moe):
    ids = random_ids(5)
    h = moe.embed(ids)
    assert h.shape == (5, 32)
    cos, sin = moe.position_embeddings(torch.arange(5))
    assert cos.shape[-2:] == (5, 8)
    assert moe.logits(h[:2]).shape == (2, VOCAB)


# ----------------------------------------------------------------------------- moefication + routers
def test_balanced_kmeans_recovers_groups():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 5
    truth = torch.arange(4).repeat_interleave(8)
    points = centers[truth] + 0.1 * torch.randn(32, 16, generator=g)
    labels = balanced_kmeans(points, 4, seed=0)
    assert torch.bincount(labels).tolist() == [8, 8, 8, 8]
    for c in range(4):  # each true group is one cluster
        assert labels[truth == c].unique().numel() == 1
    assert torch.equal(labels, balanced_kmeans(points, 4, seed=0))


def test_partition_groups_coactivating_neurons():
    g = torch.Generator().manual_seed(0)
    n_tokens, F = 200, 32
    group = torch.arange(F) % 4  # neuron i belongs to group i % 4
    token_topic = torch.randint(0, 4, (n_tokens,), generator=g)
    act = 0.01 * torch.randn(n_tokens, F, generator=g)
    act += (token_topic[:, None] == group[None, :]).float() * torch.rand(n_tokens, F, generator=g)
    parts = partition_neurons(act, 4, seed=0)
    assert parts.shape == (4, 8)
    for row in parts:
        assert group[row].unique().numel() == 1
    with pytest.raises(ValueError, match="num_experts"):
        partition_neurons(act, 5)


def test_router_training_fits_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g) * 4 + 2
    w_true = torch.randn(4, 16, generator=g)
    targets = torch.softmax(x @ w_true.T / 4, -1)
    fit = train_router(x, targets, steps=300, seed=0)
    assert isinstance(fit.router, Router)
    assert fit.heldout["top1_accuracy"] > 0.9 and fit.heldout["kl"] < 0.02
    norms = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert torch.allclose(router_targets(norms), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))


def test_build_metadata_reports_router_quality(moe):
    layers = moe.metadata["layers"]
    assert len(layers) == moe.num_layers
    for rep in layers:
        assert 0 <= rep["router_top2_overlap"] <= 1
        assert rep["top2_rel_error_oracle"] >= 0
    assert moe.metadata["calibration_num_tokens"] == sum(len(t) for t in calib_ids())


def test_build_is_deterministic(dense_dir, tmp_path, moe):
    other = build_moe_model(dense_dir, num_experts=K, cache_dir=tmp_path, calibration_ids=calib_ids(), progress=False)
    assert torch.equal(other.source_neuron_ids, moe.source_neuron_ids)
    for a, b in zip(other.routers, moe.routers):
        assert torch.equal(a.weight, b.weight)


# ----------------------------------------------------------------------------- cache
def test_cache_hit_reuses_files(dense_dir, cache_root, moe):
    path = moe.metadata["cache_path"]
    files = sorted(os.listdir(path))
    assert {"config.json", "meta.json", "model.safetensors"} <= set(files)
    mtime = os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns
    again = build_moe_model(dense_dir, num_experts=K, cache_dir=cache_root, calibration_ids=calib_ids(), progress=False)
    assert again.metadata["loaded_from_cache"] is True and moe.metadata["loaded_from_cache"] is False
    assert os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns == mtime
    ids = random_ids()
    sel = torch.rand(2, len(ids), K, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.equal(again.forward_masked(ids, selection=sel), moe.forward_masked(ids, selection=sel))
    assert torch.equal(again.expert_neurons, moe.expert_neurons)
    # a build directory is itself a valid source
    direct = build_moe_model(path, num_experts=K)
    assert torch.equal(direct.forward_masked(ids), moe.forward_masked(ids))
    with pytest.raises(ValueError, match="num_experts"):
        build_moe_model(path, num_experts=2)


def test_other_inputs_get_other_cache_entries(dense_dir, cache_root, moe):
    k2 = build_moe_model(dense_dir, num_experts=2, cache_dir=cache_root, calibration_ids=calib_ids(), progress=False)
    seed1 = build_moe_model(dense_dir, num_experts=K, cache_dir=cache_root, calibration_ids=calib_ids(), seed=1, progress=False)
    paths = {moe.metadata["cache_path"], k2.metadata["cache_path"], seed1.metadata["cache_path"]}
    assert len(paths) == 3 and k2.num_experts == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage_meta", "delete_tensor_file", "flip_byte"])
def test_corrupt_cache_is_rebuilt_with_warning(dense_dir, tmp_path, damage):
    kwargs = dict(num_experts=K, cache_dir=tmp_path, calibration_ids=calib_ids(), progress=False)
    first = build_moe_model(dense_dir, **kwargs)
    path = first.metadata["cache_path"]
    st = os.path.join(path, "model.safetensors")
    if damage == "truncate":
        with open(st, "r+b") as f:
            f.truncate(os.path.getsize(st) // 2)
    elif damage == "garbage_meta":
        with open(os.path.join(path, "meta.json"), "w") as f:
            f.write("{not json")
    elif damage == "delete_tensor_file":
        os.remove(st)
    else:
        with open(st, "r+b") as f:
            f.seek(os.path.getsize(st) - 5)
            f.write(b"\x00\x01\x02\x03\x04")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        second = build_moe_model(dense_dir, **kwargs)
    assert second.metadata["loaded_from_cache"] is False
    ids = random_ids()
    assert torch.equal(second.forward_masked(ids), first.forward_masked(ids))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = build_moe_model(dense_dir, **kwargs)
    assert third.metadata["loaded_from_cache"] is True


def test_unwritable_cache_dir_is_a_clear_error(dense_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheDirError, match="cache_dir") as info:
        build_moe_model(dense_dir, num_experts=K, cache_dir=blocker / "sub", calibration_ids=calib_ids(), progress=False)
    assert str(blocker / "sub") in str(info.value)
    assert isinstance(info.value, OSError)


@pytest.mark.parametrize("bad", [0, -2, 3, 5, 2.0, True, "4"])
def test_bad_num_experts(dense_dir, tmp_path, bad):
    with pytest.raises(ValueError, match="num_experts"):
        build_moe_model(dense_dir, num_experts=bad, cache_dir=tmp_path, calibration_ids=calib_ids(), progress=False)
    assert not any(tmp_path.iterdir())  # failed before touching the cache


def test_bad_partition_rejected(dense):
    F = dense.config.intermediate_size
    with pytest.raises(ValueError, match="partition"):
        MoEModel(dense, torch.zeros(2, K, F // K, dtype=torch.long))
    with pytest.raises(ValueError, match="num_experts"):
        MoEModel(dense, torch.arange(F - 4).view(2, -1)[None].expand(2, 2, -1))


# ----------------------------------------------------------------------------- sources
def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    with pytest.raises(UnsupportedModelError):
        MoEModel(gpt2, torch.arange(64).view(1, 4, 16))
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="Llama"):
        build_moe_model(tmp_path / "gpt2", num_experts=2, cache_dir=tmp_path / "c", calibration_ids=calib_ids(), progress=False)


def test_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_moe_model(str(tmp_path / "nope"), cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_moe_model(tmp_path / "empty", cache_dir=tmp_path)


def test_unreachable_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # fail fast, no network
    with pytest.raises(OSError, match="Hugging Face Hub"):
        build_moe_model("dmoe-test-nonexistent/nonexistent-model", num_experts=K, cache_dir=tmp_path,
                        calibration_ids=calib_ids(), progress=False)


def test_calibration_texts_with_tokenizer(tmp_path, tiny_tokenizer):
    path = tmp_path / "with-tok"
    make_dense(seed=1).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    texts = ["The following is a question about anatomy.", ("Question: what is a bone?\nAnswer:", " a bone")]
    model = build_moe_model(path, num_experts=K, cache_dir=tmp_path / "c", calibration_texts=texts, progress=False)
    assert model.tokenizer is not None
    assert model.metadata["key_inputs"]["calibration"]["kind"] == "texts"
    cached = build_moe_model(path, num_experts=K, cache_dir=tmp_path / "c", calibration_texts=texts, progress=False)
    assert cached.metadata["loaded_from_cache"] is True
    assert cached.tokenizer("a bone")["input_ids"] == tiny_tokenizer("a bone")["input_ids"]


def test_default_calibration_set():
    from dmoe.data import CALIBRATION_SUBJECTS, MEDICAL_SUBJECTS
    from dmoe.model.calibration import calibration_spec, default_calibration_texts

    texts = default_calibration_texts()
    assert len(texts) > 500
    assert all(ctx.endswith("Answer:") and ans.startswith(" ") for ctx, ans in texts)
    assert not set(CALIBRATION_SUBJECTS) & set(MEDICAL_SUBJECTS)
    first = [ctx.split(".")[0] for ctx, _ in texts[: len(CALIBRATION_SUBJECTS)]]
    assert first == [f"The following is a question about {s}" for s in CALIBRATION_SUBJECTS]  # round-robin
    assert calibration_spec(None, None, max_tokens=10) == calibration_spec(None, None, max_tokens=10)


def test_calibration_packing_matches_separate_passes(dense):
    from dmoe.model.build import _pack

    model = MoEModel(dense, torch.arange(64).view(1, K, 16).expand(2, -1, -1))
    seqs = calib_ids(seed=4, n=5)
    packs = _pack(seqs, max_tokens=40)
    assert len(packs) < len(seqs) and sum(len(p[0]) for p in packs) == sum(len(s) for s in seqs)
    packed = torch.cat([model.forward_masked(ids, positions=pos, attention_mask=mask) for ids, pos, mask in packs])
    separate = torch.cat([model.forward_masked(s) for s in seqs])
    assert (packed - separate).abs().max() <= ATOL
