"""HFMoEModel: a transformers Mixture-of-Experts causal LM behind the ExpertModel interface.

One generic adapter for every family of :mod:`dmoe.model.hf_moe.families`: the decoder
layers, attention blocks, norms, rotary embedding and LM head are the transformers
modules themselves; the routed experts are read from the fused 3-D expert weights
(expert j's node holds ``gate_up_proj[j]`` and ``down_proj[j]``, eq 6); the gating scores
g and the combination weights follow the family spec (table in ``families.py``). Shared
experts and dense layers are the always-on part, run at the source node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..combine import renormalised_weights
from ..interface import ExpertModel, RouterOutputError, UnsupportedModelError
from ..kv_cache import attention_cache_kwargs, check_cache_arguments
from ..masks import attention_mask_for, cached_attention_mask
from .families import FamilySpec, family_of, supported_families_text

__all__ = ["HFMoEModel"]


class HFMoEModel(nn.Module, ExpertModel):
    """A transformers MoE ``*ForCausalLM`` seen through :class:`~dmoe.model.interface.ExpertModel`.

    Args:
        hf_model: the transformers model (kept as ``self.hf``, eval mode, not modified).
        spec: its :class:`~dmoe.model.hf_moe.families.FamilySpec`; default from
            ``hf_model.config.model_type``.
        tokenizer: optional tokenizer (``self.tokenizer``).
        metadata: optional dict (``self.metadata``; :meth:`describe` is added to it).

    Raises:
        UnsupportedModelError: the model type is not a supported family (the message names
            them), the layers do not have the family's layout, no layer has routed experts,
            or a DeepSeek-V3 config has ``norm_topk_prob=False`` (its weights
            ``sigmoid(z_j) * s`` are not a function of g; released checkpoints use True).
    """

    def __init__(self, hf_model: nn.Module, spec: FamilySpec | None = None, *, tokenizer: Any = None,
                 metadata: dict | None = None):
        super().__init__()
        cfg = hf_model.config
        spec = spec or family_of(getattr(cfg, "model_type", ""))
        if spec is None:
            raise UnsupportedModelError(
                f"model type {getattr(cfg, 'model_type', None)!r} ({type(hf_model).__name__}) is not a supported "
                f"Mixture-of-Experts family; supported: {supported_families_text()}"
            )
        self.hf = hf_model
        self.spec = spec
        self.tokenizer = tokenizer
        inner = getattr(hf_model, "model", None)
        if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
            raise UnsupportedModelError(f"{type(hf_model).__name__} does not have the decoder layout of {spec.label}")
        self._moe_layers: list[bool] = []
        for i, layer in enumerate(inner.layers):
            block = getattr(layer, spec.moe_attr, None)
            router = getattr(block, spec.router_attr, None)
            experts = getattr(block, "experts", None)
            is_moe = router is not None and hasattr(experts, "gate_up_proj") and hasattr(experts, "down_proj")
            if not is_moe and not isinstance(block, nn.Module):
                raise UnsupportedModelError(f"{spec.label}: decoder layer {i} has no {spec.moe_attr!r} block")
            self._moe_layers.append(is_moe)
        if not any(self._moe_layers):
            raise UnsupportedModelError(f"{spec.label} checkpoint has no layer with routed experts")
        first = self._moe_block(self._moe_layers.index(True))
        self._num_experts = int(first.experts.gate_up_proj.shape[0])
        from ..dispatch import check_native_top_k

        check_native_top_k(getattr(cfg, "num_experts_per_tok", None), self._num_experts,
                           where=getattr(cfg, "_name_or_path", "") or type(hf_model).__name__)
        if spec.normalize == "always":
            self._normalize = True
        elif spec.normalize == "never":
            self._normalize = False
        else:
            self._normalize = bool(getattr(cfg, "norm_topk_prob", False))
        if spec.family == "deepseek_v3" and not bool(getattr(cfg, "norm_topk_prob", True)):
            raise UnsupportedModelError(
                "DeepSeek-V3 with `norm_topk_prob`=False is not supported: its combination weights "
                "sigmoid(z_j) * routed_scaling_factor are not a function of the normalised scores g "
                "(released DeepSeek-V3 / R1 checkpoints use norm_topk_prob=True)"
            )
        self._routed_scale = float(getattr(cfg, "routed_scaling_factor", 1.0) or 1.0) if spec.scores == "sigmoid" else 1.0
        self._residual_scale = float(getattr(cfg, "residual_multiplier", 1.0)) if spec.granite_scales else 1.0
        self._embed_scale = float(getattr(cfg, "embedding_multiplier", 1.0)) if spec.granite_scales else 1.0
        self._logits_scale = float(getattr(cfg, "logits_scaling", 1.0)) if spec.granite_scales else 1.0
        self._windows = [self._sliding_window(i) for i in range(len(inner.layers))]
        expert_params = first.experts.gate_up_proj[0].numel() + first.experts.down_proj[0].numel()
        self._always_on_size = [self._count_always_on(i) / expert_params for i in range(len(inner.layers))]
        self.metadata = dict(metadata or {})
        self.metadata.update(self.describe())

    # ------------------------------------------------------------------ structure
    def _layer(self, layer: int):
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} out of range [0, {self.num_layers})")
        return self.hf.model.layers[layer]

    def _moe_block(self, layer: int):
        return getattr(self._layer(layer), self.spec.moe_attr)

    def _sliding_window(self, layer: int) -> int | None:
        """transformers' rule: ``config.layer_types`` when present, else ``config.sliding_window``."""
        cfg = self.hf.config
        window = getattr(cfg, "sliding_window", None)
        types = getattr(cfg, "layer_types", None)
        if types is not None:
            return int(window) if types[layer] == "sliding_attention" and window else None
        return int(window) if window else None

    def _always_on_modules(self, layer: int) -> list[nn.Module]:
        block = self._moe_block(layer)
        if not self._moe_layers[layer]:
            return [block]
        shared = self.spec.shared
        if shared == "qwen2":
            return [block.shared_expert, block.shared_expert_gate]
        if shared == "deepseek":
            return [block.shared_experts]
        if shared == "granite":
            mlp = getattr(self._layer(layer), "shared_mlp", None)
            return [] if mlp is None else [mlp]
        return []

    def _count_always_on(self, layer: int) -> int:
        return sum(p.numel() for m in self._always_on_modules(layer) for p in m.parameters())

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def config(self):
        return self.hf.config

    @property
    def native_top_k(self) -> int:
        return int(self.hf.config.num_experts_per_tok)

    @property
    def num_layers(self) -> int:
        return len(self.hf.model.layers)

    @property
    def num_experts(self) -> int:
        return self._num_experts

    @property
    def hidden_size(self) -> int:
        return int(self.hf.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.hf.lm_head.out_features)

    @property
    def device(self) -> torch.device:
        return self.hf.lm_head.weight.device

    @property
    def combine(self) -> str:
        """Always ``"family"``: the family's own combination (``families.py``)."""
        return "family"

    @combine.setter
    def combine(self, value: str) -> None:
        if value != "family":
            raise ValueError(
                f"`combine` ({value!r}) applies to the carved model only; a {self.spec.label} checkpoint "
                "combines its experts with its own weights (combine='family')"
            )

    def is_moe_layer(self, layer: int) -> bool:
        self._layer(layer)
        return self._moe_layers[layer]

    def always_on_size(self, layer: int) -> float:
        self._layer(layer)
        return float(self._always_on_size[layer])

    def describe(self) -> dict[str, Any]:
        """Family, K, native top-k, shared experts, dense layers and how g is derived."""
        shared = {
            None: "none",
            "qwen2": "1 shared expert with a sigmoid gate, at the source node",
            "deepseek": f"{getattr(self.hf.config, 'n_shared_experts', 1)} shared expert(s), at the source node",
            "granite": "shared MLP, at the source node",
        }[self.spec.shared]
        dense = [i for i, m in enumerate(self._moe_layers) if not m]
        if self.spec.scores == "sigmoid":
            weights = f"routed_scaling_factor ({self._routed_scale:g}) x eq (8) = the family's normalised sigmoid weights"
        elif self._normalize:
            weights = "eq (8): g renormalised over the selected experts"
        else:
            weights = "g_j of each selected expert (norm_topk_prob=False: no renormalisation)"
        if self._residual_scale != 1.0:
            weights += f", times residual_multiplier {self._residual_scale:g}"
        return {
            "family": self.spec.family,
            "label": self.spec.label,
            "model_class": type(self.hf).__name__,
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "native_top_k": self.native_top_k,
            "shared_experts": shared,
            "dense_layers": dense,
            "gate": self.spec.g_rule,
            "combine": weights,
        }

    # ------------------------------------------------------------------ pieces
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[S]`` -> ``[S, H]`` (Granite: times embedding_multiplier)."""
        e = self.hf.model.embed_tokens(torch.as_tensor(input_ids, device=self.device))
        return e * self._embed_scale if self._embed_scale != 1.0 else e

    def position_embeddings(self, positions: torch.Tensor):
        """Rotary ``(cos, sin)``, each ``[1, S, rotary dim]``, for positions ``[S]``."""
        positions = torch.as_tensor(positions, device=self.device).long()
        dummy = self.hf.lm_head.weight[:1, :1]
        return self.hf.model.rotary_emb(dummy, positions.reshape(1, -1))

    def attention_block(self, layer, hidden, position_embeddings, attention_mask=None, *, positions=None,
                        cache=None):
        """``hidden + attn(input_layernorm(hidden))`` ``[S, H]`` (Granite: attn times residual_multiplier).

        ``attention_mask``: bool ``[S, S]`` (True = may attend), None = causal. Layers with a
        sliding window W also mask keys W or more positions back; their positions are taken
        from ``positions`` ``[S]`` or, when None, recovered as the number of keys each
        query may attend minus 1 (exact for causal and packed-tree masks).

        ``cache``: a :class:`~dmoe.model.kv_cache.KVCache` (decoding, issue 17): the S new
        tokens at ``positions`` (required) attend the cached keys plus themselves, causally
        on positions and within the layer's sliding window, and join the cache (no
        ``attention_mask`` then). Raises ValueError on a missing ``positions`` or an
        ``attention_mask`` given with a cache.
        """
        block = self._layer(layer)
        seq = hidden.shape[0]
        window = self._windows[layer]
        if cache is not None:
            check_cache_arguments(attention_mask, positions)
            keys = cache.append_positions(layer, positions)
            impl = getattr(self.hf.config, "_attn_implementation", "sdpa")
            mask = cached_attention_mask(impl, positions, keys, hidden.dtype, self.device, sliding_window=window)
            y = block.input_layernorm(hidden)[None]
            y, _ = block.self_attn(hidden_states=y, position_embeddings=position_embeddings, attention_mask=mask,
                                   **attention_cache_kwargs(block.self_attn, cache))
            y = y[0]
            return hidden + (y * self._residual_scale if self._residual_scale != 1.0 else y)
        if window is not None and positions is None:
            if attention_mask is None:
                positions = torch.arange(seq, device=self.device)
            else:
                positions = attention_mask.to(self.device).sum(-1) - 1
        impl = getattr(self.hf.config, "_attn_implementation", "sdpa")
        mask = attention_mask_for(impl, attention_mask, seq, hidden.dtype, self.device,
                                  positions=positions, sliding_window=window)
        y = block.input_layernorm(hidden)[None]
        y, _ = block.self_attn(hidden_states=y, position_embeddings=position_embeddings, attention_mask=mask)
        y = y[0]
        return hidden + (y * self._residual_scale if self._residual_scale != 1.0 else y)

    def ffn_input(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """``post_attention_layernorm(hidden)``: the input of the router, experts and always-on part."""
        return self._layer(layer).post_attention_layernorm(hidden)

    def router_logits(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Router logits z ``[N, K]`` float32 of a MoE layer (with the router's bias, GPT-OSS).

        Raises ValueError for a dense layer, :class:`RouterOutputError` for NaN/inf logits.
        """
        if not self.is_moe_layer(layer):
            raise ValueError(f"layer {layer} is a dense layer: it has no router")
        router = getattr(self._moe_block(layer), self.spec.router_attr)
        z = F.linear(x.float(), router.weight.float(), None if getattr(router, "bias", None) is None else router.bias.float())
        bad = ~torch.isfinite(z)
        if bool(bad.any()):
            rows = int(bad.any(-1).sum())
            raise RouterOutputError(
                f"the router of layer {layer} produced non-finite (NaN/inf) logits for {rows} of {z.shape[0]} "
                "tokens; the checkpoint's weights or the hidden states are corrupt"
            )
        return z

    def gate_scores(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """g (eq 7) ``[N, K]`` float32: softmax of the logits, or the normalised sigmoid (DeepSeek-V3)."""
        z = self.router_logits(layer, x)
        if self.spec.scores == "sigmoid":
            s = z.sigmoid()
            return s / s.sum(-1, keepdim=True)
        return torch.softmax(z, dim=-1)

    def native_selection(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The family's own top-k routing of ``x`` ``[N, H]``: bool ``[N, K]`` from the router module
        itself (DeepSeek-V3: correction bias and group limit included)."""
        if not self.is_moe_layer(layer):
            raise ValueError(f"layer {layer} is a dense layer: it has no router")
        self.router_logits(layer, x)  # NaN check with a clear message
        router = getattr(self._moe_block(layer), self.spec.router_attr)
        index = router(x)[2]
        sel = torch.zeros(x.shape[0], self.num_experts, dtype=torch.bool, device=x.device)
        return sel.scatter_(1, index.long(), True)

    def expert_parameters(self, layer: int, expert: int, *, copy: bool = False) -> dict[str, torch.Tensor]:
        """Expert ``expert``'s weights of ``layer`` (views of the fused tensors unless ``copy``).

        ``{"gate_up": [2F, H], "down": [H, F]}``; GPT-OSS ``{"gate_up": [H, 2F], "gate_up_bias": [2F],
        "down": [F, H], "down_bias": [H]}``. Raises ValueError for a dense layer.
        """
        if not self.is_moe_layer(layer):
            raise ValueError(f"layer {layer} is a dense layer: it has no routed experts")
        if not 0 <= expert < self.num_experts:
            raise IndexError(f"expert {expert} out of range [0, {self.num_experts})")
        ex = self._moe_block(layer).experts
        out = {"gate_up": ex.gate_up_proj.detach()[expert], "down": ex.down_proj.detach()[expert]}
        if self.spec.expert_layout == "gpt_oss":
            out["gate_up_bias"] = ex.gate_up_proj_bias.detach()[expert]
            out["down_bias"] = ex.down_proj_bias.detach()[expert]
        if copy:
            out = {k: v.clone().contiguous() for k, v in out.items()}
        return out

    def expert_parameter_names(self) -> list[str]:
        """The fused 3-D expert weights of every MoE layer
        (``hf.model.layers.<l>.<block>.experts.{gate_up_proj,down_proj}``, GPT-OSS also their
        biases): the routed experts' (eq 6). Shared experts and dense layers are not in it."""
        parts = ["gate_up_proj", "down_proj"]
        if self.spec.expert_layout == "gpt_oss":
            parts += ["gate_up_proj_bias", "down_proj_bias"]
        return [f"hf.model.layers.{layer}.{self.spec.moe_attr}.experts.{part}"
                for layer in range(self.num_layers) if self._moe_layers[layer] for part in parts]

    def apply_expert(self, layer: int, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Expert FFN from its held weights ``[N, H] -> [N, H]`` (the family's own operations)."""
        ex = self._moe_block(layer).experts
        if self.spec.expert_layout == "gpt_oss":
            h = x @ params["gate_up"] + params["gate_up_bias"]
            return ex._apply_gate(h) @ params["down"] + params["down_bias"]
        gate, up = F.linear(x, params["gate_up"]).chunk(2, dim=-1)
        return F.linear(ex.act_fn(gate) * up, params["down"])

    def always_on(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        """Shared experts (Qwen2-MoE: gated by sigmoid(shared_expert_gate u); DeepSeek-V3;
        Granite shared MLP) or a dense layer's whole FFN, ``[N, H]``; None when there is none."""
        block = self._moe_block(layer)
        if not self._moe_layers[layer]:
            y = block(x)
        elif self.spec.shared == "qwen2":
            y = torch.sigmoid(block.shared_expert_gate(x)) * block.shared_expert(x)
        elif self.spec.shared == "deepseek":
            y = block.shared_experts(x)
        elif self.spec.shared == "granite" and getattr(self._layer(layer), "shared_mlp", None) is not None:
            y = self._layer(layer).shared_mlp(x)
        else:
            return None
        return y * self._residual_scale if self._residual_scale != 1.0 else y

    def combine_weights(self, selection: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The family's weights ``[N, K]`` for a selection ``[N, K]`` and scores g ``[N, K]``.

        ``sel_j g_j / sum_k sel_k g_k`` (eq 8 by :func:`~dmoe.model.combine.renormalised_weights`:
        rows sum to 1 even for subnormal selected mass; a row with nothing selected gets
        zeros) when the family renormalises, else ``sel_j g_j``; times routed_scaling_factor
        (DeepSeek-V3) and residual_multiplier (Granite).
        """
        sel = selection.to(torch.bool).to(scores.device)
        mass = torch.where(sel, scores.float(), torch.zeros((), dtype=torch.float32, device=scores.device))
        if self._normalize:
            # eq (8) exact at float32's edges (subnormal selected mass): dmoe.model.combine
            mass = renormalised_weights(sel, scores)
        scale = self._routed_scale * self._residual_scale
        return mass * scale if scale != 1.0 else mass

    def combine_outputs(self, outputs, selection, scores=None) -> torch.Tensor:
        """``sum_j w_j FFN_j(u)`` ``[N, H]`` with :meth:`combine_weights`; ``outputs`` ``[N, K, H]`` or a
        list of K ``[N, H]`` tensors / None (entries of unselected pairs are ignored, even NaN)."""
        if scores is None:
            raise ValueError("`scores` (g) are needed: the family combines with its own weights")
        sel = selection.to(torch.bool).to(self.device)
        w = self.combine_weights(sel, scores.to(self.device))
        out = torch.zeros(sel.shape[0], self.hidden_size, device=self.device)
        for j in range(sel.shape[1]):
            o = outputs[:, j] if isinstance(outputs, torch.Tensor) else outputs[j]
            if o is None:
                if bool(sel[:, j].any()):
                    raise ValueError(f"expert {j} is selected but its output is None")
                continue
            out = out + torch.where(sel[:, j, None], o.float() * w[:, j, None], torch.zeros((), device=o.device))
        return out

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head ``[N, H] -> [N, V]`` (Granite: divided by logits_scaling)."""
        y = self.hf.lm_head(self.hf.model.norm(hidden))
        return y / self._logits_scale if self._logits_scale != 1.0 else y

    # ------------------------------------------------------------------ reference pass
    def routed_ffn(self, layer: int, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_j weights[:, j] FFN_j(x)`` ``[N, H]``, running each expert on its tokens only."""
        out = torch.zeros_like(x)
        for j in torch.nonzero(weights.ne(0).any(0)).flatten().tolist():
            idx = torch.nonzero(weights[:, j].ne(0), as_tuple=True)[0]
            y = self.expert_ffn(layer, j, x[idx])
            out.index_add_(0, idx, y * weights[idx, j, None].to(y.dtype))
        return out

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
        """Centralised reference pass: logits ``[S, V]`` for ids ``[S]``.

        ``selection``: None — the family's own top-k routing (:meth:`native_selection`), i.e.
        the full model (equals the transformers forward; tested within 1e-4 in fp32 on tiny
        random configs); bool ``[L, S, K]`` or ``f(layer, g [S, K]) -> bool [S, K]`` — those
        experts with the family's weights (:meth:`combine_weights`). Dense layers ignore it.
        ``positions`` ``[S]`` (default ``0..S-1``), ``attention_mask`` bool ``[S, S]`` (None = causal).
        """
        logits, h, _ = self._reference(input_ids, positions, attention_mask, selection)
        return (logits, h) if return_hidden else logits

    @torch.no_grad()
    def native_selections(self, input_ids, *, positions=None, attention_mask=None) -> torch.Tensor:
        """The family's own routing of every token at every layer: bool ``[L, S, K]`` (all False
        at dense layers), from the full-model reference pass."""
        return self._reference(input_ids, positions, attention_mask, None)[2]

    def _reference(self, input_ids, positions, attention_mask, selection):
        ids = torch.as_tensor(input_ids, device=self.device).long()
        if ids.ndim != 1:
            raise ValueError(f"`input_ids` must be [S], got shape {tuple(ids.shape)}")
        seq = ids.shape[0]
        if positions is None:
            positions = torch.arange(seq, device=self.device)
        if isinstance(selection, torch.Tensor) and tuple(selection.shape) != (self.num_layers, seq, self.num_experts):
            raise ValueError(
                f"`selection` must be bool [L, S, K] = [{self.num_layers}, {seq}, {self.num_experts}], "
                f"got {tuple(selection.shape)}"
            )
        # [L, S, K] the experts used
        used = torch.zeros(self.num_layers, seq, self.num_experts, dtype=torch.bool, device=self.device)
        pe = self.position_embeddings(positions)
        h = self.embed(ids)
        for layer in range(self.num_layers):
            h = self.attention_block(layer, h, pe, attention_mask, positions=positions)
            u = self.ffn_input(layer, h)
            if self._moe_layers[layer]:
                g = self.gate_scores(layer, u)
                if selection is None:
                    sel = self.native_selection(layer, u)
                elif callable(selection) and not isinstance(selection, torch.Tensor):
                    sel = selection(layer, g)
                else:
                    sel = selection[layer]
                sel = sel.to(self.device).to(torch.bool)
                used[layer] = sel
                h = h + self.routed_ffn(layer, u, self.combine_weights(sel, g))
            extra = self.always_on(layer, u)
            if extra is not None:
                h = h + extra
        return self.logits(h), h, used

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:  # noqa: D102
        """Same as :meth:`forward_masked`."""
        return self.forward_masked(input_ids, **kwargs)

    def extra_repr(self) -> str:
        return f"family={self.family!r}, num_layers={self.num_layers}, num_experts={self.num_experts}, top_k={self.native_top_k}"
