"""An expert node of the DMoE system (Section III-A, eq 6): the code that runs ON a node.

Node n holds every attention block ``Attn^(l)`` and the gate of every layer (block
downloading, Section III-A-2) and its own experts ``FFN_j^(l)`` of every layer (one, j = n,
in the paper; with an expert placement, issue 12, the experts ``j`` placed on node n,
:meth:`ExpertNode.set_experts`), plus the embedding and output head its own queries need. The same class runs in both engines: the
in-process engine calls its methods directly, the Ray engine wraps it in an actor (one
process per node), so a node computes exactly the same thing whichever engine runs it.

A node keeps the state of the queries it hosts (protocol step 1: the query's hidden
states live at its source node) and answers one call per protocol phase and layer round,
batched over everything it hosts or receives:

* :meth:`host` -- take queries (from their tokens, or resumed from a checkpoint of their
  last completed layer, when a query is re-hosted after its node failed); a decoding
  query (issue 17) starts a KV cache of its tokens at every attention block, and
  :meth:`extend` feeds it its next token at every decode step;
* :meth:`attend_gate` -- step 2: attention and gating of its hosted queries; the gating
  scores go to the server (plus the always-on part of the FFN, e.g. shared experts, which
  runs at the source with no transmission), and the FFN inputs of all its tokens leave the
  node as one *source batch*, from which every expert node takes the rows of the tokens that
  selected its experts (step 4, send side: a token's input goes once to a node, however
  many of its experts it selected);
* :meth:`dense_layer` -- a layer without routed experts (``is_moe_layer`` False): the
  whole layer runs at the source, nothing is scheduled;
* :meth:`ffn` -- step 4 (expert side): each selected expert ``FFN_j`` of the node on its
  rows of the source batches of all sources, one output object back with a batch per source;
* :meth:`combine` -- step 5: aggregate the returned outputs with the model's combination
  weights, add the always-on part and the residual; returns each query's new hidden state,
  the server's checkpoint, and (when the server asks for it) runs step 2 of the next layer
  right away, saving a round trip per layer round;
* :meth:`logits` -- the next-token logits the server scores.

Model access goes only through the expert-model interface (``embed``,
``position_embeddings``, ``attention_block``, ``ffn_input``, ``gate_scores``,
``expert_parameters``, ``apply_expert``, ``combine_weights``, ``always_on``,
``is_moe_layer``, ``logits``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ExpertNode", "HostedQuery", "as_tensor"]


def as_tensor(x, device=None, *, copy_readonly: bool = True) -> torch.Tensor:
    """A tensor sent by a node (:attr:`ExpertNode.wire`): a tensor passes through; a numpy
    array becomes a tensor with the same bits (copied when the object store handed it out
    read-only, so nothing can write into shared memory), on ``device`` when given.

    With ``copy_readonly=False`` a read-only array is not copied: the tensor shares its
    memory, for data the caller only reads (a batch a node gathers rows from, the shared
    blocks an actor computes with)."""
    if not isinstance(x, np.ndarray):
        return x
    if x.flags.writeable:
        t = torch.from_numpy(x)
    elif copy_readonly:
        t = torch.from_numpy(x.copy())
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(x)
    return t if device is None or t.device == torch.device(device) else t.to(device)


@dataclass
class HostedQuery:
    """What the server sends a node to host a query (step 1, or a re-host).

    Attributes:
        qid: the query's index in its round.
        input_ids: ``[S]`` int64 token ids.
        positions: ``[S]`` int64 position ids.
        attention_mask: ``[S, S]`` bool or None (causal).
        score_rows: ``[n_scored]`` int64 rows whose logits the server needs.
        cached: the query decodes (issue 17): its host keeps a KV cache of its tokens at
            every attention block (:meth:`ExpertNode.host` starts an empty one; then
            :meth:`ExpertNode.extend` feeds the next tokens); ``attention_mask`` must be
            None (causal on positions).
    """

    qid: int
    input_ids: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor | None
    score_rows: torch.Tensor
    cached: bool = False


class ExpertNode:
    """Expert node ``n``: attention at the source, its experts' FFNs for any requester.

    Parameters
    ----------
    index : int
        n, the node's index in ``[0, num_nodes)``.
    model : ExpertModel
        The expert model whose blocks the node downloads (eq 6). In-process, this is the
        driver's model (read-only, shared by reference); in a Ray actor it is the actor's
        own copy of the shared blocks, fetched once from the object store, without the
        routed experts' weights (:func:`dmoe.runtime.shard.shared_model`).
    experts : sequence of sequence of int, optional
        ``[num_layers][E_n^(l)]`` the experts the node holds at each layer (issue 12:
        several experts per node); default expert ``index`` at every layer (the paper).
    parameters : dict, optional
        ``{layer: {expert j: {name: tensor}}}`` the experts' parameters
        (:func:`dmoe.runtime.shard.expert_share`); an expert missing here is taken from
        ``model.expert_parameters``.
    """

    def __init__(self, index: int, model, experts: Sequence[Sequence[int]] | None = None,
                 parameters: dict | None = None) -> None:
        self.index = int(index)
        self._model = model
        # per layer: {expert j: its parameters (eq 6; carved: {"gate": [F_j, H], "up":
        # [F_j, H], "down": [H, F_j]})}, contiguous tensors taken once; None at a dense layer
        self._ffn: list[dict[int, dict[str, torch.Tensor]] | None] = []
        self.set_experts(experts, parameters)
        # per hosted query: {"hidden", "pe", "mask", "rows", "u", "g"}
        self._queries: dict[int, dict[str, Any]] = {}

    def set_experts(self, experts: Sequence[Sequence[int]] | None, parameters: dict | None = None) -> None:
        """Hold the experts ``experts[l]`` at layer l (None: expert ``index`` at every layer).

        Downloads their parameters (eq 6): from ``parameters`` (``{layer: {j: {name:
        tensor}}}``, what the Ray engine sends) or else from ``model.expert_parameters``;
        parameters already held are kept, not copied again; experts no longer listed are dropped.

        Raises:
            ValueError: ``experts`` does not list every layer, or an expert's parameters are
                neither held, given, nor in the node's model (its model holds no routed experts).
        """
        model = self._model
        L = int(model.num_layers)
        if experts is None:
            experts = [(self.index,)] * L
        if len(experts) != L:
            raise ValueError(f"`experts` must list the experts of each of the {L} layers, got {len(experts)}")
        given = parameters or {}
        old = self._ffn
        new = []
        for layer in range(L):
            if not model.is_moe_layer(layer):
                new.append(None)
                continue
            held = old[layer] if layer < len(old) and old[layer] is not None else {}
            new.append({int(j): held[int(j)] if int(j) in held else self._download(layer, int(j), given)
                        for j in experts[layer]})
        self._ffn = new

    def _download(self, layer: int, j: int, given: dict) -> dict[str, torch.Tensor]:
        """Expert ``j``'s parameters at ``layer``: given, or from the model (contiguous)."""
        params = given.get(layer, {}).get(j)
        if params is None:
            params = self._model.expert_parameters(layer, j)
        if any(v.is_meta for v in params.values()):
            raise ValueError(f"node {self.index}: no parameters of expert {j} at layer {layer} "
                             "(its model holds no routed experts: send them in `parameters`)")
        return {k: v.contiguous() for k, v in params.items()}

    def held_parameters(self) -> dict[str, Any]:
        """What the node holds (eq 6), for inspection and memory accounting.

        Returns:
            ``{"shared": {name: bytes}`` of the model's parameters and buffers that hold
            data (``meta`` ones, the routed experts' tensors of an actor's model, are left
            out), ``"experts": [num_layers]`` sorted tuple of expert ids (None at a dense
            layer), ``"expert_bytes"``: bytes of the experts' own tensors ``[B]``,
            ``"bytes"``: the two together ``[B]``}. In-process nodes share the driver's whole
            model, so their ``"shared"`` includes every expert's weights.
        """
        from .shard import tensor_bytes

        model = self._model
        named = []
        if hasattr(model, "named_parameters"):
            named = list(model.named_parameters()) + list(model.named_buffers())
        shared = {n: tensor_bytes([t]) for n, t in named if not t.is_meta}
        expert_bytes = tensor_bytes(v for layer in self._ffn if layer for p in layer.values() for v in p.values())
        return {
            "shared": shared,
            "experts": [None if layer is None else tuple(sorted(layer)) for layer in self._ffn],
            "expert_bytes": expert_bytes,
            "bytes": sum(shared.values()) + expert_bytes,
        }

    # ------------------------------------------------------------------ wire format
    #: How hidden states leave the node: ``"tensor"`` (in-process: the tensors themselves)
    #: or ``"numpy"`` (a Ray actor: numpy arrays, which Ray moves through its object store
    #: without pickling, about twice as fast as torch tensors; the values are the same bits).
    wire = "tensor"

    def _send(self, t: torch.Tensor):
        """A hidden-state batch ``[n, H]`` as it leaves the node (:attr:`wire`)."""
        if self.wire == "numpy" and t.device.type == "cpu" and t.dtype != torch.bfloat16:
            return t.numpy()
        return t

    def _receive(self, x) -> torch.Tensor:
        """A hidden-state batch as the node computes with it: a tensor on the model's device
        (an array the object store hands out read-only is copied, so nothing can write into it)."""
        return as_tensor(x, getattr(self._model, "device", None))

    def _read(self, x) -> torch.Tensor:
        """A received batch the node only reads (gathers rows of, computes from): a tensor on
        the model's device sharing the array's memory, also when the object store handed it
        out read-only (no copy; nothing writes into it)."""
        return as_tensor(x, getattr(self._model, "device", None), copy_readonly=False)

    # ------------------------------------------------------------------ service
    def ping(self) -> int:
        """Liveness probe; returns the node's index."""
        return self.index

    def pid(self) -> int:
        """The operating-system process id the node runs in."""
        import os

        return os.getpid()

    def set_combine(self, mode: str) -> None:
        """Use the server's combination rule (``model.combine``) for step 5."""
        if getattr(self._model, "combine", mode) != mode:
            self._model.combine = mode

    # ----------------------------------------------------------- at the source node
    @torch.no_grad()
    def host(self, queries: Sequence[HostedQuery], *hidden: torch.Tensor | None) -> bool:
        """Host ``queries``; ``hidden[i]`` resumes query i from its last completed layer.

        hidden : Tensor [S, H] per query, or None to start from the token embedding.
        Returns True (a small status the server waits on).

        A cached query (``q.cached``, decoding) starts an empty KV cache; resuming one from a
        checkpoint is refused (its cache would miss the earlier layers: the server rebuilds
        it from the tokens instead).

        Raises:
            ValueError: a cached query with an attention mask or a checkpoint.
        """
        model = self._model
        for i, q in enumerate(queries):
            h = hidden[i] if i < len(hidden) else None
            state = {
                "hidden": model.embed(q.input_ids) if h is None else self._receive(h),
                "pe": model.position_embeddings(q.positions),
                "mask": q.attention_mask,
                "rows": q.score_rows,
                "done": None,  # the last layer this node completed for the query (None: unknown)
            }
            if q.cached:
                if q.attention_mask is not None or h is not None:
                    raise ValueError(f"query {q.qid}: a cached (decoding) query starts from its tokens with a "
                                     "causal mask, not from a checkpoint or an attention mask")
                state.update(cache=model.new_cache(), positions=torch.as_tensor(q.positions).long())
            self._queries[q.qid] = state
        return True

    @torch.no_grad()
    def extend(self, queries: Sequence[HostedQuery]) -> bool:
        """Decoding (issue 17): feed each hosted cached query its next tokens.

        ``queries[i]`` carries the new tokens (``input_ids`` ``[S]``, usually one), their
        ``positions`` and the rows to score; the query's KV cache stays. Returns True.

        Raises:
            KeyError: a query the node does not host (its state was lost).
            ValueError: a query the node hosts without a cache.
        """
        model = self._model
        for q in queries:
            st = self._queries[q.qid]
            if "cache" not in st:
                raise ValueError(f"node {self.index}: query {q.qid} has no KV cache (not a decoding query)")
            st["hidden"] = model.embed(q.input_ids)
            st["positions"] = torch.as_tensor(q.positions).long()
            st["pe"] = model.position_embeddings(st["positions"])
            st["rows"] = q.score_rows
            st["done"] = None
        return True

    def _attend(self, layer: int, st: dict) -> torch.Tensor:
        """A hosted query's attention block at ``layer`` (with its KV cache when it decodes)."""
        if "cache" in st:
            return self._model.attention_block(layer, st["hidden"], st["pe"], cache=st["cache"],
                                               positions=st["positions"])
        return self._model.attention_block(layer, st["hidden"], st["pe"], st["mask"])

    def release(self, qids: Sequence[int]) -> None:
        """Forget the state of finished queries."""
        for q in qids:
            self._queries.pop(q, None)

    @torch.no_grad()
    def attend_gate(self, layer: int, qids: Sequence[int]):
        """Step 2 for each hosted query: ``h' = h + Attn^(l)(h)``, FFN input ``u`` and scores.

        Returns ``(scores, source)``: ``{qid: [S_q, K] float32}`` gating scores (eq 7) for
        the server, and the source batch ``[sum_q S_q, H]``: the FFN inputs ``u`` of the
        queries' tokens stacked in the order of ``qids`` (in :attr:`wire` format; None for
        no query), which the expert nodes read their rows from (:meth:`ffn`). ``h'``, ``u``
        and the scores stay at the node too.
        """
        model = self._model
        out, us = {}, []
        for q in qids:
            st = self._queries[q]
            h = self._attend(layer, st)
            u = model.ffn_input(layer, h)
            g = model.gate_scores(layer, u)
            st.update(attended=h, u=u, g=g, layer=layer, always=model.always_on(layer, u))
            out[q] = g.cpu().numpy()
            us.append(u)
        source = None if not us else self._send(us[0] if len(us) == 1 else torch.cat(us))
        return out, source

    @torch.no_grad()
    def dense_layer(self, layer: int, qids: Sequence[int]):
        """A layer with nothing to schedule: attention and the always-on FFN at the source.

        Returns (True, hidden [S, H] per qid in the given order): a status, then every
        query's layer output (the server's checkpoint).
        """
        model = self._model
        new = []
        for q in qids:
            st = self._queries[q]
            h = self._attend(layer, st)
            a = model.always_on(layer, model.ffn_input(layer, h))
            st["hidden"] = h if a is None else h + a
            st["done"] = layer
            new.append(st["hidden"])
        return (True, *[self._send(h) for h in new])

    # ------------------------------------------------------------ at the expert node
    @torch.no_grad()
    def ffn(self, layer: int, experts: Sequence[int], mask: np.ndarray, *sources: torch.Tensor):
        """Step 4, expert side: the node's experts ``FFN_j^(l)`` on the rows they were sent.

        experts : ``[E]`` the node's experts to run (held at ``layer``); mask : ``[sum_i n_i,
        E]`` bool, row r of the stacked source batches selected ``experts[k]`` (the rows the
        sources sent this node); sources : Tensor [n_i, H] per source (a host's
        :meth:`attend_gate` or :meth:`combine` source batch, of which the node takes only the
        masked rows). Returns one object: a list with an output batch per source, Tensor
        [sum_k n_ik, H]: ``experts[k]``'s outputs on the source's masked rows, stacked in the
        order of ``experts`` (no status: a host's :meth:`combine` fails if this call failed).
        Each expert runs once on its rows from every source, rows in source order.

        Raises:
            ValueError: ``layer`` is not a layer of the model or is a dense layer, ``experts``
                is empty or repeats an expert, the node does not hold one of ``experts``, a
                source is not ``[n_i, H]``, or ``mask`` is not a bool array matching the
                sources and experts.
        """
        if not 0 <= int(layer) < len(self._ffn):
            raise ValueError(f"`layer` must be in [0, {len(self._ffn)}), got {layer}")
        held = self._ffn[layer]
        if held is None:
            raise ValueError(f"layer {layer} is a dense layer: node {self.index} holds no expert there")
        experts = [int(j) for j in experts]
        if not experts or len(set(experts)) != len(experts):
            raise ValueError(f"`experts` must name at least one expert, each once, got {experts}")
        missing = [j for j in experts if j not in held]
        if missing:
            raise ValueError(f"node {self.index} does not hold expert {missing[0]} of layer {layer}")
        xs = [self._read(x) for x in sources]
        width = getattr(self._model, "hidden_size", None)
        for i, x in enumerate(xs):
            if x.ndim != 2 or (width is not None and x.shape[1] != int(width)) or x.shape[1] != xs[0].shape[1]:
                raise ValueError(f"`sources`: each must be [n_i, H = {width}], source {i} is {tuple(x.shape)}")
        sizes = [int(x.shape[0]) for x in xs]
        if not isinstance(mask, np.ndarray) or mask.dtype != bool:
            raise ValueError(f"`mask` must be a bool numpy array, got {type(mask).__name__} "
                             f"{getattr(mask, 'dtype', '')}")
        if mask.shape != (sum(sizes), len(experts)):
            raise ValueError(f"`mask` must have shape {(sum(sizes), len(experts))} (rows of the sources, "
                             f"experts), got {mask.shape}")
        bounds = np.cumsum([0] + sizes)
        # per source: [output of experts[k] on its rows, for k in order]
        out: list[list] = [[] for _ in xs]
        for k, j in enumerate(experts):
            # per source: the rows of its batch that selected expert j
            rows = [np.flatnonzero(mask[bounds[i] : bounds[i + 1], k]) for i in range(len(xs))]
            pieces = [x if r.size == x.shape[0] else x[torch.from_numpy(r).to(x.device)]
                      for x, r in zip(xs, rows) if r.size]
            if not pieces:  # no row selected expert j: nothing to run
                for i, x in enumerate(xs):
                    out[i].append(x[:0])
                continue
            # [n_k, H] every source's rows of expert j in one call, in source order
            x = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
            y = self._model.apply_expert(layer, held[int(j)], x)
            for i, part in enumerate(torch.split(y, [r.size for r in rows])):
                out[i].append(part)
        # one batch per source, all in one object (one object to move per node and layer round)
        return [self._send(parts[0] if len(parts) == 1 else torch.cat(parts)) for parts in out]

    # ----------------------------------------------------------- back at the source
    @torch.no_grad()
    def combine(self, layer: int, qids: Sequence[int], selection: np.ndarray, recv, ahead: bool, *outputs):
        """Step 5: aggregate the experts' outputs and add the residual, per hosted query.

        qids : the queries to combine, in increasing order; selection : ``[sum_q S_q, K]``
        bool, alpha of their tokens stacked in that order; recv : one entry per ``outputs``
        object (a node's :meth:`ffn` result), ``[(slot, experts, source qids), ...]``: the
        batches of that list that are this host's (``experts`` as in the node's call,
        ``source qids`` the queries of ``qids`` in that source batch, in increasing order);
        ahead : also run step 2 of layer ``layer + 1`` (:meth:`attend_gate`) for these
        queries right away; outputs : per node, the list of output batches of :meth:`ffn`.
        A query's expert outputs are added in increasing expert order.

        Returns ``(scores, source, *hidden)``: with ``ahead`` the next layer's
        :meth:`attend_gate` result (``{qid: scores}`` and the source batch), else ``({}, None)``,
        then every query's layer output ``[S, H]`` in the order of ``qids`` (the server keeps
        it as the query's checkpoint).

        Raises:
            RuntimeError: a query has not attended ``layer`` at this node.
            ValueError: ``selection`` is not ``[sum_q S_q, K]``; ``recv`` does not have one
                entry per ``outputs`` object, names a missing slot, or its experts' rows (from
                ``selection``) do not add up to the rows of the output batch; ``ahead`` is
                not a bool, or is True while layer ``layer + 1`` is not an MoE layer.
            All before the queries' state changes.
        """
        model = self._model
        qids = [int(q) for q in qids]
        if not isinstance(ahead, (bool, np.bool_)):
            raise ValueError(f"`ahead` must be a bool, got {ahead!r}")
        if ahead and not (layer + 1 < int(model.num_layers) and model.is_moe_layer(layer + 1)):
            raise ValueError(f"`ahead`: layer {layer + 1} is not an MoE layer of the model; nothing to run ahead")
        if len(recv) != len(outputs):
            raise ValueError(f"`recv` must have one entry per `outputs` object ({len(outputs)}), got {len(recv)}")
        selection = np.asarray(selection)
        if selection.ndim != 2 or selection.shape[1] != int(model.num_experts) or selection.dtype != bool:
            raise ValueError(f"`selection` must be a bool [sum_q S_q, K = {model.num_experts}] array, got "
                             f"{selection.dtype} {selection.shape}")
        sels, weights, agg, start = {}, {}, {}, 0
        for q in qids:
            st = self._queries[q]
            if st.get("layer") != layer:
                raise RuntimeError(f"node {self.index}: query {q} has not attended layer {layer}")
            S = int(st["u"].shape[0])
            sels[q] = selection[start : start + S]
            start += S
        if start != len(selection):
            raise ValueError(f"`selection` must have the {start} rows of the queries' tokens, got {len(selection)}")
        # (expert j, [(qid, token rows)], outputs [n, H]) for every expert output received
        per_expert = []
        for i, (mine, batches) in enumerate(zip(recv, outputs)):
            for slot, experts, src_qids in mine:
                if not 0 <= slot < len(batches):
                    raise ValueError(f"`recv`: entry {i} names slot {slot} of an `outputs` object of {len(batches)}")
                y_node = self._read(batches[slot])
                parts = [[(q, np.flatnonzero(sels[q][:, j])) for q in src_qids] for j in experts]
                sizes = [sum(len(rows) for _, rows in p) for p in parts]
                if y_node.ndim != 2 or y_node.shape[0] != sum(sizes):
                    raise ValueError(f"`outputs`: batch {slot} of object {i} is {tuple(y_node.shape)}, but `selection` "
                                     f"gives its experts {tuple(int(j) for j in experts)} {sum(sizes)} rows")
                ys = [y_node] if len(experts) == 1 else torch.split(y_node, sizes)
                per_expert.extend((int(j), p, y) for j, p, y in zip(experts, parts, ys))
        for q in qids:
            st = self._queries[q]
            sel = torch.from_numpy(sels[q]).to(st["u"].device)
            # [S, K] the model's combination weights for this selection (eq 8 or the family's)
            weights[q] = model.combine_weights(sel, st["g"])
            agg[q] = torch.zeros(st["u"].shape[0], st["u"].shape[1], dtype=torch.float32, device=st["u"].device)
        per_expert.sort(key=lambda item: item[0])
        for j, parts, y in per_expert:
            start = 0
            for q, rows in parts:
                n = len(rows)
                if n:
                    idx = torch.from_numpy(rows).to(agg[q].device)
                    agg[q].index_add_(0, idx, y[start : start + n].float() * weights[q][idx, j, None])
                start += n
        new = []
        for q in qids:
            st = self._queries[q]
            st["hidden"] = st["attended"] + agg[q]
            if st["always"] is not None:  # shared experts / always-on FFN, at the source
                st["hidden"] = st["hidden"] + st["always"]
            for key in ("attended", "u", "g", "always"):
                st.pop(key)
            st["layer"] = None
            st["done"] = layer
            new.append(st["hidden"])
        scores, source = self.attend_gate(layer + 1, qids) if ahead else ({}, None)
        return (scores, source, *[self._send(h) for h in new])

    @torch.no_grad()
    def logits(self, qids: Sequence[int]) -> dict[int, torch.Tensor]:
        """Next-token logits ``[n_scored, V]`` of each hosted query at its score rows (in the
        node's :attr:`wire` format: the server turns them into tensors with :func:`as_tensor`)."""
        return {q: self._send(self._model.logits(self._queries[q]["hidden"][self._queries[q]["rows"]]).cpu())
                for q in qids}
