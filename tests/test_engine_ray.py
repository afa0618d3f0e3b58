"""The Ray engine against the in-process engine, on a tiny random MoE with real actors.

Same seed -> same logits (<= 1e-5), same selections, same ledger, for every policy and
both combine modes; node loss (seeded fault model, scheduled ray.kill, a real os.kill of
an actor process) gives the same outcome in both engines, and every answer still equals
the centralised pass with the selections actually used.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from conftest import make_tiny_moe
from dmoe.data import load_mmlu, pack_question
from dmoe.policies import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.runtime import DMoERuntime, LocalEngine, NodeKill, NoLiveNodeError, evaluate_policy
from dmoe.system import SystemConfig

ray = pytest.importorskip("ray")

K = 4
SYSTEM = SystemConfig(num_nodes=K, num_subcarriers=16)
POLICIES = [Dense(), TopK(1), TopK(2), Homogeneous(0.6, 2), JESAPolicy(0.8, 2), LowerBound(0.8, 3)]


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama):
    return make_tiny_moe(tiny_llama, K)


@pytest.fixture(scope="module")
def ray_engine(ray_session, tiny_moe):
    from dmoe.runtime.ray_engine import RayEngine

    eng = RayEngine(tiny_moe)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def queries(tiny_tokenizer):
    return [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=7)]


def _run(model, queries, policy, engine, *, seed=3, **kw):
    rt = DMoERuntime(model, policy, system=SYSTEM, seed=seed, record_selection=True, engine=engine, **kw)
    outs = [rt.run_round(queries[b : b + K]) for b in range(0, len(queries), K)]
    logits = [lg for o in outs for lg in o.logits]
    sels = [s for o in outs for s in o.selections]
    return rt, logits, sels


def _same(a, b):
    rt_a, lg_a, sel_a = a
    rt_b, lg_b, sel_b = b
    for x, y in zip(lg_a, lg_b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    for x, y in zip(sel_a, sel_b):
        np.testing.assert_array_equal(x, y)
    ta, tb = rt_a.ledger.per_layer(), rt_b.ledger.per_layer()
    for f in ("energy_comm_j", "energy_comp_j"):
        np.testing.assert_allclose(getattr(ta, f), getattr(tb, f), rtol=1e-12)
    for f in ("tokens", "expert_calls", "transmissions", "infeasible_tokens"):
        np.testing.assert_array_equal(getattr(ta, f), getattr(tb, f))
    np.testing.assert_array_equal(rt_a.ledger.selection_counts, rt_b.ledger.selection_counts)
    assert rt_a.faults.summary() == rt_b.faults.summary()
    assert rt_a.faults.events == rt_b.faults.events


def _matches_centralised(model, queries, logits, sels):
    for q, lg, sel in zip(queries, logits, sels):
        ref = model.forward_masked(
            q.input_ids, positions=q.positions, attention_mask=q.attention_mask, selection=torch.from_numpy(sel)
        )[q.score_rows]
        torch.testing.assert_close(lg, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("combine", ["sum", "weighted"])
def test_ray_equals_local_for_every_policy(tiny_moe, queries, ray_engine, combine):
    tiny_moe.combine = combine
    try:
        for policy in POLICIES:
            local = _run(tiny_moe, queries, policy, "local")
            remote = _run(tiny_moe, queries, policy, ray_engine)
            _same(local, remote)
    finally:
        tiny_moe.combine = "sum"


def test_nodes_are_separate_processes_with_one_torch_thread(ray_engine):
    pids = {ray_engine.pid(j) for j in range(K)}
    assert len(pids) == K and os.getpid() not in pids
    threads = ray.get([ray_engine._actors[j].__ray_call__.remote(lambda self: torch.get_num_threads())
                       for j in range(K)])
    assert threads == [1] * K


def test_fault_model_same_outcome_in_both_engines(tiny_moe, queries, ray_engine):
    policy = JESAPolicy(0.8, 2)
    # seed 0, p = 0.2: node 3 dies in layer 1 and node 0 in layer 2 of round 0, both after the
    # schedule was sent, node 1 in layer 1 of round 1 before attention; no rejoin
    kw = dict(seed=0, node_failure_rate=0.2, node_rejoin=False)
    local = _run(tiny_moe, queries, policy, "local", **kw)
    remote = _run(tiny_moe, queries, policy, ray_engine, **kw)
    _same(local, remote)
    f = local[0].faults
    assert (f.failures, f.replans, f.joins) == (3, 2, 0) and f.rehosted == 5
    # every query answered, and each answer is the centralised pass with the selections used
    assert len(local[1]) == len(queries)
    _matches_centralised(tiny_moe, queries, local[1], local[2])
    # failures cost energy: failed attempts and re-host transfers are charged
    clean = _run(tiny_moe, queries, policy, "local", seed=0)
    assert local[0].ledger.energy_lost_j > 0 and local[0].ledger.energy_rehost_j > 0
    np.testing.assert_array_equal(local[0].ledger.per_layer().tokens, clean[0].ledger.per_layer().tokens)


def test_zero_failure_rate_changes_nothing(tiny_moe, queries):
    a = _run(tiny_moe, queries[:K], TopK(2), "local")
    b = _run(tiny_moe, queries[:K], TopK(2), "local", node_failure_rate=0.0)
    _same(a, b)


@pytest.mark.parametrize("phase", ["attention", "experts"])
def test_scheduled_kill_of_a_host(tiny_moe, queries, ray_engine, phase):
    kills = [NodeKill(round=0, layer=1, node=2, phase=phase)]
    local = _run(tiny_moe, queries, TopK(2), "local", node_kills=kills)
    remote = _run(tiny_moe, queries, TopK(2), ray_engine, node_kills=kills)
    _same(local, remote)
    f = local[0].faults
    assert f.failures == 1 and f.rehosted == 1 and f.replans == (phase == "experts")
    assert f.joins == 1  # node 2 rejoined for round 1
    _matches_centralised(tiny_moe, queries, local[1], local[2])
    # at layer 2 of round 0 no token used expert 2, and query 2 moved to node 0 (least loaded, lowest index)
    assert not local[2][2][1][:, 2].any()
    assert any(e[3] == "rehost:2:2->0" for e in f.events)
    # the re-host transfer: query 2's tokens, once
    assert local[0].ledger.rehost_tokens == queries[2].num_tokens


class _KillPid:
    """A policy wrapper that kills a node's process (SIGKILL) while the server schedules."""

    def __init__(self, policy, pid, round_layer):
        self.policy, self.pid, self.at, self.calls = policy, pid, round_layer, 0
        self.name = policy.name

    def schedule(self, scores, source, rates, layer, **kw):
        if layer == self.at and self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        return self.policy.schedule(scores, source, rates, layer, **kw)


