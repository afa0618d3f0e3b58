"""An expert node of the DMoE system (Section III-A, eq 6).

Node j holds every attention block ``Attn^(l)``, the gate and the always-on part (shared
experts, dense FFNs) of every layer (block downloading, Section III-A-2) and its own
expert ``FFN_j^(l)`` of every MoE layer. In this
in-process runtime the attention and gate weights are the model's own tensors, shared by
reference rather than copied K times (they are read-only and identical on every node, so
sharing changes no result and saves K-1 copies of memory); the FFN slices are the node's
own contiguous tensors, taken from the model once at start-up (a copy for a carved slice
that is not contiguous in the dense FFN; a view of a real MoE's fused expert weights).
"""

from __future__ import annotations

import torch


class ExpertNode:
    """Expert node ``j``: attention at the source, FFN slice ``j`` for any requester.

    Parameters
    ----------
    index : int
        j, the node's index in ``[0, num_experts)``.
    model : dmoe.model.ExpertModel
        The expert model whose blocks the node downloads.
    """

    def __init__(self, index: int, model) -> None:
        self.index = int(index)
        self._model = model
        # per layer: expert j's parameters (carved: {"gate": [F_j, H], "up": [F_j, H],
        # "down": [H, F_j]}), this node's own; None at a dense layer
        self._ffn: list[dict[str, torch.Tensor] | None] = [
            {k: v.contiguous() for k, v in model.expert_parameters(layer, self.index).items()}
            if model.is_moe_layer(layer)
            else None
            for layer in range(model.num_layers)
        ]

    # ----------------------------------------------------------- at the source node
    def attention(self, layer: int, hidden: torch.Tensor, position_embeddings, mask) -> torch.Tensor:
        """Step 2: ``hidden + Attn^(l)(norm(hidden))`` for the node's own query.

        hidden : Tensor [seq_len, hidden_size]; mask : BoolTensor [seq_len, seq_len] or None.
        Returns Tensor [seq_len, hidden_size].
        """
        return self._model.attention_block(layer, hidden, position_embeddings, mask)

    def ffn_input(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Step 2: the FFN input ``u`` (post-attention norm), Tensor [seq_len, hidden_size]."""
        return self._model.ffn_input(layer, hidden)

    def gate_scores(self, layer: int, u: torch.Tensor) -> torch.Tensor:
        """Step 2: gating scores ``g^(l)(u)`` (eq 7) of the FFN inputs ``u`` [seq_len, hidden_size].

        Returns Tensor [seq_len, num_experts], float32, rows sum to 1.
        """
        return self._model.gate_scores(layer, u)

    def gate(self, layer: int, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: FFN input ``u`` (post-attention norm) and gating scores ``g^(l)(u)`` (eq 7).

        Returns (u [seq_len, hidden_size], scores [seq_len, num_experts]).
        """
        u = self.ffn_input(layer, hidden)
        return u, self.gate_scores(layer, u)

    def always_on(self, layer: int, u: torch.Tensor) -> torch.Tensor | None:
        """Step 5: the model's always-on part (shared experts, a dense layer's FFN) of the
        node's own tokens ``u`` [seq_len, hidden_size], or None when the model has none."""
        return self._model.always_on(layer, u)

    # ------------------------------------------------------------ at the expert node
    def ffn(self, layer: int, u: torch.Tensor) -> torch.Tensor:
        """Step 4: ``FFN_j^(l)(u)`` for hidden states received from any node.

        u : Tensor [num_received, hidden_size] -> Tensor [num_received, hidden_size].
        Raises ValueError at a dense layer (nothing is scheduled there).
        """
        if self._ffn[layer] is None:
            raise ValueError(f"layer {layer} is a dense layer: node {self.index} holds no expert there")
        return self._model.apply_expert(layer, self._ffn[layer], u)
