"""The expert-model interface: the pieces of the DMoE protocol (Section III-C) a model provides.

The runtime, the policies' inputs and the evaluation talk only to :class:`ExpertModel`.
Two implementations:

* :class:`dmoe.model.carved.MoEModel` — a dense Llama-family model whose FFNs are carved
  into K slices (MoEfication) with trained routers (the default, SmolLM2-135M);
* :class:`dmoe.model.hf_moe.HFMoEModel` — a transformers Mixture-of-Experts model
  (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3, GPT-OSS, Granite-MoE(Shared)) with
  its own trained router and experts.

One decoder layer round of the protocol, in these terms (layers 0-based here; the
paper's l = layer + 1)::

    h = attention_block(layer, h, pe, mask)            # at the source node (eq 6: every node holds it;
                                                       # decoding: with the query's KV cache there)
    u = ffn_input(layer, h)                            # [N, H]
    y = 0
    if is_moe_layer(layer):
        g = gate_scores(layer, u)                      # [N, K], eq (7): >= 0, rows sum to 1
        alpha = policy.schedule(g, ...)                # [N, K] bool
        outs[:, j] = expert_ffn(layer, j, u[alpha[:, j]])   # at node j
        y = combine_outputs(outs, alpha, g)            # at the source node (eq 8 or the family's rule)
    a = always_on(layer, u)                            # shared experts / dense FFN, at the source
    h = h + y + (a if a is not None else 0)

Shapes are un-batched: a sequence is ``[S]`` token ids and ``[S, H]`` hidden states, token
batches ``[N, H]``; scores and logits are float32.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["ExpertModel", "UnsupportedModelError", "RouterOutputError"]


class UnsupportedModelError(ValueError):
    """The checkpoint's architecture is not one dmoe can run (names the supported ones)."""


class RouterOutputError(ValueError):
    """A router produced non-finite (NaN / inf) scores; the message names the layer."""


