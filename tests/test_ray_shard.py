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
    from dmoe.optimize.policies import JESAPolicy
    from dmoe.runtime import DMoERuntime, NodeKill
    from dmoe.runtime.ray_engine import RayEngine
    from dmoe.system import SystemConfig

    queries = [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=4)]
    system = SystemConfig(num_experts=2, num_subcarriers=16)
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


def test_attend_ahead_only_after_the_previous_layer_and_once(tiny_moe, tiny_tokenizer):
    """The server's look-ahead (step 2 right behind step 5) attends a query only once its
    host completed the previous layer, and never twice."""
    from dmoe.data import load_mmlu, pack_question
    from dmoe.runtime.node import HostedQuery

    q = pack_question(tiny_tokenizer, load_mmlu("anatomy", limit=1)[0])
    hq = HostedQuery(0, q.input_ids, q.positions, q.attention_mask, q.score_rows)
    a, b = ExpertNode(0, tiny_moe), ExpertNode(0, tiny_moe)
    for node in (a, b):
        node.host([hq])
    assert a.attend_ahead(0, [0]) == {}  # nothing completed yet: layer 0 is the server's to start
    for node in (a, b):
        node.dense_layer(0, [0])  # layer 0 completed (the whole FFN at the host)
    ahead = a.attend_ahead(1, [0, 7])  # an unknown query is skipped
    ref = b.attend_gate(1, [0])
    assert ahead.keys() == {0} and np.array_equal(ahead[0], ref[0])
    assert a.attend_ahead(1, [0]) == {}  # never twice
    assert torch.equal(a._queries[0]["u"], b._queries[0]["u"])