def test_real_process_kill_is_survived(tiny_moe, queries, ray_engine):
    pid = ray_engine.pid(1)
    policy = _KillPid(JESAPolicy(0.8, 2), pid, round_layer=2)
    remote = _run(tiny_moe, queries[:K], policy, ray_engine)
    # the same as a scheduled kill of node 1 at layer 2 (0-based 1) after the schedule was sent
    local = _run(tiny_moe, queries[:K], JESAPolicy(0.8, 2), "local",
                 node_kills=[NodeKill(round=0, layer=1, node=1, phase="experts")])
    _same(local, remote)
    assert remote[0].faults.failures == 1 and remote[0].faults.replans == 1
    assert not ray_engine.alive()[1]
    # the next runtime on this engine starts node 1 again
    again = _run(tiny_moe, queries[:K], TopK(1), ray_engine)
    assert ray_engine.alive().all() and again[0].faults.failures == 0


def test_all_nodes_failed_keeps_partial_results(tiny_moe, queries):
    kills = [NodeKill(round=1, layer=0, node=j, phase="attention") for j in range(K)]
    with pytest.raises(NoLiveNodeError, match="no expert can serve") as info:
        evaluate_policy(tiny_moe, queries, TopK(2), system=SYSTEM, seed=0, progress=False, node_kills=kills)
    part = info.value.partial
    assert part is not None and not part.complete
    assert part.num_questions == K and np.isfinite(part.logliks).all()
    full = evaluate_policy(tiny_moe, queries, TopK(2), system=SYSTEM, seed=0, progress=False)
    np.testing.assert_allclose(part.logliks, full.logliks[:K])


