"""Layer-importance profiles of the tiny random transformers MoE families (issue 11).

Builds the same tiny random checkpoints as ``tests/test_hf_moe.py`` (2 layers, hidden size
32, weights N(0, 0.2^2), seed 0) and a tiny BPE tokenizer like ``tests/conftest.py``, then
calibrates each with ``base="full"``, windows of one layer, levels z in {0.1, 0.4, 1.0},
D = the family's native top-k, on 16 calibration questions. Prints, per family, the KL
increment [nat/token] of each layer at the lowest level and whether layer 1 matters more
than layer 2. Run: ``PYTHONPATH=src:tests python docs/importance/tiny_families.py``.
Random weights carry no learned structure: the answer says what the tool measures on
them, not what trained checkpoints of these families do.
"""

from __future__ import annotations

import tempfile
import warnings

import numpy as np

from dmoe.importance import calibrate_importance
from dmoe.model import load_expert_model
from dmoe.system import SystemConfig, default_num_subcarriers


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from dmoe.data import format_prompt, load_mmlu

    texts = []
    for q in load_mmlu("anatomy", limit=40):
        texts.append(format_prompt(q))
        texts.extend(" " + c for c in q.choices)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=256, special_tokens=["[UNK]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def main() -> None:
    from test_hf_moe import FAMILY_NAMES, save_tiny_moe

    tok = tiny_tokenizer()
    print(f"{'family':<18}{'K':>3}{'top-k':>6}  KL increment at z=0.1 per layer [nat/token]   lower layer matters more?")
    for family in FAMILY_NAMES:
        with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_tiny_moe(family, d, tokenizer=tok)
            model = load_expert_model(d)
            k = model.num_experts
            system = SystemConfig(num_experts=k, num_subcarriers=default_num_subcarriers(k))
            prof = calibrate_importance(model, qos=(0.1, 0.4, 1.0), max_experts=model.native_top_k, window=1,
                                        num_questions=16, system=system, base="full", progress=False)
        kl = np.asarray(prof.kl)
        se = np.asarray(prof.kl_se)
        sens = kl[:, 0] - kl[:, -1]
        moe = np.asarray(prof.moe_layers)
        cells = "  ".join(f"l{i + 1}: {s:.3f}±{e:.3f}" + ("" if m else " (dense)")
                          for i, (s, e, m) in enumerate(zip(sens, se[:, 0], moe)))
        if moe.sum() < 2:
            verdict = "n/a (one MoE layer)"
        else:
            verdict = "yes" if sens[0] > sens[1] else "no"
        print(f"{family:<18}{k:>3}{model.native_top_k:>6}  {cells:<44}{verdict}")


if __name__ == "__main__":
    main()
