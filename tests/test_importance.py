"""Importance profiles, optimal per-layer QoS and the calibrated policies (issue 11; numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.optimize import jesa
from dmoe.policies import LowerBound, policy_from_name, policy_from_params
from dmoe.optimize._knapsack import solve_mckp
from dmoe.policies.calibrated import CalibratedDES, CalibratedJESA, CalibratedLB, calibrated_policy
from dmoe.optimize.qos_allocation import ImportanceProfile, allocate_qos, predicted_front
from dmoe.policies.layerwise import DESPolicy, LayerwiseQoS
from dmoe.system import SystemConfig

K = 4
SYSTEM = SystemConfig(num_nodes=K, num_subcarriers=16)


def make_profile(L=6, window=2, qos=(0.2, 0.5, 1.0), D=2, seed=0, base="top", **over):
    rng = np.random.default_rng(seed)
    wins = [[a, min(a + window - 1, L)] for a in range(1, L + 1, window)]
    W, V = len(wins), len(qos)
    kl = np.sort(rng.exponential(0.2, (W, V)), axis=1)[:, ::-1].copy()
    kl[:, -1] = 0.0
    energy = np.sort(rng.uniform(0.001, 0.01, (W, V)), axis=1)
    kw = dict(
        model_key="k" * 64, model_name="tiny", num_layers=L, num_experts=K, max_experts=D, qos=list(qos),
        windows=wins, kl=kl.tolist(), kl_se=(kl * 0.1).tolist(), nll=(kl * 30).tolist(), nll_se=(kl * 3).tolist(),
        agreement=np.ones((W, V)).tolist(), energy=energy.tolist(), energy_full=(energy[:, -1] * 4).tolist(),
        moe_layers=[True] * L, base=base, base_kl=0.25, base_nll=20.0, base_agreement=0.7,
        config={"subjects": ["marketing"], "system": SYSTEM.to_dict()},
    )
    kw.update(over)
    return ImportanceProfile(**kw)


def test_profile_roundtrip_and_validation(tmp_path):
    prof = make_profile()
    path = prof.save(tmp_path / "p.json")
    again = ImportanceProfile.load(path)
    assert again == prof
    with pytest.raises(ValueError, match="`kl`"):
        make_profile(kl=[[0.1, 0.2]])
    with pytest.raises(ValueError, match="`windows"):
        make_profile(windows=[[1, 2], [4, 6], [5, 6]])
    with pytest.raises(ValueError, match="`qos"):
        make_profile(qos=[0.2, 0.5, 1.5])
    with pytest.raises(ValueError, match="`profile`"):
        ImportanceProfile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="not a dmoe importance profile"):
        ImportanceProfile.load(tmp_path / "bad.json")


def test_check_model_names_the_mismatch():
    prof = make_profile()
    prof.check_model(num_layers=6, num_experts=K, model_key="k" * 64, max_experts=2)
    with pytest.raises(ValueError, match="K = 8"):
        prof.check_model(num_layers=6, num_experts=8)
    with pytest.raises(ValueError, match="model build"):
        prof.check_model(num_layers=6, num_experts=K, model_key="x" * 64)
    with pytest.raises(ValueError, match="`max_experts`"):
        prof.check_model(num_layers=6, num_experts=K, max_experts=3)
    with pytest.raises(ValueError, match="layers"):
        prof.check_model(num_layers=7, num_experts=K)


def test_allocation_is_the_knapsack_optimum_with_the_base_offset():
    prof = make_profile(L=9, window=3, qos=(0.1, 0.3, 0.6, 1.0), seed=3)
    kl, en = prof.table("kl", monotone=True), np.asarray(prof.energy)
    for budget in (0.25, 0.3, 0.5, 1.0, 5.0):
        a = allocate_qos(prof, budget)
        ref = solve_mckp(kl, en, budget - prof.base_kl, method="brute")
        assert a.feasible and a.predicted_energy == ref.energy
        assert a.predicted_loss == pytest.approx(prof.base_kl + ref.loss)
        assert a.predicted_loss <= budget + 1e-12
        # per-layer thresholds expand each window's level
        assert a.thresholds.shape == (9,)
        for (first, last), lv in zip(prof.windows, a.levels):
            assert np.all(a.thresholds[first - 1 : last] == prof.qos[lv])
    # the largest budget buys the cheapest level everywhere
    assert list(allocate_qos(prof, 1e9).levels) == [0, 0, 0]
    fl, fe, levels = predicted_front(prof)
    assert fl[0] == pytest.approx(prof.base_kl) and np.all(np.diff(fe) < 0)
    # energy budget
    a = allocate_qos(prof, float(en[:, -1].sum()), kind="energy")
    assert a.feasible and a.predicted_energy <= en[:, -1].sum() + 1e-15


def test_monotone_table_removes_noise_dips():
    prof = make_profile(L=2, window=1, qos=(1.0, 0.2, 0.5), kl=[[0.0, 0.5, 0.9], [0.0, 0.3, 0.1]],
                        kl_se=np.zeros((2, 3)).tolist(), nll=np.zeros((2, 3)).tolist(),
                        nll_se=np.zeros((2, 3)).tolist(), agreement=np.ones((2, 3)).tolist(),
                        energy=[[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]], energy_full=[4.0, 4.0])
    # z order 0.2, 0.5, 1.0 -> columns 1, 2, 0: window 0 has a dip at z = 0.2 (0.5 < 0.9)
    assert np.array_equal(prof.table("kl", monotone=True), [[0.0, 0.9, 0.9], [0.0, 0.3, 0.1]])
    assert np.array_equal(prof.table("kl"), prof.kl)
    # one window: the noisy table sells z = 0.2 for 0.5 nat although z = 0.5 already costs 0.9
    one = make_profile(L=1, window=1, qos=(1.0, 0.2, 0.5), kl=[[0.0, 0.5, 0.9]], kl_se=[[0.0] * 3],
                       nll=[[0.0] * 3], nll_se=[[0.0] * 3], agreement=[[1.0] * 3], energy=[[3.0, 1.0, 2.0]],
                       energy_full=[4.0])
    assert list(allocate_qos(one, one.base_kl + 0.6, monotone=False).thresholds) == [0.2]
    safe = allocate_qos(one, one.base_kl + 0.6)
    assert list(safe.thresholds) == [1.0] and safe.predicted_energy == 3.0


def test_budget_below_the_base_returns_the_nearest_feasible_allocation():
    prof = make_profile()
    a = allocate_qos(prof, 0.1)  # base KL is 0.25
    assert not a.feasible and "cannot be met" in a.message and "nearest feasible" in a.message
    assert a.predicted_loss == pytest.approx(0.25)
    with pytest.warns(UserWarning, match="cannot be met"):
        pol = calibrated_policy("JESA", prof, 0.1, 2)
    assert pol.thresholds == tuple(a.thresholds)
    msgs = []
    policy_from_name("JESA(cal:0.1,2)", profile=prof, warn=msgs.append)
    assert msgs and "cannot be met" in msgs[0]


def test_policy_names_parse_with_a_profile():
    prof = make_profile()
    pol = policy_from_name("JESA(cal:0.5,2)", profile=prof)
    assert isinstance(pol, CalibratedJESA) and pol.name == "JESA(cal:0.5,2)"
    assert pol.thresholds == tuple(allocate_qos(prof, 0.5).thresholds)
    assert isinstance(policy_from_name(" des( cal : 0.5 , 2 ) ", profile=prof), CalibratedDES)
    assert isinstance(policy_from_name("LB(cal:0.5,2)", profile=prof), CalibratedLB)
    nll = policy_from_name("JESA(cal-nll:30,2)", profile=prof)
    assert nll.name == "JESA(cal-nll:30,2)" and nll.measure == "nll"
    en = policy_from_name("JESA(cal-energy:0.02,2)", profile=prof)
    assert en.name == "JESA(cal-energy:0.02,2)"
    # params round trip
    for p in (pol, nll):
        again = policy_from_params(p.params())
        assert again == p and again.name == p.name and hash(again) == hash(p)


def test_calibrated_names_fail_clearly():
    prof = make_profile()
    with pytest.raises(ValueError, match="dmoe calibrate"):
        policy_from_name("JESA(cal:0.5,2)")
    with pytest.raises(ValueError, match="`max_experts`.*dmoe calibrate -D 3"):
        policy_from_name("JESA(cal:0.5,3)", profile=prof)
    with pytest.raises(ValueError, match="malformed"):
        policy_from_name("JESA(cal:abc,2)", profile=prof)
    with pytest.raises(ValueError, match="thresholds\\[1\\]"):
        CalibratedJESA([0.5, 1.5], 2)
    with pytest.raises(ValueError, match="`thresholds`"):
        CalibratedJESA([], 2)
    with pytest.raises(ValueError, match="`family`"):
        calibrated_policy("H", prof, 0.5, 2)


def _layer_inputs(seed, t=24):
    rng = np.random.default_rng(seed)
    scores = rng.dirichlet(np.ones(K) * 0.7, size=t)
    source = rng.integers(0, K, t)
    rates = draw_rates(SYSTEM, rng)
    return scores, source, rates


def test_calibrated_policies_schedule_with_the_threshold_of_each_layer():
    thr = [0.9, 0.6, 0.3, 0.1]
    jp = CalibratedJESA(thr, 2)
    lw = LayerwiseQoS(thr, 2)
    for layer in range(1, 5):
        scores, source, rates = _layer_inputs(layer)
        a = jp.schedule(scores, source, rates, layer, system=SYSTEM, rng=7)
        b = lw.schedule(scores, source, rates, layer, system=SYSTEM, rng=7)
        ref = jesa(scores, source, rates, thr[layer - 1], 2, system=SYSTEM, rng=np.random.default_rng(7))
        assert np.array_equal(a.selection, b.selection) and np.array_equal(a.selection, ref.selection)
        assert np.all(a.threshold == thr[layer - 1])
        # LB / DES with gamma0 chosen so that gamma0**layer equals the layer's threshold
        g = thr[layer - 1] ** (1.0 / layer)
        lb = CalibratedLB(thr, 2).schedule(scores, source, rates, layer, system=SYSTEM)
        lb_ref = LowerBound(g, 2).schedule(scores, source, rates, layer, system=SYSTEM)
        assert np.array_equal(lb.selection, lb_ref.selection) and not lb.exclusive
        ds = CalibratedDES(thr, 2).schedule(scores, source, rates, layer, system=SYSTEM, rng=3)
        ds_ref = DESPolicy(g, 2).schedule(scores, source, rates, layer, system=SYSTEM, rng=3)
        assert np.array_equal(ds.selection, ds_ref.selection)
    with pytest.raises(ValueError, match="`layer` 5"):
        jp.schedule(*_layer_inputs(0), 5, system=SYSTEM)


def test_warnings_carry_the_label_the_user_wrote_and_units():
    """Issue 20: cal-energy / cal-nll warnings printed `JESA(cal:...)` and no unit."""
    prof = make_profile()
    msgs = []
    policy_from_name("JESA(cal-energy:0.0001,2)", profile=prof, warn=msgs.append)
    assert msgs and msgs[0].startswith("JESA(cal-energy:0.0001,2): ") and "J/token" in msgs[0], msgs
    msgs.clear()
    policy_from_name("LB(cal-nll:1,2)", profile=prof, warn=msgs.append)
    assert msgs and msgs[0].startswith("LB(cal-nll:1,2): ") and "nat" in msgs[0], msgs
    msgs.clear()
    policy_from_name("DES(cal:0.1,2)", profile=prof, warn=msgs.append)
    assert msgs and msgs[0].startswith("DES(cal:0.1,2): ") and "nat/token" in msgs[0], msgs


@pytest.mark.parametrize("name, needle", [("JESA(cal:1,0)", "must be >= 1, got 0"),
                                          ("JESA(cal:1,9)", "exceeds the profile's K = 4")])
def test_calibrated_d_outside_one_to_k_is_refused_without_a_useless_hint(name, needle):
    """Issue 20: `JESA(cal:1,0)` suggested `dmoe calibrate -D 0`, which the CLI rejects."""
    for prof in (None, make_profile()):
        if prof is None and "K = 4" in needle:
            continue
        with pytest.raises(ValueError, match=needle) as exc:
            policy_from_name(name, profile=prof)
        assert "-D 0" not in str(exc.value)


def test_old_module_path_reexports_the_same_objects_with_a_warning():
    """dmoe.optimize.importance was renamed dmoe.optimize.qos_allocation (issue 19)."""
    import importlib

    import dmoe
    import dmoe.optimize.qos_allocation as new

    old = importlib.import_module("dmoe.optimize.importance")
    for name in new.__all__:
        with pytest.warns(DeprecationWarning, match=rf"moved to `dmoe\.optimize\.qos_allocation\.{name}`") as rec:
            obj = getattr(old, name)
        assert rec[0].filename == __file__
        assert obj is getattr(new, name)
    assert sorted(old.__all__) == sorted(new.__all__)
    assert dmoe.ImportanceProfile is new.ImportanceProfile and dmoe.allocate_qos is new.allocate_qos
    with pytest.raises(AttributeError):
        old.solve_mckp  # noqa: B018  (not one of its public names)
