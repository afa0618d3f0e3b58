"""MoEfication: split a dense gated FFN into K equal experts of co-activating neurons.

Following Zhang et al., "MoEfication: Transformer Feed-forward Layers are Mixtures of
Experts" (Findings of ACL 2022): neurons that fire together on the same tokens are put
in the same expert, so that for a given token most of the FFN output comes from few
experts. For a gated FFN ``down(act(gate x) * up x)`` the activation of neuron i on
token t is ``a_i(t) = act(gate_i x_t) * up_i x_t`` (SwiGLU has no exact zeros, unlike
the ReLU models of the paper, so we use magnitudes instead of on/off patterns).

Feature of neuron i: its contribution magnitude ``|a_i(t)| * ||down[:, i]||`` over the
calibration tokens t (each token's vector normalised first), L2-normalised over t, so two
neurons are close when they are large on the same tokens (cosine similarity of their
magnitude profiles). Clustering: balanced k-means — centroids updated as in
k-means, and each assignment step solved exactly as a linear assignment of the F neurons
to K * (F/K) slots (``scipy.optimize.linear_sum_assignment``), so every expert gets
exactly F/K neurons.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["ffn_activations", "neuron_features", "balanced_kmeans", "partition_neurons"]


def ffn_activations(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Intermediate activations ``act(gate x) * up x`` of a gate/up/down FFN: ``[N, F]``."""
    return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)


def neuron_features(
    activations: torch.Tensor,
    down_weight: torch.Tensor | None = None,
    *,
    max_dim: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Per-neuron co-activation features ``[F, D]`` from activations ``[N, F]``.

    Neuron i's contribution magnitude on token t is ``c_i(t) = |a_i(t)| * ||down[:, i]||``
    (``down_weight`` ``[H, F]``; omitted = 1). Each token's vector ``c(t)`` is first
    L2-normalised over the neurons (so that a few tokens with huge activations, such as
    the first token of a sequence, do not dominate), then each neuron's profile over the
    tokens is L2-normalised: the squared distance of two features is 2 - 2 cos of their
    co-activation profiles. When ``max_dim`` is set and ``N > max_dim`` the token axis is
    reduced by a seeded Gaussian random projection (Johnson-Lindenstrauss) first.
    """
    c = activations.detach().float().abs()
    if down_weight is not None:
        c = c * down_weight.detach().float().norm(dim=0)
    c = torch.nn.functional.normalize(c, dim=1)  # per token
    feats = c.T.contiguous()  # [F, N]
    if max_dim is not None and feats.shape[1] > max_dim:
        gen = torch.Generator().manual_seed(int(seed))
        proj = torch.randn(feats.shape[1], max_dim, generator=gen) / max_dim**0.5
        feats = feats @ proj
    return torch.nn.functional.normalize(feats, dim=1)


def _sq_dists(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[F, K]`` by one matmul (much faster than cdist here)."""
    d = points.pow(2).sum(1, keepdim=True) - 2 * points @ centroids.T + centroids.pow(2).sum(1)
    return d.clamp_min(0)


def _kmeans_pp(points: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) with a torch generator."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = [first]
    d2 = _sq_dists(points, points[first : first + 1])[:, 0]
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(d2.double() / total, 1, generator=gen))
        chosen.append(idx)
        d2 = torch.minimum(d2, _sq_dists(points, points[idx : idx + 1])[:, 0])
    return points[chosen].clone()


def balanced_kmeans(
    points: torch.Tensor, num_clusters: int, *, iterations: int = 10, seed: int = 0
) -> torch.Tensor:
    """Cluster ``points`` ``[F, D]`` into ``num_clusters`` groups of exactly ``F / num_clusters``.

    k-means++ seeding, then alternately (a) assign points to clusters by a minimum-cost
    perfect matching of points to ``num_clusters * (F / num_clusters)`` slots, cost =
    squared distance to the slot's centroid (``scipy.optimize.linear_sum_assignment``),
    and (b) move each centroid to its cluster's mean; stops when the assignment no longer
    changes or after ``iterations`` rounds. Deterministic for a given ``seed``.

    Returns ``labels``: LongTensor ``[F]`` with values in ``[0, num_clusters)``.
    """
    n = points.shape[0]
    k = int(num_clusters)
    if k < 1 or n % k != 0:
        raise ValueError(f"num_experts={num_clusters} must be >= 1 and divide the number of neurons {n}")
    size = n // k
    if k == 1:
        return torch.zeros(n, dtype=torch.long)
    pts = points.detach().float()
    gen = torch.Generator().manual_seed(int(seed))
    centroids = _kmeans_pp(pts, k, gen)
    labels = None
    for _ in range(max(1, int(iterations))):
        cost = _sq_dists(pts, centroids).double().numpy()  # [F, K]
        rows, cols = linear_sum_assignment(np.repeat(cost, size, axis=1))
        new = torch.empty(n, dtype=torch.long)
        new[torch.from_numpy(rows)] = torch.from_numpy(cols // size).long()
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        centroids = torch.stack([pts[labels == c].mean(0) for c in range(k)])
    return labels


def partition_neurons(
    activations: torch.Tensor,
    num_experts: int,
    *,
    down_weight: torch.Tensor | None = None,
    iterations: int = 10,
    seed: int = 0,
    max_dim: int | None = None,
) -> torch.Tensor:
    """Partition the F neurons of one FFN into ``num_experts`` equal groups of co-activating neurons.

    Args:
        activations: ``[N, F]`` intermediate activations on calibration tokens
            (:func:`ffn_activations`).
        down_weight: ``[H, F]`` down-projection, to weigh neurons by their output norm
            (see :func:`neuron_features`).
    Returns:
        LongTensor ``[num_experts, F // num_experts]``: row j lists expert j's neuron
        indices in increasing order; experts are ordered by their smallest neuron index,
        so the result does not depend on how the clusters happened to be numbered.
    """
    num_neurons = activations.shape[1]
    if isinstance(num_experts, bool) or not isinstance(num_experts, (int, np.integer)) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive integer, got {num_experts!r}")
    if num_neurons % num_experts != 0:
        raise ValueError(
            f"num_experts={num_experts} must divide the FFN intermediate size {num_neurons}"
        )
    feats = neuron_features(activations, down_weight, max_dim=max_dim, seed=seed)
    labels = balanced_kmeans(feats, num_experts, iterations=iterations, seed=seed)
    groups = [torch.nonzero(labels == c).flatten() for c in range(num_experts)]
    groups.sort(key=lambda g: int(g[0]))
    return torch.stack(groups).long()
