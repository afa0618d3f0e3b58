"""`dmoe run` end to end on tiny models (issue 16, items 4-6): s0 of the model that runs and
its record, the configuration file recorded and re-run, per-unit energy columns, the latency
note and plot."""

from __future__ import annotations

import csv
import json
import tomllib

import pytest
from click.testing import CliRunner

from dmoe.cli import main

#: the tiny carved model: hidden size 32 (tests/conftest.py), K = 4
HIDDEN = 32
BASE = ["-K", "4", "-M", "12", "--limit", "2", "--ppl-texts", "0", "--quiet", "--policy", "Top-2",
        "--policy", "JESA(0.9,2)"]


@pytest.fixture(scope="module")
def tiny_build(tiny_carved_build):
    """``(build dir, root)`` of the shared tiny carved model (tests/conftest.py)."""
    return tiny_carved_build


def _run(build, out, *extra):
    res = CliRunner().invoke(main, ["run", "--model", str(build), "-o", str(out), *BASE, *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "summary.json").read_text(), parse_constant=_refuse), res.output


def _refuse(name):
    raise AssertionError(f"summary.json holds the non-strict constant {name}")


def _rows(summary):
    return {r["policy"]: r for r in summary["results"]}


# ------------------------------------------------------------------ item 4: s0 of the model that runs
def test_s0_is_the_model_hidden_size_on_the_wire_and_scales_the_air(tiny_build):
    build, root = tiny_build
    fp16, log16 = _run(build, root / "fp16")
    int8, _ = _run(build, root / "int8", "--wire-dtype", "int8")
    explicit, _ = _run(build, root / "explicit", "--wire-dtype", "int8", "--hidden-state-bytes", "1000")
    c16, c8, cx = fp16["config"], int8["config"], explicit["config"]
    assert (c16["hidden_state_bytes"], c16["wire_dtype"]) == (2 * HIDDEN, "fp16")
    assert c16["hidden_state_source"] == f"model hidden size {HIDDEN} x fp16 (2 B)"
    assert c16["system"]["hidden_state_bytes"] == 2 * HIDDEN
    assert f"s0 = {2 * HIDDEN} B per hidden state" in log16
    assert c8["hidden_state_bytes"] == HIDDEN + 4 and "+ 4 B fp32 scale per token" in c8["hidden_state_source"]
    assert (cx["hidden_state_bytes"], cx["wire_dtype"]) == (1000, None)
    assert cx["hidden_state_source"] == "set explicitly (--hidden-state-bytes)"
    # Top-k's selection ignores costs and P3(a)'s assignment is invariant to s0's scale:
    # communication energy and air time are proportional to s0, computation is unchanged
    a, b, x = _rows(fp16)["Top-2"], _rows(int8)["Top-2"], _rows(explicit)["Top-2"]
    assert b["energy_comm_j"] / a["energy_comm_j"] == pytest.approx((HIDDEN + 4) / (2 * HIDDEN), rel=1e-12)
    assert x["energy_comm_j"] / a["energy_comm_j"] == pytest.approx(1000 / (2 * HIDDEN), rel=1e-12)
    assert b["energy_comp_j"] == a["energy_comp_j"]


def test_run_main_job_s0_precedence_with_a_system(tiny_build, tmp_path):
    from dmoe.main_job import run_main_job
    from dmoe.system import SystemConfig

    build, _ = tiny_build
    kw = dict(model_source=str(build), limit=1, ppl_texts=0, policies=["Top-1"], progress=False, log=lambda *_: None,
              system=SystemConfig(num_nodes=4, num_subcarriers=12))
    cfg, _ = run_main_job(**kw)  # the SystemConfig's s0 (the paper's 8 kB) is kept
    assert (cfg["hidden_state_bytes"], cfg["wire_dtype"]) == (8192, None)
    assert cfg["hidden_state_source"] == "system.hidden_state_bytes of the SystemConfig given"
    cfg, _ = run_main_job(**kw, wire_dtype="bf16")
    assert (cfg["hidden_state_bytes"], cfg["wire_dtype"]) == (2 * HIDDEN, "bf16")
    cfg, _ = run_main_job(**kw, wire_dtype="bf16", hidden_state_bytes=77)
    assert cfg["system"]["hidden_state_bytes"] == 77


