"""Tests of dmoe.experiments: the exact P2 solver, eq (13), statistics helpers, the
layer-wise policies, and the runner/report end to end (no real model: pure-numpy
experiments run for real, model experiments against a fake context)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dmoe.channels.rates import draw_rates
from dmoe.experiments import EXPERIMENTS, Options, resolve_names, run_experiments
from dmoe.experiments.context import Context, EvalRecord
from dmoe.experiments.exact import brute_force_p2, distinct_best_subcarriers, eq13_bound, solve_p2_exact
from dmoe.experiments.stats import paired_bootstrap, pareto_front, wilson_interval
from dmoe.optimize import jesa, lower_bound
from dmoe.policies.layerwise import DESPolicy, LayerwiseQoS
from dmoe.system import SystemConfig

# --------------------------------------------------------------------------- exact P2


def _instance(rng, k, m, per_node, threshold=0.6):
    """Random P2 instance; ``per_node`` tokens per node (int) or per-node counts (list)."""
    system = SystemConfig(num_nodes=k, num_subcarriers=m)
    counts = [per_node] * k if np.isscalar(per_node) else list(per_node)
    source = np.repeat(np.arange(k), counts)
    scores = rng.dirichlet(np.ones(k), size=source.size)
    rates = draw_rates(system, rng)
    return system, scores, source, rates, threshold


@pytest.mark.parametrize("seed", range(12))
def test_exact_p2_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 3
    m = int(rng.choice([6, 7, 9]))
    per_node = [1, 1, 1] if seed % 3 == 0 else [2, 1, 1]  # <= 4 tokens: brute force stays small
    threshold = float(rng.choice([0.4, 0.6, 0.9]))  # 0.9 with D = 2 makes some tokens infeasible
    system, scores, source, rates, thr = _instance(rng, k, m, per_node, threshold)
    exact = solve_p2_exact(scores, source, rates, thr, 2, system=system)
    brute = brute_force_p2(scores, source, rates, thr, 2, system=system)
    assert exact.energy == pytest.approx(brute.energy, rel=1e-9)
    # the MILP's schedule is feasible for P2: C1/C2 on feasible tokens, C3, one subcarrier per link
    sel = exact.selection
    assert np.all(sel.sum(axis=1) <= 2)
    ok = exact.feasible
    assert np.all((scores * sel).sum(axis=1)[ok] >= thr - 1e-9)
    used = exact.subcarrier[exact.subcarrier >= 0]
    assert used.size == np.unique(used).size
    # LB <= OPT <= JESA
    j = jesa(scores, source, rates, thr, 2, system=system, rng=seed)
    lb = lower_bound(scores, source, rates, thr, 2, system=system)
    assert lb.energy <= exact.energy * (1 + 1e-9)
    assert exact.energy <= j.energy * (1 + 1e-9)


def test_exact_p2_candidate_restriction_loses_nothing_with_many_subcarriers():
    # M >> K(K-1): the MILP only looks at each link's K(K-1) best subcarriers, brute force at all
    rng = np.random.default_rng(7)
    for _ in range(3):
        system, scores, source, rates, thr = _instance(rng, 3, 48, 1)
        exact = solve_p2_exact(scores, source, rates, thr, 2, system=system)
        brute = brute_force_p2(scores, source, rates, thr, 2, system=system)
        assert exact.energy == pytest.approx(brute.energy, rel=1e-9)


def test_exact_p2_scarce_subcarriers():
    # 2 experts, 1 subcarrier: only one of the two links can carry tokens
    rng = np.random.default_rng(3)
    system = SystemConfig(num_nodes=2, num_subcarriers=1)
    rates = draw_rates(system, rng)
    source = np.array([0, 1])
    scores = np.array([[0.3, 0.7], [0.6, 0.4]])  # token 0 must go remote, token 1 may stay local
    exact = solve_p2_exact(scores, source, rates, 0.35, 2, system=system)
    brute = brute_force_p2(scores, source, rates, 0.35, 2, system=system)
    assert exact.energy == pytest.approx(brute.energy, rel=1e-9)
    assert exact.selection[0, 1] and not exact.selection[1, 0]
    # both tokens need the other node: P2 has no solution with one subcarrier
    scores = np.array([[0.3, 0.7], [0.7, 0.3]])
    with pytest.raises(RuntimeError, match="infeasible"):
        solve_p2_exact(scores, source, rates, 0.5, 1, system=system)
    with pytest.raises(ValueError):
        brute_force_p2(scores, source, rates, 0.5, 1, system=system)


def test_eq13_bound_values():
    assert round(eq13_bound(4, 2048), 3) == 0.968  # Remark 3
    assert eq13_bound(4, 2048) > 0.968
    assert eq13_bound(2, 2) == pytest.approx(0.5)  # 2 links, 2 subcarriers: 2*1/2^2
    assert eq13_bound(3, 5) == 0.0  # fewer subcarriers than links
    assert eq13_bound(3, 64) < eq13_bound(3, 128) < 1.0


def test_event_a_probability_matches_eq13_under_iid():
    system = SystemConfig(num_nodes=2, num_subcarriers=4)
    rng = np.random.default_rng(0)
    hits = sum(distinct_best_subcarriers(draw_rates(system, rng)) for _ in range(3000))
    assert hits / 3000 == pytest.approx(eq13_bound(2, 4), abs=0.03)  # 0.75


# --------------------------------------------------------------------------- statistics


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert np.isnan(wilson_interval(0, 0)[0])


def test_paired_bootstrap():
    a = np.array([1, 1, 1, 0, 1, 1, 1, 1] * 5, float)
    b = np.array([0, 1, 0, 0, 1, 0, 1, 0] * 5, float)
    d = paired_bootstrap(a, b, seed=1)
    assert d["diff"] == pytest.approx(0.5)
    assert d["lo"] < 0.5 < d["hi"] and d["lo"] > 0
    with pytest.raises(ValueError):
        paired_bootstrap([1, 2], [1])


def test_pareto_front():
    energy = [1.0, 2.0, 3.0, 2.5, 0.5, 3.0]
    acc = [0.5, 0.7, 0.9, 0.6, 0.4, 0.8]
    front = pareto_front(energy, acc)
    assert front.tolist() == [4, 0, 1, 2]  # sorted by energy; 3 and 5 are dominated
    assert pareto_front([1.0, 1.0], [0.5, 0.5]).tolist() == [0, 1]  # duplicates kept


# --------------------------------------------------------------------------- policies


def test_layerwise_qos_window_and_des_policy():
    pol = LayerwiseQoS.window(10, 3, 4, low=0.1, base=0.5, max_experts=2)
    assert [pol.threshold(layer) for layer in range(1, 11)] == [0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5]
    assert pol.params()["thresholds"][2] == 0.1
    with pytest.raises(ValueError):
        LayerwiseQoS.window(10, 8, 4, low=0.1)
    rng = np.random.default_rng(0)
    system, scores, source, rates, _ = _instance(rng, 8, 64, 3)
    for p in (pol, DESPolicy(0.7, 2)):
        s = p.schedule(scores, source, rates, 4, system=system, rng=0)
        assert s.selection.shape == scores.shape and s.selection.sum(axis=1).max() <= 2
        assert s.exclusive
    des = DESPolicy(0.7, 2).schedule(scores, source, rates, 4, system=system, rng=0)
    assert np.allclose(des.threshold, 0.7**4)
    assert DESPolicy(0.6, 2).name == "DES(0.6,2)"


# --------------------------------------------------------------------------- end to end


def test_resolve_names():
    assert resolve_names(None) == list(EXPERIMENTS)
    assert resolve_names(["theorem1", "fig6"]) == ["fig6", "theorem1"]
    with pytest.raises(ValueError, match="fig11"):
        resolve_names(["fig11"])


def test_numpy_experiments_end_to_end(tmp_path):
    logs = []
    opts = Options(quick=True, draws=4)
    run_experiments(["fig6", "theorem1"], tmp_path, options=opts, progress=False, log=logs.append)
    for name in ("fig6", "theorem1"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / f"{name}.csv").read_text().count("\n") > 3
        stored = json.loads((tmp_path / f"{name}.json").read_text())
        assert stored["seed"] == 0 and stored["config"]["seed"] == 0
        assert stored["elapsed_s"] >= 0 and stored["claims"]
    report = (tmp_path / "report.md").read_text()
    assert "![fig6](fig6.png)" in report and "![theorem1](theorem1.png)" in report
    assert "96.8" in report and "Not run in this folder" in report
    # rerun: reused, nothing recomputed; the report still covers both
    logs.clear()
    run_experiments(["theorem1"], tmp_path, options=opts, progress=False, log=logs.append)
    assert sum("reusing" in line for line in logs) == 1
    assert json.loads((tmp_path / "run.json").read_text())["reused"] == ["theorem1"]
    assert "![fig6](fig6.png)" in (tmp_path / "report.md").read_text()


class _FakeModel:
    num_layers = 6
    num_experts = 8
    metadata = {"key": "fake"}
    combine = "sum"


class _FakeContext(Context):
    """Answers evaluate() with deterministic made-up numbers shaped like real ones."""

    def model(self):
        return _FakeModel()

    def evaluate(self, policy, *, subjects, limit, seed, system=None, channel_redraw="layer", label=""):
        rng = np.random.default_rng(abs(hash(policy.name)) % 2**32)
        n = limit or 8
        layers = _FakeModel.num_layers
        decay = np.linspace(1.0, 0.4, layers) if "JESA" in policy.name or "LB" in policy.name else np.ones(layers)
        comm = rng.uniform(0.5, 1.0) * decay * n * 10
        comp = rng.uniform(0.5, 1.0) * decay * n * 10
        correct = rng.integers(0, 2, n)
        nll = rng.uniform(20, 60, n)
        agree = rng.integers(0, 2, n)
        kl = rng.uniform(0.1, 2.0, n)
        scored = rng.integers(5, 30, n)
        rec = EvalRecord(
            policy=policy.name, params=policy.params(), accuracy=float(correct.mean()), mean_nll=float(nll.mean()),
            energy_j=float(comm.sum() + comp.sum()), energy_comm_j=float(comm.sum()), energy_comp_j=float(comp.sum()),
            num_questions=n, num_tokens=n * 10, channel_draws=layers,
            per_layer={"energy_comm_j": comm.tolist(), "energy_comp_j": comp.tolist(), "tokens": [n * 10] * layers,
                       "expert_calls": [n * 20] * layers, "transmissions": [n * 15] * layers,
                       "infeasible_tokens": [0] * layers},
            selection_counts=np.ones((layers, 8), int).tolist(), correct=correct.tolist(), nll=nll.tolist(),
            subjects=[subjects[0]] * n, seconds=0.1,
            agreement=float(agree.mean()), mean_kl=float((kl * scored).sum() / scored.sum()),
            agree=agree.tolist(), kl=kl.tolist(), scored=scored.tolist(),
        )
        return rec


def test_model_experiments_report_with_fake_context(tmp_path):
    ctx = _FakeContext(tmp_path, log=lambda *_: None)
    names = ["fig5", "fig7", "fig8", "fig9", "fig10", "table1"]
    opts = Options(quick=True, limit=4, subjects=("anatomy", "virology"))
    run_experiments(names, tmp_path, options=opts, context=ctx, log=lambda *_: None)
    report = (tmp_path / "report.md").read_text()
    for name in names:
        assert (tmp_path / f"{name}.png").exists() and (tmp_path / f"{name}.csv").exists()
        assert f"![{name}]({name}.png)" in report
    assert "not testable" in report  # Table I's Llama-3 rows
    assert "| claim | paper | ours | verdict |" in report


def test_cli_reproduce(tmp_path):
    from click.testing import CliRunner

    from dmoe.experiments.cli import reproduce

    runner = CliRunner()
    res = runner.invoke(reproduce, ["--list"])
    assert res.exit_code == 0 and "theorem1" in res.output and "fig10" in res.output
    res = runner.invoke(reproduce, ["fig11", "-o", str(tmp_path)])
    assert res.exit_code != 0 and "unknown experiment" in res.output
    res = runner.invoke(reproduce, ["fig6", "--quick", "--draws", "8", "--seed", "3", "-o", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    stored = json.loads((tmp_path / "fig6.json").read_text())
    assert stored["seed"] == 3 and stored["config"]["tokens_per_layer"] == 8 and stored["quick"]
    assert "dmoe reproduce" in (tmp_path / "report.md").read_text()


# --------------------------------------------------------------------------- robustness (real tiny model)
class _TinyContext(Context):
    """A real Context whose model is a tiny random MoE with K = 8 (real runtime, real policies)."""

    def __init__(self, output, model, **kw):
        super().__init__(output, **kw)
        self._model = model


@pytest.fixture(scope="module")
def tiny_moe8(tiny_llama, tiny_tokenizer):
    import torch

    from dmoe.model.moe import MoEModel
    from dmoe.model.router import Router

    torch.manual_seed(2)
    F, L, H = tiny_llama.config.intermediate_size, tiny_llama.config.num_hidden_layers, tiny_llama.config.hidden_size
    parts = torch.stack([torch.randperm(F).view(8, F // 8) for _ in range(L)])
    routers = []
    for _ in range(L):
        r = Router(H, 8)
        torch.nn.init.normal_(r.weight, std=0.5)
        routers.append(r)
    model = MoEModel(tiny_llama, parts, routers)
    model.tokenizer = tiny_tokenizer
    model.metadata = {"key": "tiny-test-moe8"}
    return model


def test_robustness_experiment_end_to_end(tmp_path, tiny_moe8):
    from dmoe.experiments import robustness

    ctx = _TinyContext(tmp_path, tiny_moe8, progress=False, log=lambda *_: None)
    cfg = robustness.config(Options(quick=True, limit=1))
    # a reduced sweep keeps the test fast; every axis and the trade-off are still exercised
    cfg.update(channels=["rayleigh", "tdl-d"], speeds_kmh=[0.0, 120.0], csi_errors=[0.0, 0.3], deadlines_s=[1.0])
    result = {"config": cfg, "data": robustness.run(cfg, ctx)}
    data = result["data"]
    assert len(data["points"]) == len(robustness.scenarios(cfg)) == 6
    assert {p["axis"] for p in data["points"]} == {"channel", "speed", "csi"}
    for p in data["points"]:
        assert np.isfinite(p["saving_vs_top2"]) and np.isfinite(p["gap_to_lb"]) and np.isfinite(p["jesa_nll"])
        for r in p["policies"].values():
            assert r["latency_layer_round_mean_s"] > 0 and r["latency_layer_round_p95_s"] >= r["latency_layer_round_mean_s"]
    # perfect CSI on the paper's channel: nothing lost; CSI error 0.3: packets lost and retransmitted
    base = next(p for p in data["points"] if p["axis"] == "channel" and p["channel"]["model"] == "rayleigh")
    noisy = next(p for p in data["points"] if p["axis"] == "csi" and p["channel"]["csi_error"] == 0.3)
    assert all(r["failed_attempts"] == 0 for r in base["policies"].values())
    assert sum(r["failed_attempts"] for r in noisy["policies"].values()) > 0
    # the deadline policies keep their layer rounds within the deadline on the channel they planned on
    bounded = [r for r in data["tradeoff"] if r["deadline_s"] is not None]
    assert len(bounded) == 2
    for r in bounded:
        assert r["latency_layer_round_p95_s"] <= r["deadline_s"] + 1e-9
    robustness.plot(result, tmp_path / "robustness.png")
    robustness.write_table(result, tmp_path / "robustness.csv")
    section = robustness.report(result)
    assert (tmp_path / "robustness.png").stat().st_size > 0
    assert len((tmp_path / "robustness.csv").read_text().splitlines()) == 1 + 6 * 3 + 5
    assert any("JESA saves energy against Top-2" in c.claim for c in section.claims)
    assert all(c.verdict in ("agrees", "partly", "differs") for c in section.claims)
    # a second pass takes every evaluation from the cache
    ctx2 = _TinyContext(tmp_path, tiny_moe8, progress=False, log=lambda *_: None)
    robustness.run(cfg, ctx2)
    assert ctx2.evaluations_run == 0 and ctx2.evaluations_cached == 6 * 3 + 5


def test_experiment_json_is_strict(tmp_path):
    """Issue 20: every JSON the project writes parses with a strict parser (NaN/inf -> null)."""
    import json as _json

    import numpy as _np

    from dmoe.experiments.context import write_json

    path = tmp_path / "r.json"
    write_json(path, {"a": float("nan"), "b": [_np.float64("inf"), 1.5], "c": _np.float32(2.0)})
    text = path.read_text()

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    assert _json.loads(text, parse_constant=refuse) == {"a": None, "b": [None, 1.5], "c": 2.0}
