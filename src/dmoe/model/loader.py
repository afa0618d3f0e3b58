"""Deprecated: renamed :mod:`dmoe.model.dispatch` (one entry point for every expert model) in issue 19.

Every name of the old module is still here for one release, the very same objects; using
one gives a :class:`DeprecationWarning` naming the new path. (Setting an attribute here
no longer reaches the module that uses it: patch :mod:`dmoe.model.dispatch`.)
"""

from dmoe._moved import forward_moved_names

__getattr__, __dir__ = forward_moved_names(__name__, "dmoe.model.dispatch")
