"""Writing a run's results: ``summary.json``, ``summary.csv``, ``per_layer.csv``,
``per_layer.png`` and ``latency.png``; the printed table and the latency note.

Energies come as totals [J] and per unit: per token [mJ/token] is the energy of one token
through every layer (``energy_j / num_tokens``), per query [J/query] the energy of one MMLU
question (``energy_j / num_questions``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .runtime.evaluate import PolicyResult

#: mean query latency [s] above which :func:`latency_note` explains what dominates
LATENCY_NOTE_S = 60.0

PER_LAYER_FIELDS = (
    "policy",
    "layer",
    "energy_comm_j",
    "energy_comp_j",
    "energy_j",
    "tokens",
    "energy_comm_per_token_j",
    "energy_comp_per_token_j",
    "energy_per_token_j",
    "energy_per_token_mj",
    "energy_per_query_j",
    "transmissions",
    "infeasible_tokens",
    "energy_planned_j",
    "failed_attempts",
    "dropped_tokens",
    "latency_mean_s",
    "latency_p95_s",
    "deadline_missed",
)


SUMMARY_FIELDS = (
    "policy",
    "accuracy",
    "mean_nll",
    "agreement",
    "mean_kl",
    "perplexity",
    "energy_j",
    "energy_comm_j",
    "energy_comp_j",
    "energy_per_token_mj",
    "energy_comm_per_token_mj",
    "energy_comp_per_token_mj",
    "energy_per_query_j",
    "num_questions",
    "num_tokens",
    "latency_layer_round_mean_s",
    "latency_layer_round_p95_s",
    "latency_query_mean_s",
    "latency_query_p95_s",
    "latency_air_share",
    "link_rate_median_bps",
    "link_load_mean",
    "deadline_s",
    "deadline_rounds",
    "deadline_missed",
    "deadline_miss_max_s",
    "deadline_miss_mean_s",
)


def strict_json(value):
    """``value`` with every non-finite float (NaN, +-inf) replaced by None, numpy scalars and
    arrays made plain Python, tuples made lists: what ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_summary(path: Path, config: dict, results: Sequence[PolicyResult]) -> None:
    """Write ``{"config": config, "results": [PolicyResult.summary(), ...]}`` as strict JSON
    (NaN and infinities written as null, :func:`strict_json`)."""
    payload = strict_json({"config": config, "results": [r.summary() for r in results]})
    Path(path).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_summary_csv(path: Path, results: Sequence[PolicyResult]) -> None:
    """One row per policy (:data:`SUMMARY_FIELDS`): quality, energy totals [J], per token
    [mJ/token] and per query [J/query], latency [s] and its breakdown; empty cells for None."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in results:
            row = strict_json(r.summary())
            w.writerow({k: "" if row.get(k) is None else row[k] for k in SUMMARY_FIELDS})


def per_layer_rows(results: Sequence[PolicyResult]) -> list[dict]:
    """One row per (policy, layer), layers numbered 1..L as in the paper."""
    rows = []
    for r in results:
        t = r.per_layer
        L = len(t.tokens)
        # [L] layer rounds per layer that missed the policy's deadline (None: no deadline)
        missed = r.deadline_missed_per_layer()

        def col(values, layer, default=0.0):
            return default if values is None else values[layer]

        for layer in range(L):
            n = max(int(t.tokens[layer]), 1)
            comm, comp = float(t.energy_comm_j[layer]), float(t.energy_comp_j[layer])
            planned = (
                comm + comp
                if t.energy_comm_planned_j is None
                else float(t.energy_comm_planned_j[layer] + t.energy_comp_planned_j[layer])
            )
            rows.append(
                {
                    "policy": r.policy,
                    "layer": layer + 1,
                    "energy_comm_j": comm,
                    "energy_comp_j": comp,
                    "energy_j": comm + comp,
                    "tokens": int(t.tokens[layer]),
                    "energy_comm_per_token_j": comm / n,
                    "energy_comp_per_token_j": comp / n,
                    "energy_per_token_j": (comm + comp) / n,
                    "energy_per_token_mj": (comm + comp) / n * 1e3,
                    "energy_per_query_j": (comm + comp) / max(r.num_questions, 1),
                    "transmissions": int(t.transmissions[layer]),
                    "infeasible_tokens": int(t.infeasible_tokens[layer]),
                    "energy_planned_j": planned,
                    "failed_attempts": int(col(t.failed_attempts, layer, 0)),
                    "dropped_tokens": int(col(t.dropped_tokens, layer, 0)),
                    "latency_mean_s": float(col(t.latency_mean_s, layer)),
                    "latency_p95_s": float(col(t.latency_p95_s, layer)),
                    "deadline_missed": "" if missed is None else int(missed[layer]),
                }
            )
    return rows


def write_per_layer_csv(path: Path, results: Sequence[PolicyResult]) -> None:
    """Write the per-layer communication and computation energy of every policy."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=PER_LAYER_FIELDS)
        w.writeheader()
        w.writerows(per_layer_rows(results))


