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
    args = ["run", "--subject", "anatomy", "--limit", "3", "--output", str(out), "--quiet",
            "--policy", "dense", "--policy", "Top-2", "--policy", "H(0.5,2)",
            "--policy", "JESA(0.9,2)", "--policy", "LB(0.9,2)"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["seed"] == 0 and summary["config"]["subjects"] == ["anatomy"]
    rows = {r["policy"]: r for r in summary["results"]}
    assert list(rows) == ["dense", "Top-2", "H(0.5,2)", "JESA(0.9,2)", "LB(0.9,2)"]
    for r in rows.values():
        assert r["num_questions"] == 3 and r["num_tokens"] > 50
        assert 0 <= r["accuracy"] <= 1 and 0 < r["mean_nll"] < 1e3
        assert r["energy_j"] == pytest.approx(r["energy_comm_j"] + r["energy_comp_j"])
    assert rows["dense"]["energy_j"] > rows["Top-2"]["energy_j"] > 0
    assert rows["LB(0.9,2)"]["energy_j"] <= rows["JESA(0.9,2)"]["energy_j"] * (1 + 1e-9)
    # the dense policy is the dense model: a sensible NLL; dropping experts costs likelihood
    assert rows["dense"]["mean_nll"] < rows["Top-2"]["mean_nll"]
    with (out / "per_layer.csv").open() as fh:
        per_layer = list(csv.DictReader(fh))
    assert len(per_layer) == 5 * 30
    assert (out / "per_layer.png").stat().st_size > 10_000
