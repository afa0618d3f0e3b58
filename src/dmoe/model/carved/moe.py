"""MoEModel: a dense Llama-family causal LM seen as a Mixture-of-Experts.

Every layer's FFN ``down(act(gate x) * up x)`` with F intermediate neurons is partitioned
into K experts of F/K neurons each (``expert_neurons``); expert j of layer l is the FFN
restricted to its neurons, ``FFN_j(x) = down[:, n_j] (act(gate[n_j] x) * up[n_j] x)``, so
``sum_j FFN_j(x) = FFN(x)`` exactly (up to float rounding). A :class:`~dmoe.model.carved.router.Router`
per layer gives the gating scores (eq 7).

The methods are the pieces the DMoE runtime (Section III-C) calls: embedding, rotary
position embeddings, one attention block (each expert node holds all of them, eq 6), the
FFN input, gate scores, one expert's FFN, the aggregation (eq 8 or a plain sum) and the
final logits; :meth:`MoEModel.forward_masked` is the centralised reference pass.

Shapes are un-batched: a sequence is ``[S]`` token ids and ``[S, H]`` hidden states;
token batches are ``[N, H]``. Everything is float32 and no-grad friendly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..combine import renormalised_weights
from ..interface import ExpertModel, UnsupportedModelError
from ..kv_cache import KVCache, attention_cache_kwargs, check_cache_arguments
from ..masks import attention_mask_for, cached_attention_mask
from .router import Router

__all__ = ["MoEModel", "UnsupportedModelError", "check_supported", "COMBINE_MODES"]

COMBINE_MODES = ("sum", "weighted")


def check_supported(dense: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` unless ``dense`` is a Llama-family causal LM.

    Needed: ``dense.model.embed_tokens``, ``.rotary_emb``, ``.norm``, ``.layers[i]`` with
    ``input_layernorm``, ``self_attn``, ``post_attention_layernorm`` and an ``mlp`` with
    bias-free ``gate_proj``/``up_proj``/``down_proj`` Linear layers and an ``act_fn``
    (LLaMA, Mistral, Qwen2/3, SmolLM2, ...), and ``dense.lm_head``. Mixture-of-Experts
    checkpoints (Mixtral, OLMoE, ...) have a different FFN and are rejected.
    """
    name = type(dense).__name__
    inner = getattr(dense, "model", None)
    missing = [
        attr
        for obj, attr in [(dense, "lm_head"), (inner, "embed_tokens"), (inner, "rotary_emb"), (inner, "norm"), (inner, "layers")]
        if obj is None or not hasattr(obj, attr)
    ]
    if missing:
        raise UnsupportedModelError(
            f"{name} is not a supported Llama-family causal LM (missing {', '.join(missing)}); "
            "dmoe needs a decoder with embed_tokens, rotary_emb, layers, norm and lm_head"
        )
    layers = inner.layers
    if len(layers) == 0:
        raise UnsupportedModelError(f"{name} has no decoder layers")
    for i, layer in enumerate(layers):
        for attr in ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp"):
            if not hasattr(layer, attr):
                raise UnsupportedModelError(f"{name}: decoder layer {i} has no {attr}; not a Llama-family layer")
        mlp = layer.mlp
        parts = [getattr(mlp, p, None) for p in ("gate_proj", "up_proj", "down_proj")]
        if not all(isinstance(p, nn.Linear) for p in parts) or not hasattr(mlp, "act_fn"):
            raise UnsupportedModelError(
                f"{name}: layer {i} FFN ({type(mlp).__name__}) is not a gated gate_proj/up_proj/down_proj FFN; "
                "MoEfication needs a dense SwiGLU-style FFN (Mixture-of-Experts checkpoints are not supported here)"
            )
        if any(p.bias is not None for p in parts):
            raise UnsupportedModelError(f"{name}: layer {i} FFN has biases; only bias-free FFNs can be split exactly")