def test_last_node_standing_serves_every_query(tiny_moe, queries):
    # three of four nodes die in layer 1: the last one hosts all queries and is the only expert
    kills = [NodeKill(round=0, layer=0, node=j, phase="experts") for j in (0, 1, 3)]
    rt, logits, sels = _run(tiny_moe, queries[:K], Homogeneous(0.6, 2), "local", node_kills=kills)
    assert rt.faults.failures == 3 and rt.faults.rehosted == 3
    for s in sels:
        assert not s[:, :, [0, 1, 3]].any()
    _matches_centralised(tiny_moe, queries[:K], logits, sels)
    # then the last node dies as well, while it holds every query
    kills.append(NodeKill(round=0, layer=1, node=2, phase="attention"))
    with pytest.raises(NoLiveNodeError):
        _run(tiny_moe, queries[:K], Homogeneous(0.6, 2), "local", node_kills=kills)


def test_rejoin_and_new_node_between_rounds(tiny_moe, queries):
    eng = LocalEngine(tiny_moe)
    rt = DMoERuntime(tiny_moe, Dense(), system=SYSTEM, engine=eng, node_rejoin=False, record_selection=True,
                     node_kills=[NodeKill(round=0, layer=0, node=3, phase="attention")])
    out0 = rt.run_round(queries[:K])
    out1 = rt.run_round(queries[:K])  # node 3 stays down: dense uses the three others
    assert not out0.selections[0][:, :, 3].any() and not out1.selections[0][:, :, 3].any()
    assert out1.selections[0][:, :, :3].all()
    rt.join_node(3)
    out2 = rt.run_round(queries[:K])
    assert out2.selections[0].all()
    assert rt.faults.joins == 1 and rt.faults.failures == 1
    for lg_a, lg_b in zip(out0.logits, out1.logits):
        torch.testing.assert_close(lg_a, lg_b)
    with pytest.raises(ValueError, match="`node`"):
        rt.join_node(K)


def test_bad_fault_and_engine_arguments(tiny_moe):
    from dmoe.runtime.ray_engine import _check_reachable

    for bad in (-0.1, 1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="`node_failure_rate`"):
            DMoERuntime(tiny_moe, Dense(), system=SYSTEM, node_failure_rate=bad)
    with pytest.raises(ValueError, match="`engine`"):
        DMoERuntime(tiny_moe, Dense(), system=SYSTEM, engine="spark")
    with pytest.raises(ValueError, match="`ray_address`"):
        DMoERuntime(tiny_moe, Dense(), system=SYSTEM, ray_address="127.0.0.1:6379")
    with pytest.raises(ConnectionError, match="no Ray cluster reachable"):
        _check_reachable("127.0.0.1:1", 2.0)
    with pytest.raises(ValueError, match="`ray_address`"):
        _check_reachable("nonsense", 2.0)
    with pytest.raises(ValueError, match="`phase`"):
        NodeKill(0, 0, 0, phase="later")


def test_reproduce_sweep_as_ray_tasks_equals_local(tiny_llama, tiny_tokenizer, ray_session, tmp_path):
    import json

    from dmoe.experiments import Options, run_experiments
    from dmoe.experiments.context import Context

    moe8 = make_tiny_moe(tiny_llama, 8)

    class TinyContext(Context):
        def model(self):
            return moe8

        def packed(self, subjects, limit):
            qs = self.questions(subjects, limit)
            return qs, [pack_question(tiny_tokenizer, q) for q in qs]

    opts = Options(quick=True, limit=3, subjects=("anatomy",))
    data = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        ctx = TinyContext(out, progress=False, log=lambda *_: None, engine=engine)
        run_experiments(["fig7"], out, options=opts, context=ctx, log=lambda *_: None, engine=engine)
        data[engine] = json.loads((out / "fig7.json").read_text())["data"]
        if engine == "ray":
            # every evaluation ran as a task before the experiment, which then found them cached
            assert ctx.evaluations_run == 5 and ctx.evaluations_cached == 5
            again = TinyContext(out, progress=False, log=lambda *_: None, engine=engine)
            run_experiments(["fig7"], out, options=opts, context=again, log=lambda *_: None, engine=engine,
                            force=True)
            assert again.evaluations_run == 0 and again.evaluations_cached == 5  # resumable: all cached
    # the same numbers (the tasks run torch on one thread: float rounding may differ slightly)
    for a, b in zip(data["local"]["policies"], data["ray"]["policies"]):
        assert a.keys() == b.keys()
        for key in a:
            if "seconds" in key:
                continue
            if isinstance(a[key], (str, dict)):
                assert a[key] == b[key], key
            else:
                np.testing.assert_allclose(np.asarray(a[key], float), np.asarray(b[key], float), rtol=1e-6, err_msg=key)


