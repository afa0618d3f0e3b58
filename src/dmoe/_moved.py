"""Module-level ``__getattr__`` / ``__dir__`` for a module whose names moved (issue 19).

An old import path keeps working for one release: each name resolves to the very same
object at its new home, and using it from code outside dmoe gives a
:class:`DeprecationWarning` naming the new path (dmoe's own modules read it quietly).
Setting an attribute on the old module no longer reaches the code that uses it.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Callable, Mapping


def forward_moved_names(old: str, new: str | Mapping[str, str]) -> tuple[Callable, Callable]:
    """The ``(__getattr__, __dir__)`` pair of the deprecated module ``old``.

    Args:
        old: the old module's dotted name (``__name__`` of the caller).
        new: the module that now holds every name of ``old``, or a mapping
            ``{name: module}`` for the names that moved to different modules.

    Returns:
        ``(__getattr__, __dir__)`` to assign at the old module's top level (PEP 562).

    Raises:
        AttributeError (from the returned ``__getattr__``): a name ``old`` never had.
    """

    def _home(name: str) -> str | None:
        if isinstance(new, str):
            if name.startswith("__"):
                return None
            return new if hasattr(importlib.import_module(new), name) else None
        return new.get(name)

    def __getattr__(name: str):
        home = _home(name)
        if home is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not caller.startswith("dmoe."):
            warnings.warn(f"`{old}.{name}` moved to `{home}.{name}` (import it from there; `{old}` goes in the "
                          "next release)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)

    def __dir__() -> list[str]:
        if isinstance(new, str):
            return sorted(getattr(importlib.import_module(new), "__all__", []))
        return sorted(new)

    return __getattr__, __dir__
