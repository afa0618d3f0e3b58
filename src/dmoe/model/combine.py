"""Renormalised gate weights of eq (8), exact at the edges of float32.

``w_j = sel_j g_j / sum_k sel_k g_k`` is the weighted aggregation of the selected experts'
outputs (paper eq 8). Gating scores come from a float32 softmax, so the selected mass can
be subnormal (softmax logits ``[100, 0, ..., 0]`` with experts 1..7 selected: 7 * 3.7e-44)
or even 0 after underflow. Dividing by ``total.clamp_min(finfo.tiny)`` then returns
weights summing to 2e-5 instead of 1 and the FFN silently vanishes. Here each row is
divided by its largest selected score first (in float64, exact for float32 inputs), so the
largest term is exactly 1, the sum lies in [1, K] and never underflows: the weights sum to
1 within float32 rounding for every row with a selection. Their precision is that of the
scores themselves (a float32 subnormal carries fewer significant bits).

A row whose selected scores are all exactly 0 (underflowed, or zero-score experts chosen
by Top-k) has no information to weight by; it gets equal weights over its selected
experts, so the FFN still contributes (documented choice). A row with nothing selected
gets all-zero weights (the FFN adds nothing, by definition).
"""

from __future__ import annotations

import torch

__all__ = ["renormalised_weights"]


def renormalised_weights(selection: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """eq (8) weights of the selected experts, each non-empty row summing to 1.

    Args:
        selection: ``[N, K]`` bool (alpha).
        scores: ``[N, K]`` gating scores g_j >= 0 (any float dtype, finite on selected
            entries).

    Returns:
        ``[N, K], float32`` weights; 0 on unselected entries and on empty rows; equal
        weights on rows whose selected scores are all 0.
    """
    sel = selection.to(torch.bool)
    g = torch.where(sel, scores.to(torch.float64), torch.zeros((), dtype=torch.float64, device=scores.device))
    # [N, 1] largest selected score; rows with zero mass use equal weights instead
    peak = g.amax(dim=-1, keepdim=True)
    flat = sel.to(torch.float64)
    g = torch.where(peak > 0, g / torch.where(peak > 0, peak, torch.ones_like(peak)), flat)
    total = g.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, g / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(g))
    return weights.to(torch.float32)
