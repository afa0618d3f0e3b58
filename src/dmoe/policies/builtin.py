"""The paper's scheduling policies (Section VII-A benchmark schemes).

A :class:`~dmoe.policies.base.Policy` turns one layer's gating scores, token sources and
channel rates into a :class:`~dmoe.policies.base.Schedule` (expert selection + subcarrier
per link). The built-ins:

=====================  ===============  ===============================================
class                  name             rule
=====================  ===============  ===============================================
TopK(k)                "Top-k"          k highest scores, then optimal subcarriers
Homogeneous(z, D)      "H(z,D)"         JESA with threshold z (gamma^(l) = 1)
JESAPolicy(g0, D, z)   "JESA(g0,D)"     JESA with threshold z * g0**layer (layer >= 1)
LowerBound(g0, D)      "LB(g0,D)"       DES with each link on its best subcarrier (no C3)
Dense()                "dense"          every expert, optimal subcarriers
=====================  ===============  ===============================================

Energy accounting for the runtime: charge ``Schedule.selection`` with
:func:`dmoe.energy.schedule_energy` (tokens s_ij, R_ij from ``Schedule.subcarrier``, or
from ``Schedule.rb_share`` when links hold several resource blocks);
every selected remote expert's link has a subcarrier with positive rate. Only the
lower bound shares subcarriers between links (``Schedule.exclusive`` is False for it).
Their names are what :func:`dmoe.policies.policy_from_name` parses (:attr:`spec`).
"""

from __future__ import annotations

import numpy as np

from dmoe.rng import as_generator
from dmoe.optimize._validation import check_int
from dmoe.optimize.jesa import jesa, lower_bound
from dmoe.policies.allocation import allocate_links, node_demand
from dmoe.policies.base import Policy, Schedule, _check_fraction, _fmt, policy_inputs

__all__ = ["TopK", "Homogeneous", "JESAPolicy", "LowerBound", "Dense"]


