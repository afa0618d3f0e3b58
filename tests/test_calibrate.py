"""Calibration of the layer-importance profile on a tiny random MoE (issue 11, torch side)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from dmoe.importance import (
    calibrate_cached,
    find_profile,
    calibrate_importance,
    calibration_questions,
    full_selection,
    layer_windows,
    load_profile_for,
)
from dmoe.system import SystemConfig

K = 4
SYSTEM = SystemConfig(num_nodes=K, num_subcarriers=16)


@pytest.fixture(scope="module")
def tiny_moe(tiny_llama, tiny_tokenizer):
    from dmoe.model.moe import MoEModel
    from dmoe.model.router import Router

    torch.manual_seed(2)
    F = tiny_llama.config.intermediate_size
    L = tiny_llama.config.num_hidden_layers
    parts = torch.arange(F).view(K, F // K).expand(L, K, F // K).clone()
    routers = []
    for _ in range(L):
        r = Router(tiny_llama.config.hidden_size, K)
        torch.nn.init.normal_(r.weight, std=0.5)
        routers.append(r)
    return MoEModel(tiny_llama, parts, routers, tokenizer=tiny_tokenizer, metadata={"key": "t" * 64})


def test_windows_and_questions():
    assert layer_windows(7, 3) == [(1, 3), (4, 6), (7, 7)]
    with pytest.raises(ValueError, match="`window`"):
        layer_windows(4, 5)
    qs = calibration_questions(10)
    from dmoe.data import CALIBRATION_SUBJECTS

    assert [q.subject for q in qs[: len(CALIBRATION_SUBJECTS)]] == list(CALIBRATION_SUBJECTS)
    with pytest.warns(UserWarning, match="`subjects`.*anatomy"):
        calibration_questions(2, ["anatomy", "marketing"])
    with pytest.raises(ValueError, match="`num_questions`"):
        calibration_questions(0)


def test_full_selection_is_every_expert_for_the_carved_model(tiny_moe):
    s = torch.rand(5, K).softmax(-1)
    assert full_selection(tiny_moe, s).all()

    class Native:
        native_top_k = 2

    sel = full_selection(Native(), s)
    assert sel.sum(1).eq(2).all() and torch.equal(sel, torch.zeros_like(sel).scatter_(1, s.topk(2).indices, True))


def test_profile_of_a_tiny_model(tiny_moe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prof = calibrate_importance(tiny_moe, qos=(0.3, 0.7, 1.0), max_experts=K, window=1, num_questions=3,
                                    system=SYSTEM, base="full", progress=False)
    kl, en = np.asarray(prof.kl), np.asarray(prof.energy)
    assert kl.shape == (2, 3) and en.shape == (2, 3)
    assert np.all(kl >= -1e-12)  # KL(full || reduced) >= 0 (base "full": no offset)
    # one layer per window: DES's energy cannot fall when the threshold rises (same scores, same costs)
    assert np.all(np.diff(en, axis=1) >= -1e-12)
    # z = 1 with D = K keeps every expert (gate scores are positive): the full model itself
    assert np.all(np.abs(kl[:, -1]) < 1e-6) and np.all(np.abs(np.asarray(prof.nll)[:, -1]) < 1e-4)
    assert np.all(np.asarray(prof.agreement)[:, -1] == 1.0)
    assert np.all(en[:, -1] <= np.asarray(prof.energy_full) + 1e-12)
    assert prof.base == "full" and prof.base_kl == 0.0
    assert prof.config["num_questions"] == 3 and prof.config["passes"] == 3 * (2 * 3 + 1)


def test_base_top_increments_vanish_at_the_top_level(tiny_moe):
    prof = calibrate_importance(tiny_moe, qos=(0.2, 0.6), max_experts=2, window=1, num_questions=2,
                                system=SYSTEM, base="top", progress=False)
    assert np.all(np.asarray(prof.kl)[:, -1] == 0.0) and np.all(np.asarray(prof.nll)[:, -1] == 0.0)
    assert prof.base_kl > 0  # Top-2-like schedule everywhere differs from the full model
    assert prof.config["passes"] == 2 * (2 * 1 + 2)


def test_bad_arguments(tiny_moe):
    with pytest.raises(ValueError, match="`qos`"):
        calibrate_importance(tiny_moe, qos=(0.5, 1.5), progress=False)
    with pytest.raises(ValueError, match="`base`"):
        calibrate_importance(tiny_moe, base="half", system=SYSTEM, progress=False)
    with pytest.raises(ValueError, match="system.num_nodes"):
        calibrate_importance(tiny_moe, system=SystemConfig(), progress=False)


def test_cache_beside_the_build_and_lookup(tiny_moe, tmp_path):
    kw = dict(qos=(0.3, 1.0), max_experts=2, window=2, num_questions=2, system=SYSTEM, cache_dir=tmp_path,
              progress=False)
    prof, path, reused = calibrate_cached(tiny_moe, **kw)
    assert not reused and path.exists() and path.with_suffix(".png").exists()
    assert path.parent == tmp_path / "profiles" / ("t" * 16) and path.name.startswith("importance-D2-")
    again, path2, reused = calibrate_cached(tiny_moe, **kw)
    assert reused and path2 == path and again == prof
    assert load_profile_for(tiny_moe, 2, cache_dir=tmp_path) == prof
    # a newer profile with fewer passes (e.g. a --quick run) does not shadow it
    small, small_path, _ = calibrate_cached(tiny_moe, **{**kw, "num_questions": 1})
    assert small_path != path and small.config["passes"] < prof.config["passes"]
    assert find_profile(tiny_moe, 2, tmp_path) == path
    with pytest.raises(ValueError, match=r"dmoe calibrate -K \d+ -D 3"):
        load_profile_for(tiny_moe, 3, cache_dir=tmp_path)
    data = json.loads(path.read_text())
    data["num_experts"] = 8
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="K = 8"):
        load_profile_for(tiny_moe, 2, path=other)


def test_cli_calibrate_then_run_the_calibrated_policy(tiny_moe, tmp_path):
    from click.testing import CliRunner

    from dmoe.cli import main
    from dmoe.model.build import save_moe_model

    build = tmp_path / "build"
    save_moe_model(tiny_moe, build, {"key": "b" * 64})
    runner = CliRunner()
    res = runner.invoke(main, ["calibrate", "--model", str(build), "-K", "4", "-D", "2", "-M", "16", "-w", "1", "-n", "2",
                               "--qos", "0.3,1.0", "--quiet", "--budget", "0.01", "--budget", "100"])
    assert res.exit_code == 0, res.output
    assert "importance-D2-" in res.output and "budget 100 nat/token" in res.output
    assert list(build.glob("importance-D2-*.png"))
    res = runner.invoke(main, ["calibrate", "--model", str(build), "-K", "4", "-M", "16", "--qos", "0.5,1.5", "--quiet"])
    assert res.exit_code != 0 and "'--qos'" in res.output and "1.5" in res.output and "Traceback" not in res.output
    # issue 20: a non-finite budget is refused before minutes of calibration, nothing written
    before = sorted(p.name for p in build.iterdir())
    res = runner.invoke(main, ["calibrate", "--model", str(build), "-K", "4", "-M", "16", "--qos", "0.5,1.0",
                               "--quiet", "--force", "--budget", "nan"])
    assert res.exit_code != 0 and "'--budget'" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in build.iterdir()) == before
    res = runner.invoke(main, ["run", "--model", str(build), "-K", "4", "-M", "16", "--limit", "2", "--quiet",
                               "--policy", "JESA(cal:100,2)", "--policy", "Top-2", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    names = [r["policy"] for r in summary["results"]]
    assert names == ["JESA(cal:100,2)", "Top-2"]
    assert summary["config"]["policies"][0]["policy"] == "CalibratedJESA"
    # no profile for D = 3, and a malformed budget: clean click errors
    res = runner.invoke(main, ["run", "--model", str(build), "-K", "4", "-M", "16", "--limit", "1", "--quiet",
                               "--policy", "JESA(cal:1,3)", "-o", str(tmp_path / "out3")])
    assert res.exit_code != 0 and "dmoe calibrate -K 4 -D 3" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["run", "--policy", "JESA(cal:x,2)", "-o", str(tmp_path / "o"),
                               "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "malformed" in res.output
    assert not (tmp_path / "c").exists()


def test_importance_experiment_end_to_end_on_a_tiny_model(tiny_llama, tiny_tokenizer, tmp_path):
    """`dmoe reproduce importance --quick` with the real pipeline on a tiny K = 8 MoE."""
    from dmoe.experiments.base import Options
    from dmoe.experiments.context import Context
    from dmoe.experiments.runner import run_experiments
    from dmoe.model.moe import MoEModel

    F, L = tiny_llama.config.intermediate_size, tiny_llama.config.num_hidden_layers
    moe8 = MoEModel(tiny_llama, torch.arange(F).view(8, F // 8).expand(L, 8, F // 8).clone(),
                    tokenizer=tiny_tokenizer, metadata={"key": "e" * 64})

    class TinyContext(Context):
        def model(self):
            return moe8

    ctx = TinyContext(tmp_path, cache_dir=tmp_path / "cache", progress=False, log=lambda *_: None)
    res = run_experiments(["importance"], tmp_path, options=Options(quick=True, limit=2), context=ctx,
                          log=lambda *_: None)["importance"]
    data = res["data"]
    fams = {p["family"] for p in data["policies"]}
    assert {"dense", "Top-k", "JESA", "H", "JESA-cal"} <= fams
    assert all(0.0 <= p["agreement"] <= 1.0 and p["mean_kl"] >= 0.0 for p in data["policies"])
    assert (tmp_path / "importance.png").exists() and (tmp_path / "importance.csv").exists()
    report = (tmp_path / "report.md").read_text()
    assert "Lower layers matter more" in report and "Calibrated JESA lies on the NLL Pareto front" in report
    assert list((tmp_path / "cache" / "profiles").rglob("importance-D2-*.json"))


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "granitemoeshared"])
def test_calibration_on_real_moe_families(family, tiny_tokenizer, tmp_path):
    """The profile needs only the expert-model interface: every transformers family calibrates;
    with base "full", z = 1 and D = native top-k the window runs the native routing again."""
    from test_hf_moe import save_tiny_moe

    from dmoe.model import load_expert_model
    from dmoe.system import default_num_subcarriers

    save_tiny_moe(family, tmp_path, tokenizer=tiny_tokenizer)
    model = load_expert_model(str(tmp_path))
    k = model.num_experts
    system = SystemConfig(num_nodes=k, num_subcarriers=default_num_subcarriers(k))
    prof = calibrate_importance(model, qos=(0.3, 1.0), max_experts=model.native_top_k, window=1, num_questions=2,
                                system=system, base="full", progress=False)
    kl = np.asarray(prof.kl)
    assert kl.shape == (model.num_layers, 2) and np.all(np.isfinite(kl)) and np.all(kl >= -1e-9)
    for layer in range(model.num_layers):
        if not model.is_moe_layer(layer):  # a dense layer: nothing scheduled, nothing lost, nothing spent
            assert np.all(kl[layer] == 0) and np.all(np.asarray(prof.energy)[layer] == 0)
    if family != "deepseek_v3":  # DeepSeek-V3's native choice adds a correction bias to the scores
        assert np.all(np.abs(kl[:, -1]) < 1e-6)
    prof2, path, _ = calibrate_cached(model, qos=(0.3, 1.0), max_experts=model.native_top_k, window=1,
                                      num_questions=1, system=system, base="full", cache_dir=tmp_path / "c",
                                      progress=False)
    assert path.parent.parent == tmp_path / "c" / "profiles"  # no build directory: under the cache
    assert load_profile_for(model, model.native_top_k, path=path) == prof2
