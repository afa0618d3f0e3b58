"""select_experts (P1(a)): DES vs enumeration vs MILP oracle, edge cases, validation."""

import numpy as np
import pytest

from dmoe.optimize import SCORE_TOL, select_experts
from dmoe.optimize import _des
from dmoe.optimize.feasibility import InvariantError, check_selection

METHODS = ("des", "enumerate", "milp", "auto")


def paper_costs(rng, num_tokens, k, *, inf_fraction=0.0):
    """Costs in the paper's regime: a_j + P0*8*s0/R, R = B0 log2(1 + SNR*H), H ~ Exp(1e-2)."""
    h = rng.exponential(1e-2, size=(num_tokens, k))
    rate = 1e6 * np.log2(1 + 10.0 * h)
    costs = np.arange(1, k + 1) * 1e-3 + 1e-2 * 65536 / rate
    if inf_fraction:
        costs[rng.random((num_tokens, k)) < inf_fraction] = np.inf
    return costs


def random_instance(rng, num_tokens, k, d, *, inf_fraction=0.0):
    scores = rng.dirichlet(np.full(k, rng.choice([0.3, 1.0, 3.0])), size=num_tokens)
    costs = paper_costs(rng, num_tokens, k, inf_fraction=inf_fraction)
    top = np.sort(scores, axis=1)[:, ::-1]
    lo, hi = top[:, 0], top[:, :d].sum(axis=1)
    # mostly between Top-1 and Top-D sums (non-trivial), some anywhere (incl. infeasible)
    thr = np.where(rng.random(num_tokens) < 0.7, lo + (hi - lo) * rng.random(num_tokens), rng.uniform(0, 1.05, num_tokens))
    return scores, costs, thr


def solve_all(scores, costs, thr, d, methods):
    out = {}
    for m in methods:
        res = select_experts(scores, costs, thr, d, method=m)
        check_selection(res, scores, costs, thr, d)
        out[m] = res
    return out


# ------------------------------------------------------------------ oracle tests


def test_des_matches_enumeration_thousands_of_cases():
    rng = np.random.default_rng(2024)
    cases = 0
    for k in range(2, 11):
        for d in range(1, k + 1):
            scores, costs, thr = random_instance(rng, 60, k, d, inf_fraction=0.1 if (k + d) % 3 == 0 else 0.0)
            res = solve_all(scores, costs, thr, d, ("des", "enumerate", "auto"))
            ref = res["enumerate"].energy
            for m in ("des", "auto"):
                check_selection(res[m], scores, costs, thr, d, optimal_energy=ref)
                np.testing.assert_array_equal(res[m].feasible, res["enumerate"].feasible)
            cases += scores.shape[0]
    assert cases >= 3000


