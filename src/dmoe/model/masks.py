"""Attention masks for one un-batched sequence, in the form transformers' attention functions take."""

from __future__ import annotations

import torch

__all__ = ["attention_mask_for"]


def attention_mask_for(
    impl: str,
    attention_mask: torch.Tensor | None,
    seq_len: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    positions: torch.Tensor | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor | None:
    """The 4-D mask ``[1, 1, S, S]`` for attention implementation ``impl``.

    Args:
        impl: ``config._attn_implementation`` (``"sdpa"`` takes a bool mask, True = may
            attend; any other, e.g. ``"eager"``, an additive float mask of 0 / dtype min).
        attention_mask: bool ``[S, S]`` (True = query s may attend key s'), or None =
            causal. With SDPA, no sliding window and None, None is returned (SDPA applies
            the causal mask itself).
        positions: ``[S]`` position ids, needed with ``sliding_window``.
        sliding_window: W: query s may attend key s' only when ``pos[s] - pos[s'] < W``
            (transformers' sliding-window rule, on positions so that packed trees work).

    Raises:
        ValueError: a non-bool mask or a mask of the wrong shape.
    """
    window = int(sliding_window) if sliding_window else None
    if attention_mask is None:
        if window is None and (impl == "sdpa" or seq_len == 1):
            return None
        attention_mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    mask = attention_mask.to(device)
    if mask.dtype != torch.bool:
        raise ValueError("`attention_mask` must be a bool [S, S] tensor (True = may attend)")
    if mask.shape != (seq_len, seq_len):
        raise ValueError(f"`attention_mask` must be [S, S] = [{seq_len}, {seq_len}], got {tuple(mask.shape)}")
    if window is not None:
        if positions is None:
            raise ValueError("`positions` are needed for a sliding-window mask")
        pos = torch.as_tensor(positions, device=device).long().reshape(-1)
        mask = mask & ((pos[:, None] - pos[None, :]) < window)
    mask = mask[None, None]
    if impl == "sdpa":
        return mask
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, torch.finfo(dtype).min)
