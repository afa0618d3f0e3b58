"""Deprecated: moved to :mod:`dmoe.policies` (issue 19); this module re-exports it for one release."""

import warnings

from dmoe.policies import (  # noqa: F401  (re-exports)
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
from dmoe.policies.allocation import allocate_links as _allocate  # noqa: F401
from dmoe.policies.base import _check_fraction, _fmt, _inputs  # noqa: F401
from dmoe.policies.builtin import _JESABase, _LayerImportance  # noqa: F401

__all__ = ["Schedule", "Policy", "TopK", "Homogeneous", "JESAPolicy", "LowerBound", "Dense", "policy_from_name",
           "policy_from_params"]

warnings.warn("dmoe.optimize.policies moved to dmoe.policies; import from there (this path goes after one release)",
              DeprecationWarning, stacklevel=2)