class _Labelled(Policy):
    """A built-in: its label is the spec :func:`dmoe.policies.policy_from_name` parses.

    A subclass defined outside dmoe (a user's variant of a built-in) is recorded by its
    import path and constructor arguments instead (:attr:`Policy.spec`, :meth:`Policy.params`),
    unless it defines its own ``params``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__module__.startswith("dmoe."):
            cls.spec = Policy.spec
            if "params" not in cls.__dict__:
                cls.params = Policy.params

    @property
    def spec(self) -> str:
        return self.name


class TopK(_Labelled):
    """Top-k: the k highest-score experts, then optimal subcarrier allocation.

    If an active link cannot be served (more active links than subcarriers, or rate 0 on
    every free subcarrier), its tokens lose that expert for this layer (it is marked
    unavailable for tokens of that source) and re-pick the top-k among the remaining
    experts; this repeats until every active link is served. Each round removes at least
    one link, so it ends. ``feasible`` is False for tokens left with fewer than k experts.

    Source: Section VII-A-3, "Top-k Allocation". Raises ValueError for ``k`` < 1 (here)
    and for ``k`` > K or malformed inputs (in :meth:`schedule`).
    """

    def __init__(self, k: int):
        self.k = check_int("k", k, minimum=1)
        self.name = f"Top-{self.k}"

    def params(self) -> dict:
        return {"policy": "TopK", "name": self.name, "k": self.k}

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None) -> Schedule:
        scores, source, rates, system, placement, avail = policy_inputs(
            scores, source, rates, layer, system, placement, available
        )
        t, kk = scores.shape
        nn = rates.shape[0]
        if self.k > kk:
            raise ValueError(f"`k` of Top-{self.k} must not exceed the number of experts K = {kk}")
        k = self.k
        # [N, N] links that are still allowed
        allowed = np.ones((nn, nn), dtype=bool)
        rounds = 0
        while True:
            rounds += 1
            # [T, E] experts each token may still use (their node's link is allowed, the expert is up)
            usable = allowed[source] if placement is None else allowed[source][:, placement]
            if avail is not None:
                usable = usable & avail
            key = np.where(usable, scores, -np.inf)
            order = np.argsort(-key, axis=1, kind="stable")[:, :k]
            ok = np.take_along_axis(usable, order, axis=1)
            selection = np.zeros((t, kk), dtype=bool)
            np.put_along_axis(selection, order, ok, axis=1)
            demand = node_demand(selection, source, nn, placement=placement)
            alloc = allocate_links(rates, demand, system)
            if not alloc.unserved.any():
                break
            allowed &= ~alloc.unserved
        feasible = selection.sum(axis=1) == k
        return Schedule(selection, alloc.subcarrier, feasible, None, True, {"rounds": rounds})


class _JESABase(_Labelled):
    max_experts: int
    #: :class:`~dmoe.policies.deadline.Deadline` passes its T down (JESA's resource-block step)
    accepts_deadline = True

    def _threshold(self, layer: int) -> float:
        raise NotImplementedError

    def schedule(
        self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None, deadline_s=None
    ) -> Schedule:
        """As :meth:`Policy.schedule`; ``deadline_s`` (T [s] or None) is passed to
        :func:`~dmoe.optimize.jesa.jesa`, whose allocation step then gives links several
        resource blocks to finish the layer round within T."""
        scores, source, rates, system, placement, avail = policy_inputs(
            scores, source, rates, layer, system, placement, available
        )
        thr = self._threshold(int(layer))
        res = jesa(
            scores, source, rates, thr, self.max_experts, system=system, rng=as_generator(rng), placement=placement,
            available=avail, deadline_s=deadline_s,
        )
        info = {
            "iterations": res.iterations,
            "converged": res.converged,
            "stop_reason": res.stop_reason,
            "energy": res.energy,
        }
        if res.rb_info is not None:
            info["resource_blocks"] = res.rb_info
        return Schedule(res.selection, res.subcarrier, res.feasible, res.threshold, True, info, res.rb_share)


class Homogeneous(_JESABase):
    """H(z, D): JESA with the same threshold z on every layer (gamma^(l) = 1).

    Source: Section VII-A-3, "Homogeneous Allocation" (Algorithm 2 with C1 = z).
    Raises ValueError unless ``qos`` z is in [0, 1] and ``max_experts`` D >= 1.
    """

    def __init__(self, qos: float, max_experts: int):
        self.qos = _check_fraction("qos", qos)
        self.max_experts = check_int("max_experts", max_experts, minimum=1)
        self.name = f"H({_fmt(self.qos)},{self.max_experts})"

    def _threshold(self, layer: int) -> float:
        return self.qos

    def params(self) -> dict:
        return {"policy": "Homogeneous", "name": self.name, "qos": self.qos, "max_experts": self.max_experts}


class _LayerImportance(_Labelled):
    """Shared part of the policies with C1 threshold z * gamma0**layer (layers from 1).

    Subclasses set ``_label`` (the name's prefix) and ``_kind`` (``params()['policy']``).
    """

    _label = ""
    _kind = ""

    def __init__(self, gamma0: float, max_experts: int, qos: float = 1.0):
        self.gamma0 = _check_fraction("gamma0", gamma0, positive=True)
        self.max_experts = check_int("max_experts", max_experts, minimum=1)
        self.qos = _check_fraction("qos", qos)
        z = "" if self.qos == 1.0 else f",{_fmt(self.qos)}"
        self.name = f"{self._label}({_fmt(self.gamma0)},{self.max_experts}{z})"

    def _threshold(self, layer: int) -> float:
        return self.qos * self.gamma0 ** int(layer)

    def params(self) -> dict:
        return {
            "policy": self._kind,
            "name": self.name,
            "gamma0": self.gamma0,
            "max_experts": self.max_experts,
            "qos": self.qos,
        }


class JESAPolicy(_LayerImportance, _JESABase):
    """JESA(gamma0, D): JESA with threshold qos * gamma0**layer (layers from 1, DESIGN.md).

    Source: Section VII-A-3 and Algorithm 2, with z = ``qos`` (1 in the paper) and
    gamma^(l) = gamma0^l. Raises ValueError unless gamma0 is in (0, 1], z in [0, 1] and
    ``max_experts`` D >= 1.
    """

    _label = "JESA"
    _kind = "JESA"


class LowerBound(_LayerImportance):
    """LB(gamma0, D): DES with threshold qos * gamma0**layer, C3 ignored (best subcarrier
    per link, shared). Its schedule is not exclusive (``Schedule.exclusive`` False).

    Source: Section VII-A-3, "Lower Bound". Raises ValueError unless gamma0 is in (0, 1],
    z in [0, 1] and ``max_experts`` D >= 1.
    """

    _label = "LB"
    _kind = "LowerBound"

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None) -> Schedule:
        scores, source, rates, system, placement, avail = policy_inputs(
            scores, source, rates, layer, system, placement, available
        )
        thr = self._threshold(layer)
        res = lower_bound(scores, source, rates, thr, self.max_experts, system=system, placement=placement,
                          available=avail)
        return Schedule(res.selection, res.subcarrier, res.feasible, res.threshold, False, {"energy": res.energy})


class Dense(_Labelled):
    """Every (available) expert for every token, optimal subcarriers; cannot reroute (the
    dense MoE, i.e. Top-K; the reference point of Fig. 10). ``feasible`` is False for
    tokens that could not get all K experts (some unavailable).

    Raises ValueError from :meth:`schedule` if some active link cannot be served (more
    active links than subcarriers, or a link with rate 0 on every subcarrier).
    """

    name = "dense"

    def params(self) -> dict:
        return {"policy": "Dense", "name": self.name}

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None) -> Schedule:
        scores, source, rates, system, placement, avail = policy_inputs(
            scores, source, rates, layer, system, placement, available
        )
        t, k = scores.shape
        selection = np.ones((t, k), dtype=bool) if avail is None else np.array(avail, dtype=bool)
        demand = node_demand(selection, source, rates.shape[0], placement=placement)
        alloc = allocate_links(rates, demand, system)
        if alloc.unserved.any():
            n_active = int(alloc.active.sum())
            i, j = np.argwhere(alloc.unserved)[0]
            raise ValueError(
                f"dense policy cannot serve link {i}->{j}: {n_active} active links for "
                f"{rates.shape[2]} subcarriers (`rates` has too few subcarriers or a link with rate 0 "
                "everywhere, or the per-node budget `max_rbs_per_node` is below the node's links); "
                "dense cannot reroute tokens"
            )
        # feasible: the token got every one of the K experts (False once a node failed)
        return Schedule(selection, alloc.subcarrier, selection.all(axis=1), None, True, {})
