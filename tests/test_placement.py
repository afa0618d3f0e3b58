"""Expert placement (issue 12): built-ins, co-activation aware partition, validation."""

from __future__ import annotations

import numpy as np
import pytest

from dmoe.placement import (
    check_placement,
    coactivation_kept,
    coactivation_matrix,
    coactivation_placement,
    contiguous_placement,
    make_placement,
    node_sizes,
    round_robin_placement,
)


def test_builtins_are_balanced():
    assert contiguous_placement(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert round_robin_placement(8, 4).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert node_sizes(10, 4).tolist() == [3, 3, 2, 2]
    assert np.bincount(contiguous_placement(10, 4)).tolist() == [3, 3, 2, 2]
    assert contiguous_placement(6, 6).tolist() == list(range(6))  # one expert per node
    for kind in ("contiguous", "round-robin"):
        check_placement(make_placement(kind, 32, 8), 8, num_experts=32)


def planted(seed, num_experts=32, num_nodes=8, tokens=4000):
    rng = np.random.default_rng(seed)
    groups = rng.permutation(num_experts).reshape(num_nodes, -1)
    sel = np.zeros((tokens, num_experts), dtype=bool)
    for t in range(tokens):
        sel[t, rng.choice(groups[rng.integers(num_nodes)], 3, replace=False)] = True
        if rng.random() < 0.3:
            sel[t, rng.integers(num_experts)] = True
    return groups, sel


def test_coactivation_recovers_planted_groups():
    groups, sel = planted(0)
    c = coactivation_matrix(sel)
    assert c.shape == (32, 32) and np.all(np.diag(c) == 0) and np.allclose(c, c.T)
    p = coactivation_placement(c, 8)
    check_placement(p, 8, num_experts=32)
    assert np.bincount(p).tolist() == [4] * 8
    # every planted group lands on one node
    for g in groups:
        assert len(set(p[g].tolist())) == 1
    assert coactivation_kept(p, c) > coactivation_kept(round_robin_placement(32, 8), c) + 0.5
    # deterministic for a seed
    np.testing.assert_array_equal(p, coactivation_placement(c, 8))


def test_coactivation_per_layer_and_unbalanced_sizes():
    _, s0 = planted(1, 30, 5, 1500)
    _, s1 = planted(2, 30, 5, 1500)
    c = coactivation_matrix(np.stack([s0, s1]))
    assert c.shape == (2, 30, 30)
    p = coactivation_placement(c, 4)  # 30 experts on 4 nodes: sizes 8, 8, 7, 7
    assert p.shape == (2, 30)
    for row in p:
        assert sorted(np.bincount(row).tolist()) == [7, 7, 8, 8]
    check_placement(p, 4, num_experts=30, num_layers=2)


def test_coactivation_never_worse_than_round_robin_on_random_data():
    rng = np.random.default_rng(3)
    sel = rng.random((500, 24)) < 0.2
    c = coactivation_matrix(sel)
    p = coactivation_placement(c, 6)
    assert coactivation_kept(p, c) >= coactivation_kept(round_robin_placement(24, 6), c)
    assert coactivation_kept(p, c) >= coactivation_kept(contiguous_placement(24, 6), c)


@pytest.mark.parametrize(
    "placement,kwargs,match",
    [
        ([0, 0, 1, 1], {"num_nodes": 3}, "node 2 holds no expert"),
        ([0, -1, 1, 1], {"num_nodes": 2}, "expert 1 is unplaced"),
        ([0, 2, 1, 1], {"num_nodes": 2}, "outside"),
        ([0, 1, 2], {"num_nodes": 4}, "N = 4 nodes is more than the E = 3"),
        ([0, 1, 0, 1], {"num_nodes": 2, "num_experts": 8}, "places 4 experts per layer but the model has 8"),
        ([[0, 1], [1, 0]], {"num_nodes": 2, "num_layers": 3}, "has 2 layers but the model has 3"),
        ([0.5, 1], {"num_nodes": 2}, "integer"),
        ([[[0]]], {"num_nodes": 1}, "must be"),
    ],
)
def test_check_placement_errors(placement, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        check_placement(placement, **kwargs)
    assert "`placement`" in str(info.value)


def test_builder_errors():
    with pytest.raises(ValueError, match="`num_nodes`"):
        contiguous_placement(4, 8)
    with pytest.raises(ValueError, match="`placement`"):
        make_placement("random", 8, 2)
    with pytest.raises(ValueError, match="`coactivation`"):
        make_placement("coactivation", 8, 2)
    with pytest.raises(ValueError, match="`coactivation`"):
        coactivation_placement(np.ones((3, 4)), 2)


def test_bad_placement_values_and_arguments_name_the_culprit():
    import dmoe
    from dmoe.channels.rates import draw_rates
    from dmoe.energy import expert_comp_energy
    from dmoe.placement import check_placement

    with pytest.raises(TypeError, match="`placement` must hold integer node ids"):
        check_placement(np.array([0, 1 + 0j]), 2)
    with pytest.raises(ValueError, match=r"`placement`: node ids must lie in \[0, 2\)"):
        check_placement([0.0, 1e30], 2)
    with pytest.raises(ValueError, match="`placement` must be a rectangular array"):
        check_placement([[0, 1], [0]], 2)
    system = dmoe.SystemConfig(num_nodes=2)
    with pytest.raises(ValueError, match="unplaced"):
        expert_comp_energy(system, np.array([-1, 0, 1, 1]))
    with pytest.raises(ValueError, match="outside"):
        expert_comp_energy(system, np.array([0, 1, 7, 1]))
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(8), 3)
    with pytest.raises(ValueError, match="columns of `node_costs`"):
        dmoe.select_experts(scores, np.full(8, 1e-3), 0.6, 3, placement=np.arange(8) % 4, node_costs=np.ones((3, 3)))
    with pytest.raises(ValueError, match="`system` has num_nodes=4 but `rates`"):
        dmoe.jesa(scores, np.zeros(3, dtype=int), draw_rates(dmoe.SystemConfig(num_nodes=8), rng), 0.6, 3,
                  system=dmoe.SystemConfig(num_nodes=4), placement=np.arange(8) % 4)


def test_experts_by_node_lists_each_nodes_experts_per_layer():
    from dmoe.placement import experts_by_node

    assert experts_by_node(None, 3, 2) == [[(0,), (0,)], [(1,), (1,)], [(2,), (2,)]]
    flat = np.array([1, 0, 1, 0, 2])
    assert experts_by_node(flat, 3, 2) == [[(1, 3), (1, 3)], [(0, 2), (0, 2)], [(4,), (4,)]]
    per_layer = np.array([[0, 1, 1, 0], [1, 0, 0, 1]])
    assert experts_by_node(per_layer, 2, 2) == [[(0, 3), (1, 2)], [(1, 2), (0, 3)]]
