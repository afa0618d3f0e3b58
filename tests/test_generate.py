"""Generation through the DMoE protocol (issue 17) on a tiny random carved model.

Checked against independent oracles: transformers' own greedy ``generate`` of the dense
model (dense policy, ``combine="sum"``), the centralised pass without a cache
(``forward_masked`` over the whole sequence, with the selections the runtime recorded) at
every step, a prefill round equal to ``run_round`` of the prompts, the ledgers' totals
split exactly into prefill and decode, node loss (rebuild) giving the same text, sampling
against its target distribution (chi-square), stop strings and streaming.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import make_tiny_moe
from dmoe.data.packing import PackedText
from dmoe.policies import Dense, JESAPolicy, TopK
from dmoe.runtime import DMoERuntime, NodeKill
from dmoe.runtime.generate import GenerationConfig, context_length, generate
from dmoe.runtime.sampling import SamplingParams, TokenSampler
from dmoe.system import SystemConfig

K = 4
SYSTEM = SystemConfig(num_nodes=K, num_subcarriers=16)
ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama):
    return make_tiny_moe(tiny_llama, K, seed=1)


def _prompts(n, *, seed=0, vocab=512, lengths=(5, 9, 3, 7, 4, 6)):
    g = torch.Generator().manual_seed(seed)
    # token ids >= 3: no accidental bos/eos/pad of the tiny config
    return [torch.randint(3, vocab, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(n)]


def _greedy(max_new=10):
    return GenerationConfig(max_new_tokens=max_new, stop_token_ids=())


def _hf_greedy(hf, prompt, n):
    ids = torch.tensor([prompt])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                      eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_dense_sum_equals_transformers_greedy_generate(tiny_moe, tiny_llama):
    """6 prompts on 4 nodes: two batches; every token equals transformers' greedy search."""
    prompts = _prompts(6)
    rt = DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=1)
    res = generate(rt, prompts, _greedy(12))
    for p, o in zip(prompts, res.outputs):
        assert o.token_ids == _hf_greedy(tiny_llama, p, 12)
        assert o.finish_reason == "length" and o.prompt_ids == p
    assert res.prefill.rounds == 2 and res.decode.rounds == 2 * 11


@pytest.mark.parametrize("policy", [Dense(), TopK(2), JESAPolicy(0.8, 2)], ids=lambda p: p.name)
def test_cached_logits_equal_the_full_forward_at_every_step(tiny_moe, policy):
    prompts = _prompts(3, seed=2)
    rt = DMoERuntime(tiny_moe, policy, system=SYSTEM, seed=4, record_selection=True)
    res = generate(rt, prompts, _greedy(9), return_logits=True)
    sparse = False
    for p, o in zip(prompts, res.outputs):
        seq = torch.tensor(p + o.token_ids[:-1])
        sel = torch.from_numpy(o.selections)
        assert sel.shape == (tiny_moe.num_layers, seq.numel(), K)
        full = tiny_moe.forward_masked(seq, selection=sel)[len(p) - 1:]
        assert o.logits.shape == full.shape
        assert (o.logits - full).abs().max().item() <= ATOL
        sparse |= not bool(sel.all())
    assert sparse == (policy.name != "dense")


def test_prefill_round_is_run_round_of_the_prompts(tiny_moe):
    """The prefill is the protocol round of today: same channels, same energy, same logits."""
    prompts = _prompts(4, seed=3)
    a = DMoERuntime(tiny_moe, JESAPolicy(0.8, 2), system=SYSTEM, seed=5)
    res = generate(a, prompts, GenerationConfig(max_new_tokens=1, stop_token_ids=()), return_logits=True)
    b = DMoERuntime(tiny_moe, JESAPolicy(0.8, 2), system=SYSTEM, seed=5)
    texts = []
    for p in prompts:
        n = len(p)
        idx = torch.arange(n)
        texts.append(PackedText(torch.tensor(p), idx, idx[:, None] >= idx[None, :], torch.tensor([n - 1]),
                                torch.tensor([0])))
    out = b.run_round(texts)
    assert res.prefill.energy_j == pytest.approx(b.ledger.energy_j, rel=1e-12)
    assert res.prefill.air_time_s == pytest.approx(float(b.latency.layer_round_s.sum()), rel=1e-12)
    assert res.decode.rounds == 0 and res.decode.energy_j == 0
    for o, lg in zip(res.outputs, out.logits):
        torch.testing.assert_close(o.logits[0], lg[0], atol=1e-5, rtol=1e-5)


