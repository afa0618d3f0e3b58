"""select_experts at DeepSeek scale and its two DES back ends (compiled and Python).

* DES is exact at K = 64 and K = 256 (HiGHS oracle, both directions);
* the numba-compiled driver and the pure-Python fallback agree with brute force on
  thousands of K <= 12 cases, for every DES variant (strong, paper, paper-bfs);
* node_limit / time_limit stop early honestly: best feasible selection, status, a gap
  that bounds the true optimum from below.
"""

import time

import numpy as np
import pytest

from dmoe.optimize import select_experts
from dmoe.optimize import _des
from dmoe.optimize.feasibility import check_selection

from test_selection import paper_costs, random_instance

HAVE_NUMBA = _des._numba_namespace() is not None
BACKENDS = [pytest.param(True, id="numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")),
            pytest.param(False, id="python")]


@pytest.fixture
def backend(request, monkeypatch):
    monkeypatch.setattr(_des, "USE_NUMBA", request.param)
    assert _des.numba_enabled() == request.param
    return request.param


def softmax_instance(rng, num_tokens, k, d, lo=0.25, hi=0.75):
    """Softmax gating scores, paper-regime costs, thresholds between the Top-1 and Top-D sums."""
    logits = rng.normal(0.0, 1.5, size=(num_tokens, k))
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    costs = paper_costs(rng, num_tokens, k)
    top = np.sort(scores, axis=1)[:, ::-1]
    thr = top[:, 0] + (top[:, :d].sum(axis=1) - top[:, 0]) * rng.uniform(lo, hi, size=num_tokens)
    return scores, costs, thr


def hard_instance(rng, num_tokens, k, d):
    """Near-equal e/t ratios: the LP bound is weak, the search needs 1e4..1e5 nodes."""
    t = rng.uniform(0.5, 1.0, size=(num_tokens, k))
    e = t * rng.uniform(0.95, 1.05, size=(num_tokens, k))
    t /= t.sum(axis=1, keepdims=True)
    thr = np.sort(t, axis=1)[:, ::-1][:, :d].sum(axis=1) * 0.8
    return t, e, thr


# ------------------------------------------------------------------ DeepSeek scale vs HiGHS


@pytest.mark.parametrize("k, d, n", [(64, 4, 30), (64, 16, 30), (256, 8, 30)])
def test_des_exact_against_milp_at_scale(k, d, n):
    rng = np.random.default_rng(1000 + k + d)
    scores, costs, thr = softmax_instance(rng, n, k, d)
    # a few infeasible / unavailable / uniform-threshold tokens as well
    s2, c2, t2 = random_instance(rng, 6, k, d, inf_fraction=0.05)
    scores, costs, thr = np.vstack([scores, s2]), np.vstack([costs, c2]), np.concatenate([thr, t2])
    des = select_experts(scores, costs, thr, d, method="des")
    milp = select_experts(scores, costs, thr, d, method="milp")
    check_selection(des, scores, costs, thr, d, optimal_energy=milp.energy)
    check_selection(milp, scores, costs, thr, d, optimal_energy=des.energy)
    np.testing.assert_array_equal(des.feasible, milp.feasible)
    assert des.optimal.all() and (des.status != "node_limit").all()
    assert des.feasible.mean() > 0.8


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_backends_exact_at_k64(backend):
    rng = np.random.default_rng(64)
    scores, costs, thr = softmax_instance(rng, 12, 64, 16)
    ref = select_experts(scores, costs, thr, 16, method="milp")
    res = select_experts(scores, costs, thr, 16, method="des")
    check_selection(res, scores, costs, thr, 16, optimal_energy=ref.energy)


