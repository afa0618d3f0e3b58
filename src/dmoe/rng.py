"""Randomness: every random draw of dmoe goes through a :class:`numpy.random.Generator`.

:func:`as_generator` turns what a public function accepts as ``rng`` (a Generator, an int
seed, a :class:`numpy.random.SeedSequence`, or ``None`` for fresh entropy) into a Generator.
Formerly ``dmoe.channel.as_generator`` (issue 19).
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_generator"]


def as_generator(rng) -> np.random.Generator:
    """Return ``rng`` as a :class:`numpy.random.Generator` (int seed / None / Generator).

    Raises:
        TypeError: if ``rng`` is none of those.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(f"`rng` must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")
