"""Each node holds its eq-(6) share: the shared blocks and its own experts, nothing more.

Without Ray: :func:`dmoe.runtime.shard.shared_model` drops exactly the routed experts'
tensors (carved FFN weights, every transformers family's fused 3-D expert weights) and
shares everything else with the driver's model; :func:`~dmoe.runtime.shard.expert_share`
slices a node's experts. With real actors: each actor's parameter set is the shared blocks
plus its placement's experts (not other nodes'), after a kill and rejoin too, a new
placement on the same engine sends only the missing experts, and the outcome equals the
in-process engine bit for bit. The engine factory imports both engines; neither imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_moe
from dmoe.runtime.node import ExpertNode
from dmoe.runtime.shard import expert_share, shared_model, tensor_bytes

K = 4
SRC = Path(__file__).resolve().parents[1] / "src" / "dmoe" / "runtime"


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama):
    return make_tiny_moe(tiny_llama, K)


def _names(model):
    return dict(model.named_parameters())


def test_shared_model_drops_exactly_the_carved_experts(tiny_moe):
    tiny_moe._layer(0)  # the cached layer list must follow the copy
    shared = shared_model(tiny_moe)
    expected = {f"dense.model.layers.{l}.mlp.{p}_proj.weight" for l in range(2) for p in ("gate", "up", "down")}
    assert set(tiny_moe.expert_parameter_names()) == expected
    meta = {n for n, p in shared.named_parameters() if p.is_meta}
    assert meta == expected
    orig = _names(tiny_moe)
    for n, p in shared.named_parameters():
        assert p.shape == orig[n].shape and p.dtype == orig[n].dtype
        if n not in expected:
            assert p is orig[n]  # shared with the driver's model, not copied
    assert not any(p.is_meta for p in tiny_moe.parameters())  # the driver's model is untouched
    assert shared._layer(1) is shared.dense.model.layers[1]
    assert tensor_bytes(shared.parameters()) == tensor_bytes(tiny_moe.parameters()) - tensor_bytes(
        orig[n] for n in expected)


def test_shared_model_of_every_transformers_family(tmp_path):
    from test_hf_moe import FAMILY_NAMES, save_tiny_moe

    from dmoe.model import load_expert_model

    for family in FAMILY_NAMES:
        save_tiny_moe(family, tmp_path / family)
        model = load_expert_model(str(tmp_path / family))
        names = model.expert_parameter_names()
        assert names and all(".experts." in n for n in names)
        moe_layers = [l for l in range(model.num_layers) if model.is_moe_layer(l)]
        per_layer = 4 if family == "gpt_oss" else 2
        assert len(names) == per_layer * len(moe_layers), family
        shared = shared_model(model)
        assert {n for n, p in shared.named_parameters() if p.is_meta} == set(names), family
        # a node of experts {1, 3}: one slice of each fused tensor per expert, own storage
        experts = [(1, 3)] * model.num_layers
        share = expert_share(model, experts)
        assert sorted(share) == moe_layers
        for l in moe_layers:
            for j in (1, 3):
                ref = model.expert_parameters(l, j)
                assert share[l][j].keys() == ref.keys()
                for k, v in share[l][j].items():
                    assert torch.equal(v, ref[k]) and v.is_contiguous()
                    assert v.untyped_storage().nbytes() == v.numel() * v.element_size()
        # the node computes what an in-process node computes, from its share alone
        x = torch.randn(5, model.hidden_size)
        node, local = ExpertNode(0, shared, experts, share), ExpertNode(0, model, experts)
        l = moe_layers[0]
        for j in (1, 3):
            a = model.apply_expert(l, node._ffn[l][j], x)
            assert torch.equal(a, model.apply_expert(l, local._ffn[l][j], x)), family
        with pytest.raises(ValueError, match="no parameters of expert 2"):
            ExpertNode(0, shared, [(2,)] * model.num_layers)


def _check_packed(model, family=""):
    """pack_shared_blocks -> read-only arrays (as Ray's object store hands them out) ->
    restore: the shared model's parameters, on the arrays' memory, tied ones still tied."""
    import pickle
    import warnings

    from dmoe.runtime.shard import SharedBlocks, pack_shared_blocks

    shared = shared_model(model)
    packed = pickle.loads(pickle.dumps(pack_shared_blocks(model), protocol=5))
    assert isinstance(packed, SharedBlocks)
    assert all(p.is_meta for p in packed.skeleton.parameters()), family  # no data in the skeleton
    for a in packed.arrays.values():
        a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not writable" warning leaks out
        restored = packed.restore()
    ref = dict(shared.named_parameters(remove_duplicate=False))
    got = dict(restored.named_parameters(remove_duplicate=False))
    assert got.keys() == ref.keys(), family
    for n, p in got.items():
        assert p.dtype == ref[n].dtype and p.shape == ref[n].shape, (family, n)
        if ref[n].is_meta:
            assert p.is_meta, (family, n)  # a routed expert: still not held
        else:
            assert torch.equal(p, ref[n]), (family, n)
            arr = packed.arrays[next(k for k, v in ref.items() if v is ref[n])]
            assert p.data_ptr() == arr.ctypes.data, (family, n)  # no copy
    # tied parameters (embedding and LM head) are one tensor in both
    groups = lambda named: sorted(sorted(k for k, v in named.items() if v is t) for t in {id(v): v for v in named.values()}.values())  # noqa: E731
    assert groups(got) == groups(ref), family
    return restored


def test_packed_shared_blocks_restore_without_copies(tiny_moe, tiny_tokenizer):
    """What the Ray engine puts into the object store: the restored model computes what the
    driver's model computes (a node of it, with its experts' parameters sent alongside)."""
    from dmoe.data import load_mmlu, pack_question
    from dmoe.runtime.node import HostedQuery

    restored = _check_packed(tiny_moe)
    q = pack_question(tiny_tokenizer, load_mmlu("anatomy", limit=1)[0])
    hq = HostedQuery(0, q.input_ids, q.positions, q.attention_mask, q.score_rows)
    experts = [(0, 2)] * tiny_moe.num_layers
    a = ExpertNode(0, restored, experts, expert_share(tiny_moe, experts))
    b = ExpertNode(0, tiny_moe, experts)
    for node in (a, b):
        node.host([hq])
    for l in range(tiny_moe.num_layers):
        if tiny_moe.is_moe_layer(l):
            ga, ua = a.attend_gate(l, [0])
            gb, ub = b.attend_gate(l, [0])
            assert np.array_equal(ga[0], gb[0]) and torch.equal(ua, ub)
            sel = np.zeros((q.num_tokens, tiny_moe.num_experts), dtype=bool)
            sel[:, [0, 2]] = True
            outs = [n.ffn(l, (0, 2), sel[:, [0, 2]], u) for n, u in ((a, ua), (b, ub))]
            ha = a.combine(l, (0,), sel, [[(0, (0, 2), (0,))]], False, outs[0])
            hb = b.combine(l, (0,), sel, [[(0, (0, 2), (0,))]], False, outs[1])
            assert torch.equal(ha[2], hb[2])
        else:
            assert torch.equal(a.dense_layer(l, [0])[1], b.dense_layer(l, [0])[1])
    assert torch.equal(a.logits([0])[0], b.logits([0])[0])


def test_packed_shared_blocks_of_every_family_and_bfloat16(tmp_path, tiny_moe):
    from test_hf_moe import FAMILY_NAMES, save_tiny_moe

    from dmoe.model import load_expert_model

    for family in FAMILY_NAMES:
        save_tiny_moe(family, tmp_path / family)
        _check_packed(load_expert_model(str(tmp_path / family)), family)
    import copy

    half = copy.deepcopy(tiny_moe).to(torch.bfloat16)  # numpy has no bfloat16: sent as int16 bytes
    restored = _check_packed(half, "bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in restored.parameters())


def test_expert_share_skips_held_experts_and_checks_layers(tiny_moe):
    share = expert_share(tiny_moe, [(0, 1), (2,)], held=[(1,), (2,)])
    assert {l: sorted(d) for l, d in share.items()} == {0: [0]}
    with pytest.raises(ValueError, match="each of the 2 layers"):
        expert_share(tiny_moe, [(0,)])


def test_engine_modules_do_not_import_each_other_or_the_factory():
    def module_imports(path):
        tree = ast.parse(path.read_text())
        out = set()
        for node in tree.body:  # module level only (a lazy import inside a function is allowed)
            if isinstance(node, ast.ImportFrom):
                out.add(("." * node.level) + (node.module or ""))
                out.update(("." * node.level) + a.name for a in node.names if node.module is None)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        return out

    engine, ray_engine = module_imports(SRC / "engine.py"), module_imports(SRC / "ray_engine.py")
    assert not {".ray_engine", ".engines", "ray"} & engine
    assert not {".engines", "ray"} & ray_engine
    factory = module_imports(SRC / "engines.py")
    assert ".engine" in factory and ".ray_engine" not in factory  # Ray's module only when asked for
    import dmoe.runtime.engine as eng_mod
    from dmoe.runtime.engines import ENGINES, make_engine

    with pytest.warns(DeprecationWarning, match="dmoe.runtime.engines"):
        assert eng_mod.make_engine is make_engine
    with pytest.warns(DeprecationWarning):
        assert eng_mod.ENGINES == ENGINES == ("local", "ray")


def test_local_engine_starts_with_the_given_experts(tiny_moe):
    from dmoe.runtime.engines import make_engine

    eng = make_engine("local", tiny_moe, num_nodes=2, node_experts=[[(0, 3), (0, 3)], [(1, 2), (1, 2)]])
    assert eng._nodes[1].held_parameters()["experts"] == [(1, 2), (1, 2)]
    eng.kill(1)
    eng.join(1)
    assert eng._nodes[1].held_parameters()["experts"] == [(1, 2), (1, 2)]
    with pytest.raises(ValueError, match="one entry per node"):
        make_engine("local", tiny_moe, num_nodes=2, node_experts=[[(0,), (0,)]])


# ------------------------------------------------------------------ real actors
def test_each_actor_holds_its_share_and_ray_equals_local(ray_session, tiny_moe, tiny_tokenizer):
    """N = 2 actors, 2 experts each: each holds the shared blocks and its placement's experts;
    a node killed mid-run rejoins with the same share; a new placement on the same engine
    sends only the missing experts; every result equals the in-process engine's bit for bit."""
    import ray

    from dmoe.data import load_mmlu, pack_question
    from dmoe.policies import JESAPolicy
    from dmoe.runtime import DMoERuntime, NodeKill
    from dmoe.runtime.ray_engine import RayEngine
    from dmoe.system import SystemConfig

    queries = [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=4)]
    system = SystemConfig(num_nodes=2, num_subcarriers=16)
    all_names = set(_names(tiny_moe)) | {n for n, _ in tiny_moe.named_buffers()}
    expert_names = set(tiny_moe.expert_parameter_names())
    orig = _names(tiny_moe)

    def held(eng, node):
        return ray.get(eng._actors[node].held_parameters.remote())

    def check_share(eng, place):
        for node in range(2):
            h = held(eng, node)
            assert set(h["shared"]) == all_names - expert_names
            mine = tuple(int(j) for j in np.flatnonzero(place == node))
            assert h["experts"] == [mine, mine]
            assert h["expert_bytes"] == tensor_bytes(
                v for l in range(2) for j in mine for v in tiny_moe.expert_parameters(l, j).values())
            assert h["bytes"] == tensor_bytes(tiny_moe.parameters()) + tensor_bytes(tiny_moe.buffers()) - \
                tensor_bytes(orig[n] for n in expert_names) + h["expert_bytes"]

    def run(engine, place, kills=()):
        rt = DMoERuntime(tiny_moe, JESAPolicy(0.8, 2), system=system, seed=2, record_selection=True,
                         placement=place, engine=engine, node_kills=list(kills))
        outs = [rt.run_round(queries[b : b + 2]) for b in range(0, 4, 2)]
        return rt, [lg for o in outs for lg in o.logits], [s for o in outs for s in o.selections]

    def same(a, b):
        for x, y in zip(a[1], b[1]):
            assert torch.equal(x, y)
        for x, y in zip(a[2], b[2]):
            np.testing.assert_array_equal(x, y)
        assert a[0].ledger.energy_j == b[0].ledger.energy_j
        np.testing.assert_array_equal(a[0].ledger.per_layer().energy_comm_j, b[0].ledger.per_layer().energy_comm_j)
        assert a[0].faults.events == b[0].faults.events

    place = np.array([0, 1, 1, 0])
    node_experts = [[tuple(np.flatnonzero(place == n).tolist())] * 2 for n in range(2)]
    eng = RayEngine(tiny_moe, 2, node_experts=node_experts)
    try:
        check_share(eng, place)
        kills = [NodeKill(0, 1, 1, "experts")]
        remote = run(eng, place, kills)
        assert remote[0].faults.failures == 1 and remote[0].faults.joins == 1
        check_share(eng, place)  # node 1 restarted with its share only
        same(run("local", place, kills), remote)
        # another placement on the same engine: each actor gets only the experts it lacks
        other = np.array([1, 1, 0, 0])
        sent = {}
        import dmoe.runtime.ray_engine as re_mod

        orig_share = re_mod.expert_share

        def spy(model, experts, held=None):
            out = orig_share(model, experts, held)
            sent.setdefault("calls", []).append({l: sorted(d) for l, d in out.items()})
            return out

        re_mod.expert_share = spy
        try:
            remote = run(eng, other)
        finally:
            re_mod.expert_share = orig_share
        # node 0 held {0, 3} and now holds {2, 3}; node 1 held {1, 2}, now {0, 1}
        assert sent["calls"] == [{0: [2], 1: [2]}, {0: [0], 1: [0]}]
        check_share(eng, other)
        same(run("local", other), remote)
    finally:
        eng.shutdown()


