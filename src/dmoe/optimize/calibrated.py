"""Deprecated: moved to :mod:`dmoe.policies.calibrated` (issue 19); re-exported for one release."""

import warnings

from dmoe.policies.calibrated import *  # noqa: F401,F403  (re-exports)
from dmoe.policies.calibrated import _CAL_RE, __all__  # noqa: F401

warnings.warn("dmoe.optimize.calibrated moved to dmoe.policies.calibrated; import from there (this path goes after "
              "one release)", DeprecationWarning, stacklevel=2)
