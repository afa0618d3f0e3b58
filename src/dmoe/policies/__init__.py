"""Scheduling policies: the :class:`Policy` interface and :class:`Schedule`, the built-in
policies, and the name / plugin registry (README, "Write your own policy").

* :mod:`dmoe.policies.base` -- :class:`Policy`, :class:`Schedule`, :func:`policy_inputs`.
* :mod:`dmoe.policies.allocation` -- :func:`node_demand` (tokens per node pair) and
  :func:`allocate_links` (subcarriers for that demand): the public helpers a
  selection-first policy needs.
* :mod:`dmoe.policies.check` -- :func:`check_policy_schedule`, the runtime's C1-C3
  feasibility check of every schedule a policy returns, and :func:`run_policy` (a policy's
  call as the runtime makes it: its exceptions named by policy and layer, its result checked).
* :mod:`dmoe.policies.builtin` -- Top-k, H(z, D), JESA(gamma0, D), LB(gamma0, D), dense
  (Section VII-A-3).
* :mod:`dmoe.policies.layerwise` -- DES(gamma0, D) of Table I and per-layer thresholds.
* :mod:`dmoe.policies.calibrated` -- JESA/DES/LB on a measured importance profile (issue 11).
* :mod:`dmoe.policies.deadline` -- :class:`Deadline`, any policy under a layer-round deadline.
* :mod:`dmoe.policies.plugins` -- ``"module:Class(args)"`` and the entry-point group
  ``dmoe.policies``.
* :mod:`dmoe.policies.registry` -- :func:`policy_from_name`, :func:`policy_from_params`.

Imports run one way: base <- allocation, builtin <- layerwise <- calibrated, deadline <-
registry; nothing imports the registry back, and :mod:`dmoe.optimize` (pure solvers)
imports none of this package.
"""

from dmoe.policies.allocation import allocate_links, node_demand
from dmoe.policies.base import Policy, Schedule, policy_inputs
from dmoe.policies.builtin import Dense, Homogeneous, JESAPolicy, LowerBound, TopK
from dmoe.policies.calibrated import CalibratedDES, CalibratedJESA, CalibratedLB, calibrated_policy
from dmoe.policies.check import InfeasibleScheduleError, PolicyFailedError, check_policy_schedule, run_policy
from dmoe.policies.deadline import Deadline
from dmoe.policies.layerwise import DESPolicy, LayerwiseQoS
from dmoe.policies.plugins import ENTRY_POINT_GROUP
from dmoe.policies.registry import policy_from_name, policy_from_params, policy_spec

__all__ = [
    "Policy",
    "Schedule",
    "policy_inputs",
    "node_demand",
    "allocate_links",
    "check_policy_schedule",
    "InfeasibleScheduleError",
    "run_policy",
    "PolicyFailedError",
    "TopK",
    "Homogeneous",
    "JESAPolicy",
    "LowerBound",
    "Dense",
    "DESPolicy",
    "LayerwiseQoS",
    "CalibratedJESA",
    "CalibratedDES",
    "CalibratedLB",
    "calibrated_policy",
    "Deadline",
    "ENTRY_POINT_GROUP",
    "policy_from_name",
    "policy_from_params",
    "policy_spec",
]