def test_dense_layers_and_always_on_run_at_the_source(tiny_llama, queries):
    from dmoe.model.moe import MoEModel

    class DenseFirst(MoEModel):
        """Layer 0 has no routed experts (its whole FFN is always on), like DeepSeek-V3's first layers."""

        def is_moe_layer(self, layer):
            return layer != 0

        def always_on(self, layer, x):
            return self.masked_ffn(layer, x, None) if layer == 0 else None

        def always_on_size(self, layer):
            return float(self.num_experts) if layer == 0 else 0.0

    model = make_tiny_moe(tiny_llama, K, cls=DenseFirst)
    rt, logits, sels = _run(model, queries[:K], TopK(1), "local", node_kills=[NodeKill(0, 0, 1, "attention")])
    t = rt.ledger.per_layer()
    # nothing scheduled at the dense layer: no transmissions, its FFN charged as K slices at the host
    assert t.transmissions[0] == 0 and t.expert_calls[0] == 0
    assert t.tokens[0] == sum(q.num_tokens for q in queries[:K])
    assert t.energy_always_on_j[0] > 0 and t.energy_comp_j[0] == pytest.approx(t.energy_always_on_j[0])
    assert rt.faults.rehosted == 1  # the dense layer re-hosts like any other
    for q, lg, sel in zip(queries[:K], logits, sels):
        sel = sel.copy()
        sel[0] = True  # layer 0 = every slice = the dense FFN
        ref = model.forward_masked(q.input_ids, positions=q.positions, attention_mask=q.attention_mask,
                                   selection=torch.from_numpy(sel))[q.score_rows]
        torch.testing.assert_close(lg, ref, atol=1e-5, rtol=1e-5)


def test_real_moe_family_same_on_ray(ray_session, tmp_path):
    """DeepSeek-V3 (a dense first layer, a shared expert, its own combination weights) on
    real actors gives what the in-process engine gives, with and without a node loss."""
    from test_hf_moe import _causal_query, save_tiny_moe

    from dmoe.model import load_expert_model
    from dmoe.runtime.ray_engine import RayEngine
    from dmoe.system import default_num_subcarriers

    save_tiny_moe("deepseek_v3", tmp_path)
    model = load_expert_model(str(tmp_path))
    k = model.num_experts
    system = SystemConfig(num_nodes=k, num_subcarriers=default_num_subcarriers(k))
    gen = torch.Generator().manual_seed(0)
    qs = [_causal_query(torch.randint(0, 256, (int(n),), generator=gen)) for n in torch.randint(5, 12, (k,))]
    eng = RayEngine(model)
    try:
        for kills in ([], [NodeKill(0, 1, 3, "experts")]):
            out = {}
            for name, engine in (("local", "local"), ("ray", eng)):
                rt = DMoERuntime(model, JESAPolicy(0.8, 2), system=system, seed=1, record_selection=True,
                                 engine=engine, node_kills=kills)
                out[name] = (rt, rt.run_round(qs))
            (rt_a, a), (rt_b, b) = out["local"], out["ray"]
            for x, y in zip(a.logits, b.logits):
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
            for x, y in zip(a.selections, b.selections):
                np.testing.assert_array_equal(x, y)
            assert rt_a.ledger.energy_j == pytest.approx(rt_b.ledger.energy_j, rel=1e-12)
            assert rt_a.ledger.energy_always_on_j > 0
            assert rt_a.ledger.energy_always_on_j == pytest.approx(rt_b.ledger.energy_always_on_j)
            assert rt_a.faults.summary() == rt_b.faults.summary()
            assert rt_a.faults.failures == len(kills)
    finally:
        eng.shutdown()


