"""Deprecated: moved to :mod:`dmoe.channels.rates` (and :func:`dmoe.rng.as_generator`) in issue 19.

Every name of the old module is still here for one release, the very same objects, and
using one (``from dmoe.channel import draw_rates``, ``dmoe.channel.draw_rates``) gives a
:class:`DeprecationWarning` naming the new path. dmoe's own modules that have not moved yet
read them quietly (the warning is for code outside the package).
"""

from __future__ import annotations

import sys
import warnings

#: old name -> the module that holds it now
_MOVED = {
    "as_generator": "dmoe.rng",
    "channel_gain": "dmoe.channels.rates",
    "correlated_channel_gain": "dmoe.channels.rates",
    "gain_correlation": "dmoe.channels.rates",
    "subcarrier_rates": "dmoe.channels.rates",
    "draw_rates": "dmoe.channels.rates",
}
__all__ = list(_MOVED)


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    new = _MOVED[name]
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if not caller.startswith("dmoe."):
        warnings.warn(f"`dmoe.channel.{name}` moved to `{new}.{name}` (import it from there; `dmoe.channel` goes "
                      "in the next release)", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(new), name)


def __dir__() -> list[str]:
    return sorted(__all__)
