"""Routing co-activation statistics, cached beside the model build (issue 18).

:func:`dmoe.runtime.routing.routing_coactivation` runs thousands of calibration tokens
through the model (seconds to a minute on 2 CPU cores) to place co-selected experts on one
node; every ``dmoe run`` with the co-activation placement needs it, and the answer depends
only on the model, ``top_k`` and the calibration set. :func:`cached_coactivation` stores it
as ``coactivation-top<k>-<key16>.npy`` in the model's build directory (or
``<cache_dir>/profiles/<model key16>/`` for a model without one, as importance profiles:
:func:`dmoe.importance.cache.profile_dir`), keyed by the build key (which hashes the
calibration set of a carved build; other models add the calibration set's hash), ``top_k``,
``max_tokens`` and :data:`COACTIVATION_FORMAT`. A missing, unreadable or malformed file
(wrong shape, NaN, negative counts) is computed again and rewritten atomically; an
unwritable cache only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["COACTIVATION_FORMAT", "cached_coactivation", "coactivation_path"]

#: bump when :func:`dmoe.runtime.routing.routing_coactivation` changes what it counts
COACTIVATION_FORMAT = 1


def coactivation_path(model, top_k: int, *, max_tokens: int = 4000, cache_dir=None) -> Path:
    """Where :func:`cached_coactivation` keeps the counts of ``model`` for ``top_k``."""
    from dmoe.importance.cache import model_key, profile_dir

    payload = {
        "format": COACTIVATION_FORMAT,
        "model_key": model_key(model),
        "num_layers": int(model.num_layers),
        "num_experts": int(model.num_experts),
        "top_k": int(top_k),
        "max_tokens": int(max_tokens),
    }
    if not (getattr(model, "metadata", None) or {}).get("key"):
        # the build key of a carved model hashes its calibration set; others add it here
        from dmoe.model.calibration import calibration_spec

        payload["calibration"] = calibration_spec(None, None, max_tokens=max_tokens)
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return profile_dir(model, cache_dir) / f"coactivation-top{int(top_k)}-{key[:16]}.npy"


def _valid(counts, shape) -> bool:
    return (
        isinstance(counts, np.ndarray)
        and counts.dtype == np.float64
        and counts.shape == shape
        and bool(np.isfinite(counts).all())
        and bool((counts >= 0).all())
    )


def cached_coactivation(model, *, top_k: int, max_tokens: int = 4000, cache_dir=None) -> np.ndarray:
    """:func:`dmoe.runtime.routing.routing_coactivation` through the cache (see module doc).

    Args:
        model: a :class:`dmoe.model.ExpertModel`; top_k: experts counted per token
            (1 <= top_k <= E); max_tokens: calibration tokens used; cache_dir: cache root
            for models without a build directory (default ``$DMOE_CACHE_DIR`` or
            ``~/.cache/dmoe``).

    Returns:
        ``[num_layers, num_experts, num_experts], float64`` co-selection counts, equal to
        what ``routing_coactivation(model, top_k=top_k, max_tokens=max_tokens)`` returns.

    Raises:
        ValueError naming ``top_k`` when it is out of range (checked before the cache).
    """
    from dmoe.runtime.routing import routing_coactivation

    e = int(model.num_experts)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= e:
        raise ValueError(f"`top_k` must be an integer in [1, {e}], got {top_k!r}")
    shape = (int(model.num_layers), e, e)
    path = coactivation_path(model, int(top_k), max_tokens=max_tokens, cache_dir=cache_dir)
    try:
        counts = np.load(path, allow_pickle=False)
        if _valid(counts, shape):
            return counts
    except (OSError, ValueError, EOFError):
        pass
    counts = routing_coactivation(model, top_k=int(top_k), max_tokens=max_tokens)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, np.ascontiguousarray(counts, dtype=np.float64), allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass
    return counts
