"""Output a person can read (issue 16, item 6): per-unit energy columns, fixed-width table,
the latency note and its breakdown, strict JSON, the latency plot. Synthetic results; the
end-to-end run is in tests/test_run_outputs.py."""

from __future__ import annotations

import csv
import json
import math
from decimal import Decimal

import numpy as np
import pytest

from dmoe.latency import round_timing
from dmoe.results import (
    LATENCY_NOTE_S,
    SUMMARY_FIELDS,
    fit,
    format_table,
    latency_note,
    plot_latency,
    strict_json,
    write_summary,
    write_summary_csv,
)
from dmoe.runtime.evaluate import PolicyResult
from dmoe.runtime.ledger import LatencyLedger, LayerTotals, critical_air_time
from dmoe.system import SystemConfig


def _result(name="JESA(0.9,8)", *, energy=10.0, comm=4.0, questions=4, tokens=400, layers=3, rounds=2,
            round_s=1.0, air_share=0.9, rates=(1e5, 2e5, 3e5), loads=(10.0, 30.0, 20.0), **kw) -> PolicyResult:
    """A result of ``rounds`` query rounds of ``layers`` layer rounds of ``round_s`` [s] each,
    ``air_share`` of it air time (None: unknown)."""
    z = np.zeros(layers)
    lr = np.full((rounds, layers), float(round_s))
    totals = LayerTotals(np.full(layers, comm / layers), np.full(layers, (energy - comm) / layers),
                         np.full(layers, tokens), z, z, z, latency_mean_s=lr.mean(0), latency_p95_s=lr.max(0))
    return PolicyResult(
        policy=name, accuracy=0.5, mean_nll=1.0, energy_j=energy, energy_comm_j=comm, energy_comp_j=energy - comm,
        num_questions=questions, num_tokens=tokens, per_layer=totals, selection_counts=np.zeros((layers, 4), int),
        logliks=np.zeros((questions, 4)), answers=np.zeros(questions, int),
        latency_layer_round_s=lr, latency_query_s=np.full(questions, lr.sum(1).mean()),
        latency_air_s=None if air_share is None else lr * air_share, link_rates_bps=np.asarray(rates, float),
        link_loads=np.asarray(loads, float),
        agreement=1.0, mean_kl=0.0, **kw,
    )


# ------------------------------------------------------------------ fixed-width cells
@pytest.mark.parametrize("width", [8, 9, 10, 12])
def test_fit_keeps_the_width_for_every_finite_value(width):
    rng = np.random.default_rng(1)
    values = [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 1e-3, 0.004, 99.99,
              123456789.0, -1e15, 2**63, -(2**63), 0, 7, None, math.nan, math.inf, -math.inf]
    values += list(rng.standard_normal(2000) * 10.0 ** rng.uniform(-320, 308, 2000))
    for decimals in (0, 1, 2, 3, 4):
        for v in values:
            cell = fit(v, width, decimals)
            assert len(cell) == width and cell[0] == " ", (v, cell)
            if v is not None and isinstance(v, float) and math.isfinite(v):
                # what it shows is the value, to the digits shown (Decimal: 2e+308 does not overflow)
                shown, exact = Decimal(cell.strip()), Decimal(v)
                err = abs(shown - exact)
                assert err <= Decimal("0.5") * Decimal(10) ** -decimals or err <= abs(exact) / 2, (v, cell)
                assert v == 0 or shown != 0  # a non-zero value never prints as zero


def test_fit_prefers_fixed_point_when_it_fits():
    assert fit(12.345, 10, 2) == "     12.35"
    assert fit(1e-7, 10, 2) == " 1.000e-07"  # 0.00 would hide it
    assert fit(3, 8, 2) == "       3"
    assert fit(None, 8, 2) == "     n/a"
    with pytest.raises(ValueError, match="`width`"):
        fit(1.0, 7, 2)