# ------------------------------------------------------------------ compiled vs fallback vs brute force


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_backend_matches_enumeration_thousands(backend):
    rng = np.random.default_rng(12)
    cases = 0
    for k in range(1, 13):
        for d in sorted({1, 2, max(1, k // 2), k}):
            scores, costs, thr = random_instance(rng, 40, k, d, inf_fraction=0.1 if (k + d) % 2 else 0.0)
            if k >= 4:
                s2, c2, t2 = softmax_instance(rng, 40, k, d)
                scores, costs, thr = np.vstack([scores, s2]), np.vstack([costs, c2]), np.concatenate([thr, t2])
            ref = select_experts(scores, costs, thr, d, method="enumerate")
            res = select_experts(scores, costs, thr, d, method="des")
            check_selection(res, scores, costs, thr, d, optimal_energy=ref.energy)
            np.testing.assert_array_equal(res.feasible, ref.feasible)
            assert res.optimal.all() and (res.gap == 0).all()
            cases += scores.shape[0]
    assert cases >= 3000


@pytest.mark.parametrize("variant", ["paper", "paper-bfs"])
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_paper_variants_exact(backend, variant, monkeypatch):
    """Algorithm 1's order and bound (depth first) and Algorithm 1 literally (BFS)."""
    monkeypatch.setattr(_des, "DEFAULT_VARIANT", variant)
    rng = np.random.default_rng(5)
    for k in (2, 5, 8, 11):
        for d in (1, 3, k):
            scores, costs, thr = random_instance(rng, 40, k, d)
            ref = select_experts(scores, costs, thr, d, method="enumerate")
            res = select_experts(scores, costs, thr, d, method="des", node_limit=200_000)
            check_selection(res, scores, costs, thr, d, optimal_energy=ref.energy)
            assert res.optimal.all()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_backends_agree_on_ties_and_unavailable_experts(backend):
    rng = np.random.default_rng(77)
    for k in (3, 6, 9, 12):
        scores = rng.integers(0, 4, size=(200, k)) / 8.0
        costs = rng.integers(0, 4, size=(200, k)).astype(float)
        costs[rng.random((200, k)) < 0.15] = np.inf
        thr = rng.integers(-1, 10, size=200) / 8.0
        for d in (1, 2, k):
            ref = select_experts(scores, costs, thr, d, method="enumerate")
            res = select_experts(scores, costs, thr, d, method="des")
            check_selection(res, scores, costs, thr, d, optimal_energy=ref.energy)
            # Remark 2 fallback is the same selection (not only the same sum)
            bad = ~ref.feasible
            np.testing.assert_array_equal(res.selection[bad], ref.selection[bad])


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
def test_auto_picks_compiled_des(monkeypatch):
    monkeypatch.setattr(_des, "USE_NUMBA", True)
    rng = np.random.default_rng(0)
    for k, d in [(2, 1), (8, 2), (16, 8), (64, 4)]:
        s, c, t = random_instance(rng, 5, k, d)
        res = select_experts(s, c, t, d)
        check_selection(res, s, c, t, d)
        assert res.method == "des"


# ------------------------------------------------------------------ limits


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_node_limit_honest(backend):
    rng = np.random.default_rng(8)
    scores, costs, thr = hard_instance(rng, 6, 64, 16)
    exact = select_experts(scores, costs, thr, 16, method="des")
    assert exact.optimal.all() and exact.nodes.max() > 100
    limited = select_experts(scores, costs, thr, 16, method="des", node_limit=50)
    check_selection(limited, scores, costs, thr, 16)
    stopped = ~limited.optimal
    assert stopped.any() and (limited.nodes <= 50).all()
    assert set(limited.status[stopped]) == {"node_limit"}
    assert (limited.stop[stopped] == _des.STOP_NODES).all()
    # best feasible selection found, never better than the optimum; energy - gap is a bound
    assert np.all(limited.energy >= exact.energy * (1 - 1e-12))
    assert np.all(limited.energy - limited.gap <= exact.energy * (1 + 1e-9))
    assert (limited.gap[stopped] >= 0).all() and (limited.gap[~stopped] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_time_limit_stops_a_long_search(backend):
    """One token whose search needs ~2e5 nodes: the deadline interrupts it mid-search."""
    rng = np.random.default_rng(0)
    t = rng.uniform(0.5, 1.0, size=(1, 256))
    e = t * rng.uniform(0.98, 1.02, size=(1, 256))
    scores = t / t.sum()
    thr = np.sort(scores, axis=1)[:, ::-1][:, :200].sum(axis=1) * 0.6
    select_experts(scores, e, thr, 200, method="des", node_limit=1, time_limit=1.0)  # warm up
    budget = 0.01 if backend else 0.05
    t0 = time.perf_counter()
    res = select_experts(scores, e, thr, 200, method="des", time_limit=budget)
    elapsed = time.perf_counter() - t0
    check_selection(res, scores, e, thr, 200)
    assert res.status[0] == "time_limit" and not res.optimal[0]
    assert res.stop[0] == _des.STOP_TIME
    assert res.nodes[0] > 0 and res.gap[0] > 0
    assert elapsed < budget + 0.5
    if backend:
        exact = select_experts(scores, e, thr, 200, method="des")
        assert exact.optimal[0] and exact.nodes[0] > res.nodes[0]
        assert res.energy[0] >= exact.energy[0] * (1 - 1e-12)
        assert res.energy[0] - res.gap[0] <= exact.energy[0] * (1 + 1e-9)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_time_limit_skips_remaining_tokens(backend):
    """Tokens not reached before the deadline keep the greedy incumbent and a valid bound."""
    rng = np.random.default_rng(4)
    s1, c1, t1 = hard_instance(rng, 2, 256, 128)
    s2, c2, t2 = softmax_instance(rng, 300, 256, 8)
    scores, costs, thr = np.vstack([s1, s2]), np.vstack([c1, c2]), np.concatenate([t1, t2])
    select_experts(scores[:1], costs[:1], thr[:1], 128, method="des", node_limit=1)  # warm up
    res = select_experts(scores, costs, thr, 128, method="des", time_limit=0.002)
    check_selection(res, scores, costs, thr, 128)
    stopped = res.status == "time_limit"
    assert stopped.sum() > 250
    assert (res.status[~stopped] != "time_limit").all() and res.optimal[~stopped].all()
    exact = select_experts(scores, costs, thr, 128, method="des")
    assert np.all(res.energy >= exact.energy * (1 - 1e-12))
    assert np.all(res.energy - res.gap <= exact.energy * (1 + 1e-9))


def test_generous_time_limit_is_exact():
    rng = np.random.default_rng(9)
    scores, costs, thr = softmax_instance(rng, 50, 64, 4)
    res = select_experts(scores, costs, thr, 4, method="des", time_limit=60.0)
    ref = select_experts(scores, costs, thr, 4, method="des")
    assert res.optimal.all() and (res.status == "optimal").all()
    np.testing.assert_array_equal(res.energy, ref.energy)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1s", True])
def test_time_limit_validation(bad):
    with pytest.raises(ValueError, match="`time_limit`"):
        select_experts(np.array([[0.6, 0.4]]), np.array([1.0, 2.0]), 0.5, 1, time_limit=bad)


def test_limits_ignored_by_exact_oracles():
    rng = np.random.default_rng(2)
    scores, costs, thr = random_instance(rng, 20, 8, 3)
    for method in ("enumerate", "milp"):
        res = select_experts(scores, costs, thr, 3, method=method, node_limit=1, time_limit=1e-6)
        assert res.optimal.all() and res.stop is None


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")
def test_memory_is_bounded_at_k256(monkeypatch):
    """The compiled driver's workspace is O(K) per batch (no frontier); peak traced < 2 MB
    beyond the [T, K] inputs and outputs."""
    import tracemalloc

    monkeypatch.setattr(_des, "USE_NUMBA", True)
    rng = np.random.default_rng(6)
    scores, costs, thr = softmax_instance(rng, 100, 256, 8)
    select_experts(scores[:2], costs[:2], thr[:2], 8, method="des")
    tracemalloc.start()
    select_experts(scores, costs, thr, 8, method="des")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    io_bytes = scores.nbytes * 4  # costs copy, where(), selection and a few [T] arrays
    assert peak < io_bytes + 2 * 2**20
