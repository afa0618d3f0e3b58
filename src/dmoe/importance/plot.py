"""Heatmap of an importance profile (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np

from dmoe.optimize.qos_allocation import ImportanceProfile

__all__ = ["plot_profile"]


def plot_profile(profile: ImportanceProfile, path, *, thresholds=None, title: str | None = None) -> None:
    """Write a PNG: KL and answer-NLL increase per (window, level) and the levels' energy.

    Args:
        profile: the measured profile.
        path: output PNG.
        thresholds: optional ``[L]`` allocation to overlay (marked per window).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = np.asarray(profile.kl)
    nll = np.asarray(profile.nll)
    energy = np.asarray(profile.energy)
    labels = [f"{a}-{b}" if a != b else f"{a}" for a, b in profile.windows]
    z = [f"{q:g}" for q in profile.qos]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.28 * len(labels) + 2.5), constrained_layout=True)
    base = f" over base {profile.base!r}" if profile.base != "full" else ""
    panels = (
        (kl, f"KL to the full model [nat/token], increment{base}", "RdBu_r"),
        (nll, f"answer NLL [nat], increment{base}", "RdBu_r"),
        (energy * 1e3, "expected energy, window sum [mJ/token]", "viridis"),
    )
    for ax, (data, name, cmap) in zip(axes, panels):
        kwargs = {}
        if cmap == "RdBu_r":  # increments may be negative (noise): diverging scale centred on 0
            lim = float(np.abs(data).max()) or 1.0
            kwargs = {"vmin": -lim, "vmax": lim}
        im = ax.imshow(data, aspect="auto", cmap=cmap, **kwargs)
        for (i, j), val in np.ndenumerate(data):
            ax.text(j, i, f"{val:.2g}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(z)), z)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel(f"QoS level z (D = {profile.max_experts})")
        ax.set_ylabel("layers")
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
        if thresholds is not None:
            thr = np.asarray(thresholds)
            for wi, (a, _) in enumerate(profile.windows):
                vi = int(np.argmin(np.abs(np.asarray(profile.qos) - thr[a - 1])))
                ax.plot(vi, wi, marker="o", mfc="none", mec="cyan", ms=8)
    cfg = profile.config
    fig.suptitle(title or (f"Layer importance of {profile.model_name} (K = {profile.num_experts}), "
                           f"{cfg.get('num_questions', '?')} calibration questions"), fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
