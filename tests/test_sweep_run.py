"""`dmoe sweep` end to end on the tiny carved model: outputs (strict CSV / JSON, plot), the same
numbers as `dmoe run`, resume after a real interruption, refusal of a different directory,
bad input before any work, and Ray tasks equal to the in-process sweep."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dmoe.cli import main

#: tiny carved model: K = 4 on 4 nodes, M = 12 subcarriers, 2 questions
BASE = ["-K", "4", "-M", "12", "--limit", "2", "--quiet"]
SWEEP = ["--policy", "JESA({g},2)", "--grid", "g=0.5:0.9:0.2", "--add", "Top-1", "--add", "dense"]


@pytest.fixture(scope="module")
def build(tiny_carved_build):
    return tiny_carved_build[0]


def _refuse(name):
    raise AssertionError(f"non-strict JSON constant {name}")


def _sweep(build, out, *extra, ok=True):
    res = CliRunner().invoke(main, ["sweep", "--model", str(build), "-o", str(out), *BASE, *extra])
    if ok:
        assert res.exit_code == 0, res.output
    return res


def _csv(out):
    with open(out / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def _json(out):
    return json.loads((out / "sweep.json").read_text(), parse_constant=_refuse)


def _comparable(rows):
    """The rows without wall-clock times."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def reference(build, tmp_path_factory):
    """An uninterrupted sweep (3 JESA points, Top-1, dense)."""
    out = tmp_path_factory.mktemp("sweep") / "full"
    res = _sweep(build, out, *SWEEP)
    return out, res.output


def test_outputs_are_strict_and_complete(reference):
    out, log = reference
    rows = _csv(out)
    assert [r["policy"] for r in rows] == ["JESA(0.5,2)", "JESA(0.7,2)", "JESA(0.9,2)", "Top-1", "dense"]
    assert [r["g"] for r in rows] == ["0.5", "0.7", "0.9", "", ""]
    assert [r["kind"] for r in rows] == ["grid"] * 3 + ["added"] * 2
    for r in rows:
        for key in ("mean_nll", "mean_kl", "agreement", "accuracy"):
            v, lo, hi = float(r[key]), float(r[f"{key}_lo"]), float(r[f"{key}_hi"])
            assert lo <= v + 1e-12 and v <= hi + 1e-12, (key, r)
        assert float(r["energy_per_query_j"]) > 0 and r["pareto_nll"] in ("true", "false")
        assert "nan" not in ",".join(r.values()).lower()
    dense = rows[-1]
    assert float(dense["mean_kl"]) == pytest.approx(0.0, abs=1e-9) and float(dense["agreement"]) == 1.0
    # dense has the most energy and no KL: it is on the KL front; the cheapest point is on every front
    assert dense["pareto_kl"] == "true"
    cheapest = min(rows, key=lambda r: float(r["energy_per_query_j"]))
    assert all(cheapest[f] == "true" for f in ("pareto_nll", "pareto_kl", "pareto_agreement"))
    doc = _json(out)
    assert doc["complete"] and doc["num_points"] == 5 and len(doc["points"]) == 5
    assert doc["grid"]["g"]["values"] == ["0.5", "0.7", "0.9"] and doc["seed"] == 0
    assert doc["configuration"]["templates"] == ["JESA({g},2)"] and doc["versions"]["dmoe"]
    assert doc["deployment"]["num_experts"] == 4 and doc["full_model"]["mean_nll"] > 0
    assert set(doc["pareto"]) == {"pareto_nll", "pareto_kl", "pareto_agreement"}
    assert (out / "pareto.png").stat().st_size > 10_000
    assert "wrote" in log and "JESA(0.7,2)" in log


def test_points_equal_dmoe_run_on_the_same_questions_and_channels(reference, build, tmp_path):
    out, _ = reference
    rows = {r["policy"]: r for r in _csv(out)}
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", "--model", str(build), "-o", str(run), *BASE, "--ppl-texts", "0",
                                    "--policy", "JESA(0.7,2)", "--policy", "dense"])
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "summary.json").read_text())
    for r in summary["results"]:
        s = rows[r["policy"]]
        for key in ("energy_per_query_j", "mean_nll", "mean_kl", "agreement", "accuracy"):
            assert float(s[key]) == pytest.approx(r[key], rel=1e-9, abs=1e-12), key