def plot_per_layer(path: Path, results: Sequence[PolicyResult], title: str = "") -> None:
    """Per-token communication, computation and total energy by layer, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    for r in results:
        t = r.per_layer
        n = np.maximum(t.tokens, 1)
        layers = np.arange(1, len(n) + 1)
        for ax, y in zip(axes, (t.energy_comm_j / n, t.energy_comp_j / n, (t.energy_comm_j + t.energy_comp_j) / n)):
            ax.plot(layers, y * 1e3, marker=".", label=r.policy)
    for ax, name in zip(axes, ("communication", "computation", "total")):
        ax.set_xlabel("layer l")
        ax.set_ylabel(f"{name} energy per token [mJ]")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fit(value, width: int, decimals: int) -> str:
    """``value`` right-aligned in exactly ``width`` characters, one of them a leading space.

    Fixed point with ``decimals`` places when it fits and does not round a non-zero value to
    zero; otherwise scientific notation with as many significant digits as fit (at least
    one: ``-1e+308`` needs 7 characters, so ``width`` >= 8 holds every finite float); ``n/a``
    for None, ``nan`` / ``inf`` as Python writes them. Integers print as integers when they fit.

    Raises:
        ValueError: ``width`` < 8.
    """
    if width < 8:
        raise ValueError(f"`width` must be >= 8, got {width}")
    room = width - 1
    if value is None:
        return f"{'n/a':>{width}}"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        text = str(int(value))
        if len(text) <= room:
            return f"{text:>{width}}"
    x = float(value)
    if not math.isfinite(x):
        return f"{str(x):>{width}}"
    text = f"{x:.{decimals}f}"
    if len(text) <= room and (x == 0.0 or float(text) != 0.0):
        return f"{text:>{width}}"
    for digits in range(max(decimals, 3), -1, -1):
        text = f"{x:.{digits}e}"
        if len(text) <= room:
            return f"{text:>{width}}"
    raise AssertionError("unreachable: a float always fits in 7 characters")  # pragma: no cover


def format_table(results: Sequence[PolicyResult]) -> str:
    """A plain-text table per policy: accuracy, NLL, agreement and KL with the full model,
    held-out perplexity, energy spent in total [J], per token [mJ/token] and per query
    [J/query] (and planned, lost packets and dropped transfers when the CSI is imperfect),
    the mean / 95th-percentile latency per layer round and per query, and node failures,
    re-plans and re-hosted queries when nodes failed. Every column keeps its width for any
    finite value (:func:`fit`: scientific notation when fixed point does not fit)."""
    width = max([16] + [len(r.policy) + 2 for r in results])
    imperfect = any(
        r.energy_planned_j is not None and (r.energy_planned_j != r.energy_j or r.failed_attempts) for r in results
    )
    faults = any(r.node_failures or r.node_joins or not r.complete for r in results)
    deadlines = any(r.deadline_s is not None for r in results)
    # (header, width, decimals) of every numeric column, in order
    cols = [("accuracy", 9, 3), ("mean NLL", 10, 3), ("agree", 8, 3), ("KL [nat]", 10, 4), ("ppl", 12, 2),
            ("energy [J]", 12, 2), ("mJ/token", 10, 2), ("J/query", 10, 2), ("comm [J]", 11, 2), ("comp [J]", 11, 2)]
    if imperfect:
        cols += [("planned [J]", 12, 2), ("lost pkts", 10, 0), ("dropped", 8, 0)]
    cols += [("vs dense", 9, 3), ("round [s]", 10, 2), ("p95 [s]", 9, 2), ("query [s]", 10, 1), ("p95 [s]", 9, 1),
             ("time [s]", 9, 2)]
    if faults:
        cols += [("failures", 9, 0), ("replans", 8, 0), ("rehosted", 9, 0)]
    if deadlines:
        cols += [("T missed", 9, 0), ("max late [s]", 13, 3)]
    head = f"{'policy':<{width}}" + "".join(f"{h:>{w}}" for h, w, _ in cols)
    lines = [head, "-" * len(head)]
    dense = next((r.energy_j for r in results if r.policy == "dense"), None)
    for r in results:
        lat = r.latency_stats()
        unit = r.per_unit()
        values = [r.accuracy, r.mean_nll, r.agreement, r.mean_kl, r.perplexity,
                  r.energy_j, unit["energy_per_token_mj"], unit["energy_per_query_j"], r.energy_comm_j, r.energy_comp_j]
        if imperfect:
            planned = r.energy_j if r.energy_planned_j is None else r.energy_planned_j
            values += [planned, int(r.failed_attempts), int(r.dropped_tokens)]
        values += [r.energy_j / dense if dense else None, lat["latency_layer_round_mean_s"],
                   lat["latency_layer_round_p95_s"], lat["latency_query_mean_s"], lat["latency_query_p95_s"], r.seconds]
        if faults:
            values += [int(r.node_failures), int(r.replans), int(r.rehosted_queries)]
        if deadlines:
            dl = r.deadline_stats()
            values += [dl["deadline_missed"], dl["deadline_miss_max_s"]]
        line = f"{r.policy:<{width}}" + "".join(
            f"{'':>{w}}" if h in ("vs dense", "T missed", "max late [s]") and v is None else fit(v, w, d)
            for (h, w, d), v in zip(cols, values)
        )
        if faults and not r.complete:
            line += f"  (stopped after {r.num_questions} questions)"
        lines.append(line)
    return "\n".join(lines)


def deadline_notes(results: Sequence[PolicyResult]) -> list[str]:
    """One line per deadline policy whose layer rounds missed T on air (issue 20): how many,
    by how much, and ``every layer round missed`` when none met it. Empty when all met it."""
    notes = []
    for r in results:
        dl = r.deadline_stats()
        if not dl["deadline_missed"]:
            continue
        every = dl["deadline_missed"] == dl["deadline_rounds"]
        notes.append(
            f"note: {r.policy}: {'every layer round missed' if every else 'layer rounds missed'} the deadline "
            f"T = {dl['deadline_s']:g} s ({dl['deadline_missed']} of {dl['deadline_rounds']}; late by "
            f"{dl['deadline_miss_mean_s']:.3g} s on average, {dl['deadline_miss_max_s']:.3g} s at most)"
            + ("; no allocation of the resource blocks meets it on this channel" if every else "")
        )
    return notes


def _duration(seconds: float) -> str:
    """``85.3 s``, ``11.2 min`` or ``3.10 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _rate(bps: float) -> str:
    """``950 bit/s``, ``95 kbit/s``, ``1.2 Mbit/s``, ``3.4 Gbit/s`` (3 significant digits)."""
    for scale, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def latency_note(results: Sequence[PolicyResult], *, hidden_state_bytes: int, comp_throughput: float,
                 threshold_s: float = LATENCY_NOTE_S,
                 hint: str = "try --wire-dtype fp8 or an NR --system") -> str | None:
    """One line explaining the slowest policy's mean query latency when it exceeds
    ``threshold_s`` [s] (default a minute), else None.

    It names what dominates that policy's critical paths (:meth:`PolicyResult.latency_breakdown`):
    air time (s0 = ``hidden_state_bytes`` [byte], the median rate of the loaded links, hidden
    states per link, the layer rounds per query and their 2 hops, forward and back) or
    computation (``comp_throughput`` [token/s] per node), and how many policies are above the
    threshold. ``hint`` ends an air-time note.
    """
    if not results:
        return None
    means = [r.latency_stats()["latency_query_mean_s"] for r in results]
    worst = int(np.argmax(means))
    if not means[worst] > threshold_s:
        return None
    r = results[worst]
    over = sum(m > threshold_s for m in means)
    head = f"note: mean query latency {_duration(means[worst])} for {r.policy}"
    if over > 1:
        head += f" ({over} of {len(results)} policies above {threshold_s:g} s)"
    lr = np.zeros((0, 0)) if r.latency_layer_round_s is None else np.asarray(r.latency_layer_round_s)
    rounds = int(np.count_nonzero(lr.mean(axis=0) > 0)) if lr.size else 0
    b = r.latency_breakdown()
    air = b["latency_air_share"]
    if air is None or air >= 0.5:
        share = "" if air is None else f"{air:.0%} of the critical path: "
        median = b["link_rate_median_bps"]
        rate = "" if median is None else f" at a median link rate of {_rate(median)}"
        load = "" if b["link_load_mean"] is None else f", {b['link_load_mean']:.3g} hidden states per link"
        return (f"{head}: air time dominates ({share}s0 = {int(hidden_state_bytes)} B{rate}{load}, over {rounds} "
                f"layer rounds x 2 hops); {hint}")
    return (f"{head}: computation dominates ({1 - air:.0%} of the critical path at {comp_throughput:.3g} token/s "
            f"per node over {rounds} layer rounds); try a larger --comp-throughput")


