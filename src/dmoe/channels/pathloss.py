"""Large-scale fading between edge nodes: 3GPP TR 38.901 path loss, LoS probability and shadowing.

Models (``ChannelConfig.pathloss``, ``dmoe run --pathloss``), 3GPP TR 38.901 V17/V18
Table 7.4.1-1 (path loss, shadow fading) and Table 7.4.2-1 (LoS probability); d in [m],
f_c in [GHz], PL in [dB]:

* ``"umi-street-canyon"`` (the default with a layout)
    - breakpoint d'_BP = 4 h'_BS h'_UT f_c / c with effective heights h' = h - h_E,
      h_E = 1 m, f_c in Hz and c = 3.0e8 m/s (note 1 of the table);
    - LoS: PL1 = 32.4 + 21 log10(d_3D) + 20 log10(f_c) for 10 m <= d_2D <= d'_BP,
      PL2 = 32.4 + 40 log10(d_3D) + 20 log10(f_c) - 9.5 log10(d'_BP^2 + (h_BS - h_UT)^2)
      for d'_BP <= d_2D <= 5 km; sigma_SF = 4 dB;
    - NLoS: max(PL_LoS, PL'_NLoS), PL'_NLoS = 35.3 log10(d_3D) + 22.4 + 21.3 log10(f_c)
      - 0.3 (h_UT - 1.5); sigma_SF = 7.82 dB;
    - P_LoS = 1 for d_2D <= 18 m, else 18/d_2D + exp(-d_2D/36) (1 - 18/d_2D).
* ``"inh-office"`` (mixed office)
    - LoS: PL = 32.4 + 17.3 log10(d_3D) + 20 log10(f_c), 1 m <= d_3D <= 150 m; sigma_SF = 3 dB;
    - NLoS: max(PL_LoS, PL'_NLoS), PL'_NLoS = 38.3 log10(d_3D) + 17.30 + 24.9 log10(f_c);
      sigma_SF = 8.03 dB;
    - P_LoS (mixed office) = 1 for d_2D <= 1.2 m, exp(-(d_2D - 1.2)/4.7) for
      1.2 m < d_2D < 6.5 m, 0.32 exp(-(d_2D - 6.5)/32.6) for d_2D >= 6.5 m.
* ``"free-space"`` (reference): Friis, PL = 20 log10(4 pi d_3D f_c / c), c = 299 792 458 m/s;
  always LoS, no shadowing.

Deployment choices (documented deviations, the tables are written for a base station and
a user terminal):

* every edge node's antenna is at :data:`NODE_HEIGHT_M` = 1.5 m (the tables' typical UT
  height), so h_BS = h_UT = 1.5 m, d_3D = d_2D, h' = 0.5 m and d'_BP = f_c / c
  (11.7 m at 3.5 GHz); links are then reciprocal (PL(i->j) = PL(j->i));
* distances below the table's minimum (:data:`MIN_DISTANCE_M`: d_2D 10 m for UMi, d_3D 1 m
  for InH, 1 m for free space, the edge of the far field at these frequencies) are clamped
  to it: PL(d) = PL(d_min) for d < d_min (coincident nodes included). Distances above the
  maximum (:data:`MAX_DISTANCE_M`) are extrapolated with the same formula;
* the carrier must lie in the tables' 0.5-100 GHz (any f_c > 0 for free space).

Randomness (:func:`draw_large_scale`): per unordered pair {i, j} one LoS state (Bernoulli
with P_LoS(d_2D)) and one shadow fading value SF ~ N(0, sigma_SF^2) [dB] of that state, both
used for i->j and j->i and kept for the whole run ("spatially consistent per link": a link
keeps its LoS state and shadowing while the small-scale fading changes). The large-scale
gain of a link is 10^(-(PL + SF)/10), the mean of the power gain H_ij^(m) that multiplies
the unit-mean small-scale response of any fading model (:mod:`dmoe.channels.base`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .geometry import pairwise_distances

__all__ = [
    "DEFAULT_PATHLOSS",
    "MAX_DISTANCE_M",
    "MIN_DISTANCE_M",
    "NODE_HEIGHT_M",
    "PATHLOSS_MODELS",
    "SHADOW_FADING_STD_DB",
    "LargeScale",
    "check_pathloss_model",
    "draw_large_scale",
    "los_probability",
    "path_loss_db",
    "shadow_fading_std_db",
]

#: Names accepted by ``ChannelConfig.pathloss`` / ``--pathloss``.
PATHLOSS_MODELS: tuple[str, ...] = ("inh-office", "umi-street-canyon", "free-space")
#: The model used when a layout is given without one.
DEFAULT_PATHLOSS = "umi-street-canyon"
#: Antenna height of every edge node [m] (TR 38.901's typical UT height).
NODE_HEIGHT_M = 1.5
#: Smallest distance of each model [m]; shorter ones are clamped to it (d_2D for UMi, d_3D otherwise).
MIN_DISTANCE_M: dict[str, float] = {"inh-office": 1.0, "umi-street-canyon": 10.0, "free-space": 1.0}
#: Largest distance of the table [m]; longer ones are extrapolated.
MAX_DISTANCE_M: dict[str, float] = {"inh-office": 150.0, "umi-street-canyon": 5000.0, "free-space": math.inf}
#: Shadow fading standard deviation (LoS, NLoS) [dB], TR 38.901 Table 7.4.1-1.
SHADOW_FADING_STD_DB: dict[str, tuple[float, float]] = {
    "inh-office": (3.0, 8.03),
    "umi-street-canyon": (4.0, 7.82),
    "free-space": (0.0, 0.0),
}
#: The speed of light of TR 38.901's breakpoint formula (note 1 of Table 7.4.1-1) [m/s].
_C_TABLE = 3.0e8
#: The speed of light [m/s] (free space).
_C = 299_792_458.0
#: Effective environment height h_E of UMi [m] (note 1 of Table 7.4.1-1).
_H_E = 1.0
#: Carrier range of Table 7.4.1-1 [GHz].
_FC_RANGE_GHZ = (0.5, 100.0)


def check_pathloss_model(name: str) -> str:
    """The canonical name of path-loss model ``name`` (case-insensitive; ``_`` = ``-``).

    Raises:
        ValueError: unknown ``name`` (listing :data:`PATHLOSS_MODELS`).
    """
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in PATHLOSS_MODELS:
        raise ValueError(f"unknown `pathloss` model {name!r}; known: {', '.join(PATHLOSS_MODELS)}")
    return key


def _carrier(model: str, carrier_ghz) -> float:
    if isinstance(carrier_ghz, bool) or not isinstance(carrier_ghz, numbers.Real) or not math.isfinite(carrier_ghz):
        raise ValueError(f"`carrier_ghz` must be a finite number [GHz], got {carrier_ghz!r}")
    fc = float(carrier_ghz)
    lo, hi = _FC_RANGE_GHZ
    if model != "free-space" and not lo <= fc <= hi:
        raise ValueError(f"`carrier_ghz` = {fc:g} GHz is outside the {lo:g}-{hi:g} GHz of TR 38.901 ({model})")
    if fc <= 0:
        raise ValueError(f"`carrier_ghz` must be > 0 [GHz], got {carrier_ghz!r}")
    return fc


def _height(name: str, value, *, above: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= above:
        raise ValueError(f"`{name}` must be a finite number > {above:g} [m], got {value!r}")
    return float(value)


def _distances(distance_2d_m) -> np.ndarray:
    d = np.asarray(distance_2d_m, dtype=np.float64)
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("`distance_2d_m` must be finite and >= 0 [m]")
    return d


def path_loss_db(
    model: str,
    distance_2d_m,
    carrier_ghz: float,
    los,
    *,
    tx_height_m: float = NODE_HEIGHT_M,
    rx_height_m: float = NODE_HEIGHT_M,
) -> np.ndarray:
    """Path loss PL [dB] of TR 38.901 Table 7.4.1-1 (module docstring), without shadowing.

    For UMi the transmitter plays the table's BS (h_BS = ``tx_height_m``) and the receiver
    its UT (h_UT = ``rx_height_m``); with equal heights (the runtime's) the loss is
    reciprocal. d_3D = sqrt(d_2D^2 + (h_tx - h_rx)^2), after clamping d_2D (UMi) or d_3D
    (InH, free space) to :data:`MIN_DISTANCE_M`.

    Args:
        model: one of :data:`PATHLOSS_MODELS`.
        distance_2d_m: d_2D [m], any shape, finite, >= 0.
        carrier_ghz: f_c [GHz], in [0.5, 100] for the 3GPP models, > 0 for free space.
        los: bool, broadcastable with ``distance_2d_m``: LoS (True) or NLoS (False) formula
            (ignored by free space).
        tx_height_m, rx_height_m: antenna heights [m]; > 1 m (h_E) for UMi, > 0 otherwise.

    Returns:
        float64 array of the broadcast shape, PL [dB].

    Raises:
        ValueError: unknown model, negative / NaN / infinite distance, carrier outside the
            range, bad heights.
    """
    model = check_pathloss_model(model)
    fc = _carrier(model, carrier_ghz)
    floor = 0.0 if model != "umi-street-canyon" else _H_E
    h_tx = _height("tx_height_m", tx_height_m, above=floor)
    h_rx = _height("rx_height_m", rx_height_m, above=floor)
    d2 = _distances(distance_2d_m)
    los = np.asarray(los, dtype=bool)
    dh2 = (h_tx - h_rx) ** 2
    log_fc = math.log10(fc)
    if model == "free-space":
        d3 = np.maximum(np.sqrt(d2 * d2 + dh2), MIN_DISTANCE_M[model])
        pl = 20.0 * np.log10(4.0 * math.pi * d3 * fc * 1e9 / _C)
        return np.where(los, pl, pl)  # the broadcast shape; LoS and NLoS alike
    if model == "inh-office":
        d3 = np.maximum(np.sqrt(d2 * d2 + dh2), MIN_DISTANCE_M[model])
        pl_los = 32.4 + 17.3 * np.log10(d3) + 20.0 * log_fc
        pl_nlos = np.maximum(pl_los, 38.3 * np.log10(d3) + 17.30 + 24.9 * log_fc)
        return np.where(los, pl_los, pl_nlos)
    # UMi-Street Canyon
    d2c = np.maximum(d2, MIN_DISTANCE_M[model])
    d3 = np.sqrt(d2c * d2c + dh2)
    d_bp = 4.0 * (h_tx - _H_E) * (h_rx - _H_E) * fc * 1e9 / _C_TABLE
    pl1 = 32.4 + 21.0 * np.log10(d3) + 20.0 * log_fc
    pl2 = 32.4 + 40.0 * np.log10(d3) + 20.0 * log_fc - 9.5 * math.log10(d_bp * d_bp + dh2)
    pl_los = np.where(d2c <= d_bp, pl1, pl2)
    pl_nlos = np.maximum(pl_los, 35.3 * np.log10(d3) + 22.4 + 21.3 * log_fc - 0.3 * (h_rx - 1.5))
    return np.where(los, pl_los, pl_nlos)


def los_probability(model: str, distance_2d_m) -> np.ndarray:
    """P_LoS(d_2D) of TR 38.901 Table 7.4.2-1 (UMi-Street Canyon; InH-Mixed office; 1 for free space).

    Args:
        model: one of :data:`PATHLOSS_MODELS`.
        distance_2d_m: d_2D [m], any shape, finite, >= 0 (not clamped: below the first
            threshold the probability is 1).

    Returns:
        float64 array shaped like ``distance_2d_m``, in [0, 1].

    Raises:
        ValueError: unknown model, negative / NaN / infinite distance.
    """
    model = check_pathloss_model(model)
    d = _distances(distance_2d_m)
    if model == "free-space":
        return np.ones_like(d)
    safe = np.maximum(d, 1e-9)  # the branches below are only used where d > threshold
    if model == "umi-street-canyon":
        p = 18.0 / safe + np.exp(-safe / 36.0) * (1.0 - 18.0 / safe)
        return np.where(d <= 18.0, 1.0, p)
    mid = np.exp(-(d - 1.2) / 4.7)
    far = np.exp(-(d - 6.5) / 32.6) * 0.32
    return np.where(d <= 1.2, 1.0, np.where(d < 6.5, mid, far))


def shadow_fading_std_db(model: str, los) -> np.ndarray:
    """sigma_SF [dB] of TR 38.901 Table 7.4.1-1 for each LoS state (0 for free space).

    Returns:
        float64 array shaped like ``los``.

    Raises:
        ValueError: unknown model.
    """
    s_los, s_nlos = SHADOW_FADING_STD_DB[check_pathloss_model(model)]
    return np.where(np.asarray(los, dtype=bool), s_los, s_nlos).astype(np.float64)


@dataclass(frozen=True)
class LargeScale:
    """The large-scale channel of a deployment, fixed for a run.

    Attributes:
        model: path-loss model name.
        carrier_ghz: f_c [GHz].
        positions_m: ``[N, 2], float64`` node positions [m].
        distance_m: ``[N, N], float64`` d_2D [m] (0 on the diagonal).
        los: ``[N, N], bool`` LoS state of each link (symmetric; True on the diagonal).
        shadowing_db: ``[N, N], float64`` shadow fading SF [dB] (symmetric; 0 on the diagonal).
        path_loss_db: ``[N, N], float64`` PL + SF [dB] (symmetric; 0 on the diagonal).
        gain: ``[N, N], float64`` large-scale gain 10^(-(PL + SF)/10) [linear], the mean
            power gain E[H_ij^(m)] of each link (symmetric; 0 on the diagonal: no link).
    """

    model: str
    carrier_ghz: float
    positions_m: np.ndarray
    distance_m: np.ndarray
    los: np.ndarray
    shadowing_db: np.ndarray
    path_loss_db: np.ndarray
    gain: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.positions_m.shape[0])

    def to_dict(self) -> dict:
        """JSON-ready description (lists; no NaN or infinity): positions, LoS states,
        shadowing and path loss per link, and summary statistics of the off-diagonal path loss."""
        n = self.num_nodes
        off = ~np.eye(n, dtype=bool)
        pl = self.path_loss_db[off]
        return {
            "model": self.model,
            "carrier_ghz": self.carrier_ghz,
            "positions_m": self.positions_m.tolist(),
            "distance_m": self.distance_m.tolist(),
            "los": self.los.tolist(),
            "shadowing_db": self.shadowing_db.tolist(),
            "path_loss_db": self.path_loss_db.tolist(),
            "path_loss_db_min": float(pl.min()) if pl.size else None,
            "path_loss_db_mean": float(pl.mean()) if pl.size else None,
            "path_loss_db_max": float(pl.max()) if pl.size else None,
            "los_fraction": float(self.los[off].mean()) if pl.size else None,
        }


def draw_large_scale(positions, model: str, carrier_ghz: float, rng, *, shadowing: bool = True,
                     height_m: float = NODE_HEIGHT_M) -> LargeScale:
    """Draw the LoS states and shadowing of every link and return the large-scale gains.

    Per unordered pair i < j: LoS ~ Bernoulli(P_LoS(d_2D)) (uniforms drawn first, one per
    pair in row-major upper-triangle order), then SF = sigma_SF(LoS) z, z ~ N(0, 1) (drawn
    second, same order; drawn even when ``shadowing`` is False so that the LoS states do
    not depend on it); both are mirrored to j -> i (reciprocity). Every node is at
    ``height_m``.

    Args:
        positions: ``[N, 2]`` node positions [m].
        model: one of :data:`PATHLOSS_MODELS`.
        carrier_ghz: f_c [GHz].
        rng: :class:`numpy.random.Generator`.
        shadowing: add log-normal shadow fading (default True).
        height_m: antenna height of every node [m].

    Returns:
        :class:`LargeScale`.

    Raises:
        ValueError: as :func:`path_loss_db` and :func:`dmoe.channels.geometry.pairwise_distances`.
        TypeError: ``rng`` is not a Generator.
    """
    model = check_pathloss_model(model)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    pos = np.asarray(positions, dtype=np.float64)
    dist = pairwise_distances(pos)
    n = dist.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    d_pairs = dist[iu, ju]
    # [P] one LoS state and one standard normal per unordered pair
    los_pairs = rng.random(d_pairs.shape) < los_probability(model, d_pairs)
    z = rng.standard_normal(d_pairs.shape)
    sf_pairs = shadow_fading_std_db(model, los_pairs) * z if shadowing else np.zeros_like(d_pairs)
    pl_pairs = path_loss_db(model, d_pairs, carrier_ghz, los_pairs, tx_height_m=height_m, rx_height_m=height_m)
    los = np.ones((n, n), dtype=bool)
    sf = np.zeros((n, n))
    pl = np.zeros((n, n))
    for arr, vals in ((los, los_pairs), (sf, sf_pairs), (pl, pl_pairs + sf_pairs)):
        arr[iu, ju] = vals
        arr[ju, iu] = vals
    gain = 10.0 ** (-pl / 10.0)
    np.fill_diagonal(gain, 0.0)
    return LargeScale(model, float(carrier_ghz), pos, dist, los, sf, pl, gain)
