"""Load a transformers Mixture-of-Experts checkpoint (local directory or hub id) as an HFMoEModel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..interface import UnsupportedModelError
from ..sources import ModelSource, _load_tokenizer, resolve_source
from .families import family_of, supported_families_text
from .model import HFMoEModel

__all__ = ["load_hf_moe_model"]


def load_hf_moe_model(
    source: str | os.PathLike | ModelSource,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> HFMoEModel:
    """Load a supported MoE checkpoint with ``AutoModelForCausalLM.from_pretrained`` (eval, no grad).

    Args:
        source: a local directory (``config.json`` + ``*.safetensors``), a hub id (needs the
            network or a populated HF cache) or a resolved :class:`~dmoe.model.sources.ModelSource`.
        device: where to put the weights (default CPU; ``"cuda"`` when present).
        dtype: weight dtype (default float32; the equivalence tests use fp32).

    Raises:
        UnsupportedModelError: the checkpoint's ``model_type`` is not a supported family.
        FileNotFoundError: a local directory without ``config.json`` or weight files.
        OSError: unreadable weights, or a hub id that cannot be fetched.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    src = source if isinstance(source, ModelSource) else resolve_source(source)
    if src.kind not in ("hf_dir", "hub"):
        raise UnsupportedModelError(
            f"model source {src.location!r} ({src.kind}) is not a transformers MoE checkpoint; "
            f"supported families: {supported_families_text()}"
        )
    try:
        config = AutoConfig.from_pretrained(src.location)
    except Exception as exc:  # noqa: BLE001 - hub / parse errors become one clear OSError
        raise OSError(f"cannot read the config of {src.location!r} ({type(exc).__name__}: {exc})") from exc
    spec = family_of(getattr(config, "model_type", ""))
    if spec is None:
        raise UnsupportedModelError(
            f"model type {getattr(config, 'model_type', None)!r} of {src.location!r} is not a supported "
            f"Mixture-of-Experts family; supported: {supported_families_text()}"
        )
    try:
        hf = AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        where = "local directory" if src.kind == "hf_dir" else "Hugging Face Hub id"
        raise OSError(
            f"could not load the {spec.label} weights from {where} {src.location!r} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    hf.eval()
    hf.requires_grad_(False)
    if device is not None:
        hf.to(device)
    tokenizer = _load_tokenizer(src.location)
    meta: dict[str, Any] = {
        "source": {"kind": src.kind, "location": src.location, "name": src.name},
        "model_type": spec.family,
        "dtype": str(dtype).replace("torch.", ""),
        "num_parameters": int(sum(p.numel() for p in hf.parameters())),
        "has_tokenizer": tokenizer is not None,
    }
    if src.kind == "hf_dir":
        meta["source"]["identity"] = src.identity()
        meta["source"]["location"] = str(Path(src.location))
    return HFMoEModel(hf, spec, tokenizer=tokenizer, metadata=meta)
