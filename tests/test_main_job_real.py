"""Real-model smoke test of the main job: SmolLM2 MoE, real MMLU questions, every policy kind.

Uses the user model cache (``$DMOE_CACHE_DIR`` or ``~/.cache/dmoe``); the first run builds it.
"""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow


def test_dmoe_run_on_a_few_real_questions(tmp_path):
    from dmoe.cli import main

    out = tmp_path / "run"
    # the default policies on the default model: 32 fine-grained experts on 8 nodes
    args = ["run", "--subject", "anatomy", "--limit", "3", "--output", str(out), "--quiet", "--ppl-texts", "4"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["seed"] == 0 and summary["config"]["subjects"] == ["anatomy"]
    rows = {r["policy"]: r for r in summary["results"]}
    assert list(rows) == ["dense", "Top-4", "Top-8", "H(0.5,8)", "JESA(0.9,8)", "LB(0.9,8)"]
    cfg = summary["config"]
    assert (cfg["num_experts"], cfg["num_nodes"], cfg["placement"]["kind"]) == (32, 8, "coactivation")
    for r in rows.values():
        assert r["num_questions"] == 3 and r["num_tokens"] > 50
        assert 0 <= r["accuracy"] <= 1 and 0 < r["mean_nll"] < 1e3
        assert r["energy_j"] == pytest.approx(r["energy_comm_j"] + r["energy_comp_j"])
        assert 0 <= r["agreement"] <= 1 and r["mean_kl"] >= 0 and r["perplexity"] > 1
        assert r["perplexity_tokens"] > 20
    assert rows["dense"]["energy_j"] > rows["Top-8"]["energy_j"] > rows["Top-4"]["energy_j"] > 0
    assert rows["LB(0.9,8)"]["energy_j"] <= rows["JESA(0.9,8)"]["energy_j"] * (1 + 1e-9)
    # the dense policy is the dense model: a sensible NLL; dropping experts costs likelihood
    assert rows["dense"]["mean_nll"] < rows["Top-8"]["mean_nll"]
    # the dense policy is the full model; a sparse one moves away from it
    assert rows["dense"]["agreement"] == 1.0 and rows["dense"]["mean_kl"] < 1e-6
    assert rows["Top-8"]["mean_kl"] > 1e-2 and rows["Top-8"]["perplexity"] > rows["dense"]["perplexity"]
    full = summary["config"]["full_model"]
    assert full["perplexity"] == pytest.approx(rows["dense"]["perplexity"], rel=1e-4)
    assert summary["config"]["ppl_texts"] == 4 and "anatomy" not in summary["config"]["ppl_subjects"]
    with (out / "per_layer.csv").open() as fh:
        per_layer = list(csv.DictReader(fh))
    assert len(per_layer) == 6 * 30
    assert (out / "per_layer.png").stat().st_size > 10_000
