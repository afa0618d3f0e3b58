"""The hidden state on the wire: s0 of the model that runs (issue 16, item 4).

A token's hidden state crosses the air twice per selected remote expert (Section III-C);
its size s0 [byte] sets the communication energy ``P0 * 8*s0 / R_ij`` (eq 3) and the air
time ``s_ij * 8*s0 / R_ij`` (:mod:`dmoe.latency`). The paper takes s0 = 8 kB, Mixtral's
4,096 dims in 16 bits (Section VII-A; :class:`dmoe.system.SystemConfig`'s default, which
``dmoe reproduce`` keeps for the paper's figures). ``dmoe run`` charges the model that
runs: ``s0 = hidden size x bytes per element`` of a wire format:

=========  ====================  ===========================================================
format     s0 [byte]             note
=========  ====================  ===========================================================
``fp16``   2 H                   IEEE half precision (the default)
``bf16``   2 H                   bfloat16
``fp8``    H + 4                 FP8 (E4M3) with one fp32 scale per token (dynamic per-token
                                 scaling, as FP8 activation transfers are usually sent)
``int8``   H + 4                 symmetric int8 with one fp32 absmax scale per token
=========  ====================  ===========================================================

The 8-bit formats count their per-token fp32 scale (4 B): a receiver cannot dequantise a
hidden state without it. H is the model's hidden size (:attr:`dmoe.model.ExpertModel.hidden_size`):
576 for the default SmolLM2-135M, so s0 = 1,152 B in fp16 and 580 B in int8.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

__all__ = ["WIRE_DTYPES", "DEFAULT_WIRE_DTYPE", "WireFormat", "wire_format", "hidden_state_bytes",
           "resolve_hidden_state_bytes"]


@dataclass(frozen=True)
class WireFormat:
    """How one hidden state travels: ``bytes_per_element`` [byte] per dimension plus
    ``scale_bytes`` [byte] of per-token scale."""

    name: str
    bytes_per_element: int
    scale_bytes: int
    description: str

    def size(self, hidden_size: int) -> int:
        """s0 [byte] of one hidden state of ``hidden_size`` dimensions."""
        return int(hidden_size) * self.bytes_per_element + self.scale_bytes


#: the wire formats by name (module docstring)
WIRE_DTYPES: dict[str, WireFormat] = {
    "fp16": WireFormat("fp16", 2, 0, "IEEE half precision"),
    "bf16": WireFormat("bf16", 2, 0, "bfloat16"),
    "fp8": WireFormat("fp8", 1, 4, "FP8 E4M3 + one fp32 scale per token"),
    "int8": WireFormat("int8", 1, 4, "int8 + one fp32 absmax scale per token"),
}
DEFAULT_WIRE_DTYPE = "fp16"


def wire_format(name: str) -> WireFormat:
    """The :class:`WireFormat` called ``name`` (case-insensitive).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or name.lower() not in WIRE_DTYPES:
        raise ValueError(
            f"`wire_dtype` (--wire-dtype) must be one of {', '.join(WIRE_DTYPES)}, got {name!r}"
        )
    return WIRE_DTYPES[name.lower()]


def _check_size(label: str, value) -> int:
    """``value`` as a positive int; ``label`` names it in the error (backticks included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


def hidden_state_bytes(hidden_size: int, wire_dtype: str = DEFAULT_WIRE_DTYPE) -> int:
    """s0 [byte] of a hidden state of ``hidden_size`` dimensions sent as ``wire_dtype``
    (module docstring: 2 H for fp16/bf16, H + 4 for fp8/int8).

    Raises:
        ValueError: ``hidden_size`` not a positive integer, or an unknown ``wire_dtype``.
    """
    return wire_format(wire_dtype).size(_check_size("`hidden_size`", hidden_size))


def resolve_hidden_state_bytes(
    hidden_size: int,
    *,
    wire_dtype: str | None = None,
    explicit: int | None = None,
    system_bytes: int | None = None,
) -> tuple[int, str]:
    """s0 [byte] of a run and a sentence saying where it came from.

    Precedence: ``explicit`` (``--hidden-state-bytes``), then ``wire_dtype``
    (``--wire-dtype``) on the model's hidden size, then ``system_bytes`` (the s0 of a
    :class:`~dmoe.system.SystemConfig` the caller passed), then the model's hidden size in
    :data:`DEFAULT_WIRE_DTYPE`.

    Returns:
        ``(s0, source)``, e.g. ``(1152, "model hidden size 576 x fp16 (2 B)")``.

    Raises:
        ValueError: a non-positive or non-integer ``explicit`` / ``hidden_size``, or an
        unknown ``wire_dtype`` (listing the known ones).
    """
    if explicit is not None:
        s0 = _check_size("`hidden_state_bytes` (--hidden-state-bytes) [byte]", explicit)
        return s0, "set explicitly (--hidden-state-bytes)"
    if wire_dtype is None and system_bytes is not None:
        s0 = _check_size("`system.hidden_state_bytes` [byte]", system_bytes)
        return s0, "system.hidden_state_bytes of the SystemConfig given"
    fmt = wire_format(DEFAULT_WIRE_DTYPE if wire_dtype is None else wire_dtype)
    h = _check_size("`hidden_size`", hidden_size)
    scale = f" + {fmt.scale_bytes} B fp32 scale per token" if fmt.scale_bytes else ""
    return fmt.size(h), f"model hidden size {h} x {fmt.name} ({fmt.bytes_per_element} B){scale}"
