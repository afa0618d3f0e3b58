"""Policies: one interface for Top-k, H(z, D), JESA(gamma0, D), LB(gamma0, D), dense."""

import json

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.energy import link_token_counts, schedule_energy
from dmoe.optimize import jesa
from dmoe.policies import Dense, Homogeneous, JESAPolicy, LowerBound, Policy, Schedule, TopK, policy_from_name, policy_from_params
from dmoe.optimize.feasibility import check_schedule
from dmoe.system import SystemConfig


def setup(seed, k=8, m=64, tokens_per_node=16):
    system = SystemConfig(num_nodes=k, num_subcarriers=m)
    rng = np.random.default_rng(seed)
    rates = draw_rates(system, rng)
    scores = rng.dirichlet(np.full(k, 0.5), size=k * tokens_per_node)
    source = np.repeat(np.arange(k), tokens_per_node)
    return system, rates, scores, source


ALL = [TopK(2), Homogeneous(0.8, 2), JESAPolicy(0.9, 2), LowerBound(0.9, 2), Dense()]


def check(policy, sched, scores, source, rates, layer):
    assert isinstance(sched, Schedule)
    t, k = scores.shape
    assert sched.selection.shape == (t, k) and sched.selection.dtype == bool
    assert sched.subcarrier.shape == (k, k) and np.issubdtype(sched.subcarrier.dtype, np.integer)
    assert sched.feasible.shape == (t,) and sched.feasible.dtype == bool
    check_schedule(
        sched.selection,
        sched.subcarrier,
        source,
        rates,
        threshold=sched.threshold,
        scores=scores,
        feasible=sched.feasible,
        exclusive=sched.exclusive,
    )


def test_names():
    assert [p.name for p in ALL] == ["Top-2", "H(0.8,2)", "JESA(0.9,2)", "LB(0.9,2)", "dense"]


@pytest.mark.parametrize("policy", ALL, ids=lambda p: p.name)
def test_every_policy_gives_a_valid_schedule(policy):
    system, rates, scores, source = setup(1)
    for layer in (1, 4):
        sched = policy.schedule(scores, source, rates, layer, system=system, rng=0)
        check(policy, sched, scores, source, rates, layer)
        br = schedule_energy(sched.selection, source, sched.subcarrier, rates, system)
        assert np.isfinite(br.total)


def test_topk_selects_top_scores_when_everything_fits():
    system, rates, scores, source = setup(2)
    sched = TopK(2).schedule(scores, source, rates, 1, system=system)
    top2 = np.argsort(-scores, axis=1)[:, :2]
    expected = np.zeros_like(sched.selection)
    np.put_along_axis(expected, top2, True, axis=1)
    np.testing.assert_array_equal(sched.selection, expected)
    assert sched.feasible.all() and sched.info["rounds"] == 1


def test_topk_reroutes_when_links_exceed_subcarriers():
    system, rates, scores, source = setup(3, k=6, m=5)
    sched = TopK(2).schedule(scores, source, rates, 1, system=system)
    check(TopK(2), sched, scores, source, rates, 1)
    assert sched.info["rounds"] > 1
    assert (sched.selection.sum(axis=1) <= 2).all()
    # tokens keep k experts whenever they still have that many reachable experts
    assert sched.feasible.mean() > 0.5


def test_topk_marks_dead_link_unavailable():
    system, rates, scores, source = setup(4, k=4, m=16)
    rates[0, 1, :] = 0.0
    scores[source == 0] = np.array([0.1, 0.6, 0.2, 0.1])
    sched = TopK(1).schedule(scores, source, rates, 1, system=system)
    assert not sched.selection[source == 0, 1].any()
    assert sched.selection[source == 0, 2].all()  # next best


def test_jesa_policy_threshold_and_equivalence():
    system, rates, scores, source = setup(5)
    pol = JESAPolicy(0.9, 2, qos=0.95)
    sched = pol.schedule(scores, source, rates, 3, system=system, rng=7)
    np.testing.assert_allclose(sched.threshold, 0.95 * 0.9**3)
    ref = jesa(scores, source, rates, 0.95 * 0.9**3, 2, system=system, rng=7)
    np.testing.assert_array_equal(sched.selection, ref.selection)
    assert sched.info["energy"] == pytest.approx(ref.energy)
    h = Homogeneous(0.8, 3)
    s1 = h.schedule(scores, source, rates, 1, system=system, rng=0)
    s9 = h.schedule(scores, source, rates, 9, system=system, rng=0)
    np.testing.assert_allclose(s1.threshold, 0.8)
    np.testing.assert_array_equal(s1.selection, s9.selection)


