"""Where importance profiles live: beside the model build, keyed like the build.

A profile of a cached build (``model.metadata["cache_path"]``, see
:mod:`dmoe.model.build`) is stored in that directory as
``importance-D<D>-<key16>.json`` (+ ``.png``), where the key hashes the build's key, K, D,
the QoS levels, the window, the calibration questions, the seed and the system
parameters. A model without a build directory (a transformers MoE checkpoint, a model built in
memory) stores its profiles under ``<cache_dir>/profiles/<model key16>/``
(:func:`model_key`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dmoe.optimize.qos_allocation import PROFILE_FORMAT, ImportanceProfile

__all__ = ["model_key", "profile_key", "profile_dir", "profile_path", "find_profile", "load_profile_for"]


def model_key(model) -> str:
    """The identity of ``model`` a profile is tied to: the carved build's key
    (``metadata["key"]``), else a sha256 of the model's source description (a real MoE
    checkpoint: its path/hub id and content fingerprint), family, L and K."""
    meta = dict(getattr(model, "metadata", {}) or {})
    if meta.get("key"):
        return str(meta["key"])
    payload = {
        "source": meta.get("source"),
        "family": getattr(model, "family", None),
        "model_type": meta.get("model_type"),
        "num_layers": int(model.num_layers),
        "num_experts": int(model.num_experts),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def profile_key(model, settings: dict) -> str:
    """sha256 of the model key, K, L and the calibration ``settings`` (JSON-able)."""
    payload = {
        "format": PROFILE_FORMAT,
        "model_key": model_key(model),
        "num_experts": int(model.num_experts),
        "num_layers": int(model.num_layers),
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def profile_dir(model, cache_dir=None) -> Path:
    """The build directory of ``model``, or ``<cache_dir>/profiles/<key16>``."""
    meta = dict(getattr(model, "metadata", {}) or {})
    path = meta.get("cache_path")
    if path and Path(path).is_dir():
        return Path(path)
    from dmoe.model.build import default_cache_dir

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "profiles" / model_key(model)[:16]


def profile_path(model, max_experts: int, settings: dict, cache_dir=None) -> Path:
    """``<profile_dir>/importance-D<D>-<key16>.json`` for these settings."""
    return profile_dir(model, cache_dir) / f"importance-D{int(max_experts)}-{profile_key(model, settings)[:16]}.json"


def find_profile(model, max_experts: int, cache_dir=None) -> Path | None:
    """The cached profile of ``model`` for D = ``max_experts`` measured with the most
    forward passes (the most calibration data; a ``--quick`` experiment's small profile
    never shadows a full calibration), the newest among equals; None when there is none."""
    d = profile_dir(model, cache_dir)
    if not d.is_dir():
        return None

    def rank(path: Path):
        try:
            passes = int(json.loads(path.read_text(encoding="utf-8")).get("config", {}).get("passes", 0))
        except (OSError, ValueError, AttributeError):
            passes = -1  # unreadable: last resort (loading it reports the problem)
        return passes, path.stat().st_mtime

    found = sorted(d.glob(f"importance-D{int(max_experts)}-*.json"), key=rank)
    return found[-1] if found else None


def load_profile_for(model, max_experts: int, *, path=None, cache_dir=None) -> ImportanceProfile:
    """Load the profile at ``path`` (or the newest cached one) and check it fits ``model``.

    Raises:
        ValueError: no profile (telling the user to run ``dmoe calibrate``), an
        unreadable file, or a profile for another model, K, L or D (naming the argument).
    """
    p = Path(path) if path is not None else find_profile(model, max_experts, cache_dir)
    if p is None:
        raise ValueError(
            f"no layer-importance profile with D = {max_experts} for this model in {profile_dir(model, cache_dir)}: "
            f"run `dmoe calibrate -K {int(model.num_experts)} -D {max_experts}` first"
        )
    prof = ImportanceProfile.load(p)
    prof.check_model(num_layers=model.num_layers, num_experts=model.num_experts, model_key=model_key(model),
                     max_experts=max_experts)
    return prof
