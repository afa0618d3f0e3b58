"""The runtime's feasibility check of every schedule a policy returns.

One checker serves the solver tests and the runtime: :mod:`dmoe.optimize.feasibility`
(:func:`~dmoe.optimize.feasibility.check_schedule_output`). This module reads what the
policy declares (its label, D) and passes it on.
"""

from __future__ import annotations

import sysconfig
import traceback

from dmoe.optimize.feasibility import InfeasibleScheduleError, check_schedule_output

__all__ = ["check_policy_schedule", "declared_max_experts", "InfeasibleScheduleError", "PolicyFailedError",
           "run_policy"]


class PolicyFailedError(ValueError):
    """A policy's ``schedule`` raised: the message names the policy, the layer, the exception
    and the line of the policy's code that raised it; the original exception is chained
    (``__cause__``) with its full traceback."""


def declared_max_experts(policy) -> int | None:
    """D (C2) the policy declares as ``max_experts``, looking through wrappers that hold
    their base policy as ``.policy`` (:class:`~dmoe.policies.deadline.Deadline`); None if none."""
    seen = 0
    while policy is not None and seen < 16:
        d = getattr(policy, "max_experts", None)
        if d is not None:
            return int(d)
        policy, seen = getattr(policy, "policy", None), seen + 1
    return None


def check_policy_schedule(policy, schedule, scores, source, rates, layer: int, *, placement=None,
                          available=None) -> None:
    """Raise unless ``schedule``, what ``policy.schedule(scores, source, rates, layer, ...)``
    returned, is feasible: the :class:`~dmoe.policies.base.Schedule` contract (shapes
    ``[T, E]``, ``[N, N]``, ``[T]``; bool / integer dtypes), C2 with the D the policy declares
    (``max_experts``), C3 when ``schedule.exclusive``, C1 for feasible tokens when
    ``schedule.threshold`` is given, every selected remote expert's link on a subcarrier
    with positive rate in ``rates``, no unavailable expert selected. O(N^2 M + T E).

    Args:
        policy: the :class:`~dmoe.policies.base.Policy` (its ``name`` labels the error).
        schedule: its result; scores: ``[T, E] float64``; source: ``[T] int``; rates:
            ``[N, N, M] float64`` [bit/s]; layer: l >= 1; placement: None or ``[E] int``;
            available: None or ``[E]`` / ``[T, E]`` bool -- what the policy was given.

    Raises:
        InfeasibleScheduleError: (a ValueError) ``"policy 'X' at layer l returned an
        infeasible schedule: C3 violated: a subcarrier serves more than one link"``.

    Source: C1-C3 of P1/P2 (Sections IV-V, eq 7-9).
    """
    label = str(getattr(policy, "name", type(policy).__name__))
    check_schedule_output(
        schedule, scores, source, rates, label=label, layer=layer, max_experts=declared_max_experts(policy),
        placement=placement, available=available,
    )


def _where(exc: BaseException) -> str:
    """``"file.py:27 in schedule"``: the deepest frame of ``exc`` outside the standard library
    and installed packages (the policy's own code), else the deepest frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    skip = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    own = [f for f in frames if not f.filename.startswith(skip)]
    frame = (own or frames)[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}"


def run_policy(policy, scores, source, rates, layer: int, **kwargs):
    """``policy.schedule(scores, source, rates, layer, **kwargs)``, checked as the runtime
    checks it: the result by :func:`check_policy_schedule` (with ``kwargs``' ``placement`` and
    ``available``), an exception raised inside the policy re-raised naming the policy and the layer.

    Args:
        As :meth:`~dmoe.policies.base.Policy.schedule` (``kwargs``: ``system``, ``rng``, and
        ``placement`` / ``available`` when the round has them).

    Returns:
        The :class:`~dmoe.policies.base.Schedule` the policy returned.

    Raises:
        PolicyFailedError: (a ValueError) ``"policy 'X' at layer l raised KeyError: 'k' (at
        mymod.py:27 in schedule)"``, the policy's exception chained.
        InfeasibleScheduleError: the schedule breaks the contract or C1-C3.
    """
    try:
        sched = policy.schedule(scores, source, rates, layer, **kwargs)
    except (PolicyFailedError, InfeasibleScheduleError):
        raise
    except Exception as exc:  # a user's policy: whatever it raised, attributed to it
        label = str(getattr(policy, "name", type(policy).__name__))
        where = _where(exc)
        raise PolicyFailedError(
            f"policy {label!r} at layer {int(layer)} raised {type(exc).__name__}: {exc}"
            + (f" (at {where})" if where else "")
        ) from exc
    check_policy_schedule(policy, sched, scores, source, rates, layer, placement=kwargs.get("placement"),
                          available=kwargs.get("available"))
    return sched
