"""Layer importance measured, not assumed (issue 11): torch side.

* :func:`calibrate_importance` (``calibrate.py``) -- measure a model's importance profile
  (quality loss and energy of each QoS level at each window of layers) with
  ``forward_masked``, on the fixed calibration set;
* :func:`calibrate_cached` -- the same, cached beside the model build (``cache.py``),
  with the PNG heatmap (``plot.py``);
* :func:`load_profile_for` -- the cached profile of a model, checked against it.

The numpy side (the profile, the exact knapsack allocation, the calibrated policies) is
in :mod:`dmoe.optimize.qos_allocation`, :mod:`dmoe.optimize._knapsack` and
:mod:`dmoe.policies.calibrated`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dmoe.importance.cache import find_profile, load_profile_for, profile_dir, profile_path
from dmoe.importance.calibrate import (
    DEFAULT_NUM_QUESTIONS,
    DEFAULT_QOS_LEVELS,
    DEFAULT_WINDOW,
    calibrate_importance,
    calibration_questions,
    full_selection,
    layer_windows,
    level_costs,
)
from dmoe.importance.plot import plot_profile
from dmoe.optimize.qos_allocation import ImportanceProfile
from dmoe.system import SystemConfig

__all__ = [
    "DEFAULT_NUM_QUESTIONS",
    "DEFAULT_QOS_LEVELS",
    "DEFAULT_WINDOW",
    "calibrate_cached",
    "calibrate_importance",
    "calibration_questions",
    "find_profile",
    "full_selection",
    "layer_windows",
    "level_costs",
    "load_profile_for",
    "plot_profile",
    "profile_dir",
    "profile_path",
]


def calibrate_cached(
    model,
    *,
    qos: Sequence[float] = DEFAULT_QOS_LEVELS,
    max_experts: int = 2,
    window: int = DEFAULT_WINDOW,
    num_questions: int = DEFAULT_NUM_QUESTIONS,
    subjects: Sequence[str] | None = None,
    system: SystemConfig | None = None,
    seed: int = 0,
    base: str = "top",
    cache_dir=None,
    force: bool = False,
    progress: bool = True,
    log=None,
) -> tuple[ImportanceProfile, Path, bool]:
    """:func:`calibrate_importance` through the cache beside the model build
    (:func:`profile_path`: keyed by the build key and every setting below).

    Returns:
        ``(profile, json_path, reused)``; a PNG heatmap is written beside the JSON.

    Raises:
        ValueError: as :func:`calibrate_importance`.
    """
    system = system or SystemConfig(num_nodes=int(model.num_experts))
    settings = {
        "qos": sorted(float(z) for z in qos),
        "max_experts": int(max_experts),
        "window": int(window),
        "num_questions": int(num_questions),
        "subjects": None if subjects is None else sorted(subjects),
        "seed": int(seed),
        "base": base,
        "system": system.cache_dict(),  # the pre-rename key: cached profiles stay found
        "combine": getattr(model, "combine", "sum"),
    }
    path = profile_path(model, max_experts, settings, cache_dir)
    if not force and path.exists():
        try:
            prof = ImportanceProfile.load(path)
            if not path.with_suffix(".png").exists():
                plot_profile(prof, path.with_suffix(".png"))
            return prof, path, True
        except ValueError:
            pass  # unreadable: recompute
    prof = calibrate_importance(model, qos=qos, max_experts=max_experts, window=window, num_questions=num_questions,
                                subjects=subjects, system=system, seed=seed, base=base, progress=progress,
                                log=log)
    prof.save(path)
    plot_profile(prof, path.with_suffix(".png"))
    return prof, path, False
