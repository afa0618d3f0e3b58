"""Torch side of dmoe: expert models behind one interface (Section III-C).

* ``interface.py`` — :class:`ExpertModel`, what the runtime, the policies' inputs and the
  evaluation use (embedding, attention blocks, FFN input, gate scores g, expert FFNs,
  always-on part, aggregation, logits, centralised reference pass).
* ``carved/`` — the default: a dense Llama-family model cut into K FFN slices with
  trained routers (:class:`MoEModel`; ``build.py`` builds and caches it, ``moefy.py``
  clusters neurons, ``router.py`` trains gates).
* ``hf_moe/`` — real transformers MoE checkpoints (Mixtral, Qwen2/3-MoE, OLMoE,
  DeepSeek-V3, GPT-OSS, Granite-MoE(Shared)): :class:`HFMoEModel`.
* ``dispatch.py`` — :func:`load_expert_model`: detect an MoE checkpoint by its
  ``config.json`` ``model_type`` and load it, or carve a dense model (cached).
* ``sources.py`` model sources and the dense base model, ``calibration.py`` the fixed
  calibration set, ``masks.py`` attention masks.

``dmoe.model.load`` and ``dmoe.model.loader`` (the names of ``sources.py`` and
``dispatch.py`` before issue 19) re-export for one release with a DeprecationWarning.

``dmoe.model.moe``, ``.build``, ``.moefy`` and ``.router`` remain importable: they are
the modules of ``dmoe.model.carved``.
"""

import sys as _sys

from . import carved as _carved
from .carved import build as _build
from .carved import moe as _moe
from .carved import moefy as _moefy
from .carved import router as _router
from .carved import (
    COMBINE_MODES,
    CacheCorruptError,
    CacheDirError,
    MoEModel,
    Router,
    balanced_kmeans,
    build_moe_model,
    default_cache_dir,
    load_built_model,
    moefy_model,
    partition_neurons,
    save_moe_model,
    train_router,
)
from .hf_moe import SUPPORTED_MODEL_TYPES, HFMoEModel, load_hf_moe_model
from .interface import ExpertModel, RouterOutputError, UnsupportedModelError
from .sources import default_gguf_path, load_dense_model, resolve_source
from .dispatch import CheckpointInfo, inspect_checkpoint, load_expert_model, load_moe_model

# backwards-compatible module paths (dmoe.model.moe, dmoe.model.build, ...)
for _name, _module in (("moe", _moe), ("build", _build), ("moefy", _moefy), ("router", _router)):
    _sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module

__all__ = [
    "COMBINE_MODES",
    "CacheCorruptError",
    "CacheDirError",
    "CheckpointInfo",
    "ExpertModel",
    "HFMoEModel",
    "MoEModel",
    "Router",
    "RouterOutputError",
    "SUPPORTED_MODEL_TYPES",
    "UnsupportedModelError",
    "balanced_kmeans",
    "build_moe_model",
    "default_cache_dir",
    "default_gguf_path",
    "inspect_checkpoint",
    "load_built_model",
    "load_dense_model",
    "load_expert_model",
    "load_hf_moe_model",
    "load_moe_model",
    "moefy_model",
    "partition_neurons",
    "resolve_source",
    "save_moe_model",
    "train_router",
]
