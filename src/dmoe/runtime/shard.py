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

* :func:`pack_shared_blocks` -- the shared model as the Ray engine puts it into the object
  store: its parameters as numpy arrays beside a skeleton without them, so that every
  actor maps the same physical copy (Ray hands numpy arrays out of its shared-memory
  store without copying; a pickled tensor would be copied into each actor). The actors
  read the blocks; nothing writes into them.

An actor's node then computes exactly what an in-process node computes (the same
tensors, the same operations); a call that reached a routed-expert tensor of the shared
model would fail on the ``meta`` device instead of silently using weights the node does
not hold.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .node import as_tensor

__all__ = ["SharedBlocks", "expert_share", "pack_shared_blocks", "shared_model", "tensor_bytes"]


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


@dataclass
class SharedBlocks:
    """The shared model packed for the object store (:func:`pack_shared_blocks`).

    Attributes:
        skeleton: the shared model with every parameter a ``meta`` tensor (no data).
        arrays: ``{name: ndarray}`` the data of each distinct parameter (tied parameters
            once), as numpy arrays of the parameter's bytes (``dtypes`` gives the tensor dtype).
        dtypes: ``{name: torch.dtype}`` of each array's parameter.
        slots: ``[(module path, attribute, name)]`` every place a parameter sits in the
            skeleton (a tied parameter in several places), with the array it takes.
    """

    skeleton: Any
    arrays: dict[str, np.ndarray]
    dtypes: dict[str, torch.dtype]
    slots: list[tuple[str, str, str]]

    def restore(self):
        """The shared model with its parameters on the arrays' memory (no copy; read-only
        when the arrays come from Ray's object store): what an actor computes with."""
        model = self.skeleton
        params: dict[str, torch.nn.Parameter] = {}
        for name, arr in self.arrays.items():
            # arrays from the object store are read-only: the node only reads its blocks
            t = as_tensor(arr, copy_readonly=False)
            dtype = self.dtypes[name]
            if t.dtype != dtype:
                t = t.view(dtype)
            params[name] = torch.nn.Parameter(t, requires_grad=False)
        for path, attr, name in self.slots:
            model.get_submodule(path)._parameters[attr] = params[name]
        return model


def _numpy_bytes(t: torch.Tensor) -> np.ndarray:
    """``t``'s data as a numpy array (dtypes numpy lacks, e.g. bfloat16, as same-size ints)."""
    t = t.detach().contiguous()
    try:
        return t.numpy()
    except TypeError:
        return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).numpy()


def pack_shared_blocks(model) -> SharedBlocks | Any:
    """:func:`shared_model` packed for the object store (:class:`SharedBlocks`).

    Args:
        model: an :class:`~dmoe.model.interface.ExpertModel` (an ``nn.Module``) on the CPU.

    Returns:
        :class:`SharedBlocks` (call ``restore()`` where it arrives), or :func:`shared_model`'s
        result itself when it is not an ``nn.Module`` or holds a parameter off the CPU
        (sent whole, as before).

    Raises:
        ValueError: from :func:`shared_model`.
    """
    shared = shared_model(model)
    if not isinstance(shared, torch.nn.Module):
        return shared
    params = list(shared.named_parameters(remove_duplicate=False))
    if any(not p.is_meta and p.device.type != "cpu" for _, p in params):
        return shared
    # one name per distinct parameter (tied ones share it); routed experts stay meta
    key: dict[int, str] = {}
    for name, p in params:
        if not p.is_meta:
            key.setdefault(id(p), name)
    by_id = {id(p): p for _, p in params}
    arrays = {name: _numpy_bytes(by_id[i]) for i, name in key.items()}
    dtypes = {name: by_id[i].dtype for i, name in key.items()}
    slots = []
    for name, p in params:
        if id(p) in key:
            path, _, attr = name.rpartition(".")
            slots.append((path, attr, key[id(p)]))
    memo = {i: torch.nn.Parameter(torch.empty_like(by_id[i], device="meta"), requires_grad=False) for i in key}
    for t in shared.buffers():
        memo.setdefault(id(t), t)
    tok = getattr(shared, "tokenizer", None)
    if tok is not None:
        memo[id(tok)] = tok
    skeleton = copy.deepcopy(shared, memo)
    return SharedBlocks(skeleton, arrays, dtypes, slots)
