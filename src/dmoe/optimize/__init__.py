"""Solvers, pure numpy/scipy (no torch).

* :func:`select_experts` -- expert selection P1(a): DES (Algorithm 1), enumeration, MILP.
* :func:`allocate_subcarriers` -- optimal subcarrier allocation P3(a) (Appendix B).
* :func:`allocate_resource_blocks` -- several resource blocks per link under a deadline and
  a per-node budget (P3(a) generalised; exact MILP, greedy with a proven gap, brute force).
* :func:`jesa`, :func:`lower_bound` -- joint allocation P2 (Algorithm 2) and LB(gamma0, D).
* :mod:`dmoe.optimize.feasibility` -- the shared invariant checker used by the tests and
  the runtime's check of every policy's schedule.
* :mod:`dmoe.optimize.qos_allocation` -- measured layer importance and the exact per-layer QoS
  allocation (multiple-choice knapsack, issue 11).

The policies (Top-k, H(z, D), JESA(gamma0, D), LB(gamma0, D), dense, Deadline, the
calibrated ones) live in :mod:`dmoe.policies`; this package imports none of them. Their old
names here (``dmoe.optimize.TopK``, ...) still resolve, with a DeprecationWarning, for one
release.
"""

import importlib as _importlib
import warnings as _warnings

from dmoe.optimize._validation import ArgumentTypeError
from dmoe.optimize.jesa import JESAResult, LowerBoundResult, jesa, lower_bound, random_subcarriers
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
    "ImportanceProfile",
    "Allocation",
    "allocate_qos",
]

#: names that moved to dmoe.policies (issue 19): resolved lazily, with a DeprecationWarning
_MOVED = {
    name: "dmoe.policies"
    for name in (
        "Policy", "Schedule", "TopK", "Homogeneous", "JESAPolicy", "LowerBound", "Dense", "Deadline",
        "policy_from_name", "policy_from_params", "CalibratedJESA", "CalibratedDES", "CalibratedLB",
        "calibrated_policy",
    )
}


def __getattr__(name: str):
    target = _MOVED.get(name)
    if target is None:
        raise AttributeError(f"module 'dmoe.optimize' has no attribute {name!r}")
    _warnings.warn(
        f"dmoe.optimize.{name} moved to {target}.{name}; import it from {target} (the old name goes after one "
        "release)", DeprecationWarning, stacklevel=2,
    )
    return getattr(_importlib.import_module(target), name)