def test_table_rows_keep_the_header_width_and_show_per_unit_energy():
    rng = np.random.default_rng(2)
    results = [_result("dense", energy=20.0, comm=5.0)]
    for i in range(40):
        e = float(10.0 ** rng.uniform(-12, 300))
        results.append(_result(f"P{i}", energy=e, comm=e * rng.random(), questions=int(rng.integers(1, 10**6)),
                               tokens=int(rng.integers(1, 10**9)), round_s=float(10.0 ** rng.uniform(-9, 250)),
                               energy_planned_j=e * 2, failed_attempts=int(rng.integers(0, 10**12)),
                               node_failures=int(rng.integers(0, 10**9))))
    lines = format_table(results).splitlines()
    head = lines[0]
    assert "mJ/token" in head and "J/query" in head and "energy [J]" in head
    assert "planned [J]" in head and "failures" in head
    assert {len(line) for line in lines} == {len(head)}
    row = lines[2].split()
    cols = head.replace("mean NLL", "mean_NLL").replace(" [", "_[").split()
    got = dict(zip(cols, row))
    assert float(got["mJ/token"]) == pytest.approx(20.0 / 400 * 1e3, rel=1e-3)  # 50 mJ/token
    assert float(got["J/query"]) == pytest.approx(20.0 / 4, rel=1e-3)


def test_per_unit_energy_times_its_count_is_the_total():
    r = _result(energy=12.5, comm=2.5, questions=7, tokens=313)
    u = r.per_unit()
    assert u["energy_per_token_mj"] * 1e-3 * 313 == pytest.approx(12.5, rel=1e-12)
    assert u["energy_comm_per_token_mj"] * 1e-3 * 313 == pytest.approx(2.5, rel=1e-12)
    assert u["energy_comp_per_token_mj"] * 1e-3 * 313 == pytest.approx(10.0, rel=1e-12)
    assert u["energy_per_query_j"] * 7 == pytest.approx(12.5, rel=1e-12)
    empty = _result(questions=0, tokens=0).per_unit()
    assert all(v is None for v in empty.values())


# ------------------------------------------------------------------ latency note
def test_no_note_at_or_below_a_minute():
    # 3 layers x 20 s = 60 s per query: not above a minute
    assert latency_note([_result(round_s=20.0), _result("Top-2", round_s=1.0)], hidden_state_bytes=1152,
                        comp_throughput=1e4) is None
    assert LATENCY_NOTE_S == 60.0
    assert latency_note([], hidden_state_bytes=1, comp_throughput=1.0) is None


def test_note_names_what_dominates_air_time():
    results = [_result("Top-2", round_s=30.0), _result("JESA(0.9,8)", round_s=224.0), _result("dense", round_s=1.0)]
    note = latency_note(results, hidden_state_bytes=8192, comp_throughput=1e4)
    assert note is not None and "\n" not in note
    assert note.startswith("note: mean query latency 11.2 min for JESA(0.9,8) (2 of 3 policies above 60 s)")
    assert "air time dominates (90% of the critical path" in note
    assert "s0 = 8192 B" in note and "median link rate of 200 kbit/s" in note and "20 hidden states per link" in note
    assert "over 3 layer rounds x 2 hops" in note and note.endswith("try --wire-dtype fp8 or an NR --system")


def test_note_names_computation_when_it_dominates():
    note = latency_note([_result(round_s=100.0, air_share=0.25)], hidden_state_bytes=64, comp_throughput=50.0,
                        hint="unused")
    assert "5.0 min" in note and "computation dominates (75% of the critical path at 50 token/s" in note
    assert "--comp-throughput" in note and "unused" not in note