def plot_latency(path: Path, results: Sequence[PolicyResult], title: str = "") -> None:
    """``latency.png``: left, the mean (solid) and 95th-percentile (dashed) latency of each
    layer round by layer, one colour per policy [s]; right, each policy's mean query latency
    as a bar split into air time and computation (critical paths), with its 95th percentile
    as an error bar [s or min]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True,
                                   gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(results):
        t = r.per_layer
        if t.latency_mean_s is None:
            continue
        layers = np.arange(1, len(t.latency_mean_s) + 1)
        c = colors[i % len(colors)]
        ax1.plot(layers, t.latency_mean_s, marker=".", color=c, label=r.policy)
        if t.latency_p95_s is not None:
            ax1.plot(layers, t.latency_p95_s, ls="--", lw=0.8, color=c)
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_xlabel("layer l")
    ax1.set_ylabel("layer-round latency [s]")
    ax1.set_title("per layer round: mean (solid), 95th percentile (dashed)", fontsize=10)
    ax1.set_ylim(bottom=0)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    stats = [r.latency_stats() for r in results]
    mean = np.array([s["latency_query_mean_s"] for s in stats])
    p95 = np.array([s["latency_query_p95_s"] for s in stats])
    top = float(mean.max(initial=0.0))
    # the unit _duration uses for the longest bar
    scale, unit = (3600.0, "h") if top >= 7200 else (60.0, "min") if top >= 120 else (1.0, "s")
    air = np.array([(r.latency_breakdown()["latency_air_share"] or 0.0) for r in results])
    x = np.arange(len(results))
    ax2.bar(x, mean * air / scale, color="tab:blue", label="air time")
    ax2.bar(x, mean * (1 - air) / scale, bottom=mean * air / scale, color="tab:orange", label="computation")
    ax2.errorbar(x, mean / scale, yerr=[np.zeros_like(mean), np.maximum(p95 - mean, 0) / scale], fmt="none",
                 ecolor="k", capsize=3, lw=1, label="95th percentile")
    for xi, m in zip(x, mean):
        ax2.annotate(_duration(m), (xi, m / scale), textcoords="offset points", xytext=(0, 3), ha="center",
                     fontsize=8)
    ax2.set_xticks(x, [r.policy for r in results], rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel(f"query latency [{unit}]")
    ax2.set_title("per query: mean (bar), 95th percentile (whisker)", fontsize=10)
    ax2.set_ylim(0, max(float((np.maximum(mean, p95) / scale).max(initial=0)) * 1.15, 1e-9))
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