def test_phases_split_the_ledgers_exactly(tiny_moe):
    prompts = _prompts(3, seed=4)
    rt = DMoERuntime(tiny_moe, TopK(2), system=SYSTEM, seed=6)
    res = generate(rt, prompts, _greedy(7), prefill_policy=Dense(), decode_policy=JESAPolicy(0.9, 2))
    s = res.summary()
    assert s["policies"] == {"prefill": "dense", "decode": "JESA(0.9,2)"}
    assert res.prefill.energy_j + res.decode.energy_j == pytest.approx(rt.ledger.energy_j, rel=1e-12)
    assert res.prefill.energy_comm_j + res.decode.energy_comm_j == pytest.approx(rt.ledger.energy_comm_j, rel=1e-12)
    lat = rt.latency.layer_round_s.sum(axis=1)
    assert res.prefill.air_time_s == pytest.approx(lat[0]) and res.decode.air_time_s == pytest.approx(lat[1:].sum())
    assert res.prefill.tokens == sum(len(p) for p in prompts) and res.decode.tokens == 3 * 6
    # per query: TTFT = the prefill round; TPOT = its decode rounds over its tokens after the first
    for o in res.outputs:
        assert o.ttft_s == pytest.approx(lat[0]) and o.tpot_s == pytest.approx(lat[1:].sum() / 6)
    assert s["ttft_s"] == pytest.approx(lat[0]) and s["output_tokens"] == 21
    assert s["energy_per_output_token_mj"] == pytest.approx(1e3 * rt.ledger.energy_j / 21)
    assert s["decode"]["energy_per_token_mj"] == pytest.approx(1e3 * res.decode.energy_j / 18)
    # rounds: the runtime's policy is restored
    assert rt.policy.name == "Top-2"


def test_sparse_decode_costs_less_than_dense(tiny_moe):
    prompts = _prompts(4, seed=5)
    costs = {}
    for pol in (Dense(), TopK(1)):
        rt = DMoERuntime(tiny_moe, pol, system=SYSTEM, seed=7)
        costs[pol.name] = generate(rt, prompts, _greedy(4)).decode.energy_j
    assert costs["Top-1"] < costs["dense"]


@pytest.mark.parametrize("phase", ["attention", "experts"])
@pytest.mark.parametrize("round_index", [0, 3])
def test_host_loss_rebuilds_the_cache_same_text(tiny_moe, phase, round_index):
    """Node 1 (host of query 1) dies mid-round, in the prefill (round 0) or a decode step:
    the query is re-hosted, its cache rebuilt from its tokens, the text unchanged."""
    prompts = _prompts(3, seed=6)
    base = generate(DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=8), prompts, _greedy(8))
    rt = DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=8,
                     node_kills=[NodeKill(round_index, 1, 1, phase)])
    res = generate(rt, prompts, _greedy(8))
    assert [o.token_ids for o in res.outputs] == [o.token_ids for o in base.outputs]
    assert res.rehosted == 1 and rt.faults.failures == 1
    assert res.rebuild.rounds == 1 and res.rebuild.energy_j > 0
    fed = len(prompts[1]) + round_index  # the prompt and the tokens fed by decode rounds 1..round_index
    assert res.rebuild.tokens == fed
    assert any(e[3] == f"rebuild:1:{fed}" for e in rt.faults.events)
    # the rebuild is charged in its phase, on top of the fault-free cost
    phase_name = "prefill" if round_index == 0 else "decode"
    assert getattr(res, phase_name).energy_j > getattr(base, phase_name).energy_j
    assert res.prefill.energy_j + res.decode.energy_j == pytest.approx(rt.ledger.energy_j, rel=1e-12)


def test_every_node_but_one_dies(tiny_moe):
    prompts = _prompts(4, seed=7)
    base = generate(DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=9), prompts, _greedy(5))
    kills = [NodeKill(2, 0, j, "attention") for j in (0, 1, 2)]
    rt = DMoERuntime(tiny_moe, TopK(K), system=SYSTEM, seed=9, node_kills=kills, node_rejoin=False)
    res = generate(rt, prompts, _greedy(5))
    # Top-K with only node 3 left: every token goes to expert 3 alone after the kill, so the
    # text may change; nothing is lost and every query finishes
    assert all(len(o.token_ids) == 5 for o in res.outputs)
    assert res.rehosted == 3 and set(rt.up.tolist()) == {False, True}
    assert base.outputs[3].token_ids[:2] == res.outputs[3].token_ids[:2]


