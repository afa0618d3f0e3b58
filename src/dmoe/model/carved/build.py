"""Build a :class:`~dmoe.model.carved.moe.MoEModel` from a dense model, and cache it on disk.

Build (:func:`moefy_model`), one decoder layer at a time so that only one layer's
calibration activations are held in memory:

1. run the calibration tokens (packed into sequences of <= 256 tokens with block-diagonal
   causal masks) through the layer's attention block (dense model);
2. collect the FFN inputs ``x`` ``[N, H]`` and activations ``act(gate x) * up x`` ``[N, F]``;
3. MoEfication: partition the F neurons into K equal experts of co-activating neurons
   (:func:`~dmoe.model.carved.moefy.partition_neurons`), then permute the FFN's neurons so that
   expert j is the contiguous block ``[j F/K, (j+1) F/K)`` (a permutation of the
   intermediate neurons does not change the FFN; ``expert_parameters`` are then views);
4. router: targets ``p_j = ||FFN_j(x)|| / sum_k ||FFN_k(x)||``, fitted with
   :func:`~dmoe.model.carved.router.train_router`; its quality goes into the metadata;
5. advance the hidden states with the dense FFN output.

At the end the MoE model with every expert selected is checked against the dense model's
logits on a calibration sequence (max |diff| recorded as ``dense_check_max_abs_diff``; a
value above :data:`DENSE_CHECK_ATOL` means the architecture is not the Llama layout and
raises :class:`~dmoe.model.carved.moe.UnsupportedModelError`).

Cache (:func:`build_moe_model`): ``$DMOE_CACHE_DIR`` (default ``~/.cache/dmoe``) /
``<source name>-K<K>-<key>`` holding ``config.json``, the tokenizer files,
``model.safetensors`` (dense weights ``dense.*`` with the FFN neurons permuted,
``expert_neurons``, ``source_neuron_ids``, ``routers.<l>.weight|bias``) and ``meta.json``
(written last). The key hashes the source's content fingerprint, ``num_experts``, the
calibration set's content, ``seed``, the build hyper-parameters and :data:`BUILD_VERSION`.
A missing entry is built; an unreadable one (bad JSON, checksum mismatch, safetensors
error, missing tensors) is rebuilt with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...defaults import DEFAULT_NUM_EXPERTS
from ..calibration import (
    DEFAULT_CALIBRATION_TOKENS,
    as_id_tensors,
    calibration_spec,
    default_calibration_texts,
    tokenize_calibration,
)
from ..sources import BUILD_FORMAT, load_dense_model, read_intermediate_size, resolve_source
from .moe import COMBINE_MODES, MoEModel, UnsupportedModelError, check_supported
from .moefy import ffn_activations, partition_neurons
from .router import Router, router_targets, train_router

__all__ = [
    "BUILD_VERSION",
    "DENSE_CHECK_ATOL",
    "CacheDirError",
    "CacheCorruptError",
    "default_cache_dir",
    "moefy_model",
    "save_moe_model",
    "load_built_model",
    "build_moe_model",
    "load_moe_model",
]

log = logging.getLogger(__name__)

#: Bump when a code change alters what a build produces (invalidates cached builds).
BUILD_VERSION = 1
#: Max |logit difference| between the all-experts MoE model and the dense model above
#: which the build is rejected (measured 5e-5 to 8e-5 on SmolLM2-135M, whose logits reach ~36).
DENSE_CHECK_ATOL = 1e-3
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
KMEANS_ITERATIONS = 3
ROUTER_STEPS = 100
#: Calibration sequences are packed into sequences of at most this many tokens with a
#: block-diagonal causal mask (same hidden states, ~10x fewer small attention calls).
PACK_TOKENS = 256
ROUTER_LR = 0.02


class CacheDirError(OSError):
    """The cache directory cannot be created or written."""


class CacheCorruptError(OSError):
    """A cached build is incomplete or unreadable."""


def default_cache_dir() -> Path:
    """``$DMOE_CACHE_DIR`` or ``~/.cache/dmoe``."""
    env = os.environ.get("DMOE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dmoe"


def _check_num_experts(num_experts: Any, intermediate_size: int | None = None) -> int:
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive integer, got {num_experts!r}")
    if intermediate_size is not None and intermediate_size % num_experts != 0:
        raise ValueError(
            f"num_experts={num_experts} must divide the FFN intermediate size {intermediate_size} "
            "(every expert gets the same number of neurons)"
        )
    return int(num_experts)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


VERIFIED_SUFFIX = ".verified"


def _file_state(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _verified_sha256(path: Path, expected: str) -> str:
    """sha256 of ``path``, hashed once per version of the file: a stamp
    ``<file>.verified`` remembers the size, mtime and inode at which the file hashed to
    ``expected``; while they match, ``expected`` is returned without reading 540 MB again
    (every other change re-hashes, and a mismatch is reported by the caller)."""
    stamp = path.with_name(path.name + VERIFIED_SUFFIX)
    state = _file_state(path)
    try:
        entry = json.loads(stamp.read_text(encoding="utf-8"))
        if entry == {"sha256": expected, **state}:
            return expected
    except (OSError, ValueError):
        pass
    sha = _sha256_file(path)
    if sha == expected:
        try:
            tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"sha256": sha, **state}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, stamp)
        except OSError:
            pass  # a read-only cache: hash every time
    return sha


@contextlib.contextmanager
def _threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None: leave it).

    Used for the many small operations of the build (packed attention, clustering): one
    thread is nearly as fast there, and immune to the OpenMP barrier stalls that make
    them several times slower when other processes keep the cores busy.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pack(seqs: list[torch.Tensor], max_tokens: int = PACK_TOKENS):
    """Pack sequences into ``(ids, positions, mask_or_None)`` with block-diagonal causal masks.

    Each sequence keeps its own positions ``0..n-1`` and attends only to itself, so the
    hidden states equal those of separate passes.
    """
    groups: list[list[torch.Tensor]] = []
    for s in seqs:
        if groups and sum(len(t) for t in groups[-1]) + len(s) <= max_tokens:
            groups[-1].append(s)
        else:
            groups.append([s])
    packs = []
    for group in groups:
        ids = torch.cat(group)
        positions = torch.cat([torch.arange(len(t), device=ids.device) for t in group])
        if len(group) == 1:
            packs.append((ids, positions, None))
            continue
        mask = torch.zeros(len(ids), len(ids), dtype=torch.bool, device=ids.device)
        start = 0
        for t in group:
            n = len(t)
            mask[start : start + n, start : start + n] = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
            start += n
        packs.append((ids, positions, mask))
    return packs


def _permute_ffn_(mlp: torch.nn.Module, perm: torch.Tensor) -> None:
    """Reorder an FFN's intermediate neurons in place (the FFN function is unchanged)."""
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[perm])
        mlp.up_proj.weight.copy_(mlp.up_proj.weight[perm])
        mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, perm])


