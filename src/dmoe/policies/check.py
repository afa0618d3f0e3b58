"""The runtime's feasibility check of every schedule a policy returns.

One checker serves the solver tests and the runtime: :mod:`dmoe.optimize.feasibility`
(:func:`~dmoe.optimize.feasibility.check_schedule_output`). This module reads what the
policy declares (its label, D) and passes it on.
"""

from __future__ import annotations

from dmoe.optimize.feasibility import InfeasibleScheduleError, check_schedule_output

__all__ = ["check_policy_schedule", "declared_max_experts", "InfeasibleScheduleError"]


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
