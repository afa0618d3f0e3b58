"""An expert node of the DMoE system (Section III-A, eq 6).

Node j holds every attention block ``Attn^(l)`` and the gate of every layer (block
downloading, Section III-A-2) and its own FFN slice ``FFN_j^(l)`` of every layer. In this
in-process runtime the attention and gate weights are the model's own tensors, shared by
reference rather than copied K times (they are read-only and identical on every node, so
sharing changes no result and saves K-1 copies of memory); the FFN slices are the node's
own contiguous copies, taken from the model once at start-up.
"""

from __future__ import annotations

import torch


class ExpertNode:
    """Expert node ``j``: attention at the source, FFN slice ``j`` for any requester.

    Parameters
    ----------
    index : int
        j, the node's index in ``[0, num_experts)``.
    model : dmoe.model.MoEModel
        The MoE model whose blocks the node downloads.
    """

    def __init__(self, index: int, model) -> None:
        self.index = int(index)
        self._model = model
        # per layer: {"gate": [F_j, H], "up": [F_j, H], "down": [H, F_j]}, this node's own
        self._ffn: list[dict[str, torch.Tensor]] = [
            {k: v.contiguous() for k, v in model.expert_parameters(layer, self.index).items()}
            for layer in range(model.num_layers)
        ]

    # ----------------------------------------------------------- at the source node
    def attention(self, layer: int, hidden: torch.Tensor, position_embeddings, mask) -> torch.Tensor:
        """Step 2: ``hidden + Attn^(l)(norm(hidden))`` for the node's own query.

        hidden : Tensor [seq_len, hidden_size]; mask : BoolTensor [seq_len, seq_len] or None.
        Returns Tensor [seq_len, hidden_size].
        """
        return self._model.attention_block(layer, hidden, position_embeddings, mask)

    def gate(self, layer: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: FFN input ``u`` (post-attention norm) and gating scores ``g^(l)(u)`` (eq 7).

        Returns (u [seq_len, hidden_size], scores [seq_len, num_experts]).
        """
        u = self._model.ffn_input(layer, hidden)
        return u, self._model.gate_scores(layer, u)

    # ------------------------------------------------------------ at the expert node
    def ffn(self, layer: int, u: torch.Tensor) -> torch.Tensor:
        """Step 4: ``FFN_j^(l)(u)`` for hidden states received from any node.

        u : Tensor [num_received, hidden_size] -> Tensor [num_received, hidden_size].
        """
        return self._model.apply_expert(layer, self._ffn[layer], u)
