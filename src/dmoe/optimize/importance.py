"""Deprecated: renamed :mod:`dmoe.optimize.qos_allocation` in issue 19.

(It sat beside the package :mod:`dmoe.importance`, which measures the profile with torch;
this module holds the profile dataclass and the knapsack allocation, pure numpy.) Every
name is still here for one release, the very same objects; using one gives a
:class:`DeprecationWarning` naming the new path. dmoe's own modules that have not moved yet
read them quietly (the warning is for code outside the package).
"""

from __future__ import annotations

import sys
import warnings

_NEW = "dmoe.optimize.qos_allocation"
__all__ = ["ImportanceProfile", "Allocation", "allocate_qos", "predicted_front", "PROFILE_FORMAT", "MEASURES"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    caller = sys._getframe(1).f_globals.get("__name__", "")
    if not caller.startswith("dmoe."):
        warnings.warn(f"`dmoe.optimize.importance.{name}` moved to `{_NEW}.{name}` (import it from there; "
                      "`dmoe.optimize.importance` goes in the next release)", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_NEW), name)


def __dir__() -> list[str]:
    return sorted(__all__)