def test_combine_ahead_is_combine_then_attend_gate(tiny_moe, tiny_tokenizer):
    """The server's look-ahead (step 2 of the next layer inside step 5's call) gives what
    a separate attend_gate after the combine gives: the same checkpoints, scores and source
    batch, bit for bit; without it the node returns no scores and no source."""
    from dmoe.data import load_mmlu, pack_question
    from dmoe.runtime.node import HostedQuery

    qs = [pack_question(tiny_tokenizer, x) for x in load_mmlu("anatomy", limit=2)]
    hq = [HostedQuery(i, q.input_ids, q.positions, q.attention_mask, q.score_rows) for i, q in enumerate(qs)]
    layer = next(l for l in range(tiny_moe.num_layers - 1) if tiny_moe.is_moe_layer(l) and tiny_moe.is_moe_layer(l + 1))
    a, b = ExpertNode(0, tiny_moe), ExpertNode(0, tiny_moe)
    outs = {}
    for node, ahead in ((a, True), (b, False)):
        node.host(hq)
        for l in range(layer):
            if tiny_moe.is_moe_layer(l):
                raise AssertionError("the tiny model's first layers are expected dense")  # pragma: no cover
            node.dense_layer(l, [0, 1])
        scores, source = node.attend_gate(layer, [0, 1])
        sizes = [q.num_tokens for q in qs]
        assert source.shape == (sum(sizes), tiny_moe.hidden_size)
        assert torch.equal(source[: sizes[0]], node._queries[0]["u"])  # stacked in qid order
        # every token selects expert 0 (node 0's); one source batch, all its rows
        sel = np.eye(tiny_moe.num_experts, dtype=bool)[np.zeros(sum(sizes), dtype=int)]
        (y,) = node.ffn(layer, (0,), sel[:, :1], source)
        outs[ahead] = node.combine(layer, (0, 1), sel, [[(0, (0,), (0, 1))]], ahead, [y])
    got, ref = outs[True], outs[False]
    assert ref[0] == {} and ref[1] is None
    for x, y in zip(got[2:], ref[2:]):
        assert torch.equal(x, y)
    scores, source = b.attend_gate(layer + 1, [0, 1])
    assert got[0].keys() == {0, 1} and all(np.array_equal(got[0][q], scores[q]) for q in (0, 1))
    assert torch.equal(got[1], source)
