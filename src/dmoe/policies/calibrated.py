"""DES, JESA and LB with a per-layer threshold vector in place of gamma0^l (issue 11).

The paper's policies use C1 threshold ``z * gamma0**l`` at layer l (Section IV-A). These
variants take any vector ``thresholds[l - 1]``, typically the optimal allocation of a
measured :class:`~dmoe.optimize.qos_allocation.ImportanceProfile`
(:func:`~dmoe.optimize.qos_allocation.allocate_qos`):

=========================  ==================  ==========================================
class                      name                rule at layer l
=========================  ==================  ==========================================
CalibratedJESA(thr, D)     "JESA(cal:B,D)"     JESA (Algorithm 2), C1 = thr[l-1]
CalibratedDES(thr, D)      "DES(cal:B,D)"      DES(gamma0, D)'s one pass, C1 = thr[l-1]
CalibratedLB(thr, D)       "LB(cal:B,D)"       LB(gamma0, D) (no C3), C1 = thr[l-1]
=========================  ==================  ==========================================

``B`` is the quality budget (``"cal:B"``): the predicted mean KL to the full model [nat per
scored token] that the allocation may reach, i.e. the profile's base KL plus the windows'
increments; with ``measure="nll"`` the name reads ``"cal-nll:B"`` (predicted answer-NLL
increase [nat]). Type them in ``dmoe run --policy 'JESA(cal:0.5,2)'``: the profile
is the one ``dmoe calibrate`` cached beside the model build.
"""

from __future__ import annotations

import math

import re
from typing import Sequence

from dmoe.optimize._validation import check_int
from dmoe.optimize.qos_allocation import ImportanceProfile, allocate_qos
from dmoe.policies.base import Policy, _check_fraction, _fmt
from dmoe.policies.builtin import JESAPolicy, LowerBound
from dmoe.policies.layerwise import DESPolicy

__all__ = [
    "CalibratedJESA",
    "CalibratedDES",
    "CalibratedLB",
    "calibrated_policy",
    "parse_calibrated",
    "is_calibrated_name",
    "calibrated_from_params",
    "CALIBRATED_KINDS",
    "CALIBRATED_FORMS",
]


class _ThresholdVector(Policy):
    """Shared part: ``thresholds[l - 1]`` replaces ``qos * gamma0**l``.

    Args:
        thresholds: ``[L]`` C1 thresholds in [0, 1], one per layer.
        max_experts: D >= 1 (C2).
        name: label (default ``"<label>(thr;D)"`` listing the thresholds).
        budget, measure, profile_key: provenance of a calibrated allocation (recorded in
            :meth:`params`; not used to schedule).
    """

    _label = ""
    _kind = ""

    def __init__(self, thresholds: Sequence[float], max_experts: int, *, name: str | None = None,
                 budget: float | None = None, measure: str = "kl", profile_key: str | None = None):
        if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__len__") or len(thresholds) == 0:
            raise ValueError("`thresholds` must be a non-empty sequence of numbers in [0, 1], one per layer")
        self.thresholds = tuple(_check_fraction(f"thresholds[{i}]", v) for i, v in enumerate(thresholds))
        self.max_experts = check_int("max_experts", max_experts, minimum=1)
        self.budget = None if budget is None else float(budget)
        self.measure = measure
        self.profile_key = profile_key
        if name is None:
            if self.budget is not None:
                name = f"{self._label}({_budget_tag(measure)}:{_fmt(self.budget)},{self.max_experts})"
            else:
                name = f"{self._label}({','.join(_fmt(v) for v in self.thresholds)};D={self.max_experts})"
        self.name = name

    def _threshold(self, layer: int) -> float:
        layer = int(layer)
        if layer > len(self.thresholds):
            raise ValueError(
                f"`layer` {layer} exceeds the {len(self.thresholds)} layers this {self.name} was allocated for"
            )
        return self.thresholds[layer - 1]

    @property
    def spec(self) -> str | None:
        """The calibrated label (``"JESA(cal:0.5,2)"``, rebuilt from the model's profile) when
        this policy came from a budget, else the constructor's (``module:Class(...)``)."""
        if self.budget is not None and is_calibrated_name(self.name):
            return self.name
        return Policy.spec.fget(self)

    def params(self) -> dict:
        return {
            "policy": self._kind,
            "name": self.name,
            "thresholds": list(self.thresholds),
            "max_experts": self.max_experts,
            "budget": self.budget,
            "measure": self.measure,
            "profile_key": self.profile_key,
        }

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.thresholds, self.max_experts))


def _budget_tag(measure: str) -> str:
    return "cal" if measure == "kl" else f"cal-{measure}"


class CalibratedJESA(_ThresholdVector, JESAPolicy):
    """JESA (Algorithm 2) with C1 threshold ``thresholds[l - 1]`` at layer l.

    Raises ValueError for thresholds outside [0, 1], D < 1, or a layer beyond the vector.
    """

    _label = "JESA"
    _kind = "CalibratedJESA"


class CalibratedDES(_ThresholdVector, DESPolicy):
    """DES (Algorithm 1, one pass; see :class:`~dmoe.policies.layerwise.DESPolicy`) with
    C1 threshold ``thresholds[l - 1]`` at layer l."""

    _label = "DES"
    _kind = "CalibratedDES"


class CalibratedLB(_ThresholdVector, LowerBound):
    """LB (DES without C3, best subcarrier per link) with C1 threshold ``thresholds[l - 1]``."""

    _label = "LB"
    _kind = "CalibratedLB"


