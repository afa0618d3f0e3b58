"""Where the edge nodes stand: layouts of N node positions and the distances between them.

A layout is given as a string (``ChannelConfig.layout``, ``dmoe run --layout``):

* ``"disk:R"`` -- N nodes independently and uniformly distributed in a disk of radius R [m]
  centred at the origin (radius R sqrt(U), angle 2 pi V with U, V ~ U(0, 1), so the density
  is uniform over the area), drawn from a :class:`numpy.random.Generator`;
* ``"grid:D"`` -- a square grid of spacing D [m] with ceil(sqrt(N)) columns, filled row by
  row from the origin (node n at ((n mod C) D, floor(n / C) D));
* anything else -- the path of a CSV file of N rows ``x,y`` [m] (comma-separated, an
  optional header row of non-numeric names, blank lines and ``#`` comments ignored).

Positions are ``[N, 2], float64`` [m] in a plane; every node is at the same antenna height
(:mod:`dmoe.channels.pathloss` turns the 2-D distances into 3-D ones). Two nodes may stand
at the same place (a CSV may say so; a disk draw does with probability 0): their distance is
0 and the path-loss model clamps it to its minimum distance
(:data:`dmoe.channels.pathloss.MIN_DISTANCE_M`).
"""

from __future__ import annotations

import csv
import math
import numbers
from pathlib import Path

import numpy as np

__all__ = [
    "LAYOUT_KINDS",
    "MAX_LAYOUT_M",
    "disk_positions",
    "grid_positions",
    "node_positions",
    "pairwise_distances",
    "parse_layout",
    "read_positions_csv",
]

#: The kinds of layout: ``"disk:R"``, ``"grid:D"``, or a CSV path.
LAYOUT_KINDS: tuple[str, ...] = ("disk", "grid", "csv")


#: Largest distance a layout may span [m]: 100 km, far beyond the TR 38.901 models' ranges
#: (UMi 5 km, InH 150 m); larger ones are typos (1e300 m overflowed the path loss to inf).
MAX_LAYOUT_M = 1e5


def _length(name: str, value, *, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or value <= 0:
        raise ValueError(f"`{name}` ({what}) must be a finite number > 0 [m], got {value!r}")
    if float(value) > MAX_LAYOUT_M:
        raise ValueError(f"`{name}` ({what}) must be at most {MAX_LAYOUT_M:g} m (100 km), got {value!r}")
    return float(value)


def _count(num_nodes) -> int:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, numbers.Integral) or num_nodes < 1:
        raise ValueError(f"`num_nodes` must be a positive integer, got {num_nodes!r}")
    return int(num_nodes)


def parse_layout(layout: str) -> tuple[str, float | Path]:
    """Split a layout string into its kind and parameter (no file is read).

    Args:
        layout: ``"disk:R"``, ``"grid:D"`` (R, D in [m], finite, > 0) or a CSV path.

    Returns:
        ``("disk", R)``, ``("grid", D)`` or ``("csv", Path)``.

    Raises:
        ValueError: ``layout`` is not a non-empty string, or R / D is not a finite
            positive number.
    """
    if not isinstance(layout, str) or not layout.strip():
        raise ValueError(f"`layout` must be 'disk:R', 'grid:D' (R, D in m) or a CSV path, got {layout!r}")
    text = layout.strip()
    head, sep, tail = text.partition(":")
    kind = head.strip().lower()
    if sep and kind in ("disk", "grid"):
        what = "disk radius R of 'disk:R'" if kind == "disk" else "grid spacing D of 'grid:D'"
        try:
            value = float(tail.strip())
        except ValueError:
            raise ValueError(f"`layout` {layout!r}: the {what} must be a number [m], got {tail.strip()!r}") from None
        return kind, _length("layout", value, what=what)
    return "csv", Path(text)