@pytest.mark.parametrize("kw, needle", [({"wire_dtype": "fp4"}, "fp16, bf16, fp8, int8"),
                                        ({"hidden_state_bytes": 0}, "`hidden_state_bytes`"),
                                        ({"hidden_state_bytes": 2.5}, "`hidden_state_bytes`")])
def test_bad_s0_fails_before_any_model_work(tmp_path, kw, needle):
    from dmoe.main_job import run_main_job

    with pytest.raises(ValueError, match=needle):
        run_main_job(limit=1, policies=["Top-1"], cache_dir=str(tmp_path / "c"), output=tmp_path / "o",
                     log=lambda *_: None, **kw)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, needle", [(["--wire-dtype", "fp4"], "--wire-dtype"),
                                          (["--hidden-state-bytes", "0"], "--hidden-state-bytes")])
def test_bad_s0_flags_fail_cleanly(tmp_path, args, needle):
    res = CliRunner().invoke(main, ["run", *args, "-o", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_hf_moe_checkpoint_s0_is_its_hidden_size(tmp_path, tiny_tokenizer):
    from test_hf_moe import COMMON, save_tiny_moe

    from dmoe.main_job import run_main_job

    d = tmp_path / "olmoe"
    save_tiny_moe("olmoe", d, tokenizer=tiny_tokenizer)
    h = COMMON["hidden_size"]
    for dtype, s0 in ((None, 2 * h), ("fp8", h + 4)):
        cfg, results = run_main_job(model_source=str(d), limit=1, ppl_texts=0, policies=["Top-2"], progress=False,
                                    log=lambda *_: None, wire_dtype=dtype)
        assert cfg["expert_model"]["family"] == "olmoe"
        assert cfg["hidden_state_bytes"] == cfg["system"]["hidden_state_bytes"] == s0
        assert cfg["hidden_state_source"].startswith(f"model hidden size {h} x {dtype or 'fp16'}")


# ------------------------------------------------------------------ item 5: the configuration recorded and re-run
def test_the_merged_configuration_is_recorded_and_repeats_the_run(tiny_build):
    build, root = tiny_build
    deploy = root / "deploy.toml"
    deploy.write_text(f"""
[system]
wire_dtype = "int8"
snr_db = 7.0
[channel]
channel = "tdl-a"
[model]
model = "{build}"
[run]
seed = 4
""")
    out = root / "cfg1"
    res = CliRunner().invoke(main, ["run", "--config", str(deploy), "-o", str(out), "--seed", "3", *BASE])
    assert res.exit_code == 0, res.output
    first = json.loads((out / "summary.json").read_text())
    recorded = tomllib.loads((out / "config.toml").read_text())
    assert recorded == first["config"]["run_config"]
    assert recorded["system"]["wire_dtype"] == "int8" and recorded["system"]["snr_db"] == 7.0
    assert recorded["channel"]["channel_model"] == "tdl-a" and recorded["model"]["model_source"] == str(build)
    assert recorded["run"]["seed"] == 3  # the flag beat the file
    assert recorded["policies"]["policies"] == ["Top-2", "JESA(0.9,2)"] and "limit" in recorded["data"]
    assert first["config"]["seed"] == 3 and first["config"]["channel"]["model"] == "tdl-a"
    assert first["config"]["hidden_state_bytes"] == HIDDEN + 4
    # the recorded file alone repeats the run (output aside)
    again = root / "cfg2"
    res = CliRunner().invoke(main, ["run", "--config", str(out / "config.toml"), "-o", str(again)])
    assert res.exit_code == 0, res.output
    second = json.loads((again / "summary.json").read_text())

    def same(summary):
        return [{k: v for k, v in r.items() if k not in ("seconds", "seconds_per_round")} for r in summary["results"]]

    assert same(second) == same(first)
    assert (again / "per_layer.csv").read_text() == (out / "per_layer.csv").read_text()
    rec2 = tomllib.loads((again / "config.toml").read_text())
    assert rec2["run"].pop("output") == str(again) and recorded["run"].pop("output") == str(out)
    assert rec2 == recorded


def test_a_rejected_configuration_writes_nothing(tiny_build, tmp_path):
    build, _ = tiny_build
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[model]\nmodel = "{build}"\n[channel]\nsnr_db = 3\n')
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--config", str(bad), "-o", str(out), *BASE])
    assert res.exit_code != 0 and "[system]" in res.output and str(bad) in res.output
    assert not out.exists()


# ------------------------------------------------------------------ item 6: readable output
def test_per_unit_columns_are_consistent_everywhere(tiny_build):
    build, root = tiny_build
    summary, log = _run(build, root / "units")
    assert "mJ/token" in log and "J/query" in log
    with (root / "units" / "summary.csv").open() as fh:
        table = {r["policy"]: r for r in csv.DictReader(fh)}
    for name, r in _rows(summary).items():
        assert r["energy_per_token_mj"] * 1e-3 * r["num_tokens"] == pytest.approx(r["energy_j"], rel=1e-12)
        assert r["energy_per_query_j"] * r["num_questions"] == pytest.approx(r["energy_j"], rel=1e-12)
        assert (r["energy_comm_per_token_mj"] + r["energy_comp_per_token_mj"]) == pytest.approx(
            r["energy_per_token_mj"], rel=1e-12)
        assert float(table[name]["energy_per_token_mj"]) == pytest.approx(r["energy_per_token_mj"], rel=1e-12)
        assert float(table[name]["energy_per_query_j"]) == pytest.approx(r["energy_per_query_j"], rel=1e-12)
        assert 0 < r["latency_air_share"] <= 1 and r["link_rate_median_bps"] > 0 and r["link_load_mean"] >= 1
    with (root / "units" / "per_layer.csv").open() as fh:
        per_layer = list(csv.DictReader(fh))
    for row in per_layer:
        assert float(row["energy_per_token_mj"]) == pytest.approx(float(row["energy_per_token_j"]) * 1e3)
    # printed row: the total, per token and per query cells agree with the summary
    line = next(x for x in log.splitlines() if x.startswith("Top-2 "))
    top = _rows(summary)["Top-2"]
    cells = line.split()
    assert f"{top['energy_j']:.2f}" in cells and f"{top['energy_per_token_mj']:.2f}" in cells
    assert f"{top['energy_per_query_j']:.2f}" in cells
    png = (root / "units" / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_latency_note_appears_above_a_minute_only(tiny_build):
    build, root = tiny_build
    quick, log = _run(build, root / "quick")
    assert quick["config"]["notes"] == [] and "note: mean query latency" not in log
    assert max(r["latency_query_mean_s"] for r in quick["results"]) < 60
    # 1 MB hidden states: minutes of air time per layer round
    slow, log = _run(build, root / "slow", "--hidden-state-bytes", "1000000")
    assert max(r["latency_query_mean_s"] for r in slow["results"]) > 60
    (note,) = slow["config"]["notes"]
    assert note in log and note.startswith("note: mean query latency")
    assert "air time dominates" in note and "s0 = 1000000 B" in note and "x 2 hops" in note


def test_run_config_must_be_writable_before_any_work(tmp_path):
    from dmoe.main_job import run_main_job

    for bad, exc in (({"run": {"limit": None}}, TypeError), ({"run": {"snr_db": float("nan")}}, ValueError),
                     ({"run": 3}, TypeError), ([("run", {})], TypeError)):
        with pytest.raises(exc):
            run_main_job(limit=1, policies=["Top-1"], cache_dir=str(tmp_path / "c"), output=tmp_path / "o",
                         log=lambda *_: None, run_config=bad)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_reproduce_report_says_it_keeps_the_papers_8_kB():
    from dmoe.experiments.report import render_report

    text = render_report({})
    assert "keeps the paper's s0 = 8 kB" in text and "1,152 B in fp16" in text and "--wire-dtype" in text
