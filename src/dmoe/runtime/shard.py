"""A node's share of the model (eq 6): the blocks every node holds, and its own experts.

Block downloading (Section III-A-2, eq 6): node n holds every attention block, and as the
host of its queries what they need at the source (embedding, norms, routers, always-on
parts such as shared experts or dense layers, the final norm and LM head), but of the
routed experts' FFNs only its own experts' slices. The Ray engine ships each actor exactly
that, built on the driver:

* :func:`shared_model` -- the model with the routed experts' tensors
  (:meth:`~dmoe.model.interface.ExpertModel.expert_parameter_names`) replaced by ``meta``
  tensors (shape kept, no data); every actor fetches this one object from the object store;
* :func:`expert_share` -- the node's experts' parameters, contiguous copies taken from the
  full model (a view would carry its whole fused tensor along when pickled).

An actor's node then computes exactly what an in-process node computes (the same
tensors, the same operations); a call that reached a routed-expert tensor of the shared
model would fail on the ``meta`` device instead of silently using weights the node does
not hold.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

__all__ = ["expert_share", "shared_model", "tensor_bytes"]


def _expert_tensors(model) -> dict[str, torch.Tensor]:
    """``{name: parameter}`` of the routed experts' tensors (``expert_parameter_names``)."""
    names = list(getattr(model, "expert_parameter_names", lambda: [])())
    if not names:
        return {}
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(
            f"`model`.expert_parameter_names() names tensors the model does not have: {', '.join(missing[:3])}"
        )
    return {n: params[n] for n in names}


def shared_model(model):
    """What every node holds: ``model`` without its routed experts' weights.

    Args:
        model: an :class:`~dmoe.model.interface.ExpertModel` (an ``nn.Module``).

    Returns:
        A copy of ``model`` whose tensors named by ``model.expert_parameter_names()`` are
        ``meta`` tensors of the same shape and dtype (no memory); every other parameter,
        buffer and the tokenizer are the original objects (shared, not copied). ``model``
        itself when it names no expert tensors or is not an ``nn.Module`` (a node then
        receives the whole model).

    Raises:
        ValueError: ``expert_parameter_names()`` names a tensor the model does not have.
    """
    experts = _expert_tensors(model)
    if not experts or not isinstance(model, torch.nn.Module):
        return model
    memo: dict[int, object] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        memo[id(t)] = t
    for p in experts.values():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        memo[id(tok)] = tok
    return copy.deepcopy(model, memo)


def expert_share(model, experts: Sequence[Sequence[int]],
                 held: Sequence[Sequence[int]] | None = None) -> dict[int, dict[int, dict[str, torch.Tensor]]]:
    """The parameters of a node's experts (eq 6), to send it with its experts' ids.

    Args:
        model: the full :class:`~dmoe.model.interface.ExpertModel` (on the driver).
        experts: ``[num_layers][E_n]`` expert ids the node holds at each layer (dense
            layers, ``is_moe_layer`` False, are skipped).
        held: ``[num_layers][...]`` experts the node holds already (not sent again), or None.

    Returns:
        ``{layer: {expert j: {name: tensor}}}``: ``model.expert_parameters(layer, j)`` as
        contiguous copies (own storage), for every expert of ``experts`` not in ``held``.

    Raises:
        ValueError: ``experts`` (or ``held``) does not list every layer.
    """
    L = int(model.num_layers)
    if len(experts) != L or (held is not None and len(held) != L):
        raise ValueError(f"`experts` and `held` must list the experts of each of the {L} layers")
    out: dict[int, dict[int, dict[str, torch.Tensor]]] = {}
    for layer in range(L):
        if not model.is_moe_layer(layer):
            continue
        have = set() if held is None else {int(j) for j in held[layer]}
        for j in experts[layer]:
            if int(j) in have:
                continue
            params = model.expert_parameters(layer, int(j))
            out.setdefault(layer, {})[int(j)] = {
                k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in params.items()
            }
    return out


def tensor_bytes(tensors) -> int:
    """Bytes of data held by ``tensors`` (an iterable of tensors; ``meta`` tensors hold none)."""
    return int(sum(t.numel() * t.element_size() for t in tensors if not t.is_meta))
