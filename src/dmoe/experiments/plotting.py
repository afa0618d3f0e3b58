"""Matplotlib helpers (Agg backend, one style for every figure)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plt", "figure", "save", "family_color", "sequential_colors", "csv_write", "yerr"]

_FAMILY = {
    "Top": "#444444",
    "JESA": "#1f77b4",
    "H": "#d62728",
    "LB": "#2ca02c",
    "DES": "#9467bd",
    "dense": "#000000",
}


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 6.4, height: float = 4.2, **kwargs):
    """A new figure with constrained layout; returns (fig, axes)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), constrained_layout=True, **kwargs)
    return fig, axes


def save(fig, path) -> None:
    """Save as PNG (dpi 130) and close."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def family_color(name: str) -> str:
    """Colour of a policy family from its label (Top-k, JESA, H, LB, DES, dense)."""
    for prefix, color in _FAMILY.items():
        if name.startswith(prefix):
            return color
    return "#7f7f7f"


def sequential_colors(n: int, cmap: str = "viridis") -> list:
    """``n`` colours along a colormap (dark to bright, skipping the palest end)."""
    cm = plt.get_cmap(cmap)
    return [cm(x) for x in np.linspace(0.05, 0.85, max(n, 1))]


def csv_write(path, header: list[str], rows: list[list]) -> None:
    """Write a small CSV (numbers with repr precision)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if v is None else v for v in row])


def yerr(y, ci) -> np.ndarray:
    """Asymmetric error bars ``[2, n]`` (>= 0) from values ``y`` and intervals ``ci`` ``[n, 2]``."""
    y = np.asarray(y, dtype=np.float64)
    ci = np.asarray(ci, dtype=np.float64).reshape(-1, 2)
    return np.maximum(np.vstack([y - ci[:, 0], ci[:, 1] - y]), 0.0)