def test_paper_variant_of_des_matches_enumeration(monkeypatch):
    """Algorithm 1 as written (descending e/t, plain LP bound) is exact too."""
    monkeypatch.setattr(_des, "DEFAULT_VARIANT", "paper")
    rng = np.random.default_rng(7)
    for k in range(2, 11):
        for d in (1, max(1, k // 2), k):
            scores, costs, thr = random_instance(rng, 40, k, d)
            ref = select_experts(scores, costs, thr, d, method="enumerate")
            res = select_experts(scores, costs, thr, d, method="des")
            check_selection(res, scores, costs, thr, d, optimal_energy=ref.energy)


def test_milp_matches_enumeration():
    rng = np.random.default_rng(11)
    for k, d in [(3, 2), (5, 1), (5, 3), (6, 6), (8, 2), (8, 4), (10, 3), (10, 10)]:
        scores, costs, thr = random_instance(rng, 40, k, d, inf_fraction=0.05)
        res = solve_all(scores, costs, thr, d, ("milp", "enumerate"))
        check_selection(res["milp"], scores, costs, thr, d, optimal_energy=res["enumerate"].energy)


@pytest.mark.parametrize("k, d, n", [(20, 3, 25), (20, 10, 25), (64, 4, 12), (64, 16, 12)])
def test_des_matches_milp_large_k(k, d, n):
    rng = np.random.default_rng(k * 100 + d)
    scores, costs, thr = random_instance(rng, n, k, d)
    res = solve_all(scores, costs, thr, d, ("des", "milp"))
    check_selection(res["des"], scores, costs, thr, d, optimal_energy=res["milp"].energy)
    check_selection(res["milp"], scores, costs, thr, d, optimal_energy=res["des"].energy)
    assert res["des"].nodes.max() < 5000


def test_auto_picks_enumeration_for_small_and_des_for_large(monkeypatch):
    """Without numba (Python DES) enumeration wins for few subsets; with numba see
    test_selection_large.test_auto_picks_compiled_des."""
    monkeypatch.setattr(_des, "USE_NUMBA", False)
    rng = np.random.default_rng(0)
    for k, d, expected in [(8, 2, "enumerate"), (10, 10, "enumerate"), (16, 2, "enumerate"), (16, 8, "des"), (32, 4, "des")]:
        s, c, t = random_instance(rng, 5, k, d)
        res = select_experts(s, c, t, d)
        check_selection(res, s, c, t, d)
        assert res.method == expected


# ------------------------------------------------------------------ edge cases


def _all(scores, costs, thr, d):
    return solve_all(np.asarray(scores, float), costs, thr, d, METHODS)


def test_ties_in_scores_and_ratios():
    scores = np.array([[0.25, 0.25, 0.25, 0.25], [0.5, 0.25, 0.25, 0.0]])
    costs = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 5.0]])  # row 2: all e/t = 4
    for res in _all(scores, costs, 0.5, 2).values():
        np.testing.assert_allclose(res.energy, [2.0, 2.0])
        assert res.feasible.all()


