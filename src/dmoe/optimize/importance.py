"""Deprecated: renamed :mod:`dmoe.optimize.qos_allocation` in issue 19.

(It sat beside the package :mod:`dmoe.importance`, which measures the profile with torch;
this module holds the profile dataclass and the knapsack allocation, pure numpy.) Every
name is still here for one release, the very same objects; using one gives a
:class:`DeprecationWarning` naming the new path. dmoe's own modules that have not moved yet
read them quietly (the warning is for code outside the package).
"""

from dmoe._moved import forward_moved_names

__all__ = ["ImportanceProfile", "Allocation", "allocate_qos", "predicted_front", "PROFILE_FORMAT", "MEASURES"]
__getattr__, __dir__ = forward_moved_names(__name__, {name: "dmoe.optimize.qos_allocation" for name in __all__})
