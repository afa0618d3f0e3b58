"""The supported transformers Mixture-of-Experts families: one small spec per family.

Every family below keeps its routed experts as fused 3-D weights in transformers >= 5
(``experts.gate_up_proj`` ``[K, 2F, H]`` and ``experts.down_proj`` ``[K, H, F]``; GPT-OSS:
``[K, H, 2F]`` interleaved gate/up with biases and ``[K, F, H]``), and a router module whose
``forward`` returns ``(router_logits, top_k_weights, top_k_index)``.

How the gating scores g (eq 7: non-negative, summing to 1 over the K experts, as C1 needs)
come from the router's logits z ``[N, K]``, and how the family combines the outputs of
whatever experts a policy selected (selection alpha, FFN output ``sum_j w_j FFN_j(u)``):

==================  =====================  ==========================  ==================================
family              router scores          g                           combination weights w_j
==================  =====================  ==========================  ==================================
mixtral             softmax(z)             softmax(z)                  eq (8): alpha_j g_j / sum alpha g
qwen2_moe           softmax(z)             softmax(z)                  eq (8) if norm_topk_prob else
                                                                       alpha_j g_j; plus the shared expert
                                                                       sigmoid(w_s u) * FFN_s(u)
qwen3_moe, olmoe    softmax(z)             softmax(z)                  eq (8) if norm_topk_prob else
                                                                       alpha_j g_j
deepseek_v3         sigmoid(z); top-k of   sigmoid(z) / sum sigmoid    s * eq (8), s = routed_scaling_
                    sigmoid(z) + bias in   (the bias only chooses)     factor (= the family's normalised
                    the best groups                                    sigmoid weights); plus shared
                                                                       experts; first_k_dense_replace
                                                                       layers are dense
gpt_oss (bias)      softmax over the       softmax(z) over all K       eq (8) (a softmax over the selected
granitemoe(shared)  top-k logits           experts                     logits is exactly eq 8 of g);
                                                                       Granite: times residual_multiplier,
                                                                       plus the shared MLP
==================  =====================  ==========================  ==================================

With the family's own top-k selection these weights are exactly the family's own routing
weights, so the runtime with that selection reproduces the transformers forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FamilySpec", "FAMILIES", "SUPPORTED_MODEL_TYPES", "KNOWN_UNSUPPORTED_MOE", "family_of"]


@dataclass(frozen=True)
class FamilySpec:
    """How to read one transformers MoE family.

    Attributes:
        family: the ``model_type`` (also the family's name in dmoe).
        label: a human name for tables and messages.
        moe_attr: attribute of a decoder layer holding the MoE block (``mlp`` /
            ``block_sparse_moe``).
        router_attr: attribute of the MoE block holding the router (``gate`` / ``router``).
        scores: ``"softmax"`` (softmax over all K logits), ``"softmax_topk"`` (the family
            takes a softmax over its top-k logits; g is the softmax over all K), or
            ``"sigmoid"`` (DeepSeek-V3).
        expert_layout: ``"gate_up"`` (``[K, 2F, H]`` gate then up, ``[K, H, F]``, activation
            ``experts.act_fn``) or ``"gpt_oss"`` (``[K, H, 2F]`` interleaved, biases,
            clamped SwiGLU ``experts._apply_gate``).
        normalize: ``"always"``, ``"never"`` or ``"config"`` (``config.norm_topk_prob``):
            whether the combination renormalises the selected scores (eq 8).
        shared: ``None``, ``"qwen2"`` (``shared_expert`` with a sigmoid ``shared_expert_gate``),
            ``"deepseek"`` (``shared_experts``) or ``"granite"`` (the layer's ``shared_mlp``).
        granite_scales: embedding_multiplier, residual_multiplier and logits_scaling apply.
        g_rule: one line for ``dmoe run`` / ``summary.json``: how g is derived.
    """

    family: str
    label: str
    moe_attr: str = "mlp"
    router_attr: str = "gate"
    scores: str = "softmax"
    expert_layout: str = "gate_up"
    normalize: str = "config"
    shared: str | None = None
    granite_scales: bool = False
    g_rule: str = "g = softmax(router logits) over the K experts"


FAMILIES: dict[str, FamilySpec] = {
    s.family: s
    for s in (
        FamilySpec("mixtral", "Mixtral", normalize="always"),
        FamilySpec("qwen2_moe", "Qwen2-MoE", shared="qwen2"),
        FamilySpec("qwen3_moe", "Qwen3-MoE"),
        FamilySpec("olmoe", "OLMoE"),
        FamilySpec(
            "deepseek_v3",
            "DeepSeek-V3",
            scores="sigmoid",
            normalize="always",
            shared="deepseek",
            g_rule="g = sigmoid(router logits) / their sum over the K experts "
            "(e_score_correction_bias and the group limit only choose the native top-k)",
        ),
        FamilySpec(
            "gpt_oss",
            "GPT-OSS",
            router_attr="router",
            scores="softmax_topk",
            expert_layout="gpt_oss",
            normalize="always",
            g_rule="g = softmax(router logits + router bias) over the K experts "
            "(the family's softmax over its top-k logits is eq (8) of g)",
        ),
        FamilySpec(
            "granitemoe",
            "Granite-MoE",
            moe_attr="block_sparse_moe",
            router_attr="router",
            scores="softmax_topk",
            normalize="always",
            granite_scales=True,
            g_rule="g = softmax(router logits) over the K experts "
            "(the family's softmax over its top-k logits is eq (8) of g)",
        ),
        FamilySpec(
            "granitemoeshared",
            "Granite-MoE-Shared",
            moe_attr="block_sparse_moe",
            router_attr="router",
            scores="softmax_topk",
            normalize="always",
            shared="granite",
            granite_scales=True,
            g_rule="g = softmax(router logits) over the K experts "
            "(the family's softmax over its top-k logits is eq (8) of g)",
        ),
    )
}

#: ``model_type`` values dmoe runs as real MoE models.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)

#: MoE ``model_type`` values known to transformers that dmoe does not run (yet).
KNOWN_UNSUPPORTED_MOE: frozenset[str] = frozenset(
    {
        "deepseek_v2", "dbrx", "jamba", "jetmoe", "phimoe", "qwen3_next", "qwen3_vl_moe", "qwen2_moe_vl",
        "switch_transformers", "nllb_moe", "glm4_moe", "glm4v_moe", "ernie4_5_moe", "hunyuan_v1_moe",
        "minimax", "llama4", "llama4_text", "dots1", "bailing_moe", "flex_olmo", "aria", "aria_text",
        "granitemoehybrid", "lfm2_moe", "longcat_flash", "seed_oss", "mixtral_vl", "doge",
    }
)

#: config keys whose presence with a value > 1 marks a Mixture-of-Experts checkpoint.
MOE_CONFIG_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def supported_families_text() -> str:
    """``"mixtral (Mixtral), qwen2_moe (Qwen2-MoE), ..."`` for error messages."""
    return ", ".join(f"{s.family} ({s.label})" for s in FAMILIES.values())


def family_of(model_type: str) -> FamilySpec | None:
    """The spec of a ``model_type``, or None."""
    return FAMILIES.get(model_type)