def test_zero_scores_never_selected():
    scores = np.array([[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
    costs = np.array([[1.0, 0.0, 1.0], [3.0, 0.0, 0.0]])
    for res in _all(scores, costs, 0.5, 3).values():
        assert not res.selection[:, 1].any()
        np.testing.assert_allclose(res.energy, [1.0, 3.0])


def test_threshold_exactly_attainable_dyadic():
    scores = np.array([[0.5, 0.25, 0.125, 0.125]])
    costs = np.array([1.0, 0.1, 0.1, 0.3])
    for res in _all(scores, costs, 0.375, 2).values():
        np.testing.assert_array_equal(res.selection, [[False, True, True, False]])
        assert res.energy[0] == pytest.approx(0.2)
    # within the tolerance: still feasible with the same subset
    for res in _all(scores, costs, 0.375 + SCORE_TOL / 2, 2).values():
        assert res.energy[0] == pytest.approx(0.2)
    # just above the tolerance: no pair of the small experts meets C1, expert 0 alone does
    for res in _all(scores, costs, 0.375 + 4 * SCORE_TOL, 2).values():
        np.testing.assert_array_equal(res.selection, [[True, False, False, False]])
        assert res.energy[0] == pytest.approx(1.0)


def test_threshold_one():
    scores = np.array([[0.5, 0.25, 0.125, 0.125], [0.5, 0.5, 0.0, 0.0]])
    costs = np.array([1.0, 2.0, 3.0, 4.0])
    res = _all(scores, costs, 1.0, 4)
    for r in res.values():
        np.testing.assert_array_equal(r.selection, [[True] * 4, [True, True, False, False]])
        assert r.feasible.all()
    for r in _all(scores, costs, 1.0, 3).values():
        np.testing.assert_array_equal(r.feasible, [False, True])  # row 1 needs all four experts
        np.testing.assert_array_equal(r.selection[0], [True, True, True, False])  # Top-3 (tie -> cheaper)


def test_threshold_zero_or_negative_is_empty():
    rng = np.random.default_rng(3)
    scores = rng.dirichlet(np.ones(6), size=5)
    for thr in (0.0, -0.3, SCORE_TOL):
        for r in _all(scores, paper_costs(rng, 5, 6), thr, 2).values():
            assert not r.selection.any() and (r.energy == 0).all() and r.feasible.all()


def test_d_one_and_d_greater_than_k():
    scores = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    costs = np.array([[5.0, 1.0, 1.0], [1.0, 9.0, 2.0]])
    for r in _all(scores, costs, 0.25, 1).values():
        np.testing.assert_array_equal(r.selection, [[False, True, False], [False, False, True]])
    big = _all(scores, costs, 0.95, 99)
    for r in big.values():
        assert r.feasible.all()
        np.testing.assert_allclose(r.energy, [7.0, 12.0])


def test_infeasible_remark2_top_d_fallback():
    scores = np.array([[0.4, 0.3, 0.2, 0.1]])
    costs = np.array([1.0, 1.0, 1.0, 1.0])
    for r in _all(scores, costs, 0.8, 2).values():
        assert not r.feasible[0]
        np.testing.assert_array_equal(r.selection, [[True, True, False, False]])
        assert r.energy[0] == 2.0
        assert r.status[0] == "infeasible"


def test_inf_cost_experts_unavailable():
    scores = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    costs = np.array([[np.inf, 1.0, 1.0], [np.inf, np.inf, np.inf]])
    for r in _all(scores, costs, 0.45, 2).values():
        assert not r.selection[:, 0].any()
        np.testing.assert_array_equal(r.feasible, [True, False])
        np.testing.assert_array_equal(r.selection[0], [False, True, True])
        assert not r.selection[1].any() and r.energy[1] == 0.0  # nothing available
        assert np.isfinite(r.energy).all()
    for r in _all(scores, costs, 0.9, 2).values():  # infeasible: Top-D among available
        np.testing.assert_array_equal(r.selection[0], [False, True, True])
        assert not r.feasible[0]


def test_single_token_empty_batch_and_broadcast():
    rng = np.random.default_rng(5)
    scores = rng.dirichlet(np.ones(5), size=30)
    costs1 = paper_costs(rng, 1, 5)[0]
    thr = rng.uniform(0.2, 0.8, size=30)
    for m in METHODS:
        a = select_experts(scores, costs1, thr, 3, method=m)
        b = select_experts(scores, np.tile(costs1, (30, 1)), thr, 3, method=m)
        np.testing.assert_array_equal(a.energy, b.energy)
        check_selection(a, scores, costs1, thr, 3)
        one = select_experts(scores[:1], costs1, thr[0], 3, method=m)
        check_selection(one, scores[:1], costs1, thr[0], 3)
        assert one.energy[0] == a.energy[0]
        empty = select_experts(np.zeros((0, 5)), costs1, 0.5, 2, method=m)
        assert empty.selection.shape == (0, 5) and empty.energy.shape == (0,) and empty.feasible.shape == (0,)
        check_selection(empty, np.zeros((0, 5)), costs1, 0.5, 2)


def test_all_zero_score_token():
    for r in _all(np.zeros((1, 4)), np.ones(4), 0.5, 2).values():
        assert not r.feasible[0] and not r.selection.any()


def test_node_limit_reports_gap():
    rng = np.random.default_rng(8)
    scores, costs, thr = random_instance(rng, 40, 24, 6)
    exact = select_experts(scores, costs, thr, 6, method="des")
    limited = select_experts(scores, costs, thr, 6, method="des", node_limit=2)
    check_selection(limited, scores, costs, thr, 6)
    assert (~limited.optimal).any()
    assert (limited.nodes <= 2).all()
    mask = limited.feasible
    # the incumbent is never better than the optimum, and energy - gap is a valid bound
    assert np.all(limited.energy[mask] >= exact.energy[mask] * (1 - 1e-12))
    assert np.all(limited.energy[mask] - limited.gap[mask] <= exact.energy[mask] * (1 + 1e-9))
    assert set(limited.status) <= {"optimal", "node_limit", "infeasible"}
    assert exact.optimal.all() and (exact.gap == 0).all()


def test_checker_catches_a_wrong_result():
    scores = np.array([[0.6, 0.4]])
    res = select_experts(scores, np.array([1.0, 1.0]), 0.5, 1)
    with pytest.raises(InvariantError):
        check_selection(res, scores, np.array([1.0, 1.0]), 0.7, 1)  # claims C1 at a higher threshold


def test_hot_path_is_fast():
    """K = 8, 1000 tokens: the real-model call pattern, fully vectorised."""
    import time

    rng = np.random.default_rng(1)
    scores, costs, thr = random_instance(rng, 1000, 8, 2)
    check_selection(select_experts(scores, costs, thr, 2), scores, costs, thr, 2)
    t0 = time.perf_counter()
    for _ in range(5):
        select_experts(scores, costs, thr, 2)
    assert (time.perf_counter() - t0) / 5 < 0.05


# ------------------------------------------------------------------ validation

GOOD_S = np.array([[0.6, 0.4], [0.5, 0.5]])
GOOD_C = np.array([1.0, 2.0])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(scores=np.array([[np.nan, 1.0], [0.5, 0.5]])), "scores"),
        (dict(scores=np.array([[-0.1, 1.0], [0.5, 0.5]])), "scores"),
        (dict(scores=np.array([[np.inf, 1.0], [0.5, 0.5]])), "scores"),
        (dict(scores=np.array([0.6, 0.4])), "scores"),
        (dict(scores=np.array([["a", "b"]])), "scores"),
        (dict(costs=np.array([1.0, 2.0, 3.0])), "costs"),
        (dict(costs=np.ones((3, 2))), "costs"),
        (dict(costs=np.array([-1.0, 2.0])), "costs"),
        (dict(costs=np.array([np.nan, 2.0])), "costs"),
        (dict(costs=np.array([-np.inf, 2.0])), "costs"),
        (dict(threshold=np.nan), "threshold"),
        (dict(threshold=np.array([0.5, 0.5, 0.5])), "threshold"),
        (dict(threshold=np.inf), "threshold"),
        (dict(max_experts=0), "max_experts"),
        (dict(max_experts=1.5), "max_experts"),
        (dict(max_experts=True), "max_experts"),
        (dict(method="bfs"), "method"),
        (dict(node_limit=0), "node_limit"),
    ],
)
def test_validation_errors(kwargs, name):
    args = dict(scores=GOOD_S, costs=GOOD_C, threshold=0.5, max_experts=1)
    args.update(kwargs)
    method = args.pop("method", "auto")
    node_limit = args.pop("node_limit", None)
    with pytest.raises(ValueError, match=f"`{name}`"):
        select_experts(**args, method=method, node_limit=node_limit)


