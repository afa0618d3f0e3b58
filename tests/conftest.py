"""Shared fixtures: a tiny real tokenizer and tiny random Llama models (milliseconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A real BPE tokenizer (HF `tokenizers`) trained on a few MMLU questions, vocab <= 256."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from dmoe.data import format_prompt, load_mmlu

    texts = []
    for q in load_mmlu("anatomy", limit=40):
        texts.append(format_prompt(q))
        texts.extend(" " + c for c in q.choices)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=256, special_tokens=["[UNK]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    cfg = dict(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


@pytest.fixture(scope="session")
def tiny_llama():
    """A tiny random dense LlamaForCausalLM in eval mode (seeded)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture(scope="module")
def ray_session():
    """Ray started once per test module (2 CPUs, no dashboard), shut down after it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_carved_build(tmp_path_factory, tiny_tokenizer):
    """``(build dir, root)``: a tiny random Llama (with the tiny tokenizer) carved into K = 4
    experts and cached under ``root / "cache"``: a model source for the CLI, the runtime and
    the harness (seconds)."""
    from pathlib import Path

    import torch
    from transformers import LlamaForCausalLM

    from dmoe.model import build_moe_model

    root = tmp_path_factory.mktemp("tinybuild")
    dense_dir = root / "tiny-llama"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(tiny_tokenizer))).eval().save_pretrained(dense_dir)
    tiny_tokenizer.save_pretrained(dense_dir)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, len(tiny_tokenizer), (24,), generator=g) for _ in range(6)]
    model = build_moe_model(dense_dir, num_experts=4, cache_dir=root / "cache", calibration_ids=calib,
                            progress=False)
    return Path(model.metadata["cache_path"]), root


def make_tiny_moe(dense, num_experts: int, seed: int = 1, cls=None):
    """A MoEModel over ``dense`` with a random neuron partition and random routers."""
    import torch

    from dmoe.model.moe import MoEModel
    from dmoe.model.router import Router

    torch.manual_seed(seed)
    F = dense.config.intermediate_size
    L = dense.config.num_hidden_layers
    parts = torch.stack([torch.randperm(F).view(num_experts, F // num_experts) for _ in range(L)])
    routers = []
    for _ in range(L):
        r = Router(dense.config.hidden_size, num_experts)
        torch.nn.init.normal_(r.weight, std=0.5)
        routers.append(r)
    return (cls or MoEModel)(dense, parts, routers)


# Property-based tests (tests/test_properties.py): one bounded, reproducible budget.
# "ci" (default): derandomized (the same examples every run), no deadline (CI machines
# vary), max_examples set per test with settings(...) on top of this profile.
# HYPOTHESIS_PROFILE=dev explores new random examples with a larger budget.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        derandomize=True,
        deadline=None,
        max_examples=40,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.register_profile(
        "dev", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    import os as _os

    settings.load_profile(_os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    pass
