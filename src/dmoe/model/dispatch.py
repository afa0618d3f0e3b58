"""One entry point for every expert model: detect an MoE checkpoint by its ``model_type``
and dispatch to the loader of its kind.

:func:`inspect_checkpoint` reads only ``config.json`` (a local directory) or the hub
config; :func:`load_expert_model` then loads a supported transformers MoE family as an
:class:`~dmoe.model.hf_moe.HFMoEModel`, or carves a dense model (the default SmolLM2, a
GGUF file, a dense Llama-family directory or hub id, or an existing dmoe build) into a
:class:`~dmoe.model.carved.MoEModel` (built once, cached).

Named ``dmoe/model/loader.py`` until issue 19 (beside ``load.py``, now
:mod:`dmoe.model.sources`); that path re-exports these names for one release with a
DeprecationWarning.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .hf_moe.families import (
    KNOWN_UNSUPPORTED_MOE,
    MOE_CONFIG_KEYS,
    FamilySpec,
    family_of,
    supported_families_text,
)
from ..defaults import DEFAULT_NUM_EXPERTS
from .interface import ExpertModel, UnsupportedModelError
from .sources import ModelSource, resolve_source

__all__ = ["CheckpointInfo", "inspect_checkpoint", "load_expert_model", "load_moe_model"]

#: K of the carved default when ``num_experts`` is not given: the CLI's (:mod:`dmoe.defaults`)
DEFAULT_CARVED_EXPERTS = DEFAULT_NUM_EXPERTS


@dataclass(frozen=True)
class CheckpointInfo:
    """What a model source is, read without loading weights.

    Attributes:
        kind: ``"moe"`` (a supported transformers MoE family) or ``"carved"`` (a dense
            model to carve, or an existing dmoe build).
        source: the resolved :class:`~dmoe.model.sources.ModelSource`.
        family: the family spec (``kind == "moe"``), else None.
        num_experts: K routed experts per layer: from the config (``"moe"``) or from an
            existing dmoe build's ``meta.json`` (``"carved"``, ``source.kind == "dmoe"``),
            else None (a dense model, carved into any K).
        native_top_k: the config's ``num_experts_per_tok`` (``"moe"``), else None.
    """

    kind: str
    source: ModelSource
    family: FamilySpec | None = None
    num_experts: int | None = None
    native_top_k: int | None = None


def _read_config(src: ModelSource) -> dict[str, Any] | None:
    if src.kind == "hf_dir":
        path = Path(src.location) / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read {str(path)!r} ({type(exc).__name__}: {exc})") from exc
        if not isinstance(cfg, dict):
            raise OSError(f"{str(path)!r} does not hold a JSON object")
        return cfg
    if src.kind == "hub":
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(src.location).to_dict()
        except Exception as exc:  # noqa: BLE001
            raise OSError(
                f"could not read the config of {src.location!r} from the Hugging Face Hub "
                f"({type(exc).__name__}: {exc}); without network access pass a local model directory"
            ) from exc
    return None


def _num_routed(cfg: dict[str, Any]) -> int | None:
    for key in ("num_local_experts", "n_routed_experts", "num_experts", "moe_num_experts"):
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_native_top_k(top_k, num_experts, *, where) -> None:
    """Refuse a config whose ``num_experts_per_tok`` is not an integer in [1, K] (before any weight loads).

    Raises:
        UnsupportedModelError: naming the checkpoint, the value and the rule.
    """
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise UnsupportedModelError(
            f"checkpoint {where!r}: `num_experts_per_tok` must be an integer, got {top_k!r}")
    k = num_experts if isinstance(num_experts, int) and not isinstance(num_experts, bool) else None
    if top_k < 1 or (k is not None and top_k > k):
        rule = f"[1, {k}] (its number of routed experts)" if k is not None else ">= 1"
        raise UnsupportedModelError(
            f"checkpoint {where!r}: `num_experts_per_tok` = {top_k} must lie in {rule}")


def _build_num_experts(src: ModelSource) -> int | None:
    """K of an existing dmoe build (its ``meta.json``), or None when unreadable."""
    try:
        k = json.loads((Path(src.location) / "meta.json").read_text())["num_experts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else None


def inspect_checkpoint(source: str | os.PathLike | ModelSource | None = None) -> CheckpointInfo:
    """Classify ``source`` from its config only.

    Raises:
        FileNotFoundError: a path that does not exist, a directory without ``config.json``
            or without weight files (``*.safetensors`` / ``*.bin``).
        UnsupportedModelError: a Mixture-of-Experts ``model_type`` that is not supported
            (the message names the supported families).
        OSError: an unreadable config or an unreachable hub id.
    """
    src = source if isinstance(source, ModelSource) else resolve_source(source)
    if src.kind == "dmoe":
        return CheckpointInfo("carved", src, num_experts=_build_num_experts(src))
    cfg = _read_config(src)
    if cfg is None:
        return CheckpointInfo("carved", src)
    model_type = str(cfg.get("model_type", ""))
    spec = family_of(model_type)
    if spec is not None:
        k = _num_routed(cfg)
        top_k = cfg.get("num_experts_per_tok")
        check_native_top_k(top_k, k, where=src.location)
        return CheckpointInfo("moe", src, spec, k, int(top_k) if isinstance(top_k, int) else None)
    moe_like = any(isinstance(cfg.get(key), int) and cfg[key] > 1 for key in MOE_CONFIG_KEYS)
    if model_type in KNOWN_UNSUPPORTED_MOE or moe_like:
        raise UnsupportedModelError(
            f"model source {src.location!r} is a Mixture-of-Experts checkpoint of type {model_type!r}, "
            f"which dmoe does not support; supported families: {supported_families_text()} "
            "(dense Llama-family models are carved into experts)"
        )
    return CheckpointInfo("carved", src)


def load_expert_model(
    source: str | os.PathLike | None = None,
    *,
    num_experts: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    progress: bool = True,
    combine: str | None = None,
    device: str | torch.device | None = None,
) -> ExpertModel:
    """The expert model of ``source``: a real MoE checkpoint as is, or a dense model carved.

    Args:
        source: None (SmolLM2-135M-Instruct carved), a ``.gguf`` file, a local directory
            (transformers checkpoint or dmoe build) or a hub id.
        num_experts: K. For a real MoE it must be None or equal the checkpoint's number
            of routed experts; for a carved model default
            :data:`dmoe.defaults.DEFAULT_NUM_EXPERTS` = 32, as ``dmoe run`` (must divide the
            FFN size; the paper's K = 8 is ``num_experts=8``).
        cache_dir, rebuild, progress: the carved build's cache (see
            :func:`dmoe.model.carved.build.build_moe_model`).
        combine: carved model only: ``"sum"`` (default) or ``"weighted"`` (eq 8); a real
            MoE always combines with its family's own weights (None or ``"family"``).
        device: where the model runs (default CPU; e.g. ``"cuda"``).

    Raises:
        ValueError: ``num_experts`` contradicting the checkpoint, a ``combine`` that does not
            apply, an unsupported architecture (:class:`UnsupportedModelError`).
        FileNotFoundError / OSError: missing files, unreadable weights, unreachable hub id.
    """
    info = inspect_checkpoint(source)
    if info.kind == "moe":
        if num_experts is not None and info.num_experts is not None and int(num_experts) != info.num_experts:
            raise ValueError(
                f"`num_experts` (--num-experts/-K) = {num_experts} contradicts the checkpoint: this "
                f"{info.family.label} model has K = {info.num_experts} routed experts per layer (one per node); "
                "omit --num-experts"
            )
        if combine not in (None, "family"):
            raise ValueError(
                f"`combine` (--combine) = {combine!r} applies to the carved model only; a {info.family.label} "
                "checkpoint combines its experts with its own weights"
            )
        from .hf_moe.load import load_hf_moe_model

        return load_hf_moe_model(info.source, device=device)
    from .carved.build import load_moe_model as _load_carved

    if num_experts is None:  # an existing build: its own K
        num_experts = info.num_experts
    model = _load_carved(
        source, num_experts=DEFAULT_CARVED_EXPERTS if num_experts is None else num_experts,
        cache_dir=cache_dir, rebuild=rebuild, progress=progress, combine=combine or "sum",
    )
    if device is not None:
        model.to(device)
    return model


#: ``dmoe.load_moe_model``: the same entry point (kept under its old name).
load_moe_model = load_expert_model