# --------------------------------------------------------------------------- build
@torch.no_grad()
def moefy_model(
    dense: torch.nn.Module,
    calibration_ids: Sequence,
    num_experts: int,
    *,
    tokenizer: Any = None,
    seed: int = 0,
    progress: bool = True,
    combine: str = "sum",
    kmeans_iterations: int = KMEANS_ITERATIONS,
    router_steps: int = ROUTER_STEPS,
    router_lr: float = ROUTER_LR,
    desc: str = "MoEfying",
) -> MoEModel:
    """MoEfy ``dense`` on calibration token ids (no caching); see the module docstring.

    ``dense`` is modified in place: each layer's FFN neurons are permuted so that the
    experts are contiguous blocks (the dense function is unchanged). Returns the
    :class:`MoEModel` (``expert_neurons[l, j] = range(j F/K, (j+1) F/K)``); its
    ``metadata`` holds per-layer router quality and ``source_neuron_ids`` (``[L, F]``:
    the original index of each permuted neuron) is kept as ``model.source_neuron_ids``.
    """
    from tqdm.auto import tqdm

    check_supported(dense)
    dense.eval()
    layers = dense.model.layers
    num_layers = len(layers)
    intermediate = layers[0].mlp.gate_proj.out_features
    k = _check_num_experts(num_experts, intermediate)
    seqs = as_id_tensors(calibration_ids)
    device = next(dense.parameters()).device
    seqs = [s.to(device) for s in seqs]
    vocab = dense.lm_head.out_features
    if any(int(s.max()) >= vocab or int(s.min()) < 0 for s in seqs):
        raise ValueError(f"calibration token ids must lie in [0, {vocab})")
    t0 = time.perf_counter()

    ref_ids = seqs[0][:128]
    ref_logits = dense(input_ids=ref_ids[None], use_cache=False).logits[0].float()

    blocks = torch.arange(intermediate).view(k, intermediate // k)
    moe = MoEModel(dense, blocks, combine=combine, tokenizer=tokenizer)
    packs = _pack(seqs)
    hidden = [moe.embed(ids) for ids, _, _ in packs]
    pos_emb = [moe.position_embeddings(positions) for _, positions, _ in packs]
    masks = [mask for _, _, mask in packs]
    lengths = [len(ids) for ids, _, _ in packs]
    source_ids = torch.empty(num_layers, intermediate, dtype=torch.long)
    routers: list[Router] = []
    reports: list[dict] = []

    timings = dict.fromkeys(("attention", "activations", "clustering", "expert_outputs", "router", "report"), 0.0)
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] += now - clock
        clock = now

    bar = tqdm(range(num_layers), desc=f"{desc} (K={k})", unit="layer", disable=not progress)
    for layer in bar:
        clock = time.perf_counter()
        with _threads(1):
            hidden = [moe.attention_block(layer, h, pe, mask) for h, pe, mask in zip(hidden, pos_emb, masks)]
        lap("attention")
        x = torch.cat([moe.ffn_input(layer, h) for h in hidden])  # [N, H]
        mlp = layers[layer].mlp
        act = ffn_activations(mlp, x)  # [N, F]
        lap("activations")
        with _threads(1):
            groups = partition_neurons(
                act, k, down_weight=mlp.down_proj.weight, iterations=kmeans_iterations, seed=seed + layer
            )
        lap("clustering")
        perm = groups.flatten().to(device)
        _permute_ffn_(mlp, perm)
        source_ids[layer] = perm.cpu()
        act = act[:, perm]
        down = mlp.down_proj.weight
        size = intermediate // k
        outs = torch.stack(
            [act[:, j * size : (j + 1) * size] @ down[:, j * size : (j + 1) * size].T for j in range(k)], 1
        )  # [N, K, H]
        del act
        full = outs.sum(1)
        targets = router_targets(outs.norm(dim=-1))
        lap("expert_outputs")
        fit = train_router(x, targets, steps=router_steps, lr=router_lr, seed=seed + layer)
        routers.append(fit.router)
        lap("router")

        full_norm = full.norm(dim=-1).clamp_min(1e-12)

        def top2_error(scores: torch.Tensor) -> float:
            top = scores.topk(min(2, k), dim=-1).indices
            sel = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
            approx = torch.einsum("nk,nkh->nh", sel.to(outs.dtype), outs)
            return float(((approx - full).norm(dim=-1) / full_norm).mean())

        reports.append(
            {
                "layer": layer,
                "router_top2_overlap": round(fit.heldout["topk_overlap"], 4),
                "router_top1_accuracy": round(fit.heldout["top1_accuracy"], 4),
                "router_kl": round(fit.heldout["kl"], 5),
                "router_top2_target_mass": round(fit.heldout["target_topk_mass"], 4),
                "oracle_top2_target_mass": round(fit.heldout["oracle_topk_mass"], 4),
                "top2_rel_error_router": round(top2_error(fit.router(x)), 4),
                "top2_rel_error_oracle": round(top2_error(targets), 4),
                "router_train_loss": round(fit.loss, 5),
            }
        )
        del outs, targets
        hidden = [h + f for h, f in zip(hidden, full.split(lengths))]
        del x, full
        lap("report")
        bar.set_postfix(top2_overlap=reports[-1]["router_top2_overlap"])
    bar.close()

    moe.routers = torch.nn.ModuleList(routers).to(device)
    moe.register_buffer("source_neuron_ids", source_ids, persistent=False)
    all_sel = torch.ones(num_layers, len(ref_ids), k, dtype=torch.bool, device=device)
    saved_combine, moe.combine = moe.combine, "sum"
    diff_sum = float((moe.forward_masked(ref_ids, selection=all_sel) - ref_logits).abs().max())
    diff_dense = float((moe.forward_masked(ref_ids) - ref_logits).abs().max())
    moe.combine = saved_combine
    diff = max(diff_sum, diff_dense)
    if not diff <= DENSE_CHECK_ATOL:
        raise UnsupportedModelError(
            f"{type(dense).__name__}: the MoE model with every expert selected differs from the dense model "
            f"by {diff:.3g} in the logits (> {DENSE_CHECK_ATOL}); its decoder layer is not the Llama layout "
            "that dmoe implements"
        )
    num_tokens = sum(lengths)
    moe.metadata.update(
        {
            "num_layers": num_layers,
            "num_experts": k,
            "hidden_size": moe.hidden_size,
            "intermediate_size": intermediate,
            "seed": int(seed),
            "calibration_num_sequences": len(seqs),
            "calibration_num_tokens": num_tokens,
            "kmeans_iterations": int(kmeans_iterations),
            "router_steps": int(router_steps),
            "router_lr": float(router_lr),
            "router_target": "p_j = ||FFN_j(x)|| / sum_k ||FFN_k(x)||",
            "router_quality_split": "held-out 10% of calibration tokens (top-2 overlap, top-1, KL); "
            "top2_rel_error_* on all calibration tokens: mean ||FFN(x) - sum of the top-2 experts|| / ||FFN(x)||",
            "layers": reports,
            "mean_router_top2_overlap": round(sum(r["router_top2_overlap"] for r in reports) / num_layers, 4),
            "dense_check_max_abs_diff": diff,
            "dense_check_tokens": len(ref_ids),
            "moefy_seconds": round(time.perf_counter() - t0, 2),
            "moefy_phase_seconds": {name: round(v, 2) for name, v in timings.items()},
        }
    )
    return moe


