"""One sweep point's numbers (a row of ``sweep.csv``) and the Pareto flags of a set of points.

Quality metrics carry 95% percentile-bootstrap intervals over questions
(:mod:`dmoe.experiments.stats`): every point resamples the *same* question indices (one
seed for the whole sweep), so intervals of different points are comparable.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from dmoe.experiments.stats import bootstrap_mean_interval, bootstrap_ratio_interval, pareto_front

__all__ = ["QUALITY", "FRONTS", "point_record", "pareto_flags", "csv_columns"]

#: quality metrics with a bootstrap interval (``<name>``, ``<name>_lo``, ``<name>_hi``)
QUALITY = ("mean_nll", "mean_kl", "agreement", "accuracy")
#: the Pareto fronts: (flag column, quality column, True when larger is better); energy
#: (``energy_per_query_j``) is minimised in each
FRONTS = (("pareto_nll", "mean_nll", False), ("pareto_kl", "mean_kl", False), ("pareto_agreement", "agreement", True))

_ENERGY = ("energy_per_query_j", "energy_per_token_mj", "energy_comm_per_token_mj", "energy_comp_per_token_mj")
_LATENCY = ("latency_query_mean_s", "latency_query_p95_s")
_DEADLINE = ("deadline_s", "deadline_rounds", "deadline_missed", "deadline_miss_max_s", "deadline_miss_mean_s")


def _finite(x):
    """JSON-safe number: None for NaN / inf / None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def point_record(point, result, *, seed: int, num_resamples: int = 2000) -> dict:
    """The record of one evaluated point (a line of ``points.jsonl``, a row of ``sweep.csv``).

    Args:
        point: the :class:`~dmoe.experiments.sweep.grid.SweepPoint`.
        result: its :class:`~dmoe.runtime.evaluate.PolicyResult` (complete).
        seed: seed of the bootstrap resampling (the same for every point).
        num_resamples: bootstrap resamples.

    Returns:
        ``dict`` with ``index``, ``kind``, ``template``, ``values`` ({axis: text}), ``policy``
        (its label), energies (``energy_per_query_j`` [J/query], ``energy_per_token_mj`` and
        its communication / computation parts [mJ/token], ``energy_j`` [J]), each
        :data:`QUALITY` metric with ``_lo`` / ``_hi`` (95%: ``mean_nll`` [nat],
        ``mean_kl`` [nat/token], ``agreement`` and ``accuracy`` in [0, 1]), ``perplexity``
        (with interval, from the held-out texts; None without), latency, deadline stats,
        ``num_questions``, ``num_tokens``, ``seconds``. No NaN: missing numbers are None.
    """
    n = int(result.num_questions)
    idx = np.arange(n)
    nll = -np.asarray(result.logliks, dtype=np.float64)[idx, np.asarray(result.answers)]  # [n] [nat]
    choices = np.asarray(result.logliks).argmax(axis=1)
    correct = (choices == np.asarray(result.answers)).astype(np.float64)  # [n]
    agree = (choices == np.asarray(result.full_choices)).astype(np.float64)  # [n]
    scored = np.asarray(result.scored_tokens, dtype=np.float64)  # [n] tokens
    kl_sum = np.asarray(result.kl_per_question, dtype=np.float64) * scored  # [n] [nat]
    ci = {
        "mean_nll": bootstrap_mean_interval(nll, num_resamples=num_resamples, seed=seed),
        "mean_kl": bootstrap_ratio_interval(kl_sum, scored, num_resamples=num_resamples, seed=seed),
        "agreement": bootstrap_mean_interval(agree, num_resamples=num_resamples, seed=seed),
        "accuracy": bootstrap_mean_interval(correct, num_resamples=num_resamples, seed=seed),
    }
    rec = {
        "index": point.index,
        "kind": point.kind,
        "template": point.template,
        "values": dict(point.values),
        "policy": result.policy,
        "policy_string": point.policy,
    }
    unit = result.per_unit()
    for key in _ENERGY:
        rec[key] = _finite(unit[key])
    rec["energy_j"] = _finite(result.energy_j)
    for key in QUALITY:
        rec[key] = _finite(getattr(result, key))
        rec[f"{key}_lo"], rec[f"{key}_hi"] = (_finite(v) for v in ci[key])
    if result.text_nll is not None and len(result.text_nll):
        lo, hi = bootstrap_ratio_interval(result.text_nll, result.text_tokens, num_resamples=num_resamples, seed=seed)
        rec["perplexity"], rec["perplexity_lo"], rec["perplexity_hi"] = (
            _finite(result.perplexity), _finite(math.exp(lo)), _finite(math.exp(hi)))
    else:
        rec["perplexity"] = rec["perplexity_lo"] = rec["perplexity_hi"] = None
    lat = result.latency_stats()
    for key in _LATENCY:
        rec[key] = _finite(lat[key])
    dl = result.deadline_stats()
    for key in _DEADLINE:
        v = dl[key]
        rec[key] = None if v is None else (int(v) if isinstance(v, (int, np.integer)) else _finite(v))
    rec["num_questions"] = n
    rec["num_tokens"] = int(result.num_tokens)
    rec["seconds"] = round(float(result.seconds), 3)
    return rec


def pareto_flags(records: Sequence[dict]) -> dict[str, list[bool]]:
    """``{flag column: [num_points] bool}`` for each front of :data:`FRONTS`: True where no
    other point has energy per query <= and the quality at least as good, one strictly
    (:func:`dmoe.experiments.stats.pareto_front`; exact ties are all kept). Points missing
    either number are never on a front."""
    out = {}
    energy = np.array([np.nan if r.get("energy_per_query_j") is None else r["energy_per_query_j"] for r in records],
                      dtype=np.float64)
    for flag, key, larger_better in FRONTS:
        q = np.array([np.nan if r.get(key) is None else r[key] for r in records], dtype=np.float64)
        ok = np.flatnonzero(np.isfinite(energy) & np.isfinite(q))
        mask = np.zeros(len(records), dtype=bool)
        if ok.size:
            front = pareto_front(energy[ok], q[ok] if larger_better else -q[ok])
            mask[ok[front]] = True
        out[flag] = mask.tolist()
    return out


def csv_columns(axis_names: Sequence[str], records: Sequence[dict]) -> list[str]:
    """The columns of ``sweep.csv``: the point, one column per grid axis, energy, quality with
    intervals, perplexity (only when some point has one), latency, deadline, sizes, Pareto flags."""
    cols = ["index", "kind", "template", *axis_names, "policy", *_ENERGY, "energy_j"]
    for key in QUALITY:
        cols += [key, f"{key}_lo", f"{key}_hi"]
    if any(r.get("perplexity") is not None for r in records):
        cols += ["perplexity", "perplexity_lo", "perplexity_hi"]
    cols += [*_LATENCY, *_DEADLINE, "num_questions", "num_tokens", "seconds", *(f for f, _, _ in FRONTS)]
    return cols
