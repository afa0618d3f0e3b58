"""s0 of the model that runs (issue 16, item 4): hidden size x bytes per element on the wire."""

from __future__ import annotations

import pytest

from dmoe.wire import DEFAULT_WIRE_DTYPE, WIRE_DTYPES, hidden_state_bytes, resolve_hidden_state_bytes, wire_format


@pytest.mark.parametrize(
    "dtype, expected",
    # by hand: 576 dims x 2 B; 576 x 1 B + a 4 B fp32 scale
    [("fp16", 1152), ("bf16", 1152), ("fp8", 580), ("int8", 580), ("FP16", 1152), ("Int8", 580)],
)
def test_smollm2_hidden_state_on_the_wire(dtype, expected):
    assert hidden_state_bytes(576, dtype) == expected


def test_mixtral_in_fp16_is_the_papers_8_kB():
    assert hidden_state_bytes(4096, "fp16") == 8192 == hidden_state_bytes(4096)
    assert DEFAULT_WIRE_DTYPE == "fp16"


def test_every_format_is_bytes_per_element_times_h_plus_its_scale():
    for name, fmt in WIRE_DTYPES.items():
        for h in (1, 32, 576, 4096, 7168):
            assert hidden_state_bytes(h, name) == h * fmt.bytes_per_element + fmt.scale_bytes
    assert {n: (f.bytes_per_element, f.scale_bytes) for n, f in WIRE_DTYPES.items()} == {
        "fp16": (2, 0), "bf16": (2, 0), "fp8": (1, 4), "int8": (1, 4)}


@pytest.mark.parametrize("bad", ["fp4", "float16", "", None, 16])
def test_unknown_wire_dtype_lists_the_known_ones(bad):
    with pytest.raises(ValueError) as info:
        wire_format(bad)
    msg = str(info.value)
    assert "`wire_dtype`" in msg and all(n in msg for n in ("fp16", "bf16", "fp8", "int8"))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "576", None])
def test_hidden_size_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="`hidden_size` must be a positive integer"):
        hidden_state_bytes(bad)


def test_precedence_and_the_recorded_source():
    assert resolve_hidden_state_bytes(576) == (1152, "model hidden size 576 x fp16 (2 B)")
    assert resolve_hidden_state_bytes(576, wire_dtype="int8") == (
        580, "model hidden size 576 x int8 (1 B) + 4 B fp32 scale per token")
    # an explicit s0 wins over everything
    assert resolve_hidden_state_bytes(576, wire_dtype="int8", explicit=1000, system_bytes=8192) == (
        1000, "set explicitly (--hidden-state-bytes)")
    # a SystemConfig's s0 is kept unless a wire dtype is asked for
    assert resolve_hidden_state_bytes(576, system_bytes=8192) == (
        8192, "system.hidden_state_bytes of the SystemConfig given")
    assert resolve_hidden_state_bytes(576, wire_dtype="bf16", system_bytes=8192)[0] == 1152


@pytest.mark.parametrize("bad", [0, -8, 1.5, False])
def test_explicit_s0_must_be_positive(bad):
    with pytest.raises(ValueError, match=r"`hidden_state_bytes` \(--hidden-state-bytes\) \[byte\] must be a positive"):
        resolve_hidden_state_bytes(576, explicit=bad)