# --------------------------------------------------------------------------- save / load
def save_moe_model(model: MoEModel, directory: str | os.PathLike, meta: dict | None = None) -> dict:
    """Write ``config.json``, tokenizer, ``model.safetensors`` and ``meta.json`` (last) to ``directory``.

    Returns the metadata written (``meta`` plus format, tensor checksums and versions).
    """
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    dense = model.dense
    cfg = dense.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_commit_hash"):
        cfg.pop(key, None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    has_tokenizer = False
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(out))
        has_tokenizer = True
    tied = dense.lm_head.weight.data_ptr() == dense.model.embed_tokens.weight.data_ptr()
    tensors: dict[str, torch.Tensor] = {}
    for name, value in dense.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        tensors["dense." + name] = value.detach().contiguous()
    tensors["expert_neurons"] = model.expert_neurons.detach().cpu().contiguous()
    src_ids = getattr(model, "source_neuron_ids", None)
    if isinstance(src_ids, torch.Tensor):
        tensors["source_neuron_ids"] = src_ids.cpu().contiguous()
    for layer, router in enumerate(model.routers):
        for name, value in router.state_dict().items():
            tensors[f"routers.{layer}.{name}"] = value.detach().contiguous()
    save_file(tensors, str(out / MODEL_FILE), metadata={"format": "pt", "producer": "dmoe"})

    import transformers

    meta = dict(meta or {})
    meta.update(
        {
            "format": BUILD_FORMAT,
            "build_version": BUILD_VERSION,
            "num_layers": model.num_layers,
            "num_experts": model.num_experts,
            "tied_embeddings": bool(tied),
            "has_tokenizer": has_tokenizer,
            "router_class": "dmoe.model.router.Router",
            "files": {MODEL_FILE: {"size": (out / MODEL_FILE).stat().st_size, "sha256": _sha256_file(out / MODEL_FILE)}},
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
            },
        }
    )
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    os.replace(tmp, out / META_FILE)
    return meta


