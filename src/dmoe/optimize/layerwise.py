"""Deprecated: moved to :mod:`dmoe.policies.layerwise` (issue 19); re-exported for one release."""

import warnings

from dmoe.policies.layerwise import *  # noqa: F401,F403  (re-exports)
from dmoe.policies.layerwise import __all__  # noqa: F401

warnings.warn("dmoe.optimize.layerwise moved to dmoe.policies.layerwise; import from there (this path goes after "
              "one release)", DeprecationWarning, stacklevel=2)