def test_lower_bound_not_exclusive_and_cheaper():
    system, rates, scores, source = setup(6, k=6, m=20)
    lb = LowerBound(0.9, 2).schedule(scores, source, rates, 2, system=system)
    jp = JESAPolicy(0.9, 2).schedule(scores, source, rates, 2, system=system, rng=0)
    assert not lb.exclusive and jp.exclusive
    if jp.feasible.all():
        assert lb.info["energy"] <= jp.info["energy"] * (1 + 1e-12)


def test_dense_raises_when_it_cannot_serve():
    system, rates, scores, source = setup(7, k=8, m=40)
    with pytest.raises(ValueError, match="dense"):
        Dense().schedule(scores, source, rates, 1, system=system)
    system, rates, scores, source = setup(7, k=4, m=16)
    rates[2, 3, :] = 0.0
    with pytest.raises(ValueError, match="2->3"):
        Dense().schedule(scores, source, rates, 1, system=system)


def test_dense_selects_everything():
    system, rates, scores, source = setup(8, k=4, m=16)
    sched = Dense().schedule(scores, source, rates, 1, system=system)
    assert sched.selection.all() and sched.feasible.all()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Top-2", TopK(2)),
        ("top2", TopK(2)),
        ("TOP-3", TopK(3)),
        ("H(0.8,2)", Homogeneous(0.8, 2)),
        ("h( 0.8 , 2 )", Homogeneous(0.8, 2)),
        ("JESA(0.9,2)", JESAPolicy(0.9, 2)),
        ("jesa(0.9,2,0.95)", JESAPolicy(0.9, 2, qos=0.95)),
        ("LB(0.9,2)", LowerBound(0.9, 2)),
        ("dense", Dense()),
        ("Dense", Dense()),
    ],
)
def test_policy_from_name(text, expected):
    p = policy_from_name(text)
    assert p == expected and isinstance(p, Policy)


@pytest.mark.parametrize("text", ["top", "Top-0", "H(0.8)", "JESA(a,2)", "random", "", "LB(0.9,2.5)"])
def test_policy_from_name_errors(text):
    with pytest.raises(ValueError, match="accepted forms|`k`|`max_experts`"):
        policy_from_name(text)


def test_params_round_trip_json():
    for p in ALL + [JESAPolicy(0.85, 3, qos=0.9)]:
        d = json.loads(json.dumps(p.params()))
        assert d["name"] == p.name
        assert policy_from_params(d) == p
    assert policy_from_name(JESAPolicy(0.9, 2).name) == JESAPolicy(0.9, 2)


def test_schedule_validation():
    system, rates, scores, source = setup(9, k=4, m=16)
    with pytest.raises(ValueError, match="`layer`"):
        JESAPolicy(0.9, 2).schedule(scores, source, rates, 0, system=system)
    with pytest.raises(ValueError, match="`source`"):
        TopK(2).schedule(scores, source[:-1], rates, 1, system=system)
    with pytest.raises(ValueError, match="`k`"):
        TopK(0)
    with pytest.raises(ValueError, match="`gamma0`"):
        JESAPolicy(-0.5, 2)


def test_policy_names_keep_a_non_default_qos():
    from dmoe.policies import policy_from_name

    assert policy_from_name("JESA(0.9,2,0.5)").name == "JESA(0.9,2,0.5)"
    assert policy_from_name("LB(0.9,2,0.5)").name == "LB(0.9,2,0.5)"
    assert policy_from_name("JESA(0.9,2)").name == "JESA(0.9,2)"
    assert policy_from_name("LB(0.9,2,0.5)").qos == 0.5


@pytest.mark.parametrize("name, needle", [
    ("Top-2[T=0s]", "policy 'Top-2[T=0s]': `deadline_s` must be a finite number > 0 [s], got 0.0"),
    ("Top-2[T=-1s]", "policy 'Top-2[T=-1s]': `deadline_s` must be a finite number > 0 [s], got -1.0"),
    ("JESA(0.9,2)[T=abc]", "the deadline must read [T=<seconds>s]"),
    ("Top-2[T=nans]", "got nan"),
])
def test_bad_deadlines_name_the_policy_and_the_rule(name, needle):
    """Issue 20: [T=0s] errored without naming the policy, [T=-1s] said "unknown policy"."""
    with pytest.raises(ValueError) as exc:
        policy_from_name(name)
    assert needle in str(exc.value) and "unknown policy" not in str(exc.value)


