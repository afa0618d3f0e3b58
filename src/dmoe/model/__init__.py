"""Torch side of dmoe: a dense Llama-family LM split into experts (MoEfication) with routers.

* :class:`MoEModel` (``moe.py``) — the pieces the DMoE runtime calls (attention blocks,
  gate scores, expert FFN slices, aggregation) and a centralised reference pass.
* :func:`load_moe_model` / :func:`build_moe_model` (``build.py``) — build once, cache as
  safetensors under ``$DMOE_CACHE_DIR`` (default ``~/.cache/dmoe``).
* ``moefy.py`` neuron clustering, ``router.py`` gates and their training, ``load.py``
  dense model sources (default SmolLM2-135M-Instruct GGUF, local dirs, hub ids),
  ``calibration.py`` the fixed calibration set.
"""

from .build import (
    CacheCorruptError,
    CacheDirError,
    build_moe_model,
    default_cache_dir,
    load_built_model,
    load_moe_model,
    moefy_model,
    save_moe_model,
)
from .load import default_gguf_path, load_dense_model, resolve_source
from .moe import COMBINE_MODES, MoEModel, UnsupportedModelError
from .moefy import balanced_kmeans, partition_neurons
from .router import Router, train_router

__all__ = [
    "COMBINE_MODES",
    "CacheCorruptError",
    "CacheDirError",
    "MoEModel",
    "Router",
    "UnsupportedModelError",
    "balanced_kmeans",
    "build_moe_model",
    "default_cache_dir",
    "default_gguf_path",
    "load_built_model",
    "load_dense_model",
    "load_moe_model",
    "moefy_model",
    "partition_neurons",
    "resolve_source",
    "save_moe_model",
    "train_router",
]
