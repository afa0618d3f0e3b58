"""The policy interface: :class:`Policy` (one layer's scores, sources and rates in, a
:class:`Schedule` out) and the shared input checks of every policy.

A policy's constructor arguments are recorded when it is built (``Policy.__init_subclass__``
wraps each subclass's ``__init__``), so that a run can write how to build the policy again:
:attr:`Policy.spec` (``"mypkg.mod:BestChannel(0.8, 8)"``, or the built-in label such as
``"JESA(0.9,2)"``) and the default :meth:`Policy.params`. :func:`dmoe.policies.policy_from_name`
parses a spec back (README, "Write your own policy").
"""

from __future__ import annotations

import abc
import ast
import functools
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from dmoe.optimize._validation import (
    check_available,
    check_int,
    check_rates,
    check_scores,
    check_source,
    check_system,
)
from dmoe.optimize.jesa import check_layer_placement

__all__ = ["Schedule", "Policy", "policy_inputs"]


@dataclass(frozen=True)
class Schedule:
    """One layer round's schedule.

    Attributes:
        selection: ``[num_tokens, num_experts], bool`` alpha: expert e serves token t.
        subcarrier: ``[N, N], int64`` subcarrier (resource block) of each link i -> j between
            nodes, -1 = none; the diagonal is -1 (a node's own experts need no link).
        feasible: ``[num_tokens], bool`` (threshold policies: C1 and C2 hold; Top-k: k
            experts were reachable; dense: True).
        threshold: ``[num_tokens], float64`` C1 threshold used, or None (Top-k, dense).
            When given, the runtime checks C1 for the tokens marked ``feasible``.
        exclusive: whether C3 holds (False only for the lower bound).
        info: small dict of solver details (e.g. JESA iterations, rounds; a deadline
            policy's per-round outcome, :mod:`dmoe.policies.deadline`).
        rb_share: None (one subcarrier per link: ``subcarrier`` says which) or
            ``[N, N, M], float64`` the share of each link's bits on each resource block
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


def _is_literal(value) -> bool:
    """Whether ``repr(value)`` reads back as ``value`` with :func:`ast.literal_eval`."""
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _record_init(init):
    """Wrap a subclass ``__init__`` so the outermost call records its arguments."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "_init_args" not in self.__dict__:
            self.__dict__["_init_args"] = (args, dict(kwargs))
        init(self, *args, **kwargs)

    __init__._dmoe_records_args = True
    return __init__


class Policy(abc.ABC):
    """A scheduling policy: ``schedule(scores, source, rates, layer, *, system, rng,
    placement, available) -> Schedule`` for one layer round.

    A subclass implements :meth:`schedule` and sets :attr:`name` (the label in tables;
    default ``"<ClassName>(<arguments>)"``). It may declare ``max_experts`` (D of C2),
    which the runtime then checks on every schedule, as it checks C3 when
    ``Schedule.exclusive`` is True, C1 where ``Schedule.threshold`` is given, and that
    every selected remote expert's link has a subcarrier with positive rate
    (:func:`dmoe.policies.check_policy_schedule`). :meth:`params` and :attr:`spec` come
    from the constructor's arguments unless overridden.
    """

    name: str

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_dmoe_records_args", False):
            cls.__init__ = _record_init(init)

    def __getattr__(self, attr):
        # only reached when normal lookup fails: a subclass without its own `name`
        if attr == "name":
            return self._default_name()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    @abc.abstractmethod
    def schedule(self, scores, source, rates, layer: int, *, system, rng=None, placement=None, available=None) -> Schedule:
        """Schedule one layer round (layers are numbered from 1).

        Args:
            scores: ``[num_tokens, num_experts], float64`` gating scores g (each row sums to 1, eq 7).
            source: ``[num_tokens], int`` node of each token (0 .. N-1).
            rates: ``[N, N, M], float64`` r_ij^(m) [bit/s] of link i -> j on subcarrier m
                (the runtime passes the estimated CSI).
            layer: l >= 1.
            system: :class:`~dmoe.system.SystemConfig` (``num_nodes`` = N nodes; P0 [W],
                s0 [bit], computation energy per expert).
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

        Returns:
            :class:`Schedule`.
        """

    # --- how to build it again -------------------------------------------------------------

    def _init_arguments(self) -> tuple[tuple, dict]:
        return self.__dict__.get("_init_args", ((), {}))

    def _default_name(self) -> str:
        args, kwargs = self._init_arguments()
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        return f"{type(self).__name__}({','.join(parts)})"

    @property
    def spec(self) -> str | None:
        """A string :func:`dmoe.policies.policy_from_name` builds this policy from:
        ``"module:QualName(arg, ..., key=value)"`` from the constructor's arguments (the
        built-ins: their label), or None when that is impossible (a class defined in
        ``__main__`` or inside a function, or an argument that is not a Python literal)."""
        cls = type(self)
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            return None
        args, kwargs = self._init_arguments()
        if not all(_is_literal(v) for v in (*args, *kwargs.values())):
            return None
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        return f"{cls.__module__}:{cls.__qualname__}({', '.join(parts)})"

    def params(self) -> dict:
        """JSON-ready description: ``{"policy": kind, "name": label, **arguments}``.

        Default: kind ``"module:QualName"`` and the constructor's arguments by parameter
        name (defaults filled in; a ``*args`` tuple or ``**kwargs`` dict under its own name,
        left out when empty), which :func:`dmoe.policies.policy_from_params` reads back.
        """
        cls = type(self)
        args, kwargs = self._init_arguments()
        try:
            sig = inspect.signature(cls)
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            var = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            # an empty *args / **kwargs (a class without its own __init__, say) is left out
            values = {k: v for k, v in bound.arguments.items() if sig.parameters[k].kind not in var or len(v)}
        except (TypeError, ValueError):
            values = {f"arg{i}": a for i, a in enumerate(args)} | kwargs
        return {"policy": f"{cls.__module__}:{cls.__qualname__}", "name": self.name, **values}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params() == other.params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.params().items(), key=lambda kv: kv[0]))))


def policy_inputs(scores, source, rates, layer, system, placement=None, available=None):
    """The validated inputs of :meth:`Policy.schedule`, for policies to start with.

    Args:
        As :meth:`Policy.schedule`.

    Returns:
        ``(scores [T, E] float64, source [T] int64, rates [N, N, M] float64, system,
        placement [E] int64 or None, available [T, E] bool or None)``.

    Raises:
        ValueError: a malformed array (naming it), ``layer`` < 1, a ``system`` for another
        N, or ``placement`` None while E != N.
    """
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


_inputs = policy_inputs
