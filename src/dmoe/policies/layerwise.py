"""Policies with layer-dependent QoS used by the paper's experiments.

* :class:`LayerwiseQoS` -- JESA (Algorithm 2) with an arbitrary threshold per layer, C1 =
  ``thresholds[l-1]``. The Section IV-A experiment behind Fig. 5 uses it with z = 0.5 on
  every layer except a window of consecutive layers where z is lowered
  (:meth:`LayerwiseQoS.window`).
* :class:`DESPolicy` -- DES(gamma0, D) of Table I: expert selection by Algorithm 1 with the
  layer-wise threshold z * gamma0**l, without the block coordinate descent of JESA. The
  per-token costs come from Algorithm 2's initial state (every link holds one distinct
  random subcarrier: the "equal bandwidth allocation" under which Section V states P1);
  the subcarriers are then allocated optimally (P3(a)) for the selection made, the same
  post-processing Top-k gets. It is ``jesa(..., max_iterations=1)``.

Both share the :class:`~dmoe.policies.base.Policy` interface and are pure numpy.
"""

from __future__ import annotations

from typing import Sequence

from dmoe.rng import as_generator
from dmoe.optimize._validation import check_int
from dmoe.optimize.jesa import jesa
from dmoe.policies.base import Policy, Schedule, _check_fraction, _fmt, policy_inputs
from dmoe.policies.builtin import _LayerImportance

__all__ = ["LayerwiseQoS", "DESPolicy"]


class LayerwiseQoS(Policy):
    """JESA with threshold ``thresholds[l - 1]`` at layer l (layers from 1).

    Layers beyond ``len(thresholds)`` use the last threshold.

    Args:
        thresholds: one C1 threshold per layer (each >= 0).
        max_experts: D (C2).
        name: label (default ``"QoS(...)"`` listing the distinct thresholds).
    """

    def __init__(self, thresholds: Sequence[float], max_experts: int, *, name: str | None = None):
        values = tuple(_check_fraction(f"thresholds[{i}]", v) for i, v in enumerate(thresholds))
        if not values:
            raise ValueError("`thresholds` must hold at least one value")
        self.thresholds = values
        self.max_experts = check_int("max_experts", max_experts, minimum=1)
        self.name = name or f"QoS({','.join(_fmt(v) for v in values)};D={self.max_experts})"

    @classmethod
    def window(
        cls, num_layers: int, start: int, width: int, low: float, base: float = 0.5, max_experts: int = 2
    ) -> "LayerwiseQoS":
        """z = ``base`` everywhere except layers ``start .. start+width-1`` (1-based), where z = ``low``."""
        num_layers = check_int("num_layers", num_layers, minimum=1)
        start = check_int("start", start, minimum=1)
        width = check_int("width", width, minimum=1)
        if start + width - 1 > num_layers:
            raise ValueError(f"window {start}..{start + width - 1} exceeds the {num_layers} layers")
        thr = [float(base)] * num_layers
        for layer in range(start, start + width):
            thr[layer - 1] = float(low)
        name = f"z={low:g}@{start}-{start + width - 1}"
        return cls(thr, max_experts, name=name)

    def params(self) -> dict:
        return {
            "policy": "LayerwiseQoS",
            "name": self.name,
            "thresholds": list(self.thresholds),
            "max_experts": self.max_experts,
        }

    def threshold(self, layer: int) -> float:
        """C1 threshold at layer ``layer`` (1-based)."""
        return self.thresholds[min(int(layer), len(self.thresholds)) - 1]

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None) -> Schedule:
        scores, source, rates, system, placement, avail = policy_inputs(
            scores, source, rates, layer, system, placement, available
        )
        res = jesa(
            scores, source, rates, self.threshold(layer), self.max_experts, system=system, rng=as_generator(rng),
            placement=placement, available=avail,
        )
        info = {"iterations": res.iterations, "converged": res.converged, "energy": res.energy}
        return Schedule(res.selection, res.subcarrier, res.feasible, res.threshold, True, info)


class DESPolicy(_LayerImportance):
    """DES(gamma0, D): Algorithm 1 with threshold qos * gamma0**l, one selection pass.

    See the module docstring: costs from one random distinct subcarrier per link, then
    optimal subcarriers for the selection (``jesa`` with ``max_iterations=1``).
    """

    _label = "DES"
    _kind = "DES"

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None) -> Schedule:
        scores, source, rates, system, placement, avail = policy_inputs(
            scores, source, rates, layer, system, placement, available
        )
        thr = self._threshold(layer)
        res = jesa(
            scores, source, rates, thr, self.max_experts, system=system, rng=as_generator(rng), max_iterations=1,
            placement=placement, available=avail,
        )
        return Schedule(res.selection, res.subcarrier, res.feasible, res.threshold, True, {"energy": res.energy})
