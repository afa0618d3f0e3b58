"""An expert node of the DMoE system (Section III-A, eq 6): the code that runs ON a node.

Node j holds every attention block ``Attn^(l)`` and the gate of every layer (block
downloading, Section III-A-2) and its own FFN slice ``FFN_j^(l)`` of every layer, plus the
embedding and output head its own queries need. The same class runs in both engines: the
in-process engine calls its methods directly, the Ray engine wraps it in an actor (one
process per node), so a node computes exactly the same thing whichever engine runs it.

A node keeps the state of the queries it hosts (protocol step 1: the query's hidden
states live at its source node) and answers one call per protocol phase and layer round,
batched over everything it hosts or receives:

* :meth:`host` -- take queries (from their tokens, or resumed from a checkpoint of their
  last completed layer, when a query is re-hosted after its node failed);
* :meth:`attend_gate` -- step 2: attention and gating of its hosted queries; the gating
  scores go to the server (plus the always-on part of the FFN, e.g. shared experts, which
  runs at the source with no transmission);
* :meth:`dense_layer` -- a layer without routed experts (``is_moe_layer`` False): the
  whole layer runs at the source, nothing is scheduled;
* :meth:`dispatch` -- step 4 (send side): the FFN inputs of its tokens, one batch per
  selected expert;
* :meth:`ffn` -- step 4 (expert side): ``FFN_j`` on the batches received from all sources,
  one output batch back per source;
* :meth:`combine` -- step 5: aggregate the returned outputs with the model's combination
  weights, add the always-on part and the residual; returns each query's new hidden state, the server's checkpoint;
* :meth:`logits` -- the next-token logits the server scores.

Model access goes only through the expert-model interface (``embed``,
``position_embeddings``, ``attention_block``, ``ffn_input``, ``gate_scores``,
``expert_parameters``, ``apply_expert``, ``combine_weights``, ``always_on``,
``is_moe_layer``, ``logits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ExpertNode", "HostedQuery"]


@dataclass
class HostedQuery:
    """What the server sends a node to host a query (step 1, or a re-host).

    Attributes:
        qid: the query's index in its round.
        input_ids: ``[S]`` int64 token ids.
        positions: ``[S]`` int64 position ids.
        attention_mask: ``[S, S]`` bool or None (causal).
        score_rows: ``[n_scored]`` int64 rows whose logits the server needs.
    """

    qid: int
    input_ids: torch.Tensor
    positions: torch.Tensor
    attention_mask: torch.Tensor | None
    score_rows: torch.Tensor


class ExpertNode:
    """Expert node ``j``: attention at the source, FFN slice ``j`` for any requester.

    Parameters
    ----------
    index : int
        j, the node's index in ``[0, num_experts)``.
    model : ExpertModel
        The expert model whose blocks the node downloads (eq 6). In-process, this is the
        driver's model (read-only, shared by reference); in a Ray actor it is the actor's
        own copy, fetched once from the object store.
    """

    def __init__(self, index: int, model) -> None:
        self.index = int(index)
        self._model = model
        # per layer: this node's own expert parameters (eq 6; carved: {"gate": [F_j, H],
        # "up": [F_j, H], "down": [H, F_j]}), contiguous tensors taken once; None at a dense layer
        self._ffn: list[dict[str, torch.Tensor] | None] = [
            {k: v.contiguous() for k, v in model.expert_parameters(layer, self.index).items()}
            if model.is_moe_layer(layer)
            else None
            for layer in range(model.num_layers)
        ]
        # per hosted query: {"hidden", "pe", "mask", "rows", "u", "g"}
        self._queries: dict[int, dict[str, Any]] = {}

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
        """
        model = self._model
        for i, q in enumerate(queries):
            h = hidden[i] if i < len(hidden) else None
            self._queries[q.qid] = {
                "hidden": model.embed(q.input_ids) if h is None else h,
                "pe": model.position_embeddings(q.positions),
                "mask": q.attention_mask,
                "rows": q.score_rows,
            }
        return True

    def release(self, qids: Sequence[int]) -> None:
        """Forget the state of finished queries."""
        for q in qids:
            self._queries.pop(q, None)

    @torch.no_grad()
    def attend_gate(self, layer: int, qids: Sequence[int]) -> dict[int, np.ndarray]:
        """Step 2 for each hosted query: ``h' = h + Attn^(l)(h)``, FFN input ``u`` and scores.

        Returns ``{qid: scores [S, K] float32}`` (gating scores, eq 7) for the server;
        ``h'``, ``u`` and the scores stay at the node.
        """
        model = self._model
        out = {}
        for q in qids:
            st = self._queries[q]
            h = model.attention_block(layer, st["hidden"], st["pe"], st["mask"])
            u = model.ffn_input(layer, h)
            g = model.gate_scores(layer, u)
            st.update(attended=h, u=u, g=g, layer=layer, always=model.always_on(layer, u))
            out[q] = g.cpu().numpy()
        return out

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
            h = model.attention_block(layer, st["hidden"], st["pe"], st["mask"])
            a = model.always_on(layer, model.ffn_input(layer, h))
            st["hidden"] = h if a is None else h + a
            new.append(st["hidden"])
        return (True, *new)

    def dispatch(self, layer: int, sends: Sequence[tuple[int, Sequence[tuple[int, np.ndarray]]]]) -> list[torch.Tensor]:
        """Step 4, send side: one batch of FFN inputs per destination expert.

        sends : [(expert j, [(qid, token rows), ...]), ...] -> [Tensor [n_j, H], ...] in the
        same order (rows concatenated in the listed order).
        """
        out = []
        for _, parts in sends:
            xs = [self._queries[q]["u"][torch.as_tensor(rows, dtype=torch.long)] for q, rows in parts]
            out.append(xs[0] if len(xs) == 1 else torch.cat(xs))
        return out if len(out) != 1 else out[0]

    # ------------------------------------------------------------ at the expert node
    @torch.no_grad()
    def ffn(self, layer: int, *parts: torch.Tensor):
        """Step 4, expert side: ``FFN_j^(l)`` on the batches received from every source.

        parts : Tensor [n_i, H] per source -> (True, Tensor [n_i, H] per source): a status
        the server waits on, then one output batch back to each source.
        """
        if self._ffn[layer] is None:
            raise ValueError(f"layer {layer} is a dense layer: node {self.index} holds no expert there")
        sizes = [p.shape[0] for p in parts]
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        y = self._model.apply_expert(layer, self._ffn[layer], x)
        return (True, *torch.split(y, sizes))

    # ----------------------------------------------------------- back at the source
    @torch.no_grad()
    def combine(self, layer: int, recv, selections: dict[int, np.ndarray], *outputs: torch.Tensor):
        """Step 5: aggregate the experts' outputs and add the residual, per hosted query.

        recv : [(expert j, [(qid, token rows), ...]), ...] as sent by :meth:`dispatch`;
        selections : {qid: alpha [S, K] bool}; outputs : Tensor [n_j, H] per entry of
        ``recv``. Returns (True, hidden [S, H] per qid in sorted qid order): a status,
        then every query's layer output (the server keeps it as the checkpoint).
        """
        model = self._model
        qids = sorted(selections)
        weights, agg = {}, {}
        for q in qids:
            st = self._queries[q]
            if st.get("layer") != layer:
                raise RuntimeError(f"node {self.index}: query {q} has not attended layer {layer}")
            sel = torch.from_numpy(np.asarray(selections[q], dtype=bool)).to(st["u"].device)
            # [S, K] the model's combination weights for this selection (eq 8 or the family's)
            weights[q] = model.combine_weights(sel, st["g"])
            agg[q] = torch.zeros(st["u"].shape[0], st["u"].shape[1], dtype=torch.float32, device=st["u"].device)
        for (j, parts), y in zip(recv, outputs):
            start = 0
            for q, rows in parts:
                n = len(rows)
                idx = torch.as_tensor(rows, dtype=torch.long, device=agg[q].device)
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
            new.append(st["hidden"])
        return (True, *new)

    @torch.no_grad()
    def logits(self, qids: Sequence[int]) -> dict[int, torch.Tensor]:
        """Next-token logits ``[n_scored, V]`` of each hosted query at its score rows."""
        return {q: self._model.logits(self._queries[q]["hidden"][self._queries[q]["rows"]]).cpu() for q in qids}