# ------------------------------------------------------------ several resource blocks per link
def test_deadline_loose_is_the_policy_bit_for_bit_and_tight_takes_rbs_first():
    from dmoe.energy import link_rate_from_subcarriers
    from dmoe.latency import link_air_time, round_timing
    from dmoe.policies import Deadline

    system = SystemConfig(num_nodes=4, num_subcarriers=32)
    multi = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        rates = draw_rates(system, rng)
        scores = rng.dirichlet(np.ones(4), 40)
        source = rng.integers(0, 4, 40)
        for base in (TopK(2), JESAPolicy(0.8, 2)):
            ref = base.schedule(scores, source, rates, 1, system=system, rng=0)
            loose = Deadline(base, 1e9).schedule(scores, source, rates, 1, system=system, rng=0)
            assert np.array_equal(loose.selection, ref.selection) and np.array_equal(loose.subcarrier, ref.subcarrier)
            assert loose.rb_share is None and loose.info["deadline_met"] and loose.info["deadline_miss_s"] == 0.0
            tok = link_token_counts(ref.selection, source, 4)
            air = link_air_time(tok, link_rate_from_subcarriers(rates, ref.subcarrier), system.bits_per_token)
            t_free = round_timing(tok, air, air, system).latency_s
            tight = Deadline(base, 0.7 * t_free).schedule(scores, source, rates, 1, system=system, rng=0)
            assert tight.info["deadline_met"]
            if tight.rb_share is not None:
                multi += 1
                check_schedule(tight.selection, tight.subcarrier, source, rates, rb_share=tight.rb_share)
    assert multi >= 3


def test_check_schedule_accepts_several_rbs_but_not_a_shared_rb():
    from dmoe.optimize.feasibility import InvariantError

    rates = np.full((3, 3, 4), 1e5)
    sel = np.zeros((2, 3), dtype=bool)
    sel[0, 1] = sel[1, 2] = True
    source = np.array([0, 0])
    sub = np.full((3, 3), -1)
    sub[0, 1], sub[0, 2] = 0, 2
    share = np.zeros((3, 3, 4))
    share[0, 1, :2] = 0.5
    share[0, 2, 2:] = 0.5
    check_schedule(sel, sub, source, rates, rb_share=share)
    share[0, 2] = [0.0, 0.5, 0.5, 0.0]  # RB 1 now carries both links
    with pytest.raises(InvariantError, match="C3"):
        check_schedule(sel, sub, source, rates, rb_share=share)
    check_schedule(sel, sub, source, rates, rb_share=share, exclusive=False)  # the lower bound may share


def test_node_budget_limits_topk_and_dense():
    system = SystemConfig(num_nodes=4, num_subcarriers=32, node_power_budget_w=1e-2)  # one RB per node
    rng = np.random.default_rng(0)
    rates = draw_rates(system, rng)
    scores = rng.dirichlet(np.ones(4), 20)
    source = rng.integers(0, 4, 20)
    s = TopK(2).schedule(scores, source, rates, 1, system=system)
    tok = link_token_counts(s.selection, source, 4)
    assert ((tok > 0) & ~np.eye(4, dtype=bool)).sum(axis=1).max() <= 1
    assert (s.subcarrier >= 0).sum(axis=1).max() <= 1
    with pytest.raises(ValueError, match="max_rbs_per_node"):
        Dense().schedule(scores, source, rates, 1, system=system)


def test_deadline_gives_a_slow_link_more_rbs_instead_of_excluding_it():
    from dmoe.policies import Deadline

    system = SystemConfig(num_nodes=3, num_subcarriers=6, comp_throughput_tokens_per_s=1e9)
    rates = np.full((3, 3, 6), 1e5)
    rates[np.arange(3), np.arange(3)] = 0.0
    scores = np.tile([0.05, 0.9, 0.05], (6, 1))  # six tokens of node 0 all want expert 1
    source = np.zeros(6, dtype=int)
    one_rb = 6 * system.bits_per_token / 1e5  # air time of the link on one RB [s]
    s = Deadline(TopK(1), 2 * 0.6 * one_rb).schedule(scores, source, rates, 1, system=system)
    assert s.selection[:, 1].all()  # nobody rerouted
    assert s.info["links_excluded"] == 0 and s.info["deadline_met"] and s.info["multi_rb_links"] == 1
    assert (s.rb_share[0, 1] > 0).sum() == 2  # two RBs carry it within 0.6 x the one-RB air time