def disk_positions(num_nodes: int, radius_m: float, rng) -> np.ndarray:
    """N positions uniformly distributed in the disk of radius R centred at the origin.

    Radius R sqrt(U) and angle 2 pi V, U, V ~ U(0, 1) i.i.d. (inverse-CDF sampling of the
    radial density 2r / R^2), so P(|p| <= r) = (r / R)^2.

    Args:
        num_nodes: N >= 1.
        radius_m: R [m], finite, > 0.
        rng: :class:`numpy.random.Generator`.

    Returns:
        ``[num_nodes, 2], float64`` positions [m].

    Raises:
        ValueError: bad ``num_nodes`` or ``radius_m``. TypeError: ``rng`` is not a Generator.
    """
    n = _count(num_nodes)
    r_max = _length("radius_m", radius_m, what="disk radius")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    # [N, 2] U, V
    u = rng.random((n, 2))
    r = r_max * np.sqrt(u[:, 0])
    theta = 2.0 * np.pi * u[:, 1]
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def grid_positions(num_nodes: int, spacing_m: float) -> np.ndarray:
    """N positions on a square grid of spacing D with C = ceil(sqrt(N)) columns.

    Node n stands at ((n mod C) D, floor(n / C) D): rows are filled one after the other
    from the origin, so the nearest neighbours are D apart.

    Args:
        num_nodes: N >= 1.
        spacing_m: D [m], finite, > 0.

    Returns:
        ``[num_nodes, 2], float64`` positions [m].

    Raises:
        ValueError: bad ``num_nodes`` or ``spacing_m``.
    """
    n = _count(num_nodes)
    d = _length("spacing_m", spacing_m, what="grid spacing")
    cols = math.isqrt(n - 1) + 1  # ceil(sqrt(n)), exact in integers
    idx = np.arange(n)
    return np.stack([(idx % cols) * d, (idx // cols) * d], axis=1).astype(np.float64)


def read_positions_csv(path, num_nodes: int) -> np.ndarray:
    """Node positions from a CSV file: one row ``x,y`` [m] per node, in node order.

    An optional first row of column names (any non-numeric row, e.g. ``x,y``) is skipped,
    as are blank rows and rows starting with ``#``. Coordinates may be negative.

    Args:
        path: the CSV file.
        num_nodes: N, the number of rows expected.

    Returns:
        ``[num_nodes, 2], float64`` positions [m].

    Raises:
        ValueError: the file does not exist or cannot be read, a row does not have exactly
            2 columns, a value is not a finite number, or the number of rows is not N (each
            naming the file and the row).
    """
    n = _count(num_nodes)
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"`layout`: {str(p)!r} is neither 'disk:R', 'grid:D' nor an existing CSV file")
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(csv.reader(fh))]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"`layout`: cannot read the CSV {str(p)!r}: {exc}") from exc
    rows = [(line, row) for line, row in rows if any(row) and not row[0].startswith("#")]
    out = []
    for k, (line, row) in enumerate(rows):
        if len(row) != 2:
            raise ValueError(
                f"`layout` CSV {str(p)!r} line {line}: {len(row)} columns, expected 2 (x, y [m])"
            )
        try:
            x, y = float(row[0]), float(row[1])
        except ValueError:
            if k == 0:
                continue  # the header
            raise ValueError(f"`layout` CSV {str(p)!r} line {line}: {row} is not two numbers (x, y [m])") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"`layout` CSV {str(p)!r} line {line}: coordinates must be finite, got {row}")
        if max(abs(x), abs(y)) > MAX_LAYOUT_M:
            raise ValueError(f"`layout` CSV {str(p)!r} line {line}: coordinates must lie within "
                             f"+-{MAX_LAYOUT_M:g} m (100 km), got {row}")
        out.append((x, y))
    if len(out) != n:
        raise ValueError(
            f"`layout` CSV {str(p)!r} has {len(out)} rows of coordinates but the run has N = {n} nodes "
            "(one row x,y per node)"
        )
    return np.asarray(out, dtype=np.float64).reshape(n, 2)


def node_positions(layout: str, num_nodes: int, *, rng=None) -> np.ndarray:
    """The positions of N nodes under ``layout`` (module docstring).

    Args:
        layout: ``"disk:R"``, ``"grid:D"`` or a CSV path.
        num_nodes: N >= 1.
        rng: :class:`numpy.random.Generator` (used by ``"disk:R"`` only); ``None`` = a
            fresh one.

    Returns:
        ``[num_nodes, 2], float64`` positions [m].

    Raises:
        ValueError: as :func:`parse_layout`, :func:`read_positions_csv`.
    """
    kind, param = parse_layout(layout)
    n = _count(num_nodes)
    if kind == "disk":
        return disk_positions(n, param, rng if rng is not None else np.random.default_rng())
    if kind == "grid":
        return grid_positions(n, param)
    return read_positions_csv(param, n)


def pairwise_distances(positions) -> np.ndarray:
    """2-D Euclidean distances between every pair of nodes.

    Args:
        positions: ``[N, 2]`` positions [m], finite.

    Returns:
        ``[N, N], float64`` d_2D [m]: symmetric, 0 on the diagonal (and between coincident
        nodes).

    Raises:
        ValueError: wrong shape or a non-finite coordinate.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1:
        raise ValueError(f"`positions` must have shape [N, 2], got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("`positions` must be finite [m]")
    # [N, N, 2] differences
    diff = pos[:, None, :] - pos[None, :, :]
    return np.hypot(diff[..., 0], diff[..., 1])