#: Policy family label -> class.
CALIBRATED_KINDS = {"JESA": CalibratedJESA, "DES": CalibratedDES, "LB": CalibratedLB}


def calibrated_policy(family: str, profile: ImportanceProfile, budget: float, max_experts: int, *,
                      measure: str = "kl", kind: str = "loss", warn=None, monotone: bool = True) -> Policy:
    """The policy ``<family>(cal:budget,D)``: optimal thresholds of ``profile`` for ``budget``.

    Args:
        family: ``"JESA"``, ``"DES"`` or ``"LB"``.
        profile: measured :class:`ImportanceProfile` (its D must equal ``max_experts``).
        budget: summed predicted loss allowed [nat] (``kind="loss"``), or energy [J/token].
        max_experts: D.
        measure: ``"kl"`` or ``"nll"``.
        kind: ``"loss"`` or ``"energy"``.
        warn: callable receiving the message when the budget cannot be met (default
            :func:`warnings.warn`); the nearest feasible allocation is used then.
        monotone: allocate on the losses made non-increasing in z (default; see
            :meth:`~dmoe.optimize.qos_allocation.ImportanceProfile.table`).

    Raises:
        ValueError: unknown ``family``, a profile for another D (naming ``max_experts``),
        bad ``budget``/``measure``/``kind``.
    """
    import warnings

    cls = CALIBRATED_KINDS.get(str(family).upper())
    if cls is None:
        raise ValueError(f"`family` must be one of {tuple(CALIBRATED_KINDS)}, got {family!r}")
    if not isinstance(profile, ImportanceProfile):
        raise ValueError(f"`profile` must be an ImportanceProfile, got {type(profile).__name__}")
    d = check_int("max_experts", max_experts, minimum=1)
    if d > int(profile.num_experts):
        raise ValueError(
            f"`max_experts` D = {d} exceeds the profile's K = {profile.num_experts} experts (D must lie in [1, K])"
        )
    if d != int(profile.max_experts):
        raise ValueError(
            f"`max_experts` D = {d} differs from the profile's D = {profile.max_experts}; "
            f"calibrate for it with `dmoe calibrate -D {d}`"
        )
    alloc = allocate_qos(profile, budget, kind=kind, measure=measure, monotone=monotone)
    tag = "cal-energy" if kind == "energy" else _budget_tag(measure)
    label = f"{cls._label}({tag}:{_fmt(float(budget))},{d})"
    if not alloc.feasible:
        (warn or (lambda m: warnings.warn(m, stacklevel=3)))(f"{label}: {alloc.message}")
    name = label if kind == "energy" else None
    return cls(alloc.thresholds, d, budget=float(budget), measure=measure, profile_key=profile.model_key, name=name)


_CAL_RE = re.compile(
    r"(?i)\s*(jesa|des|lb)\s*\(\s*cal(?:-(nll|energy|kl))?\s*:\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*,\s*([0-9]+)\s*\)\s*"
)
#: The calibrated forms accepted by :func:`parse_calibrated` (and ``dmoe run --policy``).
CALIBRATED_FORMS = (
    "'JESA(cal:B,D)', 'DES(cal:B,D)', 'LB(cal:B,D)' (B = budget of predicted KL to the full model [nat/token], e.g. "
    "'JESA(cal:0.5,2)'; 'cal-nll:B' budgets the answer-NLL increase [nat], 'cal-energy:E' minimises the "
    "predicted loss within E [J/token]; needs the profile of `dmoe calibrate`)"
)


def is_calibrated_name(name) -> bool:
    """Whether ``name`` has the form of a calibrated policy (``<family>(cal...:B,D)``)."""
    return isinstance(name, str) and re.match(r"(?i)\s*(jesa|des|lb)\s*\(\s*cal", name) is not None


def parse_calibrated(name: str, *, profile: ImportanceProfile | None = None, warn=None) -> Policy:
    """Parse ``"JESA(cal:0.5,2)"`` (or DES/LB, ``cal-nll:``, ``cal-energy:``) with ``profile``.

    Raises:
        ValueError: malformed ``name`` (listing the accepted forms), or ``profile`` None
        (telling the user to run ``dmoe calibrate``), or a profile for another D.
    """
    m = _CAL_RE.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"malformed calibrated policy `name` {name!r}; accepted forms: {CALIBRATED_FORMS}")
    family, tag, budget, d = m.group(1).upper(), (m.group(2) or "kl").lower(), float(m.group(3)), int(m.group(4))
    if d < 1:
        raise ValueError(f"policy {name.strip()!r}: D (the most experts per token, C2) must be >= 1, got {d}")
    if not math.isfinite(budget):
        raise ValueError(f"policy {name.strip()!r}: the budget must be a finite number, got {budget!r}")
    if profile is None:
        raise ValueError(
            f"policy {name.strip()!r} needs the model's layer-importance `profile`: run `dmoe calibrate -D {d}` "
            "for this model first (or pass --profile PATH)"
        )
    kind, measure = ("energy", "kl") if tag == "energy" else ("loss", tag)
    pol = calibrated_policy(family, profile, budget, d, measure=measure, kind=kind, warn=warn)
    return pol


def calibrated_from_params(params: dict) -> Policy:
    """Inverse of ``params()`` for the calibrated classes."""
    kinds = {cls._kind: cls for cls in CALIBRATED_KINDS.values()}
    cls = kinds[params["policy"]]
    args = {k: v for k, v in params.items() if k not in ("policy",)}
    return cls(args.pop("thresholds"), args.pop("max_experts"), **args)