# ------------------------------------------------------------------ critical path air time
def test_critical_air_time_matches_a_brute_force_path_search():
    rng = np.random.default_rng(3)
    system = SystemConfig(num_nodes=5, comp_throughput_tokens_per_s=tuple(rng.uniform(50, 500, 5)))
    for _ in range(2000):
        k = system.num_nodes
        tokens = rng.integers(0, 4, (k, k)) * (rng.random((k, k)) < 0.6)
        off = ~np.eye(k, dtype=bool)
        fwd = np.where(off & (tokens > 0), rng.uniform(0.01, 2.0, (k, k)), 0.0)
        bwd = np.where(off & (tokens > 0), rng.uniform(0.01, 2.0, (k, k)), 0.0)
        timing = round_timing(tokens, fwd, bwd, system)
        # oracle: every loaded path i -> j -> i; the slowest one's air = arrival at j + its return
        best, air = 0.0, 0.0
        for j in range(k):
            load = tokens[:, j].sum()
            if load == 0:
                continue
            arrive = max([fwd[i, j] for i in range(k) if i != j and tokens[i, j] > 0], default=0.0)
            for i in range(k):
                if tokens[i, j] > 0:
                    back = bwd[i, j] if i != j else 0.0
                    end = arrive + load / system.comp_throughput_j[j] + back
                    if end > best:
                        best, air = end, arrive + back
        assert timing.latency_s == pytest.approx(best, rel=1e-12, abs=1e-15)
        assert critical_air_time(timing) == pytest.approx(air, rel=1e-9, abs=1e-12)


def test_latency_ledger_keeps_air_time_and_loaded_links():
    system = SystemConfig(num_nodes=3)
    led = LatencyLedger(2)
    tokens = np.array([[2, 3, 0], [0, 1, 0], [4, 0, 0]])
    fwd = np.array([[0, 1.0, 0], [0, 0, 0], [2.0, 0, 0]])
    timing = round_timing(tokens, fwd, fwd, system)  # the return takes as long as the way there
    rates = np.arange(9, dtype=float).reshape(3, 3) * 1e3
    led.charge(0, 0, timing, 3, link_rate=rates, link_tokens=tokens)
    led.charge(0, 1, timing, 3)
    assert led.layer_round_s.shape == led.air_s.shape == (1, 2)
    assert led.air_s[0, 0] == pytest.approx(critical_air_time(timing)) and led.air_s[0, 0] > 0
    assert sorted(led.link_rates_bps.tolist()) == [1e3, 6e3]  # links 0->1 and 2->0
    assert sorted(led.link_loads.tolist()) == [3.0, 4.0]


# ------------------------------------------------------------------ files
def test_summary_json_is_strict_and_csv_carries_the_new_columns(tmp_path):
    bad = _result("dense", questions=0, tokens=0)
    bad.accuracy = math.nan
    good = _result("Top-2")
    write_summary(tmp_path / "summary.json", {"x": np.float64("nan"), "y": np.int64(3), "z": (1, math.inf)},
                  [bad, good])

    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    payload = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert payload["config"] == {"x": None, "y": 3, "z": [1, None]}
    rows = payload["results"]
    assert rows[0]["accuracy"] is None and rows[0]["energy_per_token_mj"] is None
    assert rows[1]["energy_per_token_mj"] * rows[1]["num_tokens"] * 1e-3 == pytest.approx(rows[1]["energy_j"])
    assert rows[1]["latency_air_share"] == pytest.approx(0.9) and rows[1]["link_rate_median_bps"] == 2e5
    write_summary_csv(tmp_path / "summary.csv", [bad, good])
    with (tmp_path / "summary.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(SUMMARY_FIELDS)
    assert table[0]["energy_per_token_mj"] == "" and float(table[1]["energy_per_query_j"]) == pytest.approx(2.5)
    assert strict_json({"a": [np.array([1.0, np.nan])]}) == {"a": [[1.0, None]]}


def test_latency_plot_is_written(tmp_path):
    results = [_result("dense", round_s=0.5), _result("JESA(0.9,8)", round_s=300.0, air_share=0.99),
               _result("Top-2", round_s=2.0, air_share=None)]
    plot_latency(tmp_path / "latency.png", results, title="t")
    data = (tmp_path / "latency.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
