"""The DMoE runtime with several experts per node (issue 12) on a tiny random MoE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmoe.data import load_mmlu, pack_question
from dmoe.energy import schedule_energy
from dmoe.optimize.policies import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.placement import node_selection, round_robin_placement
from dmoe.runtime import DMoERuntime, EnergyLedger, evaluate_policy
from dmoe.system import SystemConfig

E, N = 8, 4


@pytest.fixture(scope="module")
def moe8(tiny_llama):
    from dmoe.model.moe import MoEModel
    from dmoe.model.router import Router

    torch.manual_seed(2)
    F = tiny_llama.config.intermediate_size
    L = tiny_llama.config.num_hidden_layers
    parts = torch.stack([torch.randperm(F).view(E, F // E) for _ in range(L)])
    routers = []
    for _ in range(L):
        r = Router(tiny_llama.config.hidden_size, E)
        torch.nn.init.normal_(r.weight, std=0.5)
        routers.append(r)
    return MoEModel(tiny_llama, parts, routers)


@pytest.fixture(scope="module")
def queries(tiny_tokenizer):
    return [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=8)]


@pytest.mark.parametrize("policy", [Dense(), TopK(3), Homogeneous(0.6, 3), JESAPolicy(0.8, 3), LowerBound(0.8, 3)],
                         ids=lambda p: p.name)
def test_runtime_with_placement_matches_centralised_and_ledger(moe8, queries, policy):
    system = SystemConfig(num_experts=N, num_subcarriers=16)
    placement = np.stack([round_robin_placement(E, N), np.arange(E) // 2])  # per layer
    rt = DMoERuntime(moe8, policy, system=system, seed=4, record_selection=True, placement=placement)
    out = rt.run_round(queries[:N])
    for q, logits, sel in zip(queries[:N], out.logits, out.selections):
        ref = moe8.forward_masked(q.input_ids, positions=q.positions, attention_mask=q.attention_mask,
                                  selection=torch.from_numpy(sel))[q.score_rows]
        torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    # ledger: one transmission per (token, remote node)
    tx = 0
    source = np.concatenate([np.full(q.num_tokens, i) for i, q in enumerate(queries[:N])])
    for layer in range(moe8.num_layers):
        sel = np.concatenate([s[layer] for s in out.selections])
        need = node_selection(sel, placement[layer], N)
        need[np.arange(len(source)), source] = False
        tx += int(need.sum())
    assert rt.ledger.per_layer().transmissions.sum() == tx
    assert rt.ledger.selection_counts.shape == (moe8.num_layers, E)


def test_identity_placement_changes_nothing(moe8, queries):
    system = SystemConfig(num_experts=E, num_subcarriers=64)
    a = evaluate_policy(moe8, queries, JESAPolicy(0.8, 2), system=system, seed=1, progress=False)
    b = evaluate_policy(moe8, queries, JESAPolicy(0.8, 2), system=system, seed=1, progress=False,
                        placement=np.arange(E))
    assert a.energy_j == pytest.approx(b.energy_j, rel=1e-12)
    np.testing.assert_allclose(a.logliks, b.logliks)


def test_ledger_with_placement_bills_node_pairs():
    system = SystemConfig(num_experts=2, num_subcarriers=4)
    ledger = EnergyLedger(1, system, np.array([0, 0, 1, 1]))
    rates = np.full((2, 2, 4), 1e5)
    sub = np.array([[-1, 0], [1, -1]])
    # token 0 at node 0 uses experts 2 and 3 (both on node 1): one transmission
    sel = np.array([[False, False, True, True], [True, False, False, False]])
    comm, comp = ledger.charge(0, sel, np.array([0, 1]), sub, rates)
    bits = system.bits_per_token
    assert comm == pytest.approx(2 * system.tx_power_w * bits / 1e5)
    a = system.comp_energy_per_token_j
    assert comp == pytest.approx(a[1] * 0.5 * 2 + a[0] * 0.5)
    assert ledger.per_layer().transmissions.tolist() == [2]
    bill = schedule_energy(sel, np.array([0, 1]), sub, rates, system, placement=np.array([0, 0, 1, 1]))
    assert bill.total == pytest.approx(comm + comp)


def test_runtime_rejects_bad_placement(moe8):
    system = SystemConfig(num_experts=N, num_subcarriers=16)
    with pytest.raises(ValueError, match="give a `placement`"):
        DMoERuntime(moe8, Dense(), system=system)
    with pytest.raises(ValueError, match="`placement`.*places 4 experts"):
        DMoERuntime(moe8, Dense(), system=system, placement=np.arange(4))
    with pytest.raises(ValueError, match="`placement`.*node 3 holds no expert"):
        DMoERuntime(moe8, Dense(), system=system, placement=np.arange(E) % 3)
    with pytest.raises(ValueError, match="`placement`.*layers"):
        DMoERuntime(moe8, Dense(), system=system, placement=np.zeros((5, E), dtype=int) + np.arange(E) % N)


def test_routing_coactivation_from_calibration(moe8):
    from dmoe.placement import check_placement, coactivation_placement
    from dmoe.runtime.routing import routing_coactivation

    ids = [torch.arange(3, 40), torch.arange(50, 90)]
    c = routing_coactivation(moe8, top_k=3, calibration_ids=ids)
    assert c.shape == (moe8.num_layers, E, E)
    # every token contributes k(k-1) ordered co-selected pairs per layer
    tokens = sum(len(t) for t in ids)
    np.testing.assert_allclose(c.sum(axis=(1, 2)), tokens * 3 * 2)
    check_placement(coactivation_placement(c, N), N, num_experts=E, num_layers=moe8.num_layers)
    with pytest.raises(ValueError, match="`top_k`"):
        routing_coactivation(moe8, top_k=9, calibration_ids=ids)


def test_cli_rejects_bad_nodes(tmp_path):
    from click.testing import CliRunner

    from dmoe.cli import main

    res = CliRunner().invoke(main, ["run", "--nodes", "9", "-K", "8", "--output", str(tmp_path)])
    assert res.exit_code != 0 and "--nodes" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["run", "--nodes", "4", "--placement", "random", "--output", str(tmp_path)])
    assert res.exit_code != 0 and "--placement" in res.output