def test_resume_after_an_interruption_equals_the_uninterrupted_sweep(reference, build, tmp_path):
    from dmoe.experiments.sweep import run_sweep

    out = tmp_path / "resumed"
    kw = dict(templates=["JESA({g},2)"], grid=["g=0.5:0.9:0.2"], added=["Top-1", "dense"], output=out,
              model_source=str(build), num_experts=4, num_subcarriers=12, limit=2, progress=False,
              log=lambda *_: None)
    seen = []

    def stop_after_two(rec):
        seen.append(rec["policy"])
        if len(seen) == 2:
            raise KeyboardInterrupt  # as Ctrl-C right after the second point was written

    with pytest.raises(KeyboardInterrupt):
        run_sweep(**kw, on_point=stop_after_two)
    assert len(_csv(out)) == 2 and not _json(out)["complete"]
    assert len((out / "points.jsonl").read_text().splitlines()) == 2
    ran = []
    run_sweep(**kw, on_point=lambda rec: ran.append(rec["policy"]))
    assert ran == ["JESA(0.9,2)", "Top-1", "dense"]  # the first two were not run again
    assert _comparable(_csv(out)) == _comparable(_csv(reference[0]))
    a, b = _json(out), _json(reference[0])
    assert a["fingerprint"] == b["fingerprint"]
    assert [{k: v for k, v in p.items() if k != "seconds"} for p in a["points"]] == \
        [{k: v for k, v in p.items() if k != "seconds"} for p in b["points"]]
    # a third run has nothing to do: it loads no model and rewrites the same outputs
    again = []
    run_sweep(**kw, on_point=lambda rec: again.append(rec))
    assert again == [] and _comparable(_csv(out)) == _comparable(_csv(reference[0]))


def test_resume_after_the_process_is_killed(reference, build, tmp_path):
    """A real kill (SIGKILL of the `dmoe sweep` process once a point is on disk), then the same command."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dmoe", "sweep", "--model", str(build), "-o", str(out), *BASE, *SWEEP]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "points.jsonl"
    try:
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = journal.read_text().count("\n")
    assert killed and 1 <= before < 5, (killed, before)  # killed mid-sweep, a point on disk
    assert not _json(out)["complete"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{before} of 5 points already written, {5 - before} to run" in res.stdout
    assert _comparable(_csv(out)) == _comparable(_csv(reference[0]))


def test_a_different_sweep_or_a_run_output_is_refused_before_any_work(reference, build, tmp_path):
    out, _ = reference
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = _sweep(build, out, "--policy", "JESA({g},2)", "--grid", "g=0.5:0.9:0.1", "--add", "Top-1", "--add",
                 "dense", ok=False)
    assert res.exit_code != 0
    assert "`--output`" in res.output and "different sweep" in res.output and "grid" in res.output
    res = _sweep(build, out, *SWEEP, "--seed", "3", ok=False)
    assert "seed: 0 there, 3 here" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing rewritten
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", "--model", str(build), "-o", str(run), *BASE, "--ppl-texts", "0",
                                    "--policy", "Top-1"])
    assert res.exit_code == 0, res.output
    res = _sweep(build, run, *SWEEP, ok=False)
    assert "`--output`" in res.output and "`dmoe run` output" in res.output


@pytest.mark.parametrize("args, needle", [
    (["--policy", "JESA({g},2)", "--grid", "g=0.9:0.5:0.1"], "reversed"),
    (["--policy", "JESA({g},2)", "--grid", "g=0.5:0.9:0"], "step must be > 0"),
    (["--policy", "JESA({g},2)", "--grid", "g="], "empty"),
    (["--policy", "JESA({g},2)", "--grid", "g=0.5,abc"], "finite decimal number"),
    (["--policy", "JESA({g},2)", "--grid", "g=0.5", "--grid", "h=1,2"], "`--grid` 'h' is used by no"),
    (["--policy", "JESA({g},{d})", "--grid", "g=0.5"], "placeholder {d} has no grid"),
    (["--policy", "JESA({g},2)", "--grid", "g=0.5", "--grid", "g=0.6"], "given 2 times"),
    (["--policy", "JESA({g},2)", "--grid", "g=0.5:1.5:0.5"], "at g=1.5"),
    (["--policy", "Top-{k}", "--grid", "k=1,2,64"], "at k=64"),
    (["--policy", "JESA({g},2)", "--grid", "g=0:1:0.001"], "1,001 values, more than `--max-points` 200"),
    (["--policy", "LB({g},{d})", "--grid", "g=0.1:0.9:0.1", "--grid", "d=1:30:1", "--max-points", "100"],
     "270 points, more than `--max-points` 100"),
    (["--grid", "g=0.5"], "at least one policy template"),
])
def test_bad_input_is_refused_before_any_model_or_output(tmp_path, args, needle):
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["sweep", "-o", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet", *args])
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert not out.exists() and not (tmp_path / "c").exists()


def test_ray_tasks_give_the_in_process_numbers(reference, build, tmp_path, ray_session):
    out = tmp_path / "ray"
    _sweep(build, out, *SWEEP, "--engine", "ray", "--chunk-size", "2")
    local, ray_rows = _comparable(_csv(reference[0])), _comparable(_csv(out))
    assert [r["policy"] for r in ray_rows] == [r["policy"] for r in local]
    for a, b in zip(local, ray_rows):
        for key in a:
            if a[key] in ("", "true", "false") or not _is_number(a[key]):
                assert a[key] == b[key], key
            else:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-6, abs=1e-12), key


def _is_number(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


PLUGIN = '''
import numpy as np
from dmoe.policies import Policy, Schedule, allocate_links, node_demand


class FirstD(Policy):
    """Each token takes its `d` highest-scoring experts (a user's plugin, for the sweep test)."""

    def __init__(self, d):
        self.d = int(d)
        self.max_experts = self.d

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None):
        order = np.argsort(-scores, axis=1, kind="stable")[:, : self.d]
        selection = np.zeros(scores.shape, dtype=bool)
        np.put_along_axis(selection, order, True, axis=1)
        demand = node_demand(selection, source, rates.shape[0], placement=placement)
        alloc = allocate_links(rates, demand, system)
        return Schedule(selection, alloc.subcarrier, np.ones(len(scores), dtype=bool))
