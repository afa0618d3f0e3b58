"""Solvers, pure numpy/scipy (no torch).

* :func:`select_experts` -- expert selection P1(a): DES (Algorithm 1), enumeration, MILP.
* :func:`allocate_subcarriers` -- optimal subcarrier allocation P3(a) (Appendix B).
* :func:`allocate_resource_blocks` -- several resource blocks per link under a deadline and
  a per-node budget (P3(a) generalised; exact MILP, greedy with a proven gap, brute force).
* :func:`jesa`, :func:`lower_bound` -- joint allocation P2 (Algorithm 2) and LB(gamma0, D).
* :mod:`dmoe.optimize.policies` -- Top-k, H(z, D), JESA(gamma0, D), LB(gamma0, D), dense.
* :class:`Deadline` -- any policy with a bound on the layer-round latency (beyond the paper).
* :mod:`dmoe.optimize.feasibility` -- the shared invariant checker used by the tests.
* :mod:`dmoe.optimize.qos_allocation`, :mod:`dmoe.optimize.calibrated` -- measured layer
  importance, the exact per-layer QoS allocation (multiple-choice knapsack) and the
  calibrated JESA/DES/LB (issue 11).
"""

from dmoe.optimize._validation import ArgumentTypeError
from dmoe.optimize.deadline import Deadline
from dmoe.optimize.jesa import JESAResult, LowerBoundResult, jesa, lower_bound, random_subcarriers
from dmoe.optimize.policies import (
    Dense,
    Homogeneous,
    JESAPolicy,
    LowerBound,
    Policy,
    Schedule,
    TopK,
    policy_from_name,
    policy_from_params,
)
from dmoe.optimize.calibrated import CalibratedDES, CalibratedJESA, CalibratedLB, calibrated_policy
from dmoe.optimize.qos_allocation import Allocation, ImportanceProfile, allocate_qos
from dmoe.optimize.selection import SCORE_TOL, SelectionResult, select_experts
from dmoe.optimize.resource_blocks import ResourceBlockResult, allocate_resource_blocks
from dmoe.optimize.subcarrier import SubcarrierResult, allocate_subcarriers

__all__ = [
    "ArgumentTypeError",
    "SCORE_TOL",
    "SelectionResult",
    "select_experts",
    "SubcarrierResult",
    "allocate_subcarriers",
    "ResourceBlockResult",
    "allocate_resource_blocks",
    "JESAResult",
    "LowerBoundResult",
    "jesa",
    "lower_bound",
    "random_subcarriers",
    "Policy",
    "Schedule",
    "TopK",
    "Homogeneous",
    "JESAPolicy",
    "LowerBound",
    "Dense",
    "Deadline",
    "policy_from_name",
    "policy_from_params",
    "ImportanceProfile",
    "Allocation",
    "allocate_qos",
    "CalibratedJESA",
    "CalibratedDES",
    "CalibratedLB",
    "calibrated_policy",
]
