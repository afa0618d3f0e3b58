"""Measured layer importance and the optimal per-layer QoS allocation (issue 11).

The paper assumes lower layers matter more, gamma^(l) = gamma0^l (Section IV-A). An
:class:`ImportanceProfile` replaces the assumption by a measurement (made by
:func:`dmoe.importance.calibrate_importance` on the model): for each window of layers w
and each QoS level v (threshold z_v with at most D experts), the quality lost when only
that window runs at that level and every other layer is full, and the expected energy of
that level. :func:`allocate_qos` then picks one level per window by an exact
multiple-choice knapsack (:mod:`dmoe.optimize._knapsack`), assuming the losses of
different windows add up (first-order; the ``importance`` experiment checks the realised
loss).

Pure numpy (no torch), like the rest of :mod:`dmoe.optimize`, so that both the solvers and
the torch side (:mod:`dmoe.importance`: calibration, cache, plot) import it. Named
``dmoe/optimize/importance.py`` until issue 19 (beside the package ``dmoe/importance/``);
that path re-exports these names for one release with a DeprecationWarning.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dmoe.optimize._knapsack import KnapsackResult, pareto_front_mckp, solve_mckp

__all__ = ["ImportanceProfile", "Allocation", "allocate_qos", "predicted_front", "PROFILE_FORMAT", "MEASURES"]

PROFILE_FORMAT = 1
#: Quality-loss measures a profile holds: mean KL(full || reduced) over the scored tokens
#: [nat/token], and the increase of the mean answer NLL [nat/question].
MEASURES = ("kl", "nll")


@dataclass
class ImportanceProfile:
    """Quality loss and energy of each QoS level at each window of layers.

    Attributes:
        model_key: the model build's key (``model.metadata["key"]``).
        model_name: human-readable model name.
        num_layers: L.
        num_experts: K.
        max_experts: D of every level (C2).
        qos: ``[V]`` thresholds z of the levels (C1 = z at the window's layers).
        windows: ``[W]`` pairs ``(first, last)`` of 1-based layers, covering 1..L in order.
        kl: ``[W, V]`` mean KL(full || reduced) over scored tokens [nat/token] (increment
            over the base, see ``base``).
        kl_se: ``[W, V]`` its standard error over questions.
        nll: ``[W, V]`` increase of the mean answer NLL [nat] (increment over the base).
        nll_se: ``[W, V]`` its standard error (paired over questions).
        agreement: ``[W, V]`` fraction of questions answered as the full model does.
        energy: ``[W, V]`` expected energy per token of the level, summed over the
            window's layers [J/token] (see :func:`dmoe.importance.calibrate_importance`).
        energy_full: ``[W]`` the same for every expert selected (the full carved model).
        base: what the layers outside a measured window ran: ``"top"`` (the highest level)
            or ``"full"`` (the full model). ``kl``, ``nll`` are increments over that base
            configuration, whose own values against the full model are ``base_kl``
            [nat/token], ``base_nll`` [nat] and ``base_agreement`` (0 and 1 for "full").
            Predicted loss of an allocation = base value + sum of the windows' increments.
        moe_layers: ``[L]`` bool, False for a dense layer (nothing to schedule).
        config: calibration settings (subjects, questions, seed, system, ...).
        created, seconds: when and how long the calibration ran.
    """

    model_key: str
    model_name: str
    num_layers: int
    num_experts: int
    max_experts: int
    qos: list
    windows: list
    kl: list
    kl_se: list
    nll: list
    nll_se: list
    agreement: list
    energy: list
    energy_full: list
    moe_layers: list
    base: str = "full"
    base_kl: float = 0.0
    base_nll: float = 0.0
    base_agreement: float = 1.0
    config: dict = field(default_factory=dict)
    created: str = ""
    seconds: float = 0.0
    format: int = PROFILE_FORMAT

    def __post_init__(self):
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check shapes and values; raises ValueError naming the field."""
        w, v = len(self.windows), len(self.qos)
        if w < 1 or v < 1:
            raise ValueError("`windows` and `qos` of a profile must be non-empty")
        expected = 1
        for i, win in enumerate(self.windows):
            if len(win) != 2 or int(win[0]) != expected or int(win[1]) < int(win[0]):
                raise ValueError(f"`windows[{i}]` = {win!r} must be (first, last) continuing at layer {expected}")
            expected = int(win[1]) + 1
        if expected - 1 != int(self.num_layers):
            raise ValueError(f"`windows` cover layers 1..{expected - 1} but `num_layers` = {self.num_layers}")
        for name in ("kl", "kl_se", "nll", "nll_se", "agreement", "energy"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (w, v):
                raise ValueError(f"profile field `{name}` must have shape [{w}, {v}], got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"profile field `{name}` must be finite")
        if np.asarray(self.energy_full, dtype=np.float64).shape != (w,):
            raise ValueError(f"profile field `energy_full` must have shape [{w}]")
        if len(self.moe_layers) != int(self.num_layers):
            raise ValueError(f"profile field `moe_layers` must have {self.num_layers} entries")
        for i, z in enumerate(self.qos):
            if not (0.0 <= float(z) <= 1.0):
                raise ValueError(f"`qos[{i}]` = {z!r} must lie in [0, 1]")

    def check_model(self, *, num_layers: int, num_experts: int, model_key: str | None = None,
                    max_experts: int | None = None, what: str = "profile") -> None:
        """Raise ValueError (naming the argument) unless the profile fits this model / D."""
        if model_key is not None and self.model_key != model_key:
            raise ValueError(
                f"`{what}` was calibrated for model build {self.model_key[:16]!r} ({self.model_name}), "
                f"not for this model ({model_key[:16]!r}); run `dmoe calibrate` for this model"
            )
        if int(num_experts) != int(self.num_experts):
            raise ValueError(f"`{what}` was calibrated with K = {self.num_experts} experts, this model has K = {num_experts}")
        if int(num_layers) != int(self.num_layers):
            raise ValueError(f"`{what}` has {self.num_layers} layers, this model has {num_layers}")
        if max_experts is not None and int(max_experts) != int(self.max_experts):
            raise ValueError(
                f"`max_experts` D = {max_experts} differs from the profile's D = {self.max_experts}; "
                f"run `dmoe calibrate -D {max_experts}`"
            )

    # ------------------------------------------------------------------ views
    def table(self, measure: str = "kl", *, monotone: bool = False) -> np.ndarray:
        """``[W, V]`` loss table of ``measure`` (``"kl"`` or ``"nll"``).

        ``monotone=True``: each level's loss is raised to the largest loss of the levels
        above it (running maximum from the top level down, levels sorted by z). A lower
        threshold never asks for more gate-score mass, so its expected loss is not smaller;
        a measured dip below a higher level is calibration noise, which would otherwise
        make the knapsack pick that level for a loss it does not have.
        """
        if measure not in MEASURES:
            raise ValueError(f"`measure` must be one of {MEASURES}, got {measure!r}")
        arr = np.asarray(getattr(self, measure), dtype=np.float64)
        if monotone:
            order = np.argsort(self.qos)
            ordered = arr[:, order]
            # running max from the highest z down
            ordered = np.maximum.accumulate(ordered[:, ::-1], axis=1)[:, ::-1]
            arr = np.empty_like(arr)
            arr[:, order] = ordered
        return arr

    def base_value(self, measure: str = "kl") -> float:
        """The base configuration's loss against the full model of ``measure`` [nat]."""
        if measure not in MEASURES:
            raise ValueError(f"`measure` must be one of {MEASURES}, got {measure!r}")
        return float(self.base_kl if measure == "kl" else self.base_nll)

    def layer_thresholds(self, levels) -> np.ndarray:
        """``[L]`` C1 threshold per layer for a level per window."""
        levels = np.asarray(levels, dtype=np.int64)
        out = np.empty(int(self.num_layers))
        for (first, last), lv in zip(self.windows, levels):
            out[int(first) - 1 : int(last)] = float(self.qos[int(lv)])
        return out

    # ---------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        d = asdict(self)
        return json.loads(json.dumps(d, default=_jsonable))

    @classmethod
    def from_dict(cls, data: dict) -> "ImportanceProfile":
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"`profile` is not a dmoe importance profile (format {PROFILE_FORMAT})")
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path) -> Path:
        """Write JSON atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "ImportanceProfile":
        """Read a profile written by :meth:`save`; ValueError naming `profile` when unreadable."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"`profile` {str(path)!r} cannot be read: {exc}") from exc
        return cls.from_dict(data)


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@dataclass(frozen=True)
class Allocation:
    """One QoS level per window and the resulting per-layer thresholds.

    Attributes:
        thresholds: ``[L], float64`` C1 threshold z of each layer (replaces gamma0^l).
        levels: ``[W], int64`` chosen level index per window.
        predicted_loss: summed loss of the chosen levels [nat] (of ``measure``).
        predicted_energy: summed energy of the chosen levels [J/token].
        feasible: whether the budget holds (False: nearest feasible allocation).
        budget, kind, measure: what was asked.
        message: solver status (says what was returned when infeasible).
    """

    thresholds: np.ndarray
    levels: np.ndarray
    predicted_loss: float
    predicted_energy: float
    feasible: bool
    budget: float
    kind: str
    measure: str
    message: str


def allocate_qos(profile: ImportanceProfile, budget: float, *, kind: str = "loss", measure: str = "kl",
                 method: str = "auto", monotone: bool = True) -> Allocation:
    """Optimal per-layer QoS thresholds for a quality (or energy) budget.

    Solves the multiple-choice knapsack over the profile's windows exactly
    (:func:`dmoe.optimize._knapsack.solve_mckp`): ``kind="loss"`` minimises the predicted
    energy subject to the summed predicted loss of ``measure`` <= ``budget`` [nat];
    ``kind="energy"`` minimises the predicted loss subject to the predicted energy <=
    ``budget`` [J/token].

    Args:
        profile: :class:`ImportanceProfile`.
        budget: the bound (finite).
        kind: ``"loss"`` or ``"energy"``.
        measure: ``"kl"`` (mean KL to the full model per scored token) or ``"nll"``
            (answer NLL increase).
        method: ``"auto"``, ``"pareto"``, ``"milp"`` or ``"brute"``.
        monotone: use the profile's losses made non-increasing in z
            (:meth:`ImportanceProfile.table`; default), so that calibration noise cannot
            sell a low level as cheaper in quality than a higher one.

    Returns:
        :class:`Allocation` (``feasible=False`` and the nearest feasible allocation when
        the budget cannot be met; the message says so).

    Raises:
        ValueError: non-profile ``profile``, bad ``budget``, ``kind``, ``measure`` or ``method``.

    Source: issue 11 (replaces Section IV-A's gamma^(l) = gamma0^l by a measured profile).
    """
    if not isinstance(profile, ImportanceProfile):
        raise ValueError(f"`profile` must be an ImportanceProfile, got {type(profile).__name__}")
    loss = profile.table(measure, monotone=monotone)
    energy = np.asarray(profile.energy, dtype=np.float64)
    offset = profile.base_value(measure)
    inner = budget - offset if kind == "loss" and _is_number(budget) else budget
    res: KnapsackResult = solve_mckp(loss, energy, inner, kind=kind, method=method)
    message = res.message
    if kind == "loss" and not res.feasible:
        unit = "nat/token of predicted KL" if measure == "kl" else "nat of predicted answer-NLL increase"
        message = (f"`budget` {float(budget):.6g} {unit} cannot be met: the least achievable is "
                   f"{offset + res.loss:.6g} (base {offset:.6g} + increments); returned that nearest feasible allocation")
    elif kind == "energy" and not res.feasible:
        message = (f"`budget` {float(budget):.6g} J/token of predicted energy ({float(budget) * 1e3:.6g} mJ/token) "
                   f"cannot be met: the least achievable is {res.energy:.6g} J/token ({res.energy * 1e3:.6g} "
                   "mJ/token); returned that nearest feasible allocation")
    return Allocation(
        thresholds=profile.layer_thresholds(res.levels),
        levels=res.levels,
        predicted_loss=offset + res.loss,
        predicted_energy=res.energy,
        feasible=res.feasible,
        budget=float(budget),
        kind=kind,
        measure=measure,
        message=message,
    )


def _is_number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float, np.integer, np.floating))


def predicted_front(profile: ImportanceProfile, measure: str = "kl", *, monotone: bool = True):
    """All Pareto-optimal allocations of ``profile``: ``(loss [P], energy [P], levels [P, W])``,
    loss including the base value (see :attr:`ImportanceProfile.base`)."""
    fl, fe, levels = pareto_front_mckp(profile.table(measure, monotone=monotone),
                                       np.asarray(profile.energy, dtype=np.float64))
    return profile.base_value(measure) + fl, fe, levels
