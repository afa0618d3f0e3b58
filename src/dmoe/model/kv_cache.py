"""The key/value cache of one query's attention blocks, held by the query's host node.

In decoding (issue 17) every step feeds one new token per query. Eq (6) gives every node
every attention block, so the host node of a query keeps, at every layer, the keys and
values of the query's tokens so far and runs each new token's attention against them
(the standard KV cache of autoregressive transformers). :class:`KVCache` wraps
transformers' :class:`~transformers.DynamicCache` (the attention modules of every
supported family write their keys and values into it themselves, in their own layout:
DeepSeek-V3 caches its compressed latents) and records the rotary position of every
cached key, from which :func:`dmoe.model.masks.cached_attention_mask` builds the mask of
the new tokens (causal on positions, plus the family's sliding window).

A cache lives only at its node; it is never sent. When the node dies the cache is lost
and the server rebuilds it (:mod:`dmoe.runtime.generate`).
"""

from __future__ import annotations

import inspect

import torch

__all__ = ["KVCache", "attention_cache_kwargs", "check_cache_arguments"]


class KVCache:
    """Keys, values and key positions of one query at every layer.

    Attributes:
        kv: the transformers ``DynamicCache`` the attention modules update.
    """

    def __init__(self) -> None:
        from transformers import DynamicCache

        self.kv = DynamicCache()
        # per layer: [P] int64 rotary positions of the cached keys
        self._positions: dict[int, torch.Tensor] = {}

    def num_tokens(self, layer: int) -> int:
        """Tokens cached at ``layer`` (0 before its first attention)."""
        p = self._positions.get(int(layer))
        return 0 if p is None else int(p.numel())

    def key_positions(self, layer: int) -> torch.Tensor:
        """``[P] int64`` positions of the keys cached at ``layer``."""
        p = self._positions.get(int(layer))
        return torch.zeros(0, dtype=torch.long) if p is None else p

    def append_positions(self, layer: int, positions: torch.Tensor) -> torch.Tensor:
        """Record that the tokens at ``positions`` ``[S]`` join ``layer``'s cache; returns the
        positions of every key the new tokens attend over, ``[P + S] int64`` (cached first).

        Raises:
            ValueError: ``positions`` is not 1-D.
        """
        pos = torch.as_tensor(positions)
        if pos.dim() != 1:
            raise ValueError(f"`positions` must be [S], got shape {tuple(pos.shape)}")
        pos = pos.long().cpu()
        old = self._positions.get(int(layer))
        keys = pos if old is None else torch.cat([old, pos])
        self._positions[int(layer)] = keys
        return keys


_CACHE_KWARG: dict[type, str] = {}


def attention_cache_kwargs(module: torch.nn.Module, cache: KVCache) -> dict:
    """``{name: cache.kv}`` for calling a transformers attention ``module`` with the cache.

    transformers >= 5.24 names the argument ``cache`` (``past_key_values`` is deprecated),
    earlier 5.x releases ``past_key_values``; the name is read from the module's signature
    once per class.
    """
    cls = type(module)
    name = _CACHE_KWARG.get(cls)
    if name is None:
        params = inspect.signature(module.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        _CACHE_KWARG[cls] = name
    return {name: cache.kv}


def check_cache_arguments(attention_mask, positions) -> None:
    """What an attention block needs with a KV cache: ``positions`` and no ``attention_mask``.

    Raises:
        ValueError: ``positions`` is None, or an ``attention_mask`` is given (the cache's
            mask is causal on positions, :func:`dmoe.model.masks.cached_attention_mask`).
    """
    if positions is None:
        raise ValueError("`positions` ([S] positions of the new tokens) are needed with a `cache`")
    if attention_mask is not None:
        raise ValueError("`attention_mask` cannot be combined with a `cache` (the cache's mask is causal on positions)")
