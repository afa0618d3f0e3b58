"""Choosing the next token from the logits: greedy, or sampling with temperature and top-p.

Greedy decoding takes the arg max of the logits (ties: the lowest token id, as
``torch.argmax`` and transformers' greedy search do). Sampling draws from
``softmax(logits / T)`` restricted to the nucleus (top-p, Holtzman et al., "The Curious
Case of Neural Text Degeneration", ICLR 2020): the smallest set of most likely tokens whose
probability reaches p, renormalised; the most likely token is always kept. Each query has
its own ``torch.Generator`` seeded from ``numpy.random.SeedSequence([seed, query])``, so
a query's text depends only on the seed and its index, not on how queries are batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SamplingParams", "TokenSampler"]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen.

    Attributes:
        temperature: T >= 0; 0 is greedy decoding (the default).
        top_p: p in (0, 1]: the nucleus mass kept when sampling (1 keeps every token).
        seed: integer >= 0 seeding every query's generator.

    Raises:
        ValueError: a temperature that is negative or not finite, ``top_p`` outside
            (0, 1], a negative or non-integer seed.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        t, p = self.temperature, self.top_p
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not math.isfinite(t) \
                or t < 0:
            raise ValueError(f"`temperature` must be a finite number >= 0 (0 = greedy), got {t!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not math.isfinite(p) \
                or not 0 < p <= 1:
            raise ValueError(f"`top_p` must lie in (0, 1], got {p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """Temperature 0: the arg max."""
        return self.temperature == 0


class TokenSampler:
    """The next-token choice of one query.

    Args:
        params: :class:`SamplingParams`.
        query: the query's index (its generator's stream); an integer >= 0.
    """

    def __init__(self, params: SamplingParams, query: int) -> None:
        self.params = params
        self._gen = None
        if not params.greedy:
            seed = np.random.SeedSequence([int(params.seed), int(query)]).generate_state(1, dtype=np.uint64)[0]
            self._gen = torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution sampled from: ``[V] float64`` (one-hot at the arg max when greedy).

        Raises:
            ValueError: ``logits`` is not 1-D or holds NaN.
        """
        x = torch.as_tensor(logits).detach().to("cpu", torch.float64)
        if x.dim() != 1:
            raise ValueError(f"`logits` must be [V], got shape {tuple(x.shape)}")
        if bool(torch.isnan(x).any()):
            raise ValueError("`logits` hold NaN")
        if self.params.greedy:
            out = torch.zeros_like(x)
            out[int(torch.argmax(x))] = 1.0
            return out
        probs = torch.softmax(x / self.params.temperature, dim=-1)
        if self.params.top_p < 1:
            order = torch.argsort(probs, descending=True, stable=True)
            sorted_p = probs[order]
            # keep token i when the mass of the more likely tokens is still below p
            before = torch.cumsum(sorted_p, 0) - sorted_p
            keep = before < self.params.top_p
            keep[0] = True
            mask = torch.zeros_like(probs, dtype=torch.bool)
            mask[order[keep]] = True
            probs = torch.where(mask, probs, torch.zeros_like(probs))
            probs = probs / probs.sum()
        return probs

    def __call__(self, logits: torch.Tensor) -> int:
        """The next token id for ``logits`` ``[V]``."""
        if self.params.greedy:
            return int(torch.argmax(torch.as_tensor(logits).detach()))
        probs = self.distribution(logits)
        return int(torch.multinomial(probs, 1, generator=self._gen))
