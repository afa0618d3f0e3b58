"""Small statistics helpers for the experiments: confidence intervals and Pareto fronts.

* :func:`wilson_interval` -- Wilson score interval of a binomial proportion (accuracies,
  empirical probabilities of Theorem 1).
* :func:`bootstrap_mean_interval` -- percentile bootstrap of a mean (e.g. mean NLL over
  questions).
* :func:`bootstrap_ratio_interval` -- percentile bootstrap of a ratio of sums, resampling
  units (questions or texts) jointly: a token-weighted mean such as the mean KL over scored
  tokens, or the log of a token-level perplexity.
* :func:`paired_bootstrap` -- difference of the means of two policies measured on the
  *same* questions, resampling questions jointly (paired).
* :func:`pareto_front` -- indices of the points not dominated when energy is minimised
  and a quality (accuracy, or minus the NLL) is maximised.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "Z95",
    "wilson_interval",
    "bootstrap_mean_interval",
    "bootstrap_ratio_interval",
    "paired_bootstrap",
    "pareto_front",
]

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``trials`` (default 95%).

    Returns ``(nan, nan)`` when ``trials`` is 0.
    """
    n = int(trials)
    if n <= 0:
        return (math.nan, math.nan)
    k = int(successes)
    if not 0 <= k <= n:
        raise ValueError(f"`successes` must lie in [0, trials={n}], got {k}")
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_mean_interval(values, *, num_resamples: int = 2000, level: float = 0.95, seed=0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)`` (resampling the values)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = _rng(seed)
    idx = rng.integers(0, x.size, size=(int(num_resamples), x.size))
    means = x[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return (float(lo), float(hi))


def bootstrap_ratio_interval(
    numerators, denominators, *, num_resamples: int = 2000, level: float = 0.95, seed=0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(numerators) / sum(denominators)``.

    Args:
        numerators: ``[n]`` per-unit sums (e.g. a question's KL summed over its scored
            tokens [nat], a text's NLL [nat]).
        denominators: ``[n]`` per-unit weights > 0 (e.g. its number of tokens).

    Units are resampled with replacement, numerator and denominator together. Returns
    ``(nan, nan)`` for no unit.

    Raises:
        ValueError: if the lengths differ or a denominator is not positive.
    """
    x = np.asarray(numerators, dtype=np.float64).ravel()
    w = np.asarray(denominators, dtype=np.float64).ravel()
    if x.shape != w.shape:
        raise ValueError(f"`numerators` and `denominators` must have the same length, got {x.size} and {w.size}")
    if x.size == 0:
        return (math.nan, math.nan)
    if np.any(w <= 0):
        raise ValueError("`denominators` must be positive")
    if x.size == 1:
        v = float(x[0] / w[0])
        return (v, v)
    rng = _rng(seed)
    idx = rng.integers(0, x.size, size=(int(num_resamples), x.size))
    ratios = x[idx].sum(axis=1) / w[idx].sum(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(ratios, [a, 1.0 - a])
    return (float(lo), float(hi))


def paired_bootstrap(a, b, *, num_resamples: int = 2000, level: float = 0.95, seed=0) -> dict:
    """Mean of ``a - b`` over paired observations with a percentile bootstrap interval.

    Args:
        a, b: per-question values of two policies on the same questions (same order),
            e.g. 0/1 correctness or the NLL of the correct answer.

    Returns:
        ``{"diff": mean(a-b), "lo": ..., "hi": ..., "n": n, "p_le_0": share of resamples
        with diff <= 0}``.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    d = a - b
    if d.size == 0:
        return {"diff": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "p_le_0": math.nan}
    rng = _rng(seed)
    idx = rng.integers(0, d.size, size=(int(num_resamples), d.size))
    means = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return {
        "diff": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "n": int(d.size),
        "p_le_0": float(np.mean(means <= 0.0)),
    }


def pareto_front(cost, quality) -> np.ndarray:
    """Indices of the Pareto-optimal points, sorted by increasing cost.

    A point is dominated when another has cost <= and quality >= with at least one strict.
    Exact duplicates are all kept.

    Args:
        cost: ``[n]`` values to minimise (energy).
        quality: ``[n]`` values to maximise (accuracy; pass ``-nll`` for the NLL).
    """
    c = np.asarray(cost, dtype=np.float64).ravel()
    q = np.asarray(quality, dtype=np.float64).ravel()
    if c.shape != q.shape:
        raise ValueError("`cost` and `quality` must have the same length")
    keep = []
    for i in range(c.size):
        dominated = np.any((c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i])))
        if not dominated:
            keep.append(i)
    keep = np.asarray(keep, dtype=np.int64)
    return keep[np.lexsort((-q[keep], c[keep]))] if keep.size else keep
