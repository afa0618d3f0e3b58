"""`dmoe reproduce deployment` (issue 16): the energy-latency front against brute force, the
deadline values, and the experiment end to end on tiny random models."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_moe

from dmoe.experiments import EXPERIMENTS, Options, run_experiments
from dmoe.experiments import deployment as dep
from dmoe.experiments.context import Context


# --------------------------------------------------------------------------- the front
def _brute_front(lat, en) -> set[int]:
    """Indices no other point dominates (<= in both, < in one), by definition."""
    out = set()
    for i in range(len(lat)):
        if not any(lat[j] <= lat[i] and en[j] <= en[i] and (lat[j] < lat[i] or en[j] < en[i])
                   for j in range(len(lat))):
            out.add(i)
    return out


def test_energy_latency_front_matches_brute_force():
    rng = np.random.default_rng(16)
    for case in range(3000):
        n = int(rng.integers(1, 12))
        if case % 2:  # small integer grids: many ties and duplicates
            lat, en = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float)
        else:
            lat, en = rng.lognormal(size=n), rng.lognormal(size=n)
        idx = dep.energy_latency_front(lat, en)
        assert set(idx.tolist()) == _brute_front(lat, en), (lat, en)
        assert len(idx) == len(set(idx.tolist()))
        # sorted by latency; along the front energy does not increase
        assert np.all(np.diff(lat[idx]) >= 0)
        assert np.all(np.diff(en[idx]) <= 0)


def test_energy_latency_front_edges():
    assert dep.energy_latency_front([], []).tolist() == []
    assert dep.energy_latency_front([2.0, 1.0, 3.0], [1.0, 2.0, 0.5]).tolist() == [1, 0, 2]
    assert dep.energy_latency_front([1.0, 2.0], [1.0, 2.0]).tolist() == [0]
    assert dep.energy_latency_front([1.0, 1.0], [1.0, 1.0]).tolist() == [0, 1]  # duplicates kept
    with pytest.raises(ValueError, match="same length"):
        dep.energy_latency_front([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        dep.energy_latency_front([1.0, float("nan")], [1.0, 2.0])


def test_deadline_values_and_families():
    assert dep.deadline_values(0.6, [1.0, 0.5, 0.25, 0.1]) == [0.6, 0.3, 0.15, 0.06]
    assert dep.deadline_values(0.123456, [1.0, 1.0001]) == [0.12]  # rounded, duplicates dropped
    assert dep.deadline_values(float("nan"), [0.5]) == [] and dep.deadline_values(0.0, [0.5]) == []
    with pytest.raises(ValueError, match="deadline_fractions"):
        dep.deadline_values(1.0, [0.5, -1.0])
    assert [dep.family_of(n) for n in ("Top-8", "H(0.5,8)", "JESA(0.9,8)[T=0.3s]", "LB(0.9,8)", "dense")] == \
        ["Top", "H", "JESA", "LB", "dense"]


def test_config_quick_and_full():
    quick, full = dep.config(Options(quick=True)), dep.config(Options())
    assert quick["limit"] == dep.QUICK_LIMIT and full["limit"] == dep.FULL_LIMIT
    assert dep.config(Options(limit=3))["limit"] == 3
    for cfg in (quick, full):
        assert cfg["preset"] == "nr-fr1-30khz-100mhz" and cfg["deployments"][0]["layout"] == "disk:50"
        assert (cfg["num_experts"], cfg["num_nodes"], cfg["placement"]) == (32, 8, "coactivation")
        assert set(cfg["families"]) == set(dep.FAMILIES)
        json.dumps(cfg)
    assert sum(map(len, full["families"].values())) > sum(map(len, quick["families"].values()))


# --------------------------------------------------------------------------- end to end
class _TinyContext(Context):
    """A real Context whose models are tiny random MoE models with a real tokenizer."""

    def __init__(self, output, tiny_llama, tokenizer):
        # cache_dir: the cached co-activation of these keyless tiny models stays in the test folder
        super().__init__(output, cache_dir=Path(output) / "model-cache", progress=False, log=lambda *_: None)
        self._tiny, self._tok, self._models = tiny_llama, tokenizer, {}

    def model(self, num_experts: int = 8):
        if num_experts not in self._models:
            m = make_tiny_moe(self._tiny, num_experts, seed=num_experts)
            m.tokenizer, m.metadata = self._tok, {"key": f"tiny-K{num_experts}"}
            self._models[num_experts] = m
        return self._models[num_experts]


def _small(options):
    cfg = dep.config(options)
    cfg.update(families={"Top": ["Top-4", "Top-8"], "JESA": ["JESA(0.9,8)"], "LB": ["LB(0.9,8)"]},
               deadline_bases=["Top-8", "JESA(0.9,8)"], deadline_fractions=[0.5, 0.05], coactivation_tokens=300)
    return cfg


def _strict(text: str):
    def bad(token):
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(text, parse_constant=bad)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_deployment_experiment_end_to_end(tmp_path, tiny_llama, tiny_tokenizer, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setitem(EXPERIMENTS, "deployment", dataclasses.replace(EXPERIMENTS["deployment"], config=_small))
    ctx = _TinyContext(tmp_path, tiny_llama, tiny_tokenizer)
    run_experiments(["deployment"], tmp_path, options=Options(quick=True, limit=2), context=ctx, progress=False,
                    log=lambda *_: None)
    for ext in ("png", "csv", "json"):
        assert (tmp_path / f"deployment.{ext}").stat().st_size > (5_000 if ext == "png" else 100)
    stored = _strict((tmp_path / "deployment.json").read_text())
    data = stored["data"]
    assert data["hidden_state_bytes"] == tiny_llama.config.hidden_size * 2  # the model's s0 in fp16
    assert data["system"]["num_subcarriers"] == 273
    assert data["system"]["hidden_state_bytes"] == data["hidden_state_bytes"]
    assert data["resource_blocks"] == dep.resource_blocks_available()
    (d,) = data["deployments"]
    assert d["layout"] == "disk:50" and d["channel"]["pathloss"] == "umi-street-canyon"
    pts = d["points"]
    free = [p for p in pts if p["deadline_s"] is None]
    assert [p["policy"] for p in free] == ["Top-4", "Top-8", "JESA(0.9,8)", "LB(0.9,8)"]
    # T_ref: the median mean layer-round latency of the schedulable no-deadline points
    ref = float(np.median([p["latency_layer_round_mean_s"] for p in free if not p["bound"]]))
    assert d["reference_round_s"] == pytest.approx(ref)
    assert d["deadlines_s"] == dep.deadline_values(ref, [0.5, 0.05]) and len(d["deadlines_s"]) == 2
    bounded = [p for p in pts if p["deadline_s"] is not None]
    assert len(bounded) == 2 * 2 and {p["base"] for p in bounded} == {"Top-8", "JESA(0.9,8)"}
    for p in pts:
        assert p["energy_per_query_j"] == pytest.approx(p["energy_j"] / p["num_questions"])
        assert p["energy_per_token_mj"] == pytest.approx(p["energy_j"] / p["num_tokens"] * 1e3)
        assert p["latency_query_p95_s"] >= p["latency_query_mean_s"] > 0
        assert p["mean_kl"] >= 0 and 0 <= p["agreement"] <= 1
    for p in bounded:
        assert 0.0 <= p["deadline_met_share"] <= 1.0
    # the tight deadline (5% of T_ref) binds: its base policy is faster without losing rounds to T
    tight = [p for p in bounded if p["deadline_s"] == min(d["deadlines_s"])]
    for p in tight:
        free_p = next(q for q in free if q["policy"] == p["base"])
        assert p["latency_layer_round_mean_s"] < free_p["latency_layer_round_mean_s"]
    # Pareto marks: exactly the brute-force front of the schedulable points, LB never on it
    sched = [i for i, p in enumerate(pts) if not p["bound"]]
    want = _brute_front([pts[i]["latency_query_mean_s"] for i in sched], [pts[i]["energy_per_query_j"] for i in sched])
    assert {i for i, p in enumerate(pts) if p["pareto"]} == {sched[k] for k in want}
    assert not any(p["pareto"] for p in pts if p["bound"])
    assert set(d["front"]) == {p["policy"] for p in pts if p["pareto"]}
    for flag, keys in dep.FRONTS.items():
        objs = np.array([[pts[i][k] for k in keys] for i in sched])
        brute = [not any(all(objs[j] <= objs[i]) and any(objs[j] < objs[i]) for j in range(len(sched)))
                 for i in range(len(sched))]
        assert [pts[i][flag] for i in sched] == brute, flag
    # CSV: one row per point with the front flag
    lines = (tmp_path / "deployment.csv").read_text().splitlines()
    assert len(lines) == 1 + len(pts) and lines[0].startswith("deployment,policy,family,deadline_s")
    report = (tmp_path / "report.md").read_text()
    assert "![deployment](deployment.png)" in report and "energy [J/query]" in report
    assert f"s0 = {data['hidden_state_bytes']} B" in report and "8 kB" in report
    # the claims carry computed verdicts
    assert {c["verdict"] for c in stored["claims"]} <= {"agrees", "partly", "differs"} and stored["claims"]
    # a rerun with --force takes every evaluation from the cache
    ctx2 = _TinyContext(tmp_path, tiny_llama, tiny_tokenizer)
    run_experiments(["deployment"], tmp_path, options=Options(quick=True, limit=2), context=ctx2, progress=False,
                    log=lambda *_: None, force=True)
    assert ctx2.evaluations_run == 0 and ctx2.evaluations_cached == len(pts)
    assert _strict((tmp_path / "deployment.json").read_text())["data"]["deployments"][0]["points"] == pts


def test_report_without_deadline_rounds_is_strict_and_complete():
    """Records cached before the per-round latencies were stored: no deadline share, no NaN."""
    rec = {"policy": "JESA(0.9,8)[T=0.1s]", "num_questions": 2, "num_tokens": 10, "energy_j": 1.0,
           "energy_comm_j": 0.1, "energy_comp_j": 0.9, "latency_query_mean_s": 2.0, "latency_query_p95_s": 2.5,
           "latency_layer_round_mean_s": 0.1, "latency_layer_round_p95_s": 0.2, "mean_nll": 3.0,
           "mean_kl": float("nan"), "agreement": 0.5, "accuracy": 0.5, "per_layer": {"infeasible_tokens": [0, 1]},
           "deadline_rounds_missed": 3}
    from dmoe.experiments.context import EvalRecord
    from dmoe.policies import policy_from_name

    r = EvalRecord(rec, nll=[3.0, 3.0], kl=[1.0, 1.0], scored=[1, 1], correct=[1, 0], agree=[1, 0])
    p = dep._point(r, policy_from_name(rec["policy"]), "JESA", 0.1, 0)
    assert p["deadline_met_share"] is None and p["mean_kl"] is None
    assert p["recorded"] == {"deadline_rounds_missed": 3}
    _strict(json.dumps(p))
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in itertools.chain(p.values()))


def test_nondominated_matches_brute_force():
    rng = np.random.default_rng(3)
    for case in range(1500):
        n, m = int(rng.integers(1, 10)), int(rng.integers(1, 4))
        x = rng.integers(0, 3, (n, m)).astype(float) if case % 2 else rng.normal(size=(n, m))
        want = [not any(all(x[j] <= x[i]) and any(x[j] < x[i]) for j in range(n)) for i in range(n)]
        assert dep.nondominated(x).tolist() == want
        if m == 2:  # the two-dimensional case is the energy-latency front
            assert set(np.flatnonzero(dep.nondominated(x)).tolist()) == set(
                dep.energy_latency_front(x[:, 0], x[:, 1]).tolist())
    with pytest.raises(ValueError, match="objectives"):
        dep.nondominated([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        dep.nondominated([[1.0, float("inf")]])


def test_readme_table_script(tmp_path, capsys):
    """scripts/deployment_table.py turns a summary.json into the README's table."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "deployment_table.py"
    spec = importlib.util.spec_from_file_location("deployment_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = {"policy": "JESA(0.9,8)", "energy_per_query_j": 6.4798, "energy_per_token_mj": 115.449,
           "energy_comm_j": 0.068, "num_questions": 8, "latency_query_mean_s": 16.56, "latency_query_p95_s": 16.56,
           "latency_layer_round_mean_s": 0.5520, "mean_nll": 112.0, "mean_kl": 16.471, "agreement": 0.625}
    summary = {"config": {"num_experts": 32, "num_nodes": 8, "system_preset": "nr-fr1-30khz-100mhz",
                          "channel": {"layout": "disk:50", "pathloss": "umi-street-canyon"},
                          "deployment": {"path_loss_db_min": 53.2, "path_loss_db_mean": 88.1, "path_loss_db_max": 102.5,
                                         "los_fraction": 0.64}, "hidden_state_bytes": 1152, "seed": 0},
               "results": [dict(row, num_tokens=449), dict(row, policy="dense", mean_kl=None, num_tokens=449)]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert mod.main(["x", str(tmp_path / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert "| JESA(0.9,8) | 6.48 | 115.4 | 8.5 | 16.6 | 16.6 | 0.552 | 112.0 | 16.47 | 0.625 |" in out
    assert "| dense |" in out and "n/a" in out and "s0 = 1152 B" in out and "disk:50" in out
    assert mod.main(["x"]) == 2
