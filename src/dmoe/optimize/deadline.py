"""Deprecated: moved to :mod:`dmoe.policies.deadline` (issue 19); re-exported for one release."""

import warnings

from dmoe.policies.deadline import *  # noqa: F401,F403  (re-exports)
from dmoe.policies.deadline import __all__  # noqa: F401

warnings.warn("dmoe.optimize.deadline moved to dmoe.policies.deadline; import from there (this path goes after "
              "one release)", DeprecationWarning, stacklevel=2)
