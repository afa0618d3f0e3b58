"""Routing statistics of a MoE model on the calibration set (for co-activation placement).

:func:`routing_coactivation` runs the calibration tokens (the routers' fixed calibration
set, :mod:`dmoe.model.calibration`) through the dense model, records which experts each
layer's router ranks in its Top-k for every token, and counts how often two experts are
selected together (:func:`dmoe.placement.coactivation_matrix`).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["routing_coactivation"]


@torch.no_grad()
def routing_coactivation(model, *, top_k: int, max_tokens: int = 4000, calibration_ids=None) -> np.ndarray:
    """Co-selection counts ``[num_layers, num_experts, num_experts], float64``.

    Args:
        model: a :class:`dmoe.model.ExpertModel` (with a tokenizer unless ``calibration_ids``);
            layers without routed experts keep zero counts.
        top_k: experts counted as selected per token (the router's Top-k), 1 <= k <= E.
        max_tokens: calibration tokens to use (the start of the default calibration set).
        calibration_ids: optional list of 1-D token-id tensors instead of the default set.

    Raises:
        ValueError naming ``top_k`` when it is out of range.
    """
    from dmoe.model.calibration import as_id_tensors, default_calibration_texts, tokenize_calibration
    from dmoe.placement import coactivation_matrix

    e = int(model.num_experts)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= e:
        raise ValueError(f"`top_k` must be an integer in [1, {e}], got {top_k!r}")
    if calibration_ids is None:
        seqs = tokenize_calibration(default_calibration_texts(), model.tokenizer, max_tokens=max_tokens)
    else:
        seqs = as_id_tensors(calibration_ids)
    counts = np.zeros((model.num_layers, e, e))

    for ids in seqs:

        def record(layer, scores):
            top = torch.topk(scores, int(top_k), dim=-1).indices
            sel = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
            counts[int(layer)] += coactivation_matrix(sel.cpu().numpy())
            # the full pass (every expert): statistics of the calibration model itself
            return torch.ones_like(scores, dtype=torch.bool)

        model.forward_masked(ids, selection=record)
    return counts
