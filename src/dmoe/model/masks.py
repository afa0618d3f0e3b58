"""Attention masks for one un-batched sequence, in the form transformers' attention functions take."""

from __future__ import annotations

import torch

__all__ = ["attention_mask_for", "cached_attention_mask"]


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


def cached_attention_mask(
    impl: str,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    dtype: torch.dtype,
    device: torch.device,
    *,
    sliding_window: int | None = None,
) -> torch.Tensor | None:
    """The 4-D mask ``[1, 1, S, P + S]`` of S new tokens attending a KV cache plus themselves.

    Query s may attend key t iff ``key_positions[t] <= query_positions[s]`` (causal on
    positions: every cached token, and the new tokens up to itself) and, with a sliding
    window W, ``query_positions[s] - key_positions[t] < W`` (transformers' rule). This is
    the mask of a plain causal sequence fed in pieces (prefill, then one token per step).

    Args:
        impl: ``config._attn_implementation`` (``"sdpa"``: bool mask, True = may attend;
            others: additive float mask of 0 / dtype min).
        query_positions: ``[S]`` int positions of the new tokens.
        key_positions: ``[P + S]`` int positions of every key (cached keys first, then the
            new tokens).
        sliding_window: W or None.

    Returns:
        None when every query may attend every key (one decoded token without a window;
        with SDPA only for one query), or, with SDPA and no cache (``P = 0``), when the mask is the causal triangle (SDPA's
        own causal path, as :func:`attention_mask_for` does); else the mask.

    Raises:
        ValueError: fewer keys than queries.
    """
    q = torch.as_tensor(query_positions).long().reshape(-1).to(device)
    k = torch.as_tensor(key_positions).long().reshape(-1).to(device)
    if k.numel() < q.numel():
        raise ValueError(f"`key_positions` ({k.numel()}) must include the {q.numel()} new tokens")
    window = int(sliding_window) if sliding_window else None
    # [S, P + S] True = may attend
    mask = k[None, :] <= q[:, None]
    if window is not None:
        mask = mask & ((q[:, None] - k[None, :]) < window)
    s = q.numel()
    # (SDPA reads a missing mask on several queries as causal, so None only for one query there)
    if (s == 1 or impl != "sdpa") and bool(mask.all()):
        return None
    if impl == "sdpa" and window is None and k.numel() == s and torch.equal(mask, torch.ones_like(mask).tril()):
        return None
    mask = mask[None, None]
    if impl == "sdpa":
        return mask
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, torch.finfo(dtype).min)
