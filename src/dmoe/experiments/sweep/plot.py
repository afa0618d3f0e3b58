"""``pareto.png``: energy per query against answer NLL, KL to the full model and agreement with it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dmoe.experiments.sweep.record import FRONTS

__all__ = ["plot_pareto"]

_YLABEL = {"mean_nll": "answer NLL [nat] (lower is better)", "mean_kl": "KL to the full model [nat/token]",
           "agreement": "agreement with the full model"}


def plot_pareto(path: str | Path, records: Sequence[dict], flags: dict, *, title: str = "",
                full_model: dict | None = None) -> None:
    """Write the three-panel Pareto plot.

    Args:
        path: the PNG to write.
        records: ``[num_points]`` point records (:func:`~dmoe.experiments.sweep.record.point_record`);
            x = ``energy_per_query_j`` [J/query].
        flags: :func:`~dmoe.experiments.sweep.record.pareto_flags` of ``records``.
        title: the figure title.
        full_model: ``{"mean_nll": ...}`` of the full model (a dashed reference line), optional.

    Each panel: every point with its 95% bootstrap interval as an error bar, one colour per
    template (fixed policies in grey, labelled by name); the non-dominated points ringed and
    joined in order of energy; the first and last point of each template labelled with its
    grid values.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), constrained_layout=True)
    templates = list(dict.fromkeys(r["template"] for r in records if r["template"] is not None))
    colours = {t: plt.cm.viridis(i / max(1, len(templates) - 1) * 0.85) for i, t in enumerate(templates)}
    for ax, (flag, key, larger_better) in zip(axes, FRONTS):
        pts = [(r, f) for r, f in zip(records, flags[flag]) if r.get(key) is not None
               and r.get("energy_per_query_j") is not None]
        for t in templates:
            group = sorted((r for r, _ in pts if r["template"] == t), key=lambda r: r["energy_per_query_j"])
            if not group:
                continue
            x = [r["energy_per_query_j"] for r in group]
            y = [r[key] for r in group]
            err = [[max(0.0, r[key] - (r[f"{key}_lo"] if r[f"{key}_lo"] is not None else r[key])) for r in group],
                   [max(0.0, (r[f"{key}_hi"] if r[f"{key}_hi"] is not None else r[key]) - r[key]) for r in group]]
            ax.errorbar(x, y, yerr=err, fmt="o", ms=4, lw=0.8, capsize=2, color=colours[t], alpha=0.85, label=t)
            by_index = sorted(group, key=lambda r: r["index"])
            for r in (by_index[0], by_index[-1]) if len(by_index) > 1 else by_index[:1]:
                ax.annotate(",".join(f"{k}={v}" for k, v in r["values"].items()), (r["energy_per_query_j"], r[key]),
                            textcoords="offset points", xytext=(4, -11), fontsize=7, color=colours[t])
        for r, _ in pts:
            if r["template"] is not None:
                continue
            lo = r[f"{key}_lo"] if r[f"{key}_lo"] is not None else r[key]
            hi = r[f"{key}_hi"] if r[f"{key}_hi"] is not None else r[key]
            ax.errorbar([r["energy_per_query_j"]], [r[key]], yerr=[[r[key] - lo], [hi - r[key]]], fmt="s", ms=5,
                        lw=0.8, capsize=2, color="0.35")
            ax.annotate(r["policy"], (r["energy_per_query_j"], r[key]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8, color="0.2")
        front = sorted((r for r, f in pts if f), key=lambda r: (r["energy_per_query_j"], -r[key] if larger_better
                                                                 else r[key]))
        if front:
            ax.plot([r["energy_per_query_j"] for r in front], [r[key] for r in front], "-", color="tab:red", lw=1.2,
                    zorder=1, label="non-dominated")
            ax.scatter([r["energy_per_query_j"] for r in front], [r[key] for r in front], s=90, facecolors="none",
                       edgecolors="tab:red", lw=1.3, zorder=3)
        if full_model and key == "mean_nll" and full_model.get("mean_nll") is not None:
            ax.axhline(full_model["mean_nll"], ls="--", lw=0.8, color="0.5", label="full model")
        ax.set_xlabel("energy [J/query]")
        ax.set_ylabel(_YLABEL[key])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
