"""token_kl and FullReference.token_kl (issue 18): bit for bit the float64 formula of before,
the full side's log-probabilities kept per question within LOG_PROB_CACHE_BYTES, the same
errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmoe.runtime import quality
from dmoe.runtime.quality import FullReference, token_kl


def _before(full, policy):
    """The implementation before issue 18 (the oracle)."""
    lp = torch.log_softmax(full.detach().double().cpu(), dim=-1)
    lq = torch.log_softmax(policy.detach().double().cpu(), dim=-1)
    if not (torch.isfinite(lp).all() and torch.isfinite(lq).all()):
        raise ValueError("`full_logits` and `policy_logits` must be finite")
    return (lp.exp() * (lp - lq)).sum(dim=-1).clamp_min(0.0)


def _reference(logits):
    n = len(logits)
    return FullReference(tuple(logits), np.zeros((n, 4)), np.zeros(n, dtype=np.int64))


def _draw(rng, rows, vocab, dtype, scale):
    return torch.as_tensor(rng.normal(0.0, scale, (rows, vocab))).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_same_bits_as_before(dtype):
    rng = np.random.default_rng(0)
    for trial in range(200):
        rows, vocab = int(rng.integers(1, 6)), int(rng.integers(2, 300))
        scale = float(10.0 ** rng.uniform(-3, 4 if dtype != torch.float16 else 3))
        full = [_draw(rng, rows, vocab, dtype, scale) for _ in range(3)]
        ref = _reference(full)
        for _ in range(3):  # the second and third policy find the cached log-probabilities
            for i, f in enumerate(full):
                pol = _draw(rng, rows, vocab, dtype, scale)
                expected = _before(f, pol)
                assert torch.equal(token_kl(f, pol), expected)
                assert torch.equal(ref.token_kl(i, pol), expected)
    assert set(ref.__dict__["_log_probs"]) == {0, 1, 2}


def test_extreme_float32_logits_are_finite_both_ways():
    big = torch.tensor([[3.0e38, -3.0e38, 0.0]], dtype=torch.float32)
    assert torch.equal(token_kl(big, big.flip(-1)), _before(big, big.flip(-1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_raises_on_either_side(dtype, bad):
    good = torch.zeros(2, 3, dtype=dtype)
    worse = good.clone()
    worse[1, 2] = bad
    for full, pol in ((worse, good), (good, worse)):
        with pytest.raises(ValueError, match="must be finite"):
            token_kl(full, pol)
        with pytest.raises(ValueError, match="must be finite"):
            _reference([full]).token_kl(0, pol)


def test_float64_overflowing_logits_still_raise():
    # finite float64 logits whose differences overflow give -inf log-probabilities: an error as before
    x = torch.tensor([[1e308, -1e308]], dtype=torch.float64)
    with pytest.raises(ValueError, match="must be finite"):
        _before(x, torch.zeros(1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="must be finite"):
        token_kl(x, torch.zeros(1, 2, dtype=torch.float64))


def test_shape_errors_even_with_cached_log_probs():
    ref = _reference([torch.zeros(2, 3)])
    ref.token_kl(0, torch.ones(2, 3))
    for bad in (torch.zeros(2, 4), torch.zeros(3, 3), torch.zeros(3)):
        with pytest.raises(ValueError, match="`full_logits` and `policy_logits` must both be"):
            ref.token_kl(0, bad)


def test_no_cache_above_the_byte_limit(monkeypatch):
    rng = np.random.default_rng(1)
    full = [_draw(rng, 4, 50, torch.float32, 3.0) for _ in range(2)]
    monkeypatch.setattr(quality, "LOG_PROB_CACHE_BYTES", 8 * 4 * 50 * 2 - 1)
    ref = _reference(full)
    pol = _draw(rng, 4, 50, torch.float32, 3.0)
    assert torch.equal(ref.token_kl(1, pol), _before(full[1], pol))
    assert ref.__dict__["_log_probs"] == {}
    monkeypatch.setattr(quality, "LOG_PROB_CACHE_BYTES", 8 * 4 * 50 * 2)
    assert torch.equal(ref.token_kl(1, pol), _before(full[1], pol))
    assert set(ref.__dict__["_log_probs"]) == {1}