def test_type_errors_are_type_errors_too():
    with pytest.raises(TypeError, match="`max_experts`"):
        select_experts(GOOD_S, GOOD_C, 0.5, 2.0)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="'des'.*'enumerate'.*'milp'"):
        select_experts(GOOD_S, GOOD_C, 0.5, 1, method="greedy")


def test_enumerate_rejects_large_k():
    with pytest.raises(ValueError, match="`method`"):
        select_experts(np.full((1, 17), 1 / 17), np.ones(17), 0.5, 2, method="enumerate")


@pytest.mark.parametrize("variant", ["strong", "paper"])
def test_tie_heavy_dyadic_instances(monkeypatch, variant):
    """Scores on a 1/8 grid, integer costs, thresholds on the grid: many ties and sums
    exactly equal to the threshold; every method must agree."""
    monkeypatch.setattr(_des, "DEFAULT_VARIANT", variant)
    rng = np.random.default_rng(99)
    for k in (3, 5, 7, 9):
        n = 150
        scores = rng.integers(0, 4, size=(n, k)) / 8.0
        costs = rng.integers(0, 4, size=(n, k)).astype(float)
        costs[rng.random((n, k)) < 0.1] = np.inf
        thr = rng.integers(0, 10, size=n) / 8.0
        for d in (1, 2, k):
            ref = select_experts(scores, costs, thr, d, method="enumerate")
            check_selection(ref, scores, costs, thr, d)
            des = select_experts(scores, costs, thr, d, method="des")
            check_selection(des, scores, costs, thr, d, optimal_energy=ref.energy)
            milp = select_experts(scores[:25], costs[:25], thr[:25], d, method="milp")
            check_selection(milp, scores[:25], costs[:25], thr[:25], d, optimal_energy=ref.energy[:25])