@pytest.mark.parametrize("phase", ["experts", "attention"])
def test_imperfect_csi_mobility_and_node_loss_same_in_both_engines(tiny_moe, queries, ray_engine, phase):
    """Issue 9's loop with issue 10's channel: schedules on estimated rates, transfers meet the
    true rates (lost packets, dropped links), a node dies mid-round; both engines agree on
    everything (logits, effective selections, both ledgers, the fault log)."""
    from dmoe.channels import ChannelConfig

    channel = ChannelConfig("tdl-a", speed_kmh=30.0, csi_error=0.5, csi_delay=1)
    kills = [NodeKill(round=0, layer=1, node=2, phase=phase)]
    local = _run(tiny_moe, queries, JESAPolicy(0.8, 2), "local", channel=channel, node_kills=kills)
    remote = _run(tiny_moe, queries, JESAPolicy(0.8, 2), ray_engine, channel=channel, node_kills=kills)
    _same(local, remote)
    rt, rr = local[0], remote[0]
    np.testing.assert_array_equal(rt.latency.layer_round_s, rr.latency.layer_round_s)
    assert rt.ledger.failed_attempts == rr.ledger.failed_attempts > 0
    assert rt.ledger.dropped_tokens == rr.ledger.dropped_tokens
    assert rt.ledger.energy_planned_j != rt.ledger.energy_j
    assert rt.faults.failures == 1 and rt.faults.rehosted == 1 and rt.faults.replans == (phase == "experts")
    if phase == "experts":
        assert rt.ledger.energy_lost_j > 0
    # the answers are the centralised pass with the experts that actually received the tokens
    _matches_centralised(tiny_moe, queries, local[1], local[2])
    assert (rt.latency.layer_round_s > 0).all() and rt.latency.query_s.shape == (len(queries),)


def test_replan_adds_the_failed_attempts_time(tiny_moe, queries):
    """A re-planned layer round takes the failed attempt's time plus the new attempt's."""
    kill = [NodeKill(round=0, layer=1, node=2, phase="experts")]
    base = _run(tiny_moe, queries[:K], TopK(2), "local")[0]
    hit = _run(tiny_moe, queries[:K], TopK(2), "local", node_kills=kill)[0]
    assert hit.faults.replans == 1
    # layer 1 (0-based) of round 0: both attempts meet the same channel, the first is the unfaulted one
    assert hit.latency.layer_round_s[0, 1] > base.latency.layer_round_s[0, 1]
    np.testing.assert_array_equal(hit.latency.layer_round_s[0, 0], base.latency.layer_round_s[0, 0])


def test_placement_with_node_kill_same_on_ray(ray_session, tiny_moe, queries):
    """Several experts per node (issue 12): N = 2 actors hold 2 experts each; a node's death
    takes both experts; Ray and local agree to the bit on selections and the ledger."""
    from dmoe.runtime.ray_engine import RayEngine

    system = SystemConfig(num_nodes=2, num_subcarriers=16)
    place = np.array([0, 1, 1, 0])
    kw = dict(system=system, seed=2, record_selection=True, placement=place, node_rejoin=True,
              node_kills=[NodeKill(0, 1, 1, "experts")])

    def run(engine):
        rt = DMoERuntime(tiny_moe, JESAPolicy(0.8, 2), engine=engine, **kw)
        outs = [rt.run_round(queries[b : b + 2]) for b in range(0, 4, 2)]
        return rt, [lg for o in outs for lg in o.logits], [s for o in outs for s in o.selections]

    eng = RayEngine(tiny_moe, 2)
    try:
        remote = run(eng)
        assert len({eng.pid(n) for n in range(2)}) == 2
    finally:
        eng.shutdown()
    local = run("local")
    _same(local, remote)
    assert local[0].faults.failures == 1 and local[0].faults.joins == 1
    _matches_centralised(tiny_moe, queries[:4], local[1], local[2])
    # round 0 after the kill: experts 1 and 2 (node 1) serve nobody; round 1 (rejoined) may use them
    assert not local[2][0][1:, :, [1, 2]].any() and not local[2][1][1:, :, [1, 2]].any()