def load_built_model(
    directory: str | os.PathLike,
    *,
    combine: str = "sum",
    expected_key: str | None = None,
    verify: bool = True,
) -> MoEModel:
    """Load a build written by :func:`save_moe_model`.

    Raises :class:`CacheCorruptError` when anything is missing or unreadable, or when
    ``expected_key`` is given and differs from the stored key. ``verify`` checks the
    sha256 of ``model.safetensors`` against ``meta.json`` (about a second for 540 MB), once
    per version of the file (size, mtime, inode; see :func:`_verified_sha256`).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(directory)
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CacheCorruptError(f"{path / META_FILE}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != BUILD_FORMAT:
        raise CacheCorruptError(f"{path / META_FILE} is not a dmoe build description")
    if expected_key is not None and meta.get("key") != expected_key:
        raise CacheCorruptError(f"{path} holds key {meta.get('key')!r}, expected {expected_key!r}")
    model_file = path / MODEL_FILE
    try:
        info = meta["files"][MODEL_FILE]
        size, expected_size, expected_sha = model_file.stat().st_size, int(info["size"]), str(info["sha256"])
        sha = _verified_sha256(model_file, expected_sha) if verify and size == expected_size else None
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise CacheCorruptError(f"{model_file}: {exc}") from exc
    if size != expected_size:
        raise CacheCorruptError(f"{model_file} has {size} bytes, expected {expected_size}")
    if sha is not None and sha != expected_sha:
        raise CacheCorruptError(f"{model_file}: sha256 mismatch")
    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CacheCorruptError(f"{path / 'config.json'}: {exc}") from exc
    try:
        tensors = load_file(str(model_file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CacheCorruptError(f"{model_file}: {exc}") from exc

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from contextlib import nullcontext as no_init_weights
    with no_init_weights():
        dense = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    dense_sd = {name[len("dense.") :]: t for name, t in tensors.items() if name.startswith("dense.")}
    missing, unexpected = dense.load_state_dict(dense_sd, strict=False, assign=True)
    tied = bool(meta.get("tied_embeddings"))
    if tied:
        missing = [m for m in missing if m != "lm_head.weight"]
    if missing or unexpected:
        raise CacheCorruptError(f"{model_file}: missing tensors {missing[:5]}, unexpected {unexpected[:5]}")
    if tied:
        dense.lm_head.weight = dense.model.embed_tokens.weight
    dense.eval()
    dense.requires_grad_(False)
    num_layers = len(dense.model.layers)
    if "expert_neurons" not in tensors:
        raise CacheCorruptError(f"{model_file}: no expert_neurons tensor")
    expert_neurons = tensors["expert_neurons"]
    k = int(expert_neurons.shape[1]) if expert_neurons.ndim == 3 else -1
    routers = []
    for layer in range(num_layers):
        router = Router(dense.config.hidden_size, k)
        try:
            router.load_state_dict({n: tensors[f"routers.{layer}.{n}"] for n in ("weight", "bias")})
        except (KeyError, RuntimeError) as exc:
            raise CacheCorruptError(f"{model_file}: router {layer}: {exc}") from exc
        routers.append(router)
    tokenizer = None
    if meta.get("has_tokenizer"):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except Exception as exc:  # noqa: BLE001
            raise CacheCorruptError(f"{path}: tokenizer: {exc}") from exc
    try:
        model = MoEModel(dense, expert_neurons, routers, combine=combine, tokenizer=tokenizer, metadata=meta)
    except ValueError as exc:
        raise CacheCorruptError(f"{model_file}: {exc}") from exc
    if "source_neuron_ids" in tensors:
        model.register_buffer("source_neuron_ids", tensors["source_neuron_ids"], persistent=False)
    model.metadata["cache_path"] = str(path)
    return model


# --------------------------------------------------------------------------- cached entry points
def _prepare_build_dir(root: Path) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    except OSError as exc:
        raise CacheDirError(
            f"cache_dir {str(root)!r} is not writable ({type(exc).__name__}: {exc}); pass cache_dir=... "
            "or set DMOE_CACHE_DIR to a writable directory"
        ) from exc


def build_moe_model(
    source: str | os.PathLike | None = None,
    *,
    num_experts: int = DEFAULT_NUM_EXPERTS,
    cache_dir: str | os.PathLike | None = None,
    calibration_texts: Sequence[str] | None = None,
    calibration_ids: Sequence | None = None,
    max_calibration_tokens: int = DEFAULT_CALIBRATION_TOKENS,
    seed: int = 0,
    combine: str = "sum",
    progress: bool = True,
    rebuild: bool = False,
) -> MoEModel:
    """Return the MoE version of a dense model, from the cache or built (and cached) now.

    Args:
        source: None (default SmolLM2-135M-Instruct GGUF), a ``.gguf`` file, a local HF
            model directory, a dmoe build directory (loaded as is) or a hub id; see
            :mod:`dmoe.model.sources`.
        num_experts: K >= 1; must divide the FFN intermediate size (1536 for SmolLM2,
            so K in 1, 2, 3, 4, 6, 8, 12, 16, ...).
        cache_dir: cache root; default ``$DMOE_CACHE_DIR`` or ``~/.cache/dmoe``.
        calibration_texts: strings (or ``(context, continuation)`` pairs) to calibrate on,
            tokenised with the model's tokenizer up to ``max_calibration_tokens`` tokens;
            default the MMLU calibration subjects (:mod:`dmoe.model.calibration`).
        calibration_ids: token id sequences (1-D tensors or int lists) used as given,
            instead of texts (no tokenizer needed).
        seed: seeds the clustering and the router training split.
        combine: ``"sum"`` or ``"weighted"`` (see :class:`MoEModel`; not part of the key).
        progress: show tqdm progress bars while building.
        rebuild: ignore a cached build and build again.

    Raises:
        ValueError: bad ``num_experts`` (not a positive integer, or not dividing the
            intermediate size), bad calibration input, unsupported architecture.
        CacheDirError (an OSError): ``cache_dir`` cannot be created or written.
        FileNotFoundError / OSError: missing model files, unreachable hub id.
    """
    k = _check_num_experts(num_experts)
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
    if calibration_texts is not None and calibration_ids is not None:
        raise ValueError("pass calibration_texts or calibration_ids, not both")
    src = resolve_source(source)
    if src.kind == "dmoe":
        model = load_built_model(src.location, combine=combine)
        if model.num_experts != k:
            raise ValueError(
                f"num_experts={k} but the build at {src.location!r} has {model.num_experts} experts"
            )
        model.metadata["loaded_from_cache"] = True
        return model
    _check_num_experts(k, read_intermediate_size(src, cache_dir))

    spec = calibration_spec(calibration_texts, calibration_ids, max_tokens=max_calibration_tokens)
    key_inputs = {
        "build_version": BUILD_VERSION,
        "source": src.identity(),
        "num_experts": k,
        "seed": int(seed),
        "calibration": spec,
        "kmeans_iterations": KMEANS_ITERATIONS,
        "router": {"steps": ROUTER_STEPS, "lr": ROUTER_LR},
    }
    key = hashlib.sha256(json.dumps(key_inputs, sort_keys=True).encode()).hexdigest()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"{src.name}-K{k}-{key[:16]}"

    if not rebuild and target.exists():
        try:
            model = load_built_model(target, combine=combine, expected_key=key)
            model.metadata["loaded_from_cache"] = True
            log.info("loaded cached MoE model from %s", target)
            return model
        except CacheCorruptError as exc:
            warnings.warn(f"cached MoE model at {target} is unreadable ({exc}); rebuilding it", RuntimeWarning, stacklevel=2)

    build_dir = _prepare_build_dir(root)
    try:
        t0 = time.perf_counter()
        dense, tokenizer, _ = load_dense_model(src)
        load_seconds = time.perf_counter() - t0
        _check_num_experts(k, dense.model.layers[0].mlp.gate_proj.out_features)
        if calibration_ids is not None:
            ids = as_id_tensors(calibration_ids)
        else:
            texts = calibration_texts if calibration_texts is not None else default_calibration_texts()
            ids = tokenize_calibration(texts, tokenizer, max_tokens=max_calibration_tokens)
        model = moefy_model(
            dense, ids, k, tokenizer=tokenizer, seed=seed, progress=progress, combine=combine,
            desc=f"MoEfying {src.name}",
        )
        meta = dict(model.metadata)
        meta.update(
            {
                "key": key,
                "key_inputs": key_inputs,
                "source": {"kind": src.kind, "location": src.location, "gguf_file": src.gguf_file, "name": src.name},
                "dense_load_seconds": round(load_seconds, 2),
                "build_seconds": round(time.perf_counter() - t0, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        meta = save_moe_model(model, build_dir, meta)
        os.chmod(build_dir, 0o755)  # mkdtemp makes it private; a cache entry is ordinary data
        for f in build_dir.iterdir():
            os.chmod(f, 0o644)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(build_dir, target)
        except OSError:
            if not (target / META_FILE).exists():  # lost a race in an odd way: retry once
                shutil.rmtree(target, ignore_errors=True)
                os.replace(build_dir, target)
    finally:
        if build_dir.exists():
            shutil.rmtree(build_dir, ignore_errors=True)
    model.metadata = dict(meta, cache_path=str(target), loaded_from_cache=False)
    return model


def load_moe_model(
    source: str | os.PathLike | None = None,
    *,
    num_experts: int = DEFAULT_NUM_EXPERTS,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    progress: bool = True,
    combine: str = "sum",
) -> MoEModel:
    """The MoE model of ``source`` with the default calibration: cached, or built once.

    See :func:`build_moe_model` for the arguments. The first build of the default model
    takes a few minutes on 2 CPU cores; later calls load the cache in seconds.
    ``model.metadata`` holds the build description (``meta.json``), ``cache_path`` and
    ``loaded_from_cache``.
    """
    return build_moe_model(
        source, num_experts=num_experts, cache_dir=cache_dir, rebuild=rebuild, progress=progress, combine=combine
    )