class ExpertModel(abc.ABC):
    """Abstract expert model (Section III-C); see the module docstring for one layer round.

    Attributes (read-only properties in the implementations):
        num_layers: L, decoder layers.
        num_experts: K, routed experts per MoE layer = expert nodes (one expert per node).
        hidden_size: H.
        vocab_size: V.
        device: the torch device holding the weights.
        tokenizer: a transformers tokenizer, or None (then feed token ids).
        metadata: dict describing the model (family, source, build information).
        combine: the aggregation rule (a string; the carved model has ``"sum"`` and
            ``"weighted"``, a real MoE its family's own rule ``"family"``).
        family: ``"carved"``, ``"mixtral"``, ``"qwen2_moe"``, ...
        native_top_k: the family's own number of routed experts per token, or None
            (the carved model has no native top-k).
    """

    num_layers: int
    num_experts: int
    hidden_size: int
    vocab_size: int
    family: str
    native_top_k: int | None
    tokenizer: Any
    metadata: dict

    # ------------------------------------------------------------ structure
    def is_moe_layer(self, layer: int) -> bool:
        """Whether ``layer`` has routed experts to schedule (False for a dense layer, e.g.
        DeepSeek-V3's first ``first_k_dense_replace`` layers: its whole FFN is
        :meth:`always_on`). Default: every layer."""
        return True

    def always_on_size(self, layer: int) -> float:
        """Computation of :meth:`always_on` at ``layer`` in units of one routed expert's FFN
        (ratio of FFN parameter counts; 0.0 when there is none). The ledger charges a
        token's always-on part at its source node i as ``always_on_size * a_i`` [J]."""
        return 0.0

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: family, K, native top-k, shared experts, how g is derived."""
        return {"family": self.family, "num_experts": self.num_experts, "native_top_k": self.native_top_k}

    # ------------------------------------------------------------ pieces
    @abc.abstractmethod
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings: ``[S]`` ids -> ``[S, H]``."""

    @abc.abstractmethod
    def position_embeddings(self, positions: torch.Tensor):
        """Rotary ``(cos, sin)`` for positions ``[S]`` (0-based), as the attention blocks take them."""

    @abc.abstractmethod
    def attention_block(
        self,
        layer: int,
        hidden: torch.Tensor,
        position_embeddings,
        attention_mask: torch.Tensor | None = None,
        *,
        cache: Any = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden + attn(norm(hidden))`` ``[S, H]`` (residual included; at the source node).

        ``attention_mask``: bool ``[S, S]``, True where query s may attend key s'; None = causal.

        Decoding (issue 17): with ``cache`` (a :class:`~dmoe.model.kv_cache.KVCache` from
        :meth:`new_cache`) the S rows are new tokens at ``positions`` ``[S]`` (required):
        they attend every cached key and each other causally on positions (and within the
        layer's sliding window, if any), and their keys and values join the cache; no
        ``attention_mask`` then. Feeding a sequence in pieces this way gives the same
        outputs as one pass over the whole sequence (float rounding aside).
        """

    def new_cache(self):
        """An empty key/value cache for one query (:class:`~dmoe.model.kv_cache.KVCache`),
        held by the query's host node while it decodes."""
        from .kv_cache import KVCache

        return KVCache()

    @abc.abstractmethod
    def ffn_input(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """The FFN (and router) input ``u`` ``[N, H]`` of the hidden states ``[N, H]``."""

    @abc.abstractmethod
    def gate_scores(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Gating scores g_j (eq 7) of ``x`` ``[N, H]``: float32 ``[N, K]``, >= 0, rows sum to 1.

        Raises :class:`RouterOutputError` when the router's output is not finite.
        """

    @abc.abstractmethod
    def expert_parameters(self, layer: int, expert: int) -> dict[str, torch.Tensor]:
        """What expert ``expert``'s node holds for ``layer`` (eq 6)."""

    def expert_parameter_names(self) -> list[str]:
        """Names (as in ``named_parameters()``) of the tensors that hold routed experts' weights.

        What only an expert's node holds (eq 6): a node downloads every other parameter
        (attention blocks, norms, routers, embedding, LM head, always-on parts) and, of
        these tensors, only its own experts' slices (:meth:`expert_parameters`). The Ray
        engine uses this to send each actor its share. Default: none known (``[]``),
        every node then receives the whole model.
        """
        return []

    @abc.abstractmethod
    def apply_expert(self, layer: int, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Run an expert from its held parameters: ``[N, H] -> [N, H]``."""

    def expert_ffn(self, layer: int, expert: int, x: torch.Tensor) -> torch.Tensor:
        """``FFN_j(x)``: ``[N, H] -> [N, H]``."""
        return self.apply_expert(layer, self.expert_parameters(layer, expert), x)

    def always_on(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        """The always-on part of the FFN (shared experts, or a dense layer's whole FFN) of
        ``x`` ``[N, H]`` -> ``[N, H]``, run at the source node; None when there is none."""
        return None

    @abc.abstractmethod
    def combine_weights(self, selection: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The aggregation weights ``[N, K]`` float32 of a selection ``[N, K]`` bool given the
        scores g ``[N, K]``: the routed FFN output is ``sum_j w_j FFN_j(u)`` (0 where not
        selected). The runtime accumulates expert outputs with these weights."""

    @abc.abstractmethod
    def combine_outputs(
        self,
        outputs: torch.Tensor | Sequence[torch.Tensor | None],
        selection: torch.Tensor,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Aggregate the selected experts' outputs ``[N, K, H]`` (or K tensors ``[N, H]``)
        into the routed FFN output ``[N, H]`` with the family's own combination applied to
        the selection ``[N, K]`` bool and the scores g ``[N, K]``."""

    @abc.abstractmethod
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head: ``[N, H] -> [N, V]``."""

    @abc.abstractmethod
    def forward_masked(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        selection: torch.Tensor | Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Centralised reference pass: logits ``[S, V]``.

        ``selection=None`` is the FULL model (the dense model for the carved default, the
        family's own top-k routing for a real MoE); a bool ``[L, S, K]`` tensor or a
        callable ``f(layer, scores [S, K]) -> bool [S, K]`` fixes the experts per layer
        (ignored at dense layers).
        """
