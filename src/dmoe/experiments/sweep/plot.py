"""``pareto.png``: energy per query against answer NLL, KL to the full model and agreement with it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dmoe.experiments.sweep.record import FRONTS

__all__ = ["plot_pareto"]

#: a template of at most this many points without a colour bar has every point labelled
_LABEL_ALL = 12

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
    joined in order of energy. Grid points are labelled with their values: the first and last
    when a colour bar shows the values (one template over one axis), else every point (at
    most 12 per template; above that the first, the last and the non-dominated ones).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), constrained_layout=True)
    templates = list(dict.fromkeys(r["template"] for r in records if r["template"] is not None))
    cmaps = [plt.cm.viridis, plt.cm.plasma, plt.cm.cividis, plt.cm.cool]
    energies = [r["energy_per_query_j"] for r in records if r.get("energy_per_query_j") is not None]
    log_x = bool(energies) and min(energies) > 0 and max(energies) / min(energies) > 8
    mappable = None
    for ax, (flag, key, larger_better) in zip(axes, FRONTS):
        pts = [(r, f) for r, f in zip(records, flags[flag]) if r.get(key) is not None
               and r.get("energy_per_query_j") is not None]
        for ti, t in enumerate(templates):
            group = sorted((r for r, _ in pts if r["template"] == t), key=lambda r: r["index"])
            if not group:
                continue
            cmap = cmaps[ti % len(cmaps)]
            shade = [cmap(0.9 * j / max(1, len(group) - 1)) for j in range(len(group))]
            for r, c in zip(group, shade):
                lo = r[f"{key}_lo"] if r[f"{key}_lo"] is not None else r[key]
                hi = r[f"{key}_hi"] if r[f"{key}_hi"] is not None else r[key]
                ax.errorbar([r["energy_per_query_j"]], [r[key]],
                            yerr=[[max(0.0, r[key] - lo)], [max(0.0, hi - r[key])]], fmt="none", lw=0.7,
                            capsize=2, ecolor=c, alpha=0.45, zorder=1)
            ax.scatter([r["energy_per_query_j"] for r in group], [r[key] for r in group], s=22, c=shade, zorder=2,
                       label=t)
            shaded = False  # a colour bar tells the points apart: one template over one sorted axis
            if ti == 0 and len(templates) == 1 and len(group[0]["values"]) == 1 and len(group) > 1:
                name = next(iter(group[0]["values"]))
                vals = [float(r["values"][name]) for r in group]
                if vals == sorted(vals):
                    shaded = True
                    part = matplotlib.colors.ListedColormap(cmap([0.9 * j / 255 for j in range(256)]))
                    mappable = (plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vals[0], vals[-1]),
                                                      cmap=part), name)
            on_front = {r["index"] for r, f in pts if f}
            if shaded:
                labelled = [group[0], group[-1]]
            elif len(group) <= _LABEL_ALL:  # a product grid, several templates: no colour bar, name each point
                labelled = group
            else:
                labelled = [r for j, r in enumerate(group) if j in (0, len(group) - 1) or r["index"] in on_front]
            for r in labelled:
                ax.annotate(",".join(f"{k}={v}" for k, v in r["values"].items()), (r["energy_per_query_j"], r[key]),
                            textcoords="offset points", xytext=(0, 7), ha="center", va="bottom", fontsize=7,
                            color="0.25")
        for r, _ in pts:
            if r["template"] is not None:
                continue
            lo = r[f"{key}_lo"] if r[f"{key}_lo"] is not None else r[key]
            hi = r[f"{key}_hi"] if r[f"{key}_hi"] is not None else r[key]
            ax.errorbar([r["energy_per_query_j"]], [r[key]], yerr=[[r[key] - lo], [hi - r[key]]], fmt="s", ms=5,
                        lw=0.8, capsize=2, color="0.3", zorder=2)
            ax.annotate(r["policy"], (r["energy_per_query_j"], r[key]), textcoords="offset points", xytext=(6, 4),
                        fontsize=8, color="0.15")
        front = sorted((r for r, f in pts if f), key=lambda r: (r["energy_per_query_j"], -r[key] if larger_better
                                                                 else r[key]))
        if front:
            ax.plot([r["energy_per_query_j"] for r in front], [r[key] for r in front], "-", color="tab:red", lw=1.1,
                    alpha=0.8, zorder=1.5, label="non-dominated")
            ax.scatter([r["energy_per_query_j"] for r in front], [r[key] for r in front], s=80, facecolors="none",
                       edgecolors="tab:red", lw=1.2, zorder=3)
        if full_model and key == "mean_nll" and full_model.get("mean_nll") is not None:
            ax.axhline(full_model["mean_nll"], ls="--", lw=0.8, color="0.5", label="full model")
        if log_x:
            ax.set_xscale("log")
            lo_e, hi_e = min(energies), max(energies)
            ticks = [m * 10.0**e for e in range(-6, 7) for m in (1, 2, 5) if lo_e / 1.3 <= m * 10.0**e <= hi_e * 1.3]
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("energy [J/query]" + (" (log scale)" if log_x else ""))
        ax.set_ylabel(_YLABEL[key])
        ax.grid(alpha=0.3)
    if mappable is not None:
        bar = fig.colorbar(mappable[0], ax=list(axes), shrink=0.85, pad=0.01)
        bar.set_label(mappable[1])
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