'''


def test_a_plugin_template_sweeps_like_a_built_in(build, tmp_path, monkeypatch):
    """A user's policy class in a template ("mod:Cls({d})") goes through the same parser as
    `dmoe run --policy`, and FirstD(d) gives the same numbers as the built-in Top-d."""
    (tmp_path / "sweepplug.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "plug"
    _sweep(build, out, "--policy", "sweepplug:FirstD({d})", "--grid", "d=1,2", "--add", "Top-1", "--add", "Top-2")
    rows = {r["policy"]: r for r in _csv(out)}
    assert len(rows) == 4, list(rows)
    plug = [p for p in rows if "FirstD" in p]
    assert len(plug) == 2
    for d in (1, 2):
        mine = next(rows[p] for p in plug if p.endswith(f"({d})"))
        for key in ("energy_per_query_j", "mean_nll", "mean_kl"):
            assert float(mine[key]) == pytest.approx(float(rows[f"Top-{d}"][key]), rel=1e-9), key


def test_a_calibrated_template_without_its_profile_leaves_no_output(build, tmp_path):
    """A missing --profile is refused before the model loads; a model with no cached profile fails
    once the model is loaded, before sweep.json is written: either way nothing is left to refuse
    the corrected command with ('holds a different sweep')."""
    cal = ["--policy", "JESA(cal:{b},2)", "--grid", "b=0.3,0.6", "--add", "Top-1"]
    out = tmp_path / "o"
    res = _sweep(build, out, *cal, "--profile", str(tmp_path / "nope.json"), ok=False)
    assert res.exit_code != 0 and "`profile` (--profile)" in res.output and "is not a file" in res.output
    assert not out.exists()
    res = _sweep(build, out, *cal, "--cache-dir", str(tmp_path / "empty-cache"), ok=False)
    assert res.exit_code != 0 and "profile" in res.output, res.output
    assert not out.exists()


def test_an_output_that_cannot_be_created_names_output(tmp_path):
    from dmoe.experiments.sweep.store import SweepStore

    (tmp_path / "f").write_text("x")
    store = SweepStore(tmp_path / "f" / "sub")
    with pytest.raises(ValueError, match="`--output` \\(-o\\) .* cannot be created"):
        store.write_json({"format": "dmoe-sweep/1"})


def _stored_sweep(out, configuration):
    from dmoe.experiments.sweep.store import SWEEP_FORMAT, fingerprint

    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"format": SWEEP_FORMAT, "fingerprint": fingerprint(configuration),
                                                "configuration": configuration}))


def test_a_different_nested_setting_is_named_by_its_dotted_key(tmp_path):
    from dmoe.experiments.sweep.store import SweepStore

    system = {"num_nodes": 8, "num_subcarriers": 64, "comp_energy_per_token": None, "comp_energy_static": None,
              "comp_throughput_tokens_per_s": 10000.0, "snr_db": 10.0}
    _stored_sweep(tmp_path / "s", {"seed": 0, "system": system})
    with pytest.raises(ValueError, match="`--output`") as err:
        SweepStore(tmp_path / "s").check({"seed": 0, "system": {**system, "snr_db": 3.0}})
    # before: 'system: {"comp_energy_per_token":null,...  there, {"comp_energy_per_token":null,... here'
    assert "system.snr_db: 10.0 there, 3.0 here" in str(err.value)
    with pytest.raises(ValueError, match="system.extra: absent there, 1 here"):
        SweepStore(tmp_path / "s").check({"seed": 0, "system": {**system, "extra": 1}})


def test_a_sweep_written_before_the_num_nodes_rename_resumes(tmp_path):
    """docs/sweep was written when SystemConfig.to_dict() said num_experts for the nodes: the same
    command must resume it, and anything else still differs."""
    from dmoe.experiments.sweep.store import SweepStore

    now = {"seed": 0, "system": {"num_nodes": 8, "num_subcarriers": 64}}
    _stored_sweep(tmp_path / "s", {"seed": 0, "system": {"num_experts": 8, "num_subcarriers": 64}})
    assert SweepStore(tmp_path / "s").check(now) is not None
    with pytest.raises(ValueError, match="system.num_nodes: 8 there, 4 here"):
        SweepStore(tmp_path / "s").check({"seed": 0, "system": {"num_nodes": 4, "num_subcarriers": 64}})
