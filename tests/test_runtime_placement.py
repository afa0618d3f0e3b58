"""The DMoE runtime with several experts per node (issue 12) on a tiny random MoE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmoe.data import load_mmlu, pack_question
from dmoe.energy import schedule_energy
from dmoe.policies import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.placement import node_selection, round_robin_placement
from dmoe.runtime import DMoERuntime, EnergyLedger, evaluate_policy
from dmoe.system import SystemConfig

from conftest import make_tiny_moe

E, N = 8, 4


@pytest.fixture(scope="module")
def moe8(tiny_llama):
    return make_tiny_moe(tiny_llama, E, seed=2)


@pytest.fixture(scope="module")
def queries(tiny_tokenizer):
    return [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=8)]


@pytest.mark.parametrize("policy", [Dense(), TopK(3), Homogeneous(0.6, 3), JESAPolicy(0.8, 3), LowerBound(0.8, 3)],
                         ids=lambda p: p.name)
def test_runtime_with_placement_matches_centralised_and_ledger(moe8, queries, policy):
    system = SystemConfig(num_nodes=N, num_subcarriers=16)
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
    system = SystemConfig(num_nodes=E, num_subcarriers=64)
    a = evaluate_policy(moe8, queries, JESAPolicy(0.8, 2), system=system, seed=1, progress=False)
    b = evaluate_policy(moe8, queries, JESAPolicy(0.8, 2), system=system, seed=1, progress=False,
                        placement=np.arange(E))
    assert a.energy_j == pytest.approx(b.energy_j, rel=1e-12)
    np.testing.assert_allclose(a.logliks, b.logliks)


def test_ledger_with_placement_bills_node_pairs():
    system = SystemConfig(num_nodes=2, num_subcarriers=4)
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
    system = SystemConfig(num_nodes=N, num_subcarriers=16)
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


# ------------------------------------------------------- placement x imperfect CSI (issue 10)
def _random_layer_round(seed: int):
    """(system, round-robin placement [E], source [40], scores [40, E], rates [N, N, M]) of one
    random layer round with E experts on N nodes."""
    from dmoe.channels.rates import draw_rates

    rng = np.random.default_rng(seed)
    system = SystemConfig(num_nodes=N, num_subcarriers=16)
    place = round_robin_placement(E, N)
    source = rng.integers(0, N, 40)
    scores = rng.dirichlet(np.ones(E), 40)
    return system, place, source, scores, draw_rates(system, rng)


def test_transmit_with_placement_perfect_csi_equals_schedule_energy():
    from dmoe.runtime.transfer import transmit

    system, place, source, scores, rates = _random_layer_round(7)
    s = JESAPolicy(0.8, 3).schedule(scores, source, rates, 1, system=system, rng=0, placement=place)
    out = transmit(s.selection, source, s.subcarrier, rates, rates, system, placement=place)
    ref = schedule_energy(s.selection, source, s.subcarrier, rates, system, placement=place)
    assert np.array_equal(out.tokens_planned, ref.tokens)  # node-pair counts
    assert np.array_equal(out.energy_comm_spent, ref.comm_links)
    np.testing.assert_allclose(out.energy_comp_spent, ref.comp_experts, rtol=1e-15)
    a, b = EnergyLedger(1, system, place), EnergyLedger(1, system, place)
    a.charge_outcome(0, out, s.feasible)
    b.charge(0, s.selection, source, s.subcarrier, rates, s.feasible)
    pa, pb = a.per_layer(), b.per_layer()
    for f in ("energy_comm_j", "tokens", "expert_calls", "transmissions", "infeasible_tokens"):
        assert np.array_equal(getattr(pa, f), getattr(pb, f)), f
    np.testing.assert_allclose(pa.energy_comp_j, pb.energy_comp_j, rtol=1e-15)


def test_transmit_with_placement_dead_link_drops_the_whole_node():
    from dmoe.runtime.transfer import transmit

    system = SystemConfig(num_nodes=2, num_subcarriers=1)
    place = np.array([0, 0, 1, 1])
    est = np.zeros((2, 2, 1))
    true = np.zeros((2, 2, 1))
    est[0, 1, 0] = 2e5  # the server believes node 0 -> node 1 works; it is dead
    sub = np.array([[-1, 0], [-1, -1]])
    # token 0 (node 0) uses experts 1, 2, 3: one transmission to node 1 for experts 2 and 3
    sel = np.array([[False, True, True, True], [True, False, False, False]])
    out = transmit(sel, np.array([0, 0]), sub, est, true, system, placement=place)
    bits, p0 = system.bits_per_token, system.tx_power_w
    assert out.tokens_planned[0, 1] == 1 and out.dropped_tokens == 1 and out.failed_attempts == 1
    assert out.selection.tolist() == [[False, True, False, False], [True, False, False, False]]
    assert out.energy_comm_spent[0, 1] == pytest.approx(p0 * bits / 2e5)  # the lost packet only
    a = system.comp_energy_per_token_j
    assert out.energy_comp_spent.tolist() == pytest.approx([2 * a[0] * 0.5 + system.comp_energy_static_j[0], 0.0])
    assert out.node_load.tolist() == [1.0, 0.0]  # two expert calls of 1/2 node share each


def test_runtime_with_placement_and_imperfect_csi(moe8, queries):
    from dmoe.channels import ChannelConfig

    system = SystemConfig(num_nodes=N, num_subcarriers=16)
    place = round_robin_placement(E, N)
    rt = DMoERuntime(moe8, JESAPolicy(0.8, 3), system=system, seed=3, placement=place,
                     channel=ChannelConfig(csi_error=0.3))
    rt.run_round(queries[:N])
    t = rt.ledger.per_layer()
    # the schedules were made on the estimate; the ledger charges what the true channel cost
    assert not np.allclose(t.energy_comm_j, t.energy_comm_planned_j)
    assert np.all(np.isfinite(t.energy_comm_j)) and rt.ledger.failed_attempts > 0
    lat = rt.latency.layer_round_s
    assert lat.shape == (1, moe8.num_layers) and np.all(np.isfinite(lat)) and np.all(lat > 0)


def test_deadline_with_placement_meets_its_deadline_on_node_pairs():
    from dmoe.energy import link_rate_from_subcarriers
    from dmoe.latency import link_air_time, round_timing
    from dmoe.policies import Deadline

    system, place, source, scores, rates = _random_layer_round(2)
    base = JESAPolicy(0.8, 3).schedule(scores, source, rates, 1, system=system, rng=0, placement=place)
    need = node_selection(base.selection, place, N)
    tokens = np.zeros((N, N), dtype=np.int64)
    np.add.at(tokens, (np.repeat(source, N), np.tile(np.arange(N), len(source))), need.ravel())
    air = link_air_time(tokens, link_rate_from_subcarriers(rates, base.subcarrier), system.bits_per_token)
    free = round_timing(tokens, air, air, system).latency_s
    s = Deadline(JESAPolicy(0.8, 3), free / 2).schedule(scores, source, rates, 1, system=system, rng=0,
                                                        placement=place)
    assert s.selection.shape == (40, E)
    assert s.info["deadline_met"] and s.info["planned_latency_s"] <= free / 2 < free


# ------------------------------------------------------- placement x node failures (issue 9)
def test_engine_runs_one_worker_per_node_holding_its_experts(moe8):
    system = SystemConfig(num_nodes=N, num_subcarriers=16)
    place = np.stack([round_robin_placement(E, N), np.arange(E) // 2])
    rt = DMoERuntime(moe8, Dense(), system=system, placement=place)
    eng = rt.engine_object
    assert eng.num_nodes == N and rt.num_nodes == N
    for n in range(N):
        held = eng._nodes[n]._ffn
        assert sorted(held[0]) == np.flatnonzero(place[0] == n).tolist()
        assert sorted(held[1]) == np.flatnonzero(place[1] == n).tolist()
    with pytest.raises(ValueError, match="does not hold expert"):
        eng._nodes[0].ffn(0, (1,), np.ones((2, 1), dtype=bool), torch.zeros(2, moe8.hidden_size))
    with pytest.raises(ValueError, match="`mask` must have shape"):
        eng._nodes[0].ffn(0, (0,), np.ones((3, 1), dtype=bool), torch.zeros(2, moe8.hidden_size))


def test_node_failure_with_placement_takes_all_its_experts(moe8, queries):
    from dmoe.runtime import NodeKill

    system = SystemConfig(num_nodes=N, num_subcarriers=16)
    place = round_robin_placement(E, N)
    dead = 2
    kw = dict(system=system, seed=5, record_selection=True, placement=place, node_rejoin=False)
    rt = DMoERuntime(moe8, JESAPolicy(0.8, 3), node_kills=[NodeKill(0, 1, dead, "experts")], **kw)
    out = rt.run_round(queries[:N])
    f = rt.faults
    assert f.failures == 1 and f.replans >= 1 and f.rehosted == 1
    # every query answered; each answer is the centralised pass with the selections used
    for q, logits, sel in zip(queries[:N], out.logits, out.selections):
        ref = moe8.forward_masked(q.input_ids, positions=q.positions, attention_mask=q.attention_mask,
                                  selection=torch.from_numpy(sel))[q.score_rows]
        torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    # from the re-plan of layer 1 on, no expert of the dead node serves any token
    lost = place == dead
    for sel in out.selections:
        assert not sel[1:, :, lost].any()
    assert any(sel[0][:, lost].any() for sel in out.selections)  # layer 0 ran before the kill
    assert rt.ledger.energy_lost_j > 0 and rt.ledger.energy_rehost_j > 0
    # without a rejoin the next round's N queries share the N - 1 live nodes
    out2 = rt.run_round(queries[N : 2 * N])
    assert not any(s[:, :, lost].any() for s in out2.selections)


def test_evaluate_policy_with_placement_scores_held_out_texts(moe8, tiny_tokenizer, queries):
    from dmoe.data import pack_text

    system = SystemConfig(num_nodes=N, num_subcarriers=16)
    place = round_robin_placement(E, N)
    texts = [pack_text(tiny_tokenizer, t) for t in ("The heart pumps blood through the body.",
                                                     "Bones are connected by ligaments and moved by muscles.")]
    res = evaluate_policy(moe8, queries[:N], TopK(3), system=system, seed=1, progress=False, placement=place,
                          texts=texts)
    assert res.perplexity is not None and np.isfinite(res.perplexity) and res.perplexity > 1
    # the texts run through the placed runtime: dropping experts changes their perplexity
    dense = evaluate_policy(moe8, queries[:N], Dense(), system=system, seed=1, progress=False, placement=place,
                            texts=texts)
    assert dense.perplexity != res.perplexity