def test_sampling_is_seeded_and_independent_of_batching(tiny_moe):
    """Each query's generator depends on the seed and its index only: batches of 4 (4
    nodes) and of 2 (2 nodes, two experts each) give the same sampled tokens (dense: the
    logits do not depend on the channel); another seed gives others."""
    prompts = _prompts(6, seed=8)
    cfg = GenerationConfig(max_new_tokens=6, sampling=SamplingParams(temperature=1.3, top_p=0.9, seed=11),
                           stop_token_ids=())
    a = generate(DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=1), prompts, cfg)
    b = generate(DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=1), prompts, cfg)
    assert [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
    two = SystemConfig(num_nodes=2, num_subcarriers=4)
    c = generate(DMoERuntime(tiny_moe, Dense(), system=two, seed=5, placement=np.array([0, 0, 1, 1])), prompts, cfg)
    assert c.prefill.rounds == 3
    assert [o.token_ids for o in c.outputs] == [o.token_ids for o in a.outputs]
    other = generate(DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=1), prompts,
                     GenerationConfig(max_new_tokens=6, sampling=SamplingParams(1.3, 0.9, seed=12), stop_token_ids=()))
    assert [o.token_ids for o in other.outputs] != [o.token_ids for o in a.outputs]
    greedy = generate(DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=1), prompts, _greedy(6))
    assert [o.token_ids for o in greedy.outputs] != [o.token_ids for o in a.outputs]


# --------------------------------------------------------------------------- sampling
def test_greedy_sampler_is_argmax_lowest_index_on_ties():
    s = TokenSampler(SamplingParams(), 0)
    assert s(torch.tensor([0.1, 2.0, 2.0, -1.0])) == 1
    d = s.distribution(torch.tensor([0.1, 2.0, 2.0, -1.0]))
    assert d.tolist() == [0, 1, 0, 0]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 1.0), (1.5, 0.8), (1.0, 0.5)])
def test_sampling_matches_its_target_distribution(temperature, top_p):
    """Chi-square goodness of fit against an independent numpy nucleus computation."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.2, -0.5, -1.0, -3.0])
    x = logits.double().numpy() / temperature
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order]) - p[order]
    keep = np.zeros_like(p, dtype=bool)
    keep[order[cum < top_p]] = True
    target = np.where(keep, p, 0)
    target /= target.sum()
    s = TokenSampler(SamplingParams(temperature, top_p, seed=3), 5)
    np.testing.assert_allclose(s.distribution(logits).numpy(), target, rtol=1e-12, atol=1e-15)
    n = 20000
    counts = np.bincount([s(logits) for _ in range(n)], minlength=7)
    assert counts[~keep].sum() == 0
    res = stats.chisquare(counts[keep], n * target[keep])
    assert res.pvalue > 1e-3


def test_top_p_tiny_is_greedy():
    logits = torch.tensor([0.0, 3.0, 2.9, 1.0])
    s = TokenSampler(SamplingParams(2.0, 1e-6, seed=0), 0)
    assert {s(logits) for _ in range(200)} == {1}


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(temperature=-0.1), "`temperature`"),
        (dict(temperature=float("nan")), "`temperature`"),
        (dict(top_p=0.0), "`top_p`"),
        (dict(top_p=1.5), "`top_p`"),
        (dict(seed=-1), "`seed`"),
    ],
)
def test_sampling_params_bad_input(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SamplingParams(**kwargs)


# --------------------------------------------------------------------------- text, stop, stream
@pytest.fixture(scope="module")
def text_moe(tiny_tokenizer):
    """A tiny random carved model over the tiny BPE tokenizer's vocabulary."""
    from transformers import LlamaForCausalLM

    from conftest import tiny_llama_config

    torch.manual_seed(3)
    dense = LlamaForCausalLM(tiny_llama_config(vocab_size=len(tiny_tokenizer))).eval()
    moe = make_tiny_moe(dense, K, seed=2)
    moe.tokenizer = tiny_tokenizer
    return moe


def test_text_streaming_and_stop_strings(text_moe, tiny_tokenizer):
    prompt = "The following is a question about anatomy."
    rt = DMoERuntime(text_moe, Dense(), system=SYSTEM, seed=0)
    free = generate(rt, [prompt], GenerationConfig(max_new_tokens=24, stop_token_ids=())).outputs[0]
    assert free.text == tiny_tokenizer.decode(free.token_ids, skip_special_tokens=True)
    assert len(free.text) > 6
    stop = free.text[3:6]
    pieces = []
    rt = DMoERuntime(text_moe, Dense(), system=SYSTEM, seed=0)
    got = generate(rt, [prompt], GenerationConfig(max_new_tokens=24, stop=(stop, "\u00a7never"), stop_token_ids=()),
                   on_text=lambda q, t: pieces.append(t)).outputs[0]
    cut = free.text.find(stop)
    assert got.finish_reason == "stop" and got.text == free.text[:cut]
    assert "".join(pieces) == got.text  # nothing of the stop string was streamed
    assert got.token_ids == free.token_ids[:len(got.token_ids)]
    # streaming without stop strings gives the whole text
    pieces = []
    rt = DMoERuntime(text_moe, Dense(), system=SYSTEM, seed=0)
    generate(rt, [prompt], GenerationConfig(max_new_tokens=24, stop_token_ids=()), on_text=lambda q, t: pieces.append(t))
    assert "".join(pieces) == free.text


