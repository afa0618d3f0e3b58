"""Scheduling policies behind one interface (paper Section VII-A benchmark schemes).

A :class:`Policy` turns one layer's gating scores, token sources and channel rates into a
:class:`Schedule` (expert selection + subcarrier per link). Implementations:

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
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass, field

import numpy as np

from dmoe.channel import as_generator
from dmoe.energy import link_token_counts
from dmoe.optimize._validation import (
    check_available,
    check_int,
    check_rates,
    check_scores,
    check_source,
    check_system,
)
from dmoe.optimize.jesa import check_layer_placement, jesa, lower_bound
from dmoe.placement import node_selection
from dmoe.optimize.subcarrier import allocate_subcarriers

__all__ = [
    "Schedule",
    "Policy",
    "TopK",
    "Homogeneous",
    "JESAPolicy",
    "LowerBound",
    "Dense",
    "policy_from_name",
    "policy_from_params",
]


@dataclass(frozen=True)
class Schedule:
    """One layer round's schedule.

    Attributes:
        selection: ``[num_tokens, num_experts], bool``.
        subcarrier: ``[K, K], int64`` subcarrier per link, -1 = none.
        feasible: ``[num_tokens], bool`` (threshold policies: C1 and C2 hold; Top-k: k
            experts were reachable; dense: True).
        threshold: ``[num_tokens], float64`` C1 threshold used, or None (Top-k, dense).
        exclusive: whether C3 holds (False only for the lower bound).
        info: small dict of solver details (e.g. JESA iterations, rounds; a deadline
            policy's per-round outcome, :mod:`dmoe.optimize.deadline`).
        rb_share: None (one subcarrier per link: ``subcarrier`` says which) or
            ``[K, K, M], float64`` the share of each link's bits on each resource block
            when some link holds several (:mod:`dmoe.optimize.resource_blocks`); then
            ``subcarrier`` is each link's highest-rate RB and ``rb_share`` is what the
            energy (:func:`dmoe.energy.schedule_energy`), the air time and the runtime
            (:func:`dmoe.runtime.transfer.transmit`) charge. None whenever every link
            uses at most one RB, so one-RB schedules are charged exactly as before.
    """

    selection: np.ndarray
    subcarrier: np.ndarray
    feasible: np.ndarray
    threshold: np.ndarray | None = None
    exclusive: bool = True
    info: dict = field(default_factory=dict)
    rb_share: np.ndarray | None = None


def _fmt(x: float) -> str:
    return f"{x:.12g}"


def _check_fraction(name: str, value, *, positive: bool = False) -> float:
    """Validate a QoS level z in [0, 1] or a layer-importance base gamma0 in (0, 1].

    Gating scores sum to 1 (eq 7), so z > 1 can never be met, and gamma^(l) = gamma0^l must
    be non-increasing in l (Section IV-A), so gamma0 <= 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"`{name}` must be a number, got {value!r}")
    value = float(value)
    low_ok = value > 0 if positive else value >= 0
    if not math.isfinite(value) or not low_ok or value > 1:
        interval = "(0, 1]" if positive else "[0, 1]"
        raise ValueError(f"`{name}` must lie in {interval}, got {value!r}")
    return value


