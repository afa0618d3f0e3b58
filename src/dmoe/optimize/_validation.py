"""Shared input checks for the solvers (run before any solver does work).

Every error names the argument in backticks and states the rule. Type errors raise
:class:`ArgumentTypeError`, which is both a ``TypeError`` and a ``ValueError`` so that
callers catching either see it.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from dmoe.system import SystemConfig

SELECTION_METHODS = ("auto", "des", "enumerate", "milp")


class ArgumentTypeError(TypeError, ValueError):
    """An argument has the wrong type (also a ValueError for convenience)."""


def _numeric(name: str, value) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype == np.float64:
        return value  # the common case, without the dtype checks below
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ArgumentTypeError(f"`{name}` must be a numeric array: {exc}") from exc
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ArgumentTypeError(f"`{name}` must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


# arrays up to this size are checked as Python lists (a numpy reduction costs ~0.7 us)
_SMALL_CHECK = 64


def _all_finite_nonneg(arr: np.ndarray) -> bool:
    """True when every entry is finite and >= 0. False sends the caller to its detailed
    checks, which say what is wrong. A sum is NaN or inf when an entry is (or when it
    overflows: then the detailed checks pass); with no NaN, ``min() >= 0`` is exact."""
    if arr.size <= _SMALL_CHECK:
        vals = arr.ravel().tolist()
        return math.isfinite(sum(vals)) and min(vals) >= 0.0
    return bool(arr.min() >= 0.0 and arr.max() < np.inf)


def _all_nonneg(arr: np.ndarray) -> bool:
    """True when no entry is NaN or negative (+inf allowed; ``min() >= 0`` fails on NaN; a
    NaN sum means a NaN or both infinities, and -inf fails the minimum)."""
    if arr.size <= _SMALL_CHECK:
        vals = arr.ravel().tolist()
        return not math.isnan(sum(vals)) and min(vals) >= 0.0
    return bool(arr.min() >= 0.0)


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bool and floats rejected)."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise ArgumentTypeError(f"`{name}` must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}")
    return int(value)


def check_scores(scores) -> np.ndarray:
    """``[num_tokens, num_experts]`` finite, >= 0; num_experts >= 1."""
    arr = _numeric("scores", scores)
    if arr.ndim != 2:
        raise ValueError(f"`scores` must be 2-D [num_tokens, num_experts], got ndim={arr.ndim}")
    if arr.shape[1] < 1:
        raise ValueError("`scores` must have at least one expert (num_experts >= 1)")
    if arr.size and not _all_finite_nonneg(arr):
        if np.isnan(arr).any():
            raise ValueError("`scores` must not contain NaN")
        if np.isinf(arr).any():
            raise ValueError("`scores` must be finite (no inf)")
        if (arr < 0).any():
            raise ValueError("`scores` must be >= 0 (gating scores, eq 7)")
    return arr


def check_costs(costs, num_tokens: int, num_experts: int) -> np.ndarray:
    """``[num_experts]`` or ``[num_tokens, num_experts]``; >= 0, NaN rejected, +inf allowed.

    Returns the ``[num_tokens, num_experts]`` array (2-D input as given; a read-only
    broadcast view of 1-D input).
    """
    arr = _numeric("costs", costs)
    if arr.ndim == 1:
        if arr.shape[0] != num_experts:
            raise ValueError(f"`costs` has {arr.shape[0]} entries but `scores` has {num_experts} experts")
    elif arr.ndim == 2:
        if arr.shape != (num_tokens, num_experts):
            raise ValueError(
                f"`costs` must have shape [{num_tokens}, {num_experts}] like `scores` (or [{num_experts}]), "
                f"got {arr.shape}"
            )
    else:
        raise ValueError(f"`costs` must be 1-D [num_experts] or 2-D [num_tokens, num_experts], got ndim={arr.ndim}")
    if arr.size and not _all_nonneg(arr):
        if np.isnan(arr).any():
            raise ValueError("`costs` must not contain NaN")
        if (arr < 0).any():
            raise ValueError("`costs` must be >= 0 [J] (+inf marks an unavailable expert)")
    if arr.ndim == 2:
        return arr
    return np.broadcast_to(arr, (num_tokens, num_experts))


def check_node_costs(node_costs, num_tokens: int) -> np.ndarray:
    """``[num_nodes]`` or ``[num_tokens, num_nodes]`` transmission energies [J] >= 0, NaN
    rejected, +inf allowed (node unreachable). Returns the ``[num_tokens, num_nodes]`` broadcast."""
    arr = _numeric("node_costs", node_costs)
    if arr.ndim == 1:
        pass
    elif arr.ndim == 2:
        if arr.shape[0] != num_tokens:
            raise ValueError(
                f"`node_costs` must have shape [{num_tokens}, num_nodes] (one row per token) or [num_nodes], "
                f"got {arr.shape}"
            )
    else:
        raise ValueError(f"`node_costs` must be 1-D [num_nodes] or 2-D [num_tokens, num_nodes], got ndim={arr.ndim}")
    if arr.shape[-1] < 1:
        raise ValueError("`node_costs` must describe at least one node")
    if arr.size and not _all_nonneg(arr):
        if np.isnan(arr).any():
            raise ValueError("`node_costs` must not contain NaN")
        if (arr < 0).any():
            raise ValueError("`node_costs` must be >= 0 [J] (+inf marks an unreachable node)")
    return np.broadcast_to(arr, (num_tokens, arr.shape[-1]))


def check_threshold(threshold, num_tokens: int) -> np.ndarray:
    """Scalar or ``[num_tokens]``, finite. Returns ``[num_tokens], float64``."""
    if isinstance(threshold, float) and math.isfinite(threshold):
        return np.full(num_tokens, threshold)
    arr = _numeric("threshold", threshold)
    if arr.ndim == 0:
        arr = np.full(num_tokens, float(arr))
    elif arr.ndim == 1:
        if arr.shape[0] != num_tokens:
            raise ValueError(f"`threshold` has {arr.shape[0]} entries but there are {num_tokens} tokens")
    else:
        raise ValueError(f"`threshold` must be a scalar or 1-D [num_tokens], got ndim={arr.ndim}")
    if arr.size and not math.isfinite(sum(arr.tolist()) if arr.size <= _SMALL_CHECK else arr.sum()):
        # a finite sum has no NaN and no inf (an overflowing one: the checks below pass)
        if np.isnan(arr).any():
            raise ValueError("`threshold` must not be NaN")
        if np.isinf(arr).any():
            raise ValueError("`threshold` must be finite")
    return arr


def check_available(available, num_tokens: int, num_experts: int) -> np.ndarray | None:
    """Which experts may serve this round: None (all), bool ``[num_experts]`` or
    ``[num_tokens, num_experts]``. Returns None or the ``[num_tokens, num_experts]`` bool
    broadcast (read-only view for 1-D input).

    An unavailable expert (a failed node, issue 9) is treated exactly like an expert with
    infinite cost: it is never selected, and the Remark 2 fallback takes the best
    remaining experts.
    """
    if available is None:
        return None
    arr = np.asarray(available)
    if arr.dtype != bool:
        raise ArgumentTypeError(f"`available` must be a bool array (True = expert may serve), got dtype {arr.dtype}")
    if arr.ndim == 1:
        if arr.shape[0] != num_experts:
            raise ValueError(f"`available` has {arr.shape[0]} entries but `scores` has {num_experts} experts")
    elif arr.ndim == 2:
        if arr.shape != (num_tokens, num_experts):
            raise ValueError(
                f"`available` must have shape [{num_experts}] or [{num_tokens}, {num_experts}], got {arr.shape}"
            )
    else:
        raise ValueError(f"`available` must be 1-D [num_experts] or 2-D [num_tokens, num_experts], got ndim={arr.ndim}")
    return np.broadcast_to(arr, (num_tokens, num_experts))


def mask_costs(costs: np.ndarray, available: np.ndarray | None) -> np.ndarray:
    """``costs`` ``[T, K]`` with ``+inf`` where ``available`` ``[T, K]`` is False (None: unchanged)."""
    if available is None:
        return costs
    return np.where(available, costs, np.inf)


def check_method(method, allowed=SELECTION_METHODS) -> str:
    if not isinstance(method, str) or method not in allowed:
        raise ValueError(f"`method` must be one of {', '.join(repr(m) for m in allowed)}; got {method!r}")
    return method


def check_node_limit(node_limit) -> int | None:
    if node_limit is None:
        return None
    return check_int("node_limit", node_limit, minimum=1)


def check_rates(rates) -> np.ndarray:
    """``[K, K, M]`` r_ij^(m) [bit/s]; finite and >= 0 off the diagonal (diagonal ignored)."""
    arr = _numeric("rates", rates)
    if arr.ndim != 3 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"`rates` must have shape [num_experts, num_experts, num_subcarriers], got {arr.shape}")
    k, _, m = arr.shape
    if k < 1 or m < 1:
        raise ValueError(f"`rates` must have num_experts >= 1 and num_subcarriers >= 1, got {arr.shape}")
    if arr.size and arr.min() >= 0 and np.isfinite(arr.max()):
        return arr  # fast path, no copy: every entry finite and >= 0 (a NaN fails min() >= 0)
    off = ~np.eye(k, dtype=bool)
    vals = arr[off]
    if vals.size:
        if not np.isfinite(vals).all():
            raise ValueError("`rates` must be finite off the diagonal")
        if (vals < 0).any():
            raise ValueError("`rates` must be >= 0 [bit/s]")
    return arr


def check_demand(demand, num_experts: int) -> np.ndarray:
    """``[K, K]`` tokens, finite and >= 0 off the diagonal (diagonal ignored)."""
    arr = _numeric("demand", demand)
    if arr.shape != (num_experts, num_experts):
        raise ValueError(f"`demand` must have shape [{num_experts}, {num_experts}] like `rates`, got {arr.shape}")
    off = ~np.eye(num_experts, dtype=bool)
    vals = arr[off]
    if vals.size:
        if not np.isfinite(vals).all():
            raise ValueError("`demand` must be finite off the diagonal")
        if (vals < 0).any():
            raise ValueError("`demand` must be >= 0 [tokens]")
    return arr


def check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"`{name}` must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be finite and > 0, got {value!r}")
    return value


def check_source(source, num_tokens: int, num_experts: int) -> np.ndarray:
    """``[num_tokens]`` integers in [0, num_experts)."""
    arr = np.asarray(source)
    if arr.ndim != 1 or arr.shape[0] != num_tokens:
        raise ValueError(f"`source` must have shape [{num_tokens}] (one node per token), got {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.intp)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.intp)
        else:
            raise ArgumentTypeError(f"`source` must hold integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= num_experts:
        raise ValueError(f"`source` entries must lie in [0, {num_experts}), got range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.intp)


def check_system(system, num_experts: int | None = None) -> SystemConfig:
    if not isinstance(system, SystemConfig):
        raise ArgumentTypeError(f"`system` must be a dmoe.system.SystemConfig, got {type(system).__name__}")
    if num_experts is not None and system.num_nodes != num_experts:
        raise ValueError(
            f"`system` has num_nodes={system.num_nodes} but `rates` describes {num_experts} nodes"
        )
    return system
