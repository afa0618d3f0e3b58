"""Writing a run's results: ``summary.json``, ``per_layer.csv`` and ``per_layer.png``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .runtime.evaluate import PolicyResult

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
    "transmissions",
    "infeasible_tokens",
    "energy_planned_j",
    "failed_attempts",
    "dropped_tokens",
    "latency_mean_s",
    "latency_p95_s",
)


def write_summary(path: Path, config: dict, results: Sequence[PolicyResult]) -> None:
    """Write ``{"config": config, "results": [PolicyResult.summary(), ...]}`` as JSON."""
    payload = {"config": config, "results": [r.summary() for r in results]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def per_layer_rows(results: Sequence[PolicyResult]) -> list[dict]:
    """One row per (policy, layer), layers numbered 1..L as in the paper."""
    rows = []
    for r in results:
        t = r.per_layer
        L = len(t.tokens)

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
                    "transmissions": int(t.transmissions[layer]),
                    "infeasible_tokens": int(t.infeasible_tokens[layer]),
                    "energy_planned_j": planned,
                    "failed_attempts": int(col(t.failed_attempts, layer, 0)),
                    "dropped_tokens": int(col(t.dropped_tokens, layer, 0)),
                    "latency_mean_s": float(col(t.latency_mean_s, layer)),
                    "latency_p95_s": float(col(t.latency_p95_s, layer)),
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


def format_table(results: Sequence[PolicyResult]) -> str:
    """A plain-text table per policy: accuracy, NLL, agreement and KL with the full model,
    held-out perplexity, energy spent (and planned, lost packets and dropped transfers when the
    CSI is imperfect), the mean / 95th-percentile latency per layer round and per query, and
    node failures, re-plans and re-hosted queries when nodes failed."""
    width = max([16] + [len(r.policy) + 2 for r in results])
    imperfect = any(
        r.energy_planned_j is not None and (r.energy_planned_j != r.energy_j or r.failed_attempts) for r in results
    )
    head = (
        f"{'policy':<{width}}{'accuracy':>9}{'mean NLL':>10}{'agree':>7}{'KL [nat]':>10}{'ppl':>12}"
        f"{'energy [J]':>12}{'comm [J]':>11}{'comp [J]':>11}"
        + (f"{'planned [J]':>12}{'lost pkts':>10}{'dropped':>8}" if imperfect else "")
        + f"{'vs dense':>9}{'round [s]':>10}{'p95 [s]':>9}{'query [s]':>10}{'p95 [s]':>9}{'time [s]':>9}"
    )
    lines = [head, "-" * len(head)]
    faults = any(r.node_failures or r.node_joins or not r.complete for r in results)
    if faults:
        head += f"{'failures':>9}{'replans':>8}{'rehosted':>9}"
        lines = [head, "-" * len(head)]
    dense = next((r.energy_j for r in results if r.policy == "dense"), None)
    for r in results:
        rel = f"{r.energy_j / dense:>9.3f}" if dense else f"{'':>9}"
        lat = r.latency_stats()
        planned = r.energy_j if r.energy_planned_j is None else r.energy_planned_j
        ppl = f"{r.perplexity:>12.5g}" if r.perplexity is not None else f"{'n/a':>12}"
        line = (
            f"{r.policy:<{width}}{r.accuracy:>9.3f}{r.mean_nll:>10.3f}{r.agreement:>7.3f}{r.mean_kl:>10.4f}{ppl}"
            f"{r.energy_j:>12.2f}{r.energy_comm_j:>11.2f}{r.energy_comp_j:>11.2f}"
            + (f"{planned:>12.2f}{r.failed_attempts:>10d}{r.dropped_tokens:>8d}" if imperfect else "")
            + f"{rel}{lat['latency_layer_round_mean_s']:>10.2f}{lat['latency_layer_round_p95_s']:>9.2f}"
            f"{lat['latency_query_mean_s']:>10.1f}{lat['latency_query_p95_s']:>9.1f}{r.seconds:>9.1f}"
        )
        if faults:
            line += f"{r.node_failures:>9}{r.replans:>8}{r.rehosted_queries:>9}"
            if not r.complete:
                line += f"  (stopped after {r.num_questions} questions)"
        lines.append(line)
    return "\n".join(lines)