class Policy(abc.ABC):
    """A scheduling policy: ``schedule(scores, source, rates, layer, *, system, rng)``.

    Subclasses set :attr:`name` (the paper's label) and implement :meth:`schedule` and
    :meth:`params` (JSON-ready constructor arguments).
    """

    name: str

    @abc.abstractmethod
    def schedule(self, scores, source, rates, layer: int, *, system, rng=None, placement=None, available=None) -> Schedule:
        """Schedule one layer (layers are numbered from 1).

        Args:
            scores: ``[num_tokens, num_experts], float64`` gating scores.
            source: ``[num_tokens], int`` node of each token.
            rates: ``[K, K, M], float64`` r_ij^(m) [bit/s] (K = N nodes).
            layer: l >= 1.
            system: :class:`~dmoe.system.SystemConfig` (``num_experts`` = N nodes).
            rng: Generator / seed / None (JESA's random initial beta).
            placement: ``[num_experts], int`` node of each expert (several experts per
                node, issue 12) or None (one expert per node). Subcarriers are per node
                pair; one transmission serves all of a token's experts on a node.
            available: None (every expert) or ``[num_experts]`` / ``[num_tokens,
                num_experts]`` bool: experts that may serve this round (a failed node's
                expert is unavailable, issue 9). Unavailable experts are never selected;
                the threshold policies solve exactly over the remaining experts (cost
                ``+inf``, Remark 2's fallback takes the best remaining ones), Top-k takes
                the k best remaining, dense takes every remaining expert.
        """

    @abc.abstractmethod
    def params(self) -> dict:
        """JSON-ready description: ``{"policy": class name, "name": label, **arguments}``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params() == other.params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))


def _inputs(scores, source, rates, layer, system, placement=None, available=None):
    """Validated (scores, source, rates, system, placement, available); placement None
    needs E = N; available is over experts (``[T, E]`` bool or None)."""
    scores = check_scores(scores)
    rates = check_rates(rates)
    t, e = scores.shape
    k = rates.shape[0]
    placement = check_layer_placement(placement, k, e)
    source = check_source(source, t, k)
    check_int("layer", layer, minimum=1)
    system = check_system(system, k)
    avail = check_available(available, t, e)
    return scores, source, rates, system, placement, avail


def _allocate(rates, demand, system):
    """P3(a) for ``demand``; with a per-node budget (``system.max_rbs_per_node``) the
    resource-block allocator without deadline (one RB per link, at most B_i per node)."""
    if system.max_rbs_per_node is None:
        return allocate_subcarriers(rates, demand, tx_power_w=system.tx_power_w, bits_per_token=system.bits_per_token)
    from dmoe.optimize.resource_blocks import allocate_resource_blocks

    return allocate_resource_blocks(
        rates, demand, tx_power_w=system.tx_power_w, bits_per_token=system.bits_per_token,
        max_rbs_per_node=system.max_rbs_per_node,
    )


def _node_demand(selection, source, placement, num_nodes):
    """[N, N] tokens from node i that need node n (one transmission per token and node)."""
    if placement is None:
        return link_token_counts(selection, source, num_nodes)
    return link_token_counts(node_selection(selection, placement, num_nodes), source, num_nodes)


class TopK(Policy):
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
        scores, source, rates, system, placement, avail = _inputs(scores, source, rates, layer, system, placement, available)
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
            demand = _node_demand(selection, source, placement, nn)
            alloc = _allocate(rates, demand, system)
            if not alloc.unserved.any():
                break
            allowed &= ~alloc.unserved
        feasible = selection.sum(axis=1) == k
        return Schedule(selection, alloc.subcarrier, feasible, None, True, {"rounds": rounds})


class _JESABase(Policy):
    max_experts: int
    #: :class:`~dmoe.optimize.deadline.Deadline` passes its T down (JESA's resource-block step)
    accepts_deadline = True

    def _threshold(self, layer: int) -> float:
        raise NotImplementedError

    def schedule(
        self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None, deadline_s=None
    ) -> Schedule:
        """As :meth:`Policy.schedule`; ``deadline_s`` (T [s] or None) is passed to
        :func:`~dmoe.optimize.jesa.jesa`, whose allocation step then gives links several
        resource blocks to finish the layer round within T."""
        scores, source, rates, system, placement, avail = _inputs(scores, source, rates, layer, system, placement, available)
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


class _LayerImportance(Policy):
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
        scores, source, rates, system, placement, avail = _inputs(scores, source, rates, layer, system, placement, available)
        thr = self._threshold(layer)
        res = lower_bound(scores, source, rates, thr, self.max_experts, system=system, placement=placement,
                          available=avail)
        return Schedule(res.selection, res.subcarrier, res.feasible, res.threshold, False, {"energy": res.energy})


class Dense(Policy):
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
        scores, source, rates, system, placement, avail = _inputs(scores, source, rates, layer, system, placement, available)
        t, k = scores.shape
        selection = np.ones((t, k), dtype=bool) if avail is None else np.array(avail, dtype=bool)
        demand = _node_demand(selection, source, placement, rates.shape[0])
        alloc = _allocate(rates, demand, system)
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


_NUM = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
_INT = r"\s*([0-9]+)\s*"
_FORMS = (
    "'Top-k' / 'topk' (e.g. 'Top-2', 'top2'), 'H(z,D)' (e.g. 'H(0.8,2)'), "
    "'JESA(gamma0,D)' or 'JESA(gamma0,D,z)' (e.g. 'JESA(0.9,2)'), 'LB(gamma0,D)' or 'LB(gamma0,D,z)' (e.g. 'LB(0.9,2)'), 'dense'"
    ", calibrated 'JESA(cal:B,D)' / 'DES(cal:B,D)' / 'LB(cal:B,D)' (e.g. 'JESA(cal:0.5,2)', needs `dmoe calibrate`); "
    "any but dense with a layer-round deadline T [s] appended as '[T=<seconds>s]' (e.g. 'JESA(0.9,2)[T=5s]')"
)


def policy_from_name(name: str, *, profile=None, warn=None) -> Policy:
    """Parse a policy label (CLI): "Top-2", "top2", "H(0.8,2)", "JESA(0.9,2)",
    "JESA(0.9,2,1.0)", "LB(0.9,2)", "dense" (case-insensitive, spaces ignored), and the
    calibrated forms "JESA(cal:0.5,2)", "DES(cal:0.5,2)", "LB(cal:0.5,2)" that need
    ``profile`` (an :class:`~dmoe.optimize.importance.ImportanceProfile`; see
    :mod:`dmoe.optimize.calibrated`; ``warn`` receives the message of a budget it cannot meet).

    Raises:
        ValueError: listing the accepted forms when ``name`` matches none; naming the
        policy string and the broken rule when it matches a form with a bad value
        (e.g. "policy 'Top-0': `k` must be >= 1, got 0"); for a calibrated form without
        ``profile``, telling the user to run ``dmoe calibrate``.
    """
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a string; accepted forms: {_FORMS}")
    s = name.strip()
    m = re.fullmatch(r"(?i)(.*?)\s*\[\s*T\s*=\s*([^\]]*?)\s*\]", s)
    if m:
        from dmoe.optimize.deadline import Deadline

        base = policy_from_name(m.group(1), profile=profile, warn=warn)
        value = re.fullmatch(r"(?i)([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[-+]?[0-9]+)?|[-+]?inf|nan)\s*s?", m.group(2))
        if value is None:
            raise ValueError(f"policy {name!r}: the deadline must read [T=<seconds>s], e.g. [T=0.5s], got "
                             f"[T={m.group(2)}]")
        try:
            return Deadline(base, float(value.group(1)))
        except ValueError as exc:
            raise ValueError(f"policy {name!r}: {exc}") from None
    from dmoe.optimize.calibrated import is_calibrated_name, parse_calibrated

    if is_calibrated_name(s):
        return parse_calibrated(s, profile=profile, warn=warn)
    try:
        return _parse_policy(s, name)
    except ValueError as exc:
        if str(exc).startswith("unknown policy"):
            raise
        # a constructor's rule ("`k` must be >= 1") names the policy string it came from
        raise ValueError(f"policy {name!r}: {exc}") from None


def _parse_policy(s: str, name: str) -> Policy:
    m = re.fullmatch(r"(?i)top\s*-?" + _INT, s)
    if m:
        return TopK(int(m.group(1)))
    m = re.fullmatch(r"(?i)h\s*\(" + _NUM + "," + _INT + r"\)", s)
    if m:
        return Homogeneous(float(m.group(1)), int(m.group(2)))
    m = re.fullmatch(r"(?i)jesa\s*\(" + _NUM + "," + _INT + r"(?:," + _NUM + r")?\)", s)
    if m:
        qos = float(m.group(3)) if m.group(3) is not None else 1.0
        return JESAPolicy(float(m.group(1)), int(m.group(2)), qos)
    m = re.fullmatch(r"(?i)lb\s*\(" + _NUM + "," + _INT + r"(?:," + _NUM + r")?\)", s)
    if m:
        qos = float(m.group(3)) if m.group(3) is not None else 1.0
        return LowerBound(float(m.group(1)), int(m.group(2)), qos)
    if s.lower() == "dense":
        return Dense()
    raise ValueError(f"unknown policy `name` {name!r}; accepted forms: {_FORMS}")


def policy_from_params(params: dict) -> Policy:
    """Inverse of :meth:`Policy.params`."""
    if not isinstance(params, dict) or "policy" not in params:
        raise ValueError("`params` must be a dict with a 'policy' key (see Policy.params())")
    kind = params["policy"]
    args = {key: value for key, value in params.items() if key not in ("policy", "name")}
    if kind == "Deadline":
        from dmoe.optimize.deadline import Deadline

        return Deadline(policy_from_params(args["base"]), args["deadline_s"])
    classes = {"TopK": TopK, "Homogeneous": Homogeneous, "JESA": JESAPolicy, "LowerBound": LowerBound, "Dense": Dense}
    if str(kind).startswith("Calibrated"):
        from dmoe.optimize.calibrated import CALIBRATED_KINDS, calibrated_from_params

        if kind in {c._kind for c in CALIBRATED_KINDS.values()}:
            return calibrated_from_params(params)
    if kind not in classes:
        raise ValueError(f"unknown `policy` {kind!r}; known: {', '.join(classes)}, Deadline")
    return classes[kind](**args)
