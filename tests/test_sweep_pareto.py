"""Pareto flags of sweep points against a brute force, the point record's intervals against
the bootstrap helpers, and the plot on synthetic points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dmoe.experiments.sweep.grid import SweepPoint
from dmoe.experiments.sweep.record import FRONTS, csv_columns, pareto_flags, point_record


def _brute(energy, quality, larger_better):
    """Non-dominated by definition: no j with e_j <= e_i and q_j at least as good, one strictly."""
    n = len(energy)
    out = []
    for i in range(n):
        dominated = False
        for j in range(n):
            if j == i:
                continue
            better_q = quality[j] >= quality[i] if larger_better else quality[j] <= quality[i]
            strictly = energy[j] < energy[i] or (quality[j] > quality[i] if larger_better else quality[j] < quality[i])
            if energy[j] <= energy[i] and better_q and strictly:
                dominated = True
                break
        out.append(not dominated)
    return out


def _records(energy, nll, kl, agree):
    return [{"energy_per_query_j": e, "mean_nll": a, "mean_kl": b, "agreement": c}
            for e, a, b, c in zip(energy, nll, kl, agree)]


def test_pareto_flags_equal_the_brute_force_on_thousands_of_cases():
    rng = np.random.default_rng(0)
    for case in range(3000):
        n = int(rng.integers(1, 14))
        # few distinct values: many ties, duplicates and equal energies
        levels = int(rng.integers(2, 6)) if case % 2 else 1000
        e, nll, kl, ag = (rng.integers(0, levels, n).astype(float) for _ in range(4))
        flags = pareto_flags(_records(e, nll, kl, ag))
        assert flags["pareto_nll"] == _brute(e, nll, False)
        assert flags["pareto_kl"] == _brute(e, kl, False)
        assert flags["pareto_agreement"] == _brute(e, ag, True)
        # the cheapest point with the best quality among the cheapest is always on the front
        i = min(range(n), key=lambda k: (e[k], nll[k]))
        assert flags["pareto_nll"][i]


def test_missing_numbers_are_never_on_a_front():
    recs = _records([1.0, 2.0, 3.0], [5.0, 1.0, 0.5], [0.1, 0.0, 0.0], [0.5, 1.0, 1.0])
    recs[0]["mean_nll"] = None
    flags = pareto_flags(recs)
    assert flags["pareto_nll"] == [False, True, True]
    assert flags["pareto_kl"] == [True, True, False] and flags["pareto_agreement"] == [True, True, False]


class _Result:
    """The fields of a PolicyResult a record reads."""

    def __init__(self, rng, n, deadline=None):
        self.policy = "JESA(0.9,2)"
        self.num_questions, self.num_tokens = n, 10 * n
        self.logliks = rng.normal(-20, 5, (n, 4))
        self.answers = rng.integers(0, 4, n)
        self.full_choices = rng.integers(0, 4, n)
        self.scored_tokens = rng.integers(1, 9, n)
        self.kl_per_question = rng.exponential(0.5, n)
        self.energy_j, self.seconds = 12.5, 1.0
        self.text_nll, self.text_tokens, self.perplexity = None, None, None
        pred = self.logliks.argmax(1)
        self.mean_nll = float(-self.logliks[np.arange(n), self.answers].mean())
        self.accuracy = float((pred == self.answers).mean())
        self.agreement = float((pred == self.full_choices).mean())
        self.mean_kl = float((self.kl_per_question * self.scored_tokens).sum() / self.scored_tokens.sum())
        self.deadline = deadline

    def per_unit(self):
        return {"energy_per_token_mj": self.energy_j / self.num_tokens * 1e3, "energy_comm_per_token_mj": 1.0,
                "energy_comp_per_token_mj": 2.0, "energy_per_query_j": self.energy_j / self.num_questions}

    def latency_stats(self):
        return {"latency_query_mean_s": 1.0, "latency_query_p95_s": float("nan")}

    def deadline_stats(self):
        if self.deadline is None:
            return {k: None for k in ("deadline_s", "deadline_rounds", "deadline_missed", "deadline_miss_max_s",
                                      "deadline_miss_mean_s")}
        return {"deadline_s": self.deadline, "deadline_rounds": 60, "deadline_missed": np.int64(3),
                "deadline_miss_max_s": 0.2, "deadline_miss_mean_s": 0.1}


def test_point_record_intervals_and_strictness():
    from dmoe.experiments.stats import bootstrap_mean_interval, bootstrap_ratio_interval

    rng = np.random.default_rng(1)
    res = _Result(rng, 40, deadline=0.5)
    point = SweepPoint(3, "JESA(0.90,2)", "JESA({g},2)", {"g": "0.9"})
    rec = point_record(point, res, seed=7, num_resamples=500)
    nll = -res.logliks[np.arange(40), res.answers]
    assert (rec["mean_nll_lo"], rec["mean_nll_hi"]) == bootstrap_mean_interval(nll, num_resamples=500, seed=7)
    assert (rec["mean_kl_lo"], rec["mean_kl_hi"]) == bootstrap_ratio_interval(
        res.kl_per_question * res.scored_tokens, res.scored_tokens, num_resamples=500, seed=7)
    for key in ("mean_nll", "mean_kl", "agreement", "accuracy"):
        assert rec[f"{key}_lo"] <= rec[key] <= rec[f"{key}_hi"]
    assert rec["index"] == 3 and rec["kind"] == "grid" and rec["values"] == {"g": "0.9"}
    assert rec["energy_per_query_j"] == pytest.approx(12.5 / 40) and rec["latency_query_p95_s"] is None
    assert rec["deadline_missed"] == 3 and type(rec["deadline_missed"]) is int
    json.dumps(rec, allow_nan=False)  # strict JSON
    cols = csv_columns(["g"], [rec])
    assert cols[:4] == ["index", "kind", "template", "g"] and cols[-3:] == [f for f, _, _ in FRONTS]
    assert "perplexity" not in cols


def test_intervals_cover_the_truth_about_95_percent():
    """Statistical check of the NLL interval: over 300 seeded samples of 60 questions the 95%
    bootstrap interval holds the true mean about 95% of the time (binomial 3-sigma band)."""
    rng = np.random.default_rng(2)
    hits, trials = 0, 300
    for t in range(trials):
        res = _Result(rng, 60)
        res.logliks[np.arange(60), res.answers] = -rng.exponential(2.0, 60)  # true mean NLL 2
        res.mean_nll = float(-res.logliks[np.arange(60), res.answers].mean())
        rec = point_record(SweepPoint(0, "p", None, {}), res, seed=t, num_resamples=400)
        hits += rec["mean_nll_lo"] <= 2.0 <= rec["mean_nll_hi"]
    p, sd = 0.95, (0.95 * 0.05 / trials) ** 0.5
    assert p - 3.5 * sd - 0.01 <= hits / trials <= p + 3 * sd  # percentile bootstrap is a little narrow


def test_plot_draws_three_panels(tmp_path):
    from dmoe.experiments.sweep.plot import plot_pareto

    rng = np.random.default_rng(3)
    recs = []
    for i, g in enumerate(np.arange(0.80, 1.0, 0.05)):
        recs.append({"index": i, "kind": "grid", "template": "JESA({g},8)", "values": {"g": f"{g:.2f}"},
                     "policy": f"JESA({g:.2f},8)", "energy_per_query_j": 5 + 10 * g, "mean_nll": 30 - 10 * g,
                     "mean_kl": 1 - g, "agreement": g,
                     **{f"{k}_{s}": None for k in ("mean_nll", "mean_kl", "agreement") for s in ("lo", "hi")}})
    recs.append({"index": len(recs), "kind": "added", "template": None, "values": {}, "policy": "dense",
                 "energy_per_query_j": 20.0, "mean_nll": 20.0, "mean_kl": 0.0, "agreement": 1.0,
                 "mean_nll_lo": 18.0, "mean_nll_hi": 22.0, "mean_kl_lo": 0.0, "mean_kl_hi": 0.0,
                 "agreement_lo": 1.0, "agreement_hi": 1.0})
    rng.shuffle(recs)
    path = tmp_path / "p.png"
    plot_pareto(path, recs, pareto_flags(recs), title="t", full_model={"mean_nll": 20.0})
    assert path.stat().st_size > 20_000


def _panel_labels(monkeypatch, tmp_path, recs):
    """The annotation texts of each panel of plot_pareto(recs)."""
    import matplotlib.pyplot as plt

    from dmoe.experiments.sweep.plot import plot_pareto

    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    plot_pareto(tmp_path / "p.png", recs, pareto_flags(recs))
    assert len(figs) == 1
    return [{t.get_text() for t in ax.texts} for ax in figs[0].axes[:3]]


def _grid_record(i, values, energy, quality, template):
    return {"index": i, "kind": "grid", "template": template, "values": values, "policy": f"p{i}",
            "energy_per_query_j": energy, "mean_nll": quality, "mean_kl": quality, "agreement": 1 / quality,
            **{f"{k}_{s}": None for k in ("mean_nll", "mean_kl", "agreement") for s in ("lo", "hi")}}


def test_every_point_of_a_product_grid_is_labelled(monkeypatch, tmp_path):
    # no colour bar can tell LB(g,d) points apart: each carries its values (before: only the first and last)
    recs = [_grid_record(i, {"g": g, "d": d}, 5.0 + i, 10.0 - i * (1 if i != 1 else -3), "LB({g},{d})")
            for i, (g, d) in enumerate([("0.9", "4"), ("0.9", "8"), ("0.95", "4"), ("0.95", "8")])]
    want = {"g=0.9,d=4", "g=0.9,d=8", "g=0.95,d=4", "g=0.95,d=8"}
    for texts in _panel_labels(monkeypatch, tmp_path, recs):
        assert want <= texts


def test_a_one_axis_sweep_labels_its_ends_and_a_long_product_grid_its_front(monkeypatch, tmp_path):
    recs = [_grid_record(i, {"g": f"0.{80 + i}"}, 5.0 + i, 10.0 - i, "JESA({g},8)") for i in range(6)]
    for texts in _panel_labels(monkeypatch, tmp_path, recs):  # the colour bar names the rest
        assert texts == {"g=0.80", "g=0.85"}
    # 20 points of a product grid: first, last and the non-dominated ones (here the even indices)
    recs = [_grid_record(i, {"g": str(i // 4), "d": str(i % 4)}, 5.0 + i, 30.0 - i if i % 2 == 0 else 40.0,
                         "LB({g},{d})") for i in range(20)]
    front = {f"g={i // 4},d={i % 4}" for i in range(0, 20, 2)}
    for texts in _panel_labels(monkeypatch, tmp_path, recs):
        assert texts == front | {"g=4,d=3"}
