"""Deprecated: renamed :mod:`dmoe.model.dispatch` (one entry point for every expert model) in issue 19.

Every name of the old module is still here for one release, the very same objects; using
one gives a :class:`DeprecationWarning` naming the new path. (Setting an attribute here
no longer reaches the module that uses it: patch :mod:`dmoe.model.dispatch`.)
"""

from __future__ import annotations

import importlib
import sys
import warnings

_NEW = "dmoe.model.dispatch"


def __getattr__(name: str):
    module = importlib.import_module(_NEW)
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if not caller.startswith("dmoe."):
        warnings.warn(f"`{__name__}.{name}` moved to `{_NEW}.{name}` (import it from there; `{__name__}` goes "
                      "in the next release)", DeprecationWarning, stacklevel=2)
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(importlib.import_module(_NEW).__all__)
