"""An expert node's step-4/5 calls (``ffn``, ``combine``) refuse inconsistent arguments with a
ValueError naming the argument, before any query's state changes, instead of a deep torch
error or a silently wrong layer output (dropped or truncated expert outputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_moe
from dmoe.runtime.node import ExpertNode, HostedQuery

K, S, LAYER = 4, (3, 2), 0


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama):
    return make_tiny_moe(tiny_llama, K)


def _node(model):
    node = ExpertNode(0, model, [tuple(range(K))] * model.num_layers)
    node.host([HostedQuery(i, torch.arange(s) + 5, torch.arange(s), None, torch.arange(s)) for i, s in enumerate(S)])
    return node


@pytest.fixture()
def setup(tiny_moe):
    node = _node(tiny_moe)
    _, source = node.attend_gate(LAYER, [0, 1])
    sel = np.zeros((sum(S), K), dtype=bool)
    sel[:, 0] = True
    sel[::2, 1] = True
    return node, source, sel


@pytest.mark.parametrize("case, match", [
    ("layer", "`layer` must be in"),
    ("no experts", "`experts` must name"),
    ("repeated expert", "`experts` must name"),
    ("float mask", "`mask` must be a bool"),
    ("short mask", "`mask` must have shape"),
    ("narrow source", "`sources`"),
    ("1-D source", "`sources`"),
])
def test_ffn_refuses_bad_arguments(setup, case, match):
    node, source, sel = setup
    args = {
        "layer": (99, (0,), sel[:, :1], source),
        "no experts": (LAYER, (), sel[:, :0], source),
        "repeated expert": (LAYER, (0, 0), sel[:, [0, 0]], source),
        "float mask": (LAYER, (0,), sel[:, :1].astype(float), source),
        "short mask": (LAYER, (0,), sel[:-1, :1], source),
        "narrow source": (LAYER, (0,), sel[:, :1], source[:, :7]),
        "1-D source": (LAYER, (0,), sel[:1, :1], source[0]),
    }[case]
    with pytest.raises(ValueError, match=match):
        node.ffn(*args)


def test_combine_refuses_mismatches_before_changing_state(setup):
    node, source, sel = setup
    y = node.ffn(LAYER, (0, 1), sel[:, :2], source)
    recv = [[(0, (0, 1), (0, 1))]]
    only0 = sel.copy()
    only0[:, 1] = False
    bad = {
        "`recv` must have one entry": dict(recv=recv + recv),  # an output object missing
        "`selection` must be a bool": dict(selection=sel[:, :3]),
        "`selection` must have the 5 rows": dict(selection=sel[:-1]),
        # the host's alpha and the node's mask disagree: the batch has more (or fewer) rows
        "`outputs`: batch 0": dict(selection=only0),
        "`recv`: entry 0 names slot 3": dict(recv=[[(3, (0, 1), (0, 1))]]),
        "`ahead`: layer 2": dict(layer=1, ahead=True),
        "`ahead` must be a bool": dict(ahead="yes"),
    }
    # one expert per batch: the batch's row count is checked too (it was sliced silently)
    bad_one = dict(selection=only0, recv=[[(0, (0,), (0, 1))]])
    for match, kw in [*bad.items(), ("`outputs`: batch 0", bad_one)]:
        a = dict(layer=LAYER, qids=(0, 1), selection=sel, recv=recv, ahead=False, outputs=[y])
        a.update(kw)
        with pytest.raises(ValueError, match=match):
            node.combine(a["layer"], a["qids"], a["selection"], a["recv"], a["ahead"], *a["outputs"])
        assert node._queries[0]["layer"] == LAYER and "u" in node._queries[0]  # untouched
    out = node.combine(LAYER, (0, 1), sel, recv, False, y)
    assert out[0] == {} and out[1] is None and [h.shape for h in out[2:]] == [(s, source.shape[1]) for s in S]


def test_connect_ray_merges_or_refuses_a_system_config(monkeypatch):
    """``connect_ray``'s embedded Ray: the caller's ``_system_config`` entries override
    :data:`EMBEDDED_SYSTEM_CONFIG`'s, None keeps the defaults, a non-dict is refused."""
    ray = pytest.importorskip("ray")
    from dmoe.runtime import ray_engine

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    assert ray_engine.connect_ray(num_cpus=1, _system_config={"max_direct_call_object_size": 1000, "x": 1})
    assert ray_engine.connect_ray(num_cpus=1, _system_config=None)
    assert calls[0]["_system_config"] == {"max_direct_call_object_size": 1000, "x": 1}
    assert calls[1]["_system_config"] == ray_engine.EMBEDDED_SYSTEM_CONFIG
    with pytest.raises(TypeError, match="`_system_config` must be a dict"):
        ray_engine.connect_ray(num_cpus=1, _system_config=[("a", 1)])
    assert len(calls) == 2
