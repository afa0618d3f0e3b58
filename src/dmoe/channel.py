"""Deprecated: moved to :mod:`dmoe.channels.rates` (and :func:`dmoe.rng.as_generator`) in issue 19.

Every name of the old module is still here for one release, the very same objects, and
using one (``from dmoe.channel import draw_rates``, ``dmoe.channel.draw_rates``) gives a
:class:`DeprecationWarning` naming the new path. dmoe's own modules that have not moved yet
read them quietly (the warning is for code outside the package).
"""

from dmoe._moved import forward_moved_names

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
__getattr__, __dir__ = forward_moved_names(__name__, _MOVED)
