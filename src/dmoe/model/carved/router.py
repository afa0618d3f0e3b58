"""Per-layer router (gate function, eq 7) and its training on calibration tokens.

A :class:`Router` is ``torch.nn.Linear(hidden_size, num_experts)`` followed by a softmax,
like the gate of Mixtral/OLMoE (which has no bias; ours has one). It is applied to the
FFN input of its layer, i.e. ``post_attention_layernorm(hidden)``. Any module that maps
``[N, H]`` to ``[N, K]`` probabilities can replace it in ``MoEModel.routers``.

Training target (documented choice): for a token x, expert j's share of the FFN output
magnitude, ``p_j = ||FFN_j(x)||_2 / sum_k ||FFN_k(x)||_2``, where ``FFN_j`` is the FFN
restricted to expert j's neurons (so that ``sum_j FFN_j(x) = FFN(x)``). The router is
fitted by minimising the cross-entropy ``-sum_j p_j log softmax(Wx + b)_j`` (equal to
KL(p || q) up to a constant) with full-batch Adam.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Router", "RouterFit", "router_targets", "router_quality", "train_router"]


class Router(nn.Linear):
    """Gate of one layer: ``softmax(W x + b)`` over the experts (eq 7).

    ``forward(x [N, H]) -> [N, K]`` float32 probabilities (non-negative, rows sum to 1).
    ``logits(x)`` gives the pre-softmax values. A new router starts at zero weights,
    i.e. uniform scores ``1/K``.
    """

    def __init__(self, hidden_size: int, num_experts: int, *, bias: bool = True):
        super().__init__(hidden_size, num_experts, bias=bias)
        with torch.no_grad():
            self.weight.zero_()
            if self.bias is not None:
                self.bias.zero_()

    @property
    def num_experts(self) -> int:
        return self.out_features

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.softmax(self.logits(x), dim=-1)


def router_targets(expert_norms: torch.Tensor) -> torch.Tensor:
    """Soft targets ``p_j = n_j / sum_k n_k`` from per-expert output norms ``[N, K]``.

    Rows whose norms are all zero get the uniform distribution.
    """
    n = expert_norms.float().clamp_min(0)
    total = n.sum(-1, keepdim=True)
    uniform = torch.full_like(n, 1.0 / n.shape[-1])
    return torch.where(total > 0, n / total.clamp_min(torch.finfo(n.dtype).tiny), uniform)


def router_quality(scores: torch.Tensor, targets: torch.Tensor, *, k: int = 2) -> dict[str, float]:
    """How well ``scores`` ``[N, K]`` match ``targets`` ``[N, K]``.

    Returns ``topk_overlap`` (mean of |top-k(scores) ∩ top-k(targets)| / k), ``top1_accuracy``
    (argmax agrees), ``kl`` (mean KL(targets || scores), nats) and
    ``target_topk_mass`` (mean target mass on the router's top-k experts, to compare with
    ``oracle_topk_mass``, the mass on the targets' own top-k).
    """
    k = min(k, scores.shape[-1])
    top_s = scores.topk(k, dim=-1).indices
    top_t = targets.topk(k, dim=-1).indices
    overlap = (top_s[:, :, None] == top_t[:, None, :]).any(-1).float().sum(-1) / k
    eps = 1e-12
    kl = (targets * ((targets + eps).log() - (scores + eps).log())).sum(-1)
    return {
        "topk_overlap": float(overlap.mean()),
        "top1_accuracy": float((top_s[:, 0] == top_t[:, 0]).float().mean()),
        "kl": float(kl.mean()),
        "target_topk_mass": float(targets.gather(1, top_s).sum(-1).mean()),
        "oracle_topk_mass": float(targets.gather(1, top_t).sum(-1).mean()),
    }


@dataclass
class RouterFit:
    """A trained router and its quality on the training and held-out tokens."""

    router: Router
    train: dict[str, float]
    heldout: dict[str, float]
    loss: float


def train_router(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 0.02,
    weight_decay: float = 0.0,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    k: int = 2,
    num_threads: int | None = 1,
) -> RouterFit:
    """Fit a :class:`Router` so that ``softmax(W x + b)`` predicts ``targets``.

    Args:
        inputs: ``[N, H]`` FFN inputs (post-attention-layernorm hidden states).
        targets: ``[N, K]`` rows on the simplex (see :func:`router_targets`).
        steps: full-batch Adam steps on the training split.
        lr: Adam learning rate. Inputs are standardised per feature inside the fit and the
            scaling is folded back into ``W`` and ``b``, so one rate suits any model.
        heldout_fraction: fraction of tokens (chosen with ``seed``) kept out of training
            to report quality; 0 trains on everything and reports training quality twice.
        seed: seeds the split (the weights start at zero, so the fit is deterministic).
        k: the k of the reported top-k overlap.
        num_threads: torch intra-op threads during the fit (restored afterwards). The
            matmuls are skinny (``[N, H] x [H, K]``), and one thread is as fast as two
            while immune to the large slowdowns that OpenMP barriers suffer when another
            process keeps a core busy. None leaves the setting alone.
    """
    if inputs.ndim != 2 or targets.ndim != 2 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs [N, H] and targets [N, K] expected, got {tuple(inputs.shape)} and {tuple(targets.shape)}")
    n, hidden = inputs.shape
    num_experts = targets.shape[1]
    x = inputs.detach().float()
    t = targets.detach().float()
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    n_held = int(round(n * heldout_fraction)) if n > 1 else 0
    n_held = min(n_held, n - 1)
    held, train = perm[:n_held], perm[n_held:]
    xt, tt = x[train], t[train]
    mean = xt.mean(0)
    std = xt.std(0, unbiased=False).clamp_min(1e-6)

    w = torch.zeros(num_experts, hidden, requires_grad=True)
    b = torch.zeros(num_experts, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    z = (xt - mean) / std
    loss = torch.tensor(float("nan"))
    flush = torch.set_flush_denormal(True)  # tiny Adam moments otherwise slow the CPU down
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        with torch.enable_grad():
            for _ in range(int(steps)):
                opt.zero_grad(set_to_none=True)
                logp = torch.log_softmax(z @ w.T + b, dim=-1)
                loss = -(tt * logp).sum(-1).mean()
                loss.backward()
                opt.step()
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(threads)

    router = Router(hidden, num_experts)
    with torch.no_grad():
        weight = w.detach() / std  # W (x - mean)/std + b  ==  (W/std) x + (b - (W/std) mean)
        router.weight.copy_(weight)
        router.bias.copy_(b.detach() - weight @ mean)
        train_q = router_quality(router(xt), tt, k=k)
        held_q = router_quality(router(x[held]), t[held], k=k) if n_held > 0 else dict(train_q)
    return RouterFit(router=router, train=train_q, heldout=held_q, loss=float(loss.detach()))