def _as_partition(expert_neurons: torch.Tensor | Sequence, num_layers: int, intermediate_size: int) -> torch.Tensor:
    """Validate ``expert_neurons`` ``[L, K, F/K]``: each layer a partition of range(F)."""
    t = torch.as_tensor(expert_neurons) if not isinstance(expert_neurons, torch.Tensor) else expert_neurons
    if t.ndim == 2:
        t = t.unsqueeze(0).expand(num_layers, *t.shape)
    if t.ndim != 3 or t.shape[0] != num_layers:
        raise ValueError(f"expert_neurons must be [num_layers={num_layers}, K, F/K], got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError("expert_neurons must hold integer neuron indices")
    k, m = t.shape[1], t.shape[2]
    if k < 1 or k * m != intermediate_size:
        raise ValueError(
            f"num_experts={k} experts of {m} neurons do not cover the FFN intermediate size {intermediate_size}; "
            "num_experts must divide the intermediate size"
        )
    t = t.long().contiguous()
    expected = torch.arange(intermediate_size)
    for layer in range(num_layers):
        if not torch.equal(t[layer].flatten().sort().values, expected):
            raise ValueError(f"expert_neurons[{layer}] is not a partition of the {intermediate_size} FFN neurons")
    return t


class MoEModel(nn.Module, ExpertModel):
    """A dense Llama-family ``*ForCausalLM`` whose FFNs are split into experts, plus routers.

    Args:
        dense: the wrapped HF model (kept as ``self.dense``; not modified).
        expert_neurons: LongTensor ``[L, K, F/K]`` (or ``[K, F/K]`` for all layers):
            ``expert_neurons[l, j]`` are expert j's neuron indices in layer l's FFN. Each
            layer must be an exact partition of ``range(F)``; ``K`` must divide ``F``.
        routers: ``L`` routers (modules ``[N, H] -> [N, K]`` probabilities); default: new
            :class:`Router` s with zero weights (uniform scores).
        combine: ``"sum"`` (default) — the FFN output is the sum of the selected experts'
            outputs; correct for slices of one FFN, and with every expert selected it is
            the dense FFN. ``"weighted"`` — eq (8), the gate-weighted mean over the
            selected experts with the weights renormalised to sum to 1 (Mixtral/OLMoE).
        tokenizer: optional HF tokenizer, kept as ``self.tokenizer``.
        metadata: optional dict (build information), kept as ``self.metadata``.

    Attributes: ``num_layers`` (L), ``num_experts`` (K), ``hidden_size`` (H),
    ``intermediate_size`` (F), ``expert_size`` (F/K), ``vocab_size``, ``config`` (the HF
    config), ``tokenizer``, ``combine``, ``routers`` (``nn.ModuleList``), ``expert_neurons``.

    Layers are 0-based here (the paper's l = layer + 1). Implements
    :class:`~dmoe.model.interface.ExpertModel` with ``family = "carved"``, no native top-k,
    no always-on part and every layer an MoE layer.
    """

    family = "carved"
    native_top_k = None

    def __init__(
        self,
        dense: nn.Module,
        expert_neurons: torch.Tensor | Sequence,
        routers: Sequence[nn.Module] | None = None,
        *,
        combine: str = "sum",
        tokenizer: Any = None,
        metadata: dict | None = None,
    ):
        super().__init__()
        check_supported(dense)
        self.dense = dense
        self.tokenizer = tokenizer
        self.metadata = dict(metadata or {})
        cfg = dense.config
        layers = dense.model.layers
        num_layers = len(layers)
        intermediate = layers[0].mlp.gate_proj.out_features
        partition = _as_partition(expert_neurons, num_layers, intermediate)
        self.register_buffer("expert_neurons", partition, persistent=True)
        k = partition.shape[1]
        # neuron -> expert, per layer: [L, F]
        owner = torch.empty(num_layers, intermediate, dtype=torch.long)
        for layer in range(num_layers):
            for j in range(k):
                owner[layer, partition[layer, j]] = j
        self.register_buffer("neuron_expert", owner, persistent=False)
        blocks = torch.arange(intermediate).view(k, intermediate // k)
        self._contiguous = [bool(torch.equal(partition[layer], blocks)) for layer in range(num_layers)]
        hidden = layers[0].mlp.gate_proj.in_features
        if routers is None:
            routers = [Router(hidden, k) for _ in range(num_layers)]
        if len(routers) != num_layers:
            raise ValueError(f"need one router per layer ({num_layers}), got {len(routers)}")
        self.routers = nn.ModuleList(routers)
        self.combine = combine
        device = next(dense.parameters()).device
        self.to(device)

    # ------------------------------------------------------------------ properties
    def describe(self) -> dict[str, Any]:
        """Family, K, native top-k (None), shared experts (none) and how g is derived."""
        return {
            "family": self.family,
            "num_experts": self.num_experts,
            "native_top_k": None,
            "shared_experts": "none",
            "dense_layers": [],
            "gate": "softmax of a linear router trained on the slices' output norms (eq 7)",
            "combine": "sum of the selected slices" if self.combine == "sum" else "eq (8)",
        }

    @property
    def combine(self) -> str:
        return self._combine

    @combine.setter
    def combine(self, value: str) -> None:
        if value not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {value!r}")
        self._combine = value

    @property
    def config(self):
        return self.dense.config

    @property
    def num_layers(self) -> int:
        return len(self.dense.model.layers)

    @property
    def num_experts(self) -> int:
        return int(self.expert_neurons.shape[1])

    @property
    def expert_size(self) -> int:
        return int(self.expert_neurons.shape[2])

    @property
    def hidden_size(self) -> int:
        return int(self.dense.model.layers[0].mlp.gate_proj.in_features)

    @property
    def intermediate_size(self) -> int:
        return int(self.dense.model.layers[0].mlp.gate_proj.out_features)

    @property
    def vocab_size(self) -> int:
        return int(self.dense.lm_head.out_features)

    @property
    def device(self) -> torch.device:
        return self.dense.lm_head.weight.device

    def _layer(self, layer: int):
        # the decoder layers as a plain list, taken once: this runs several times per token
        # and layer round, and nn.Module attribute lookups are slow
        layers = self.__dict__.get("_layer_list")
        if layers is None:
            layers = list(self.dense.model.layers)
            self.__dict__["_layer_list"] = layers
        if not 0 <= layer < len(layers):
            raise IndexError(f"layer {layer} out of range [0, {len(layers)})")
        return layers[layer]

    def _check_expert(self, expert: int) -> None:
        if not 0 <= expert < self.num_experts:
            raise IndexError(f"expert {expert} out of range [0, {self.num_experts})")

    # ------------------------------------------------------------------ pieces
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings: ``[S]`` ids -> ``[S, H]``."""
        return self.dense.model.embed_tokens(input_ids.to(self.device))

    def position_embeddings(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary ``(cos, sin)``, each ``[1, S, head_dim]``, for positions ``[S]`` (0-based)."""
        positions = torch.as_tensor(positions, device=self.device).long()
        dummy = self.dense.lm_head.weight[:1, :1]
        return self.dense.model.rotary_emb(dummy, positions.reshape(1, -1))

    def _attn_mask(self, attention_mask: torch.Tensor | None, seq_len: int, dtype: torch.dtype):
        impl = getattr(self.dense.config, "_attn_implementation", "sdpa")
        return attention_mask_for(impl, attention_mask, seq_len, dtype, self.device)

    def attention_block(
        self,
        layer: int,
        hidden: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden + self_attn(input_layernorm(hidden))`` for one layer (residual included).

        Args:
            hidden: ``[S, H]``.
            position_embeddings: from :meth:`position_embeddings` for the S positions.
            attention_mask: bool ``[S, S]``, True where query s may attend key s'
                (e.g. a tree mask packing a context with several continuations); None =
                causal.
            cache: a :class:`~dmoe.model.kv_cache.KVCache` (decoding, issue 17): the S new
                tokens attend the cached keys and values plus themselves, causally on
                positions, and join the cache. Needs ``positions``; excludes ``attention_mask``.
            positions: ``[S]`` positions of the new tokens (with ``cache``).

        Raises:
            ValueError: ``cache`` without ``positions``, or with an ``attention_mask``.
        """
        block = self._layer(layer)
        y = block.input_layernorm(hidden)[None]
        if cache is None:
            mask = self._attn_mask(attention_mask, hidden.shape[0], hidden.dtype)
            y, _ = block.self_attn(y, position_embeddings=position_embeddings, attention_mask=mask)
            return hidden + y[0]
        check_cache_arguments(attention_mask, positions)
        keys = cache.append_positions(layer, positions)
        impl = getattr(self.dense.config, "_attn_implementation", "sdpa")
        mask = cached_attention_mask(impl, positions, keys, hidden.dtype, self.device)
        y, _ = block.self_attn(y, position_embeddings=position_embeddings, attention_mask=mask,
                               **attention_cache_kwargs(block.self_attn, cache))
        return hidden + y[0]

    def ffn_input(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """``post_attention_layernorm(hidden)``: the input of the FFN experts and the router."""
        return self._layer(layer).post_attention_layernorm(hidden)

    def gate_scores(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Gating scores g_j (eq 7) of the FFN input ``x`` ``[N, H]``: float ``[N, K]``, rows sum to 1."""
        self._layer(layer)
        return self.routers[layer](x).float()

    def expert_parameters(self, layer: int, expert: int, *, copy: bool = False) -> dict[str, torch.Tensor]:
        """Expert ``expert``'s slice of layer ``layer``'s FFN (what its node holds, eq 6).

        Returns ``{"gate": [F/K, H], "up": [F/K, H], "down": [H, F/K]}``. When the layer's
        experts are contiguous neuron blocks (the layout :func:`~dmoe.model.carved.build.build_moe_model`
        produces) and ``copy`` is False these are **views** of the dense weights (no
        memory; treat them as read-only, ``down`` is a strided view); otherwise they are
        fresh contiguous copies.
        """
        block = self._layer(layer).mlp
        self._check_expert(expert)
        g, u, d = block.gate_proj.weight, block.up_proj.weight, block.down_proj.weight
        if self._contiguous[layer]:
            a, b = expert * self.expert_size, (expert + 1) * self.expert_size
            out = {"gate": g.detach()[a:b], "up": u.detach()[a:b], "down": d.detach()[:, a:b]}
            if copy:
                out = {key: v.clone().contiguous() for key, v in out.items()}
            return out
        idx = self.expert_neurons[layer, expert]
        return {
            "gate": g.detach().index_select(0, idx),
            "up": u.detach().index_select(0, idx),
            "down": d.detach().index_select(1, idx),
        }

    def expert_parameter_names(self) -> list[str]:
        """The FFN weights of every layer (``dense.model.layers.<l>.mlp.{gate,up,down}_proj.weight``):
        the K experts' slices together (eq 6)."""
        return [f"dense.model.layers.{layer}.mlp.{part}_proj.weight"
                for layer in range(self.num_layers) for part in ("gate", "up", "down")]

    def apply_expert(self, layer: int, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Run an expert from its held parameters: ``down (act(gate x) * up x)``, ``[N, H] -> [N, H]``.

        ``layer`` only selects the activation function (the same for every layer of the
        supported models).
        """
        act = self._layer(layer).mlp.act_fn
        f = torch.nn.functional
        return f.linear(act(f.linear(x, params["gate"])) * f.linear(x, params["up"]), params["down"])

    def expert_ffn(self, layer: int, expert: int, x: torch.Tensor) -> torch.Tensor:
        """``FFN_j(x)`` using only expert ``expert``'s neurons: ``[N, H] -> [N, H]``.

        The sum over all experts equals the dense FFN (float rounding aside).
        """
        return self.apply_expert(layer, self.expert_parameters(layer, expert), x)

    def combine_weights(self, selection: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Per-expert aggregation weights ``[N, K]`` for the current ``combine`` mode.

        ``"sum"``: 1 for selected experts, 0 otherwise. ``"weighted"``:
        ``sel_j g_j / sum_k sel_k g_k`` (eq 8) by :func:`~dmoe.model.combine.renormalised_weights`:
        every row with a selection sums to 1 (also for subnormal selected mass; equal
        weights when the selected scores are all 0); a row with nothing selected gets
        all-zero weights, i.e. the FFN adds nothing.
        """
        sel = selection.to(torch.bool)
        if self.combine == "sum":
            return sel.float()
        return renormalised_weights(sel, scores)

    def combine_outputs(
        self,
        outputs: torch.Tensor | Sequence[torch.Tensor | None],
        selection: torch.Tensor,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Aggregate expert outputs into the FFN output ``[N, H]`` (Section III-C step 5).

        Args:
            outputs: ``[N, K, H]``, or a list of K tensors ``[N, H]`` (an entry may be None
                when that expert is selected for no token). Entries of unselected
                (token, expert) pairs are ignored, whatever they hold (even NaN).
            selection: bool ``[N, K]`` (alpha).
            scores: ``[N, K]`` gating scores; needed for ``combine="weighted"``.
        """
        sel = selection.to(torch.bool)
        if self.combine == "weighted" and scores is None:
            raise ValueError("combine='weighted' needs the gating scores")
        weights = self.combine_weights(sel, scores if scores is not None else sel.float())
        n, k = sel.shape
        out = None
        for j in range(k):
            o = outputs[:, j] if isinstance(outputs, torch.Tensor) else outputs[j]
            if o is None:
                if bool(sel[:, j].any()):
                    raise ValueError(f"expert {j} is selected but its output is None")
                continue
            term = torch.where(sel[:, j, None], o.float() * weights[:, j, None], torch.zeros((), device=o.device))
            out = term if out is None else out + term
        if out is None:
            return torch.zeros(n, self.hidden_size, device=self.device)
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head: ``[N, H] -> [N, V]`` (pass only the rows you need)."""
        return self.dense.lm_head(self.dense.model.norm(hidden))

    # ------------------------------------------------------------------ reference pass
    def masked_ffn(self, layer: int, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """FFN of ``x`` ``[N, H]`` with expert j's neurons scaled by ``weights[:, j]`` ``[N, K]``.

        One full-width pass with a neuron mask: ``down((act(gate x) * up x) * w[:, expert(i)])``
        equals ``sum_j w_j FFN_j(x)``. ``weights=None`` is the dense FFN itself.
        """
        mlp = self._layer(layer).mlp
        if weights is None:
            return mlp(x)
        a = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
        if self._contiguous[layer]:
            a = (a.view(a.shape[0], self.num_experts, self.expert_size) * weights[:, :, None].to(a.dtype)).view_as(a)
        else:
            a = a * weights.to(a.dtype)[:, self.neuron_expert[layer]]
        return mlp.down_proj(a)

    @torch.no_grad()
    def forward_masked(
        self,
        input_ids: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        selection: torch.Tensor | Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Centralised reference forward pass: logits ``[S, V]`` for ids ``[S]``.

        Args:
            positions: ``[S]`` position ids (default ``0..S-1``).
            attention_mask: bool ``[S, S]`` (True = may attend); None = causal.
            selection: None — dense FFNs, the dense model itself (the HF forward's
                operations; tested at max |logit difference| <= 1e-4 on tiny models; a
                build permutes the FFN neurons, which changes float rounding: 5e-5 to 8e-5
                on SmolLM2-135M, tested at <= 5e-4). Bool
                ``[L, S, K]`` — layer l's FFN output is :meth:`combine_outputs` over the
                selected experts (scores from the routers when ``combine="weighted"``).
                A callable ``f(layer, scores [S, K]) -> bool [S, K]`` decides per layer
                from the gate scores (e.g. a Top-k rule). With every expert selected and
                ``combine="sum"`` the result equals the dense model within the same
                tolerances.
            return_hidden: also return the last hidden state ``[S, H]`` (before the norm).

        Computed with one full-width FFN per layer and a neuron mask, not K small matmuls.
        """
        ids = torch.as_tensor(input_ids, device=self.device).long()
        if ids.ndim != 1:
            raise ValueError(f"input_ids must be [S], got shape {tuple(ids.shape)}")
        seq = ids.shape[0]
        if positions is None:
            positions = torch.arange(seq, device=self.device)
        if isinstance(selection, torch.Tensor) and tuple(selection.shape) != (self.num_layers, seq, self.num_experts):
            raise ValueError(
                f"selection must be bool [L, S, K] = [{self.num_layers}, {seq}, {self.num_experts}], "
                f"got {tuple(selection.shape)}"
            )
        pe = self.position_embeddings(positions)
        h = self.embed(ids)
        for layer in range(self.num_layers):
            h = self.attention_block(layer, h, pe, attention_mask)
            x = self.ffn_input(layer, h)
            if selection is None:
                h = h + self.masked_ffn(layer, x, None)
                continue
            need_scores = callable(selection) or self.combine == "weighted"
            scores = self.gate_scores(layer, x) if need_scores else None
            sel = selection(layer, scores) if callable(selection) else selection[layer]
            weights = self.combine_weights(sel.to(self.device), scores if scores is not None else sel.float())
            h = h + self.masked_ffn(layer, x, weights)
        logits = self.logits(h)
        return (logits, h) if return_hidden else logits

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:  # noqa: D102
        """Same as :meth:`forward_masked`."""
        return self.forward_masked(input_ids, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, num_experts={self.num_experts}, "
            f"expert_size={self.expert_size}, combine={self.combine!r}"
        )