def test_stop_token_ends_a_query(text_moe):
    prompt = "Question: What is the"
    rt = DMoERuntime(text_moe, Dense(), system=SYSTEM, seed=0)
    free = generate(rt, [prompt, prompt + " bone"], GenerationConfig(max_new_tokens=12, stop_token_ids=())).outputs
    stop_tok = free[0].token_ids[4]
    first = free[0].token_ids.index(stop_tok)
    rt = DMoERuntime(text_moe, Dense(), system=SYSTEM, seed=0)
    res = generate(rt, [prompt, prompt + " bone"], GenerationConfig(max_new_tokens=12, stop_token_ids=(stop_tok,)))
    o = res.outputs[0]
    assert o.finish_reason == "eos" and o.token_ids == free[0].token_ids[:first + 1]
    # the other query of the batch goes on alone (fewer tokens per decode round)
    other = res.outputs[1]
    if stop_tok not in other.token_ids:
        assert other.token_ids == free[1].token_ids and other.finish_reason == "length"


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "prompts, cfg, needle",
    [
        ([], None, "`prompts` must hold"),
        ([[]], None, "is empty"),
        (["   "], None, "is empty"),
        ([[1, 2, 600]], None, "outside the vocabulary"),
        ([[5] * 500], GenerationConfig(max_new_tokens=13), "exceed the model's context of 512"),
        ([[5] * 3], GenerationConfig(max_new_tokens=3, stop=("x",)), "`stop` strings need"),
    ],
)
def test_generate_bad_input_before_any_round(tiny_moe, prompts, cfg, needle):
    rt = DMoERuntime(tiny_moe, Dense(), system=SYSTEM, seed=0)
    with pytest.raises(ValueError, match=needle):
        generate(rt, prompts, cfg)
    assert rt.rounds == 0 and rt.ledger.energy_j == 0


@pytest.mark.parametrize("kwargs, needle", [(dict(max_new_tokens=0), "`max_new_tokens`"),
                                            (dict(max_new_tokens=2.5), "`max_new_tokens`"),
                                            (dict(stop=("",)), "`stop`"),
                                            (dict(stop_token_ids=(-1,)), "`stop_token_ids`")])
def test_generation_config_bad_input(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GenerationConfig(**kwargs)


def test_context_length(tiny_moe):
    assert context_length(tiny_moe) == 512


# --------------------------------------------------------------------------- masks and cache
@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_cached_attention_mask_against_brute_force(impl, window):
    from dmoe.model.masks import cached_attention_mask

    rng = np.random.default_rng(0)
    for _ in range(50):
        past = int(rng.integers(0, 6))
        new = int(rng.integers(1, 4))
        keys = torch.arange(past + new)
        q = keys[past:]
        got = cached_attention_mask(impl, q, keys, torch.float32, torch.device("cpu"), sliding_window=window)
        want = torch.tensor([[int(k) <= int(s) and (window is None or int(s) - int(k) < window) for k in keys]
                             for s in q])
        if got is None:
            # only where nothing is masked (one query), or SDPA's causal path without a cache
            assert bool(want.all()) and (new == 1 or impl != "sdpa") or (
                impl == "sdpa" and past == 0 and window is None and torch.equal(want, torch.ones_like(want).tril()))
            continue
        assert got.shape == (1, 1, new, past + new)
        allowed = got[0, 0] if got.dtype == torch.bool else got[0, 0] == 0
        assert torch.equal(allowed, want)
    with pytest.raises(ValueError, match="`key_positions`"):
        cached_attention_mask("sdpa", torch.arange(3), torch.arange(2), torch.float32, torch.device("cpu"))


def test_kv_cache_positions_and_arguments(tiny_moe):
    cache = tiny_moe.new_cache()
    assert cache.num_tokens(0) == 0 and cache.key_positions(1).numel() == 0
    assert cache.append_positions(0, torch.arange(3)).tolist() == [0, 1, 2]
    assert cache.append_positions(0, torch.tensor([3])).tolist() == [0, 1, 2, 3] and cache.num_tokens(0) == 4
    with pytest.raises(ValueError, match="`positions`"):
        cache.append_positions(0, torch.zeros(2, 2))
    h = torch.zeros(2, tiny_moe.hidden_size)
    pe = tiny_moe.position_embeddings(torch.arange(2))
    with pytest.raises(ValueError, match="`positions`"):
        tiny_moe.attention_block(0, h, pe, cache=tiny_moe.new_cache())
    with pytest.raises(ValueError, match="`attention_mask`"):
        tiny_moe.attention_block(0, h, pe, torch.ones(2, 2, dtype=torch.bool), cache=tiny_moe.new_cache(),
                                 positions=torch.arange(2))
