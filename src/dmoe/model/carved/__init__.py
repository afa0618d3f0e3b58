"""The carved expert model: a dense Llama-family LM cut into K FFN slices (MoEfication).

* :class:`MoEModel` (``moe.py``) — the :class:`~dmoe.model.interface.ExpertModel` pieces
  and a centralised reference pass;
* ``build.py`` — build once (``moefy.py`` neuron clustering, ``router.py`` gates) and
  cache as safetensors under ``$DMOE_CACHE_DIR`` (default ``~/.cache/dmoe``).
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
from .moe import COMBINE_MODES, MoEModel, check_supported
from .moefy import balanced_kmeans, partition_neurons
from .router import Router, train_router

__all__ = [
    "COMBINE_MODES",
    "CacheCorruptError",
    "CacheDirError",
    "MoEModel",
    "Router",
    "balanced_kmeans",
    "build_moe_model",
    "check_supported",
    "default_cache_dir",
    "load_built_model",
    "load_moe_model",
    "moefy_model",
    "partition_neurons",
    "save_moe_model",
    "train_router",
]
