"""Generation with the Ray engine (one actor process per node) on a tiny random MoE.

Same seed -> the same tokens, logits (<= 1e-5) and ledger as the in-process engine; a host
killed mid-generation (``ray.kill`` at a scheduled layer round, or a real ``os.kill`` of its
actor process between two decode steps) loses its KV cache: the query is re-hosted, its
cache rebuilt from its tokens, charged, and the greedy text is the fault-free one.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import make_tiny_moe
from dmoe.policies import Dense, JESAPolicy, TopK
from dmoe.runtime import DMoERuntime, NodeKill
from dmoe.runtime.generate import GenerationConfig, generate
from dmoe.system import SystemConfig

ray = pytest.importorskip("ray")

K = 4
SYSTEM = SystemConfig(num_nodes=K, num_subcarriers=16)
CFG = GenerationConfig(max_new_tokens=8, stop_token_ids=())


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama):
    return make_tiny_moe(tiny_llama, K)


@pytest.fixture(scope="module")
def ray_engine(ray_session, tiny_moe):
    from dmoe.runtime.ray_engine import RayEngine

    eng = RayEngine(tiny_moe)
    yield eng
    eng.shutdown()


def _prompts():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, 512, (n,), generator=g).tolist() for n in (6, 4, 9, 5, 7)]


def _gen(model, engine, policy=Dense(), **kw):
    hook = kw.pop("on_token", None)
    rt = DMoERuntime(model, policy, system=SYSTEM, seed=2, engine=engine, **kw)
    res = generate(rt, _prompts(), CFG, prefill_policy=Dense(), return_logits=True, on_token=hook)
    return rt, res


def test_ray_generation_equals_local(tiny_moe, ray_engine):
    a_rt, a = _gen(tiny_moe, "local", JESAPolicy(0.8, 2))
    b_rt, b = _gen(tiny_moe, ray_engine, JESAPolicy(0.8, 2))
    for x, y in zip(a.outputs, b.outputs):
        assert x.token_ids == y.token_ids
        torch.testing.assert_close(x.logits, y.logits, atol=1e-5, rtol=1e-5)
    assert a.prefill.energy_j == pytest.approx(b.prefill.energy_j, rel=1e-12)
    assert a.decode.energy_j == pytest.approx(b.decode.energy_j, rel=1e-12)
    assert a.decode.air_time_s == pytest.approx(b.decode.air_time_s, rel=1e-12)
    assert b_rt.engine_name == "ray"


@pytest.mark.parametrize("phase", ["attention", "experts"])
def test_ray_kill_mid_generation_rebuilds_same_text(tiny_moe, ray_engine, phase):
    _, base = _gen(tiny_moe, ray_engine, TopK(2))
    # round 3 = the third decode step of the first batch; node 2 hosts query 2
    rt, res = _gen(tiny_moe, ray_engine, TopK(2), node_kills=[NodeKill(3, 1, 2, phase)])
    assert [o.token_ids for o in res.outputs] == [o.token_ids for o in base.outputs]
    assert rt.faults.failures == 1 and res.rehosted == 1
    assert res.rebuild.rounds == 1 and res.rebuild.tokens == len(_prompts()[2]) + 3 and res.rebuild.energy_j > 0
    assert res.decode.energy_j > base.decode.energy_j
    assert ray_engine.alive().all()  # node 2 rejoined for the rebuild round


def test_real_process_kill_between_decode_steps(tiny_moe, ray_engine):
    _, base = _gen(tiny_moe, ray_engine, TopK(2))
    pid = ray_engine.pid(0)
    seen = []

    def kill_after_third_token(q, tok):
        seen.append(q)
        if q == 0 and seen.count(0) == 3:
            os.kill(pid, signal.SIGKILL)

    rt, res = _gen(tiny_moe, ray_engine, TopK(2), on_token=kill_after_third_token)
    assert [o.token_ids for o in res.outputs] == [o.token_ids for o in base.outputs]
    assert rt.faults.failures == 1 and res.rehosted == 1
    # found dead when the next decode step fed query 0 its token: rebuilt from the prompt + 3 tokens
    assert res.rebuild.tokens == len(_prompts()[0]) + 3
    assert any(e[3].startswith("rebuild:0:") for e in rt.faults.events)
