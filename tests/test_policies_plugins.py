"""The policy API (issue 19, items 1-2): the dmoe.policies package and its old paths, the
public demand / allocation helpers, the runtime's feasibility check, plugins by import path
and by entry point, and the README's example policy."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.optimize.feasibility import check_subcarrier_allocation
from dmoe.policies import (
    Deadline,
    Dense,
    InfeasibleScheduleError,
    JESAPolicy,
    LowerBound,
    Policy,
    Schedule,
    TopK,
    allocate_links,
    check_policy_schedule,
    node_demand,
    policy_from_name,
    policy_from_params,
)
from dmoe.system import SystemConfig

README = Path(__file__).resolve().parents[1] / "README.md"


# --- the package and its old paths -----------------------------------------------------------


@pytest.mark.parametrize("old, new", [
    ("dmoe.optimize.policies", "dmoe.policies"),
    ("dmoe.optimize.calibrated", "dmoe.policies.calibrated"),
    ("dmoe.optimize.deadline", "dmoe.policies.deadline"),
    ("dmoe.optimize.layerwise", "dmoe.policies.layerwise"),
])
def test_old_paths_reexport_the_same_objects_with_a_warning(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=re.escape(new)):
        mod = importlib.import_module(old)
    target = importlib.import_module(new)
    assert mod.__all__
    for name in mod.__all__:
        assert getattr(mod, name) is getattr(target, name), name


def test_optimize_package_names_resolve_lazily_with_a_warning():
    import dmoe
    import dmoe.optimize as opt
    import dmoe.policies as pol

    for name in ("TopK", "Deadline", "policy_from_name", "CalibratedJESA", "Schedule"):
        with pytest.warns(DeprecationWarning, match=f"dmoe.policies.{name}"):
            assert getattr(opt, name) is getattr(pol, name)
    with pytest.raises(AttributeError):
        opt.NoSuchThing  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dmoe.TopK is pol.TopK and dmoe.Deadline is pol.Deadline and dmoe.Policy is pol.Policy
        assert dmoe.node_demand is pol.node_demand and dmoe.allocate_links is pol.allocate_links
        assert dmoe.check_policy_schedule is pol.check_policy_schedule


# --- public helpers -----------------------------------------------------------------------------


def test_node_demand_matches_a_loop_oracle():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 6))
        e = n * int(rng.integers(1, 4))
        t = int(rng.integers(0, 12))
        place = None if e == n and rng.random() < 0.5 else rng.integers(0, n, e)
        if place is None:
            e = n
        sel = rng.random((t, e)) < 0.4
        src = rng.integers(0, n, t)
        want = np.zeros((n, n), dtype=np.int64)
        for i in range(t):
            nodes = {j if place is None else int(place[j]) for j in np.flatnonzero(sel[i])}
            for node in nodes:
                want[src[i], node] += 1
        got = node_demand(sel, src, n, placement=place)
        assert got.dtype == np.int64 and np.array_equal(got, want)
    with pytest.raises(ValueError, match="`source`"):
        node_demand(np.ones((2, 3), bool), [0, 5], 3)


def test_allocate_links_serves_the_demand_under_c3():
    rng = np.random.default_rng(1)
    for trial in range(50):
        n, m = 4, int(rng.integers(3, 16))
        system = SystemConfig(num_nodes=n, num_subcarriers=m)
        rates = draw_rates(system, rng)
        demand = rng.integers(0, 3, (n, n))
        res = allocate_links(rates, demand, system)
        check_subcarrier_allocation(res, rates, demand, tx_power_w=system.tx_power_w,
                                    bits_per_token=system.bits_per_token)


# --- the runtime's feasibility check ----------------------------------------------------------


def _instance(seed=0, n=4, m=16, t=20):
    rng = np.random.default_rng(seed)
    system = SystemConfig(num_nodes=n, num_subcarriers=m)
    rates = draw_rates(system, rng)
    scores = rng.dirichlet(np.ones(n), size=t)
    source = rng.integers(0, n, t)
    return system, rates, scores, source


@pytest.mark.parametrize("name", ["Top-1", "Top-3", "H(0.8,2)", "JESA(0.9,2)", "LB(0.9,2)", "DES(0.9,2)", "dense",
                                  "JESA(0.9,2)[T=0.001s]", "Top-2[T=0.002s]"])
def test_builtins_pass_the_check(name):
    pol = policy_from_name(name)
    for seed in range(5):
        system, rates, scores, source = _instance(seed, m=12)
        avail = None if seed % 2 == 0 else np.array([True, False, True, True])
        if isinstance(pol, Dense) and avail is not None:
            continue
        sched = pol.schedule(scores, source, rates, 2, system=system, rng=seed, available=avail)
        check_policy_schedule(pol, sched, scores, source, rates, 2, available=avail)


def test_check_with_a_placement():
    rng = np.random.default_rng(3)
    system = SystemConfig(num_nodes=3, num_subcarriers=8)
    rates = draw_rates(system, rng)
    place = np.array([0, 0, 1, 1, 2, 2])
    scores = rng.dirichlet(np.ones(6), size=15)
    source = rng.integers(0, 3, 15)
    for pol in (TopK(2), JESAPolicy(0.9, 2), LowerBound(0.9, 3), Dense()):
        sched = pol.schedule(scores, source, rates, 1, system=system, rng=0, placement=place)
        check_policy_schedule(pol, sched, scores, source, rates, 1, placement=place)
    # an expert on node 1 reached from node 0 without a subcarrier
    sel = np.zeros((15, 6), bool)
    sel[source == 0, 2] = True
    bad = Schedule(sel, np.full((3, 3), -1), np.ones(15, bool))
    if (source == 0).any():
        with pytest.raises(InfeasibleScheduleError, match="positive-rate subcarrier"):
            check_policy_schedule(TopK(1), bad, scores, source, rates, 1, placement=place)


class _Fixed(Policy):
    """Returns a given schedule (to test the checker)."""

    def __init__(self, sched, max_experts=None):
        self.sched = sched
        if max_experts is not None:
            self.max_experts = max_experts
        self.name = "Fixed"

    def schedule(self, *args, **kwargs):
        return self.sched


def _violations(rates, scores, source):
    t, k = scores.shape
    good = TopK(2).schedule(scores, source, rates, 1, system=SystemConfig(num_nodes=k, num_subcarriers=16))
    sub = good.subcarrier.copy()
    links = np.argwhere(sub >= 0)
    shared = sub.copy()
    shared[tuple(links[1])] = sub[tuple(links[0])]
    low = good.selection.copy()
    row = int(np.argmax(low.sum(axis=1)))
    low[row] = False
    low[row, source[row]] = True
    dead = rates.copy()
    i, j = links[0]
    dead[i, j, sub[i, j]] = 0.0
    return good, [
        ("C3 violated", Schedule(good.selection, shared, good.feasible), None, rates, None),
        ("C2 violated", Schedule(np.ones((t, k), bool), sub, good.feasible), 2, rates, None),
        ("C1 violated", Schedule(low, sub, np.ones(t, bool), np.full(t, 0.99)), None, rates, None),
        ("positive-rate subcarrier", good, None, dead, None),
        ("unavailable expert", good, None, rates, ~good.selection.any(axis=0)),
        ("`selection` must be bool", Schedule(good.selection.astype(int), sub, good.feasible), None, rates, None),
        ("`subcarrier` must be a 2-D", Schedule(good.selection, sub[0], good.feasible), None, rates, None),
        ("`feasible` must be bool", Schedule(good.selection, sub, np.ones(t)), None, rates, None),
        ("`exclusive` must be a bool", Schedule(good.selection, sub, good.feasible, None, "yes"), None, rates, None),
        ("must return a dmoe.policies.Schedule, got NoneType", None, None, rates, None),
        ("must return a dmoe.policies.Schedule, got tuple without selection, subcarrier, feasible",
         (good.selection, sub, good.feasible), None, rates, None),
        ("`threshold` must be finite, got 1 NaN", Schedule(good.selection, sub, good.feasible,
                                                          np.r_[np.nan, np.zeros(t - 1)]), None, rates, None),
        ("`threshold` must be None or a float array", Schedule(good.selection, sub, good.feasible, "high"), None,
         rates, None),
        (f"each must lie in -1 .. M-1 = {rates.shape[2] - 1}",
         Schedule(good.selection, np.where(sub >= 0, rates.shape[2], -1), good.feasible), None, rates, None),
    ]


def test_check_names_the_constraint_the_layer_and_the_policy():
    system, rates, scores, source = _instance(5, t=40)
    good, cases = _violations(rates, scores, source)
    check_policy_schedule(_Fixed(good), good, scores, source, rates, 7)
    for needle, sched, d, r, avail in cases:
        with pytest.raises(InfeasibleScheduleError, match=re.escape(needle)) as exc:
            check_policy_schedule(_Fixed(sched, d), sched, scores, source, r, 7, available=avail)
        assert "policy 'Fixed' at layer 7" in str(exc.value) and isinstance(exc.value, ValueError)
    # a Deadline declares its base policy's D
    wide = Schedule(np.ones_like(good.selection), good.subcarrier, good.feasible)
    with pytest.raises(InfeasibleScheduleError, match="C2 violated"):
        check_policy_schedule(Deadline(JESAPolicy(0.9, 2), 1.0), wide, scores, source, rates, 1)


def test_the_runtime_stops_on_an_infeasible_schedule(tiny_llama, tiny_tokenizer):
    from conftest import make_tiny_moe

    from dmoe.data import load_mmlu, pack_question
    from dmoe.runtime import DMoERuntime

    class SharedSubcarrier(TopK):
        def schedule(self, scores, source, rates, layer, **kw):
            s = super().schedule(scores, source, rates, layer, **kw)
            sub = np.where(s.subcarrier >= 0, 0, -1)  # every link on subcarrier 0
            return Schedule(s.selection, sub, s.feasible)

    model = make_tiny_moe(tiny_llama, 4)
    queries = [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=4)]
    system = SystemConfig(num_nodes=4, num_subcarriers=16)
    rt = DMoERuntime(model, TopK(3), system=system, seed=0)
    rt.run_round(queries)  # the built-in passes
    rt = DMoERuntime(model, SharedSubcarrier(3), system=system, seed=0)
    with pytest.raises(InfeasibleScheduleError, match=r"policy 'Top-3' at layer 1 .*C3 violated"):
        rt.run_round(queries)


def test_the_runtime_names_a_policy_that_raises(tiny_llama, tiny_tokenizer):
    from conftest import make_tiny_moe

    from dmoe.data import load_mmlu, pack_question
    from dmoe.policies import PolicyFailedError
    from dmoe.runtime import DMoERuntime

    class Buggy(TopK):
        def schedule(self, scores, source, rates, layer, **kw):
            if layer == 2:
                return {}["missing"]  # a bug in the user's policy, at its second layer
            return super().schedule(scores, source, rates, layer, **kw)

    model = make_tiny_moe(tiny_llama, 4)
    queries = [pack_question(tiny_tokenizer, q) for q in load_mmlu("anatomy", limit=2)]
    rt = DMoERuntime(model, Buggy(2), system=SystemConfig(num_nodes=4, num_subcarriers=16), seed=0)
    with pytest.raises(PolicyFailedError, match=r"policy 'Top-2' at layer 2 raised KeyError: 'missing' "
                                                r"\(at .*test_policies_plugins\.py:\d+ in schedule\)") as exc:
        rt.run_round(queries)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value.__cause__, KeyError)


# --- plugins ----------------------------------------------------------------------------------

PLUGIN = '''
import numpy as np
from dmoe.policies import Policy, TopK

class Greedy(TopK):
    """Top-k under another name, with a keyword argument."""
    def __init__(self, k, *, tag="x"):
        super().__init__(k)
        self.tag = tag
        self.name = f"Greedy({k},{tag})"

class Abstract(Policy):
    pass

class NotAPolicy:
    def __init__(self, *a):
        pass

def factory(k):
    return TopK(k)

class NoInit(Policy):
    """No constructor of its own."""
    def schedule(self, scores, source, rates, layer, **kw):
        return TopK(1).schedule(scores, source, rates, layer, **kw)

class VarArgs(NoInit):
    def __init__(self, a, *ks, z=1, **opts):
        self.a, self.ks, self.z, self.opts = a, ks, z, opts
'''


@pytest.fixture
def plugin_mod(tmp_path, monkeypatch):
    name = f"plugmod_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(PLUGIN)
    (tmp_path / "broken_mod_x.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_import_path_builds_records_and_round_trips(plugin_mod):
    pol = policy_from_name(f"{plugin_mod}:Greedy(2, tag='y')")
    assert type(pol).__name__ == "Greedy" and pol.k == 2 and pol.tag == "y" and pol.name == "Greedy(2,y)"
    assert pol.spec == f"{plugin_mod}:Greedy(2, tag='y')"
    again = policy_from_name(pol.spec)
    assert again == pol and type(again) is type(pol)
    params = pol.params()
    assert params["policy"] == f"{plugin_mod}:Greedy" and params["k"] == 2 and params["tag"] == "y"
    assert policy_from_params(params) == pol
    # deadline forms wrap plugins, and no-argument forms call with none
    dl = policy_from_name(f"{plugin_mod}:Greedy(1)[T=2s]")
    assert isinstance(dl, Deadline) and dl.spec == f"{plugin_mod}:Greedy(1)[T=2s]"
    assert policy_from_name(dl.spec) == dl
    system, rates, scores, source = _instance(0)
    sched = pol.schedule(scores, source, rates, 1, system=system)
    check_policy_schedule(pol, sched, scores, source, rates, 1)


def test_params_read_back_summary_entries_and_any_signature(plugin_mod):
    import json

    mod = importlib.import_module(plugin_mod)
    pols = [mod.Greedy(2, tag="y"), TopK(3), Deadline(JESAPolicy(0.9, 2), 1.5), mod.NoInit(),
            mod.VarArgs(1, 2, 3, z=4, w=5), mod.VarArgs(0)]
    for pol in pols:
        params = pol.params()
        assert "args" not in params and "kwargs" not in params  # no empty *args / **kwargs recorded
        # a run's summary.json: the params with the spec beside them, through JSON
        entry = json.loads(json.dumps({"name": pol.name, "spec": pol.spec, **params}))
        again = policy_from_params(entry)
        assert type(again) is type(pol)
        assert json.dumps(again.params() | {"name": ""}) == json.dumps(params | {"name": ""})
        assert policy_from_name(pol.spec).params() == params
    rebuilt = policy_from_params(json.loads(json.dumps(pols[4].params())))
    assert (rebuilt.a, rebuilt.ks, rebuilt.z, rebuilt.opts) == (1, (2, 3), 4, {"w": 5})
    with pytest.raises(ValueError, match=r"policy '.*:VarArgs': .*raised TypeError"):
        policy_from_params({"policy": f"{plugin_mod}:VarArgs", "b": 1})


@pytest.mark.parametrize("spec, needle", [
    ("no_such_module_zz:X(1)", "module 'no_such_module_zz' does not import (ModuleNotFoundError"),
    ("broken_mod_x:X(1)", "module 'broken_mod_x' does not import (RuntimeError: boom at import)"),
    ("{m}:Missing(1)", "has no attribute 'Missing'"),
    ("{m}:NotAPolicy(1)", "not a subclass of dmoe.policies.Policy"),
    ("{m}:factory(1)", "not a subclass of dmoe.policies.Policy"),
    ("{m}:Abstract()", "is abstract (implement schedule)"),
    ("{m}:Greedy(__import__('os'))", "is not a Python literal"),
    ("{m}:Greedy(k)", "is not a Python literal"),
    ("{m}:Greedy(1+1)", "is not a Python literal"),
    ("{m}:Greedy(*[1])", "`*` arguments"),
    ("{m}:Greedy(**{{'k': 1}})", "`**` arguments"),
    ("{m}:Greedy(1), (2)", "must be one comma-separated list"),
    ("{m}:Greedy(1, 2, 3)", "raised TypeError"),
    ("{m}:Greedy(0)", "raised ValueError: `k` must be >= 1"),
    ("{m}:Greedy(1 2)", "do not parse"),
    ("{m}:Greedy(k=1, k=2)", "keyword argument 'k' is given twice"),
    ("{m}:Greedy(1", "unbalanced parentheses (1 '(' and 0 ')')"),
    ("{m}:Greedy(1)[T=2s", "only '(arguments)' may follow"),
    ("{m}:Greedy[1]", "only '(arguments)' may follow"),
    ("{m}:", "give a class name"),
])
def test_bad_plugin_specs(plugin_mod, spec, needle):
    spec = spec.format(m=plugin_mod)
    with pytest.raises(ValueError, match=re.escape(needle)) as exc:
        policy_from_name(spec)
    assert repr(spec) in str(exc.value)


def test_huge_specs_are_cut_in_messages(plugin_mod):
    for spec in (f"{plugin_mod}:Greedy({'9' * 5000})", f"{plugin_mod}:Greedy(x{'y' * 5000})",
                 f"{plugin_mod}:Greedy({'(' * 3000})"):
        with pytest.raises(ValueError, match=r"characters>") as exc:
            policy_from_name(spec)
        assert len(str(exc.value)) < 1000


def test_literal_arguments_are_never_evaluated(plugin_mod, tmp_path):
    flag = tmp_path / "evaluated"
    with pytest.raises(ValueError, match="not a Python literal"):
        policy_from_name(f"{plugin_mod}:Greedy(open({str(flag)!r}, 'w'))")
    assert not flag.exists()


def test_run_main_job_checks_mixed_policies_up_front(plugin_mod):
    from dmoe.main_job import _drop_duplicate_policies, _parse_policies

    pol = importlib.import_module(plugin_mod).Greedy(2)
    parsed = _parse_policies([pol, "Top-2", f"{plugin_mod}:Greedy(2)"])
    assert parsed[0] is pol and parsed[2] == pol
    notes = []
    names, kept = _drop_duplicate_policies([pol, "Top-2", f"{plugin_mod}:Greedy(2)"], parsed, notes.append)
    assert len(kept) == 2 and "more than once" in notes[0]
    with pytest.raises(ValueError, match=r"`policies` \(--policy\): policy 'nope_mod_q:X\(\)'"):
        _parse_policies(["Top-1", "nope_mod_q:X()"])
    with pytest.raises(ValueError, match="policy string or a dmoe.policies.Policy, got int"):
        _parse_policies(["Top-1", 3])
    # a subclass keeping its base's label would share a row label with the built-in
    with pytest.raises(ValueError, match=r"Twin\(2\)' and 'Top-2' are different policies with the same label 'Top-2'"):
        twins = [type("Twin", (TopK,), {})(2), "Top-2"]
        _drop_duplicate_policies(twins, _parse_policies(twins), notes.append)
    with pytest.raises(ValueError, match="wrap it in a list"):
        _parse_policies(pol)
    with pytest.raises(ValueError, match=r"got the class Greedy, not a policy; build one \(Greedy\(...\)\)"):
        _parse_policies([type(pol)])


def test_config_check_covers_plugin_specs(plugin_mod, tmp_path):
    from click.testing import CliRunner

    from dmoe.cli import main

    good = tmp_path / "good.toml"
    good.write_text(f'[policies]\npolicies = ["{plugin_mod}:Greedy(2)", "Top-2"]\n')
    res = CliRunner().invoke(main, ["config", str(good)])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[policies]\npolicies = ["{plugin_mod}:NotAPolicy(2)"]\n')
    res = CliRunner().invoke(main, ["config", str(bad)])
    assert res.exit_code != 0 and "`policies`" in res.output and "not a subclass" in res.output


# --- entry points -------------------------------------------------------------------------------


def _dist(root: Path, dist: str, lines: str):
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dmoe.policies]\n{lines}\n")


def test_entry_points_register_names(plugin_mod, tmp_path, monkeypatch):
    site = tmp_path / "site"
    _dist(site, "plugdist_a", f"GreedyEP = {plugin_mod}:Greedy\nJESA = {plugin_mod}:Greedy\nTwice = {plugin_mod}:Greedy")
    _dist(site, "plugdist_b", f"Twice = {plugin_mod}:factory")
    monkeypatch.syspath_prepend(str(site))
    pol = policy_from_name("GreedyEP(3, tag='z')")
    assert type(pol).__name__ == "Greedy" and pol.k == 3 and pol.tag == "z"
    assert pol.spec == f"{plugin_mod}:Greedy(3, tag='z')"  # recorded by import path
    # built-in forms come first; a plugin named like a built-in family is refused when reached
    assert type(policy_from_name("JESA(0.9,2)")) is JESAPolicy
    with pytest.raises(ValueError, match="takes the name of a built-in policy family"):
        policy_from_name("JESA(0.9)")
    with pytest.raises(ValueError, match="registered twice"):
        policy_from_name("Twice(1)")
    with pytest.raises(ValueError, match="installed plugins.*GreedyEP"):
        policy_from_name("Unknown(1)")


# --- the README's example, and runs on a tiny model ---------------------------------------------


def _readme_module(tmp_path, monkeypatch, name="mymod"):
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(# mymod\.py\n.*?)```", text, re.S)
    assert len(blocks) == 1, "README: one ```python block starting with '# mymod.py'"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(blocks[0]))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_readme_example_passes_the_check(tmp_path, monkeypatch):
    mod = _readme_module(tmp_path, monkeypatch)
    rng = np.random.default_rng(7)
    for trial in range(60):
        n = int(rng.integers(2, 6))
        per = int(rng.integers(1, 3))
        m = int(rng.integers(1, 2 * n * n))
        budget = None if trial % 3 else int(rng.integers(1, 4))
        p0 = SystemConfig().tx_power_w
        system = SystemConfig(num_nodes=n, num_subcarriers=m,
                              node_power_budget_w=None if budget is None else budget * p0)
        rates = draw_rates(system, rng)
        rates[rng.random(rates.shape) < 0.2] = 0.0
        e = n * per
        place = None if per == 1 else np.repeat(np.arange(n), per)
        t = int(rng.integers(1, 30))
        scores = rng.dirichlet(np.ones(e), size=t)
        source = rng.integers(0, n, t)
        avail = None if trial % 4 else rng.random(e) < 0.8
        pol = mod.BestChannel(float(rng.uniform(0.3, 1.0)), int(rng.integers(1, e + 1)))
        sched = pol.schedule(scores, source, rates, 1, system=system, placement=place, available=avail)
        check_policy_schedule(pol, sched, scores, source, rates, 1, placement=place, available=avail)
        assert sched.selection.sum(axis=1).max(initial=0) <= pol.max_experts
    assert policy_from_name("mymod:BestChannel(0.8,8)").spec == "mymod:BestChannel(0.8, 8)"


def test_readme_example_runs_through_run_main_job(tmp_path, monkeypatch, tiny_carved_build):
    import json

    from dmoe.main_job import run_main_job

    mod = _readme_module(tmp_path, monkeypatch)
    build, root = tiny_carved_build
    out = tmp_path / "out"
    cfg, results = run_main_job(
        model_source=str(build), cache_dir=str(root / "cache"), num_experts=4, num_subcarriers=12, limit=1,
        ppl_texts=0, progress=False, log=lambda m: None, policies=[mod.BestChannel(0.8, 2), "Top-2"], output=out,
    )
    assert [r.policy for r in results] == ["BestChannel(0.8,2)", "Top-2"]
    summary = json.loads((out / "summary.json").read_text())
    rec = summary["config"]["policies"][0]
    assert rec["spec"] == "mymod:BestChannel(0.8, 2)" and rec["policy"] == "mymod:BestChannel"
    assert rec["threshold"] == 0.8 and rec["max_experts"] == 2


def test_cli_run_with_a_plugin_records_and_repeats(tmp_path, monkeypatch, tiny_carved_build, plugin_mod):
    import json
    import tomllib

    from click.testing import CliRunner

    from dmoe.cli import main

    site = tmp_path / "site"
    _dist(site, "plugdist_c", f"GreedyCLI = {plugin_mod}:Greedy")
    monkeypatch.syspath_prepend(str(site))
    build, root = tiny_carved_build
    base = ["--model", str(build), "--cache-dir", str(root / "cache"), "-K", "4", "-M", "12", "--limit", "1",
            "--ppl-texts", "0", "--quiet"]
    out = tmp_path / "o1"
    res = CliRunner().invoke(main, ["run", *base, "--policy", "GreedyCLI(2, tag='w')", "--policy", "Top-2",
                                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "Greedy(2,w)" in res.output
    first = json.loads((out / "summary.json").read_text())
    recorded = tomllib.loads((out / "config.toml").read_text())
    assert recorded["policies"]["policies"] == [f"{plugin_mod}:Greedy(2, tag='w')", "Top-2"]
    again = tmp_path / "o2"
    res = CliRunner().invoke(main, ["run", "--config", str(out / "config.toml"), "-o", str(again)])
    assert res.exit_code == 0, res.output
    second = json.loads((again / "summary.json").read_text())

    def same(summary):
        return [{k: v for k, v in r.items() if k not in ("seconds", "seconds_per_round")} for r in summary["results"]]

    assert same(first) == same(second)
    # bad specs stop before the model loads and before any output
    bad = tmp_path / "o3"
    res = CliRunner().invoke(main, ["run", *base, "--policy", f"{plugin_mod}:Greedy(1, 2, 3)", "-o", str(bad)])
    assert res.exit_code != 0 and "--policy" in res.output and "raised TypeError" in res.output
    assert not bad.exists()
