"""`dmoe reproduce granularity` and `placement` end to end on tiny random models (issue 12)."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from dmoe.experiments import Options, run_experiments
from dmoe.experiments.context import Context


class _TinyContext(Context):
    """A real Context whose models are tiny random MoE models with a real tokenizer."""

    def __init__(self, output, tiny_llama, tokenizer):
        # cache_dir: the cached co-activation of these keyless tiny models stays in the test folder
        super().__init__(output, cache_dir=Path(output) / "model-cache", progress=False, log=lambda *_: None)
        self._tiny = tiny_llama
        self._tok = tokenizer
        self._models = {}

    def model(self, num_experts: int = 8):
        from dmoe.model.moe import MoEModel
        from dmoe.model.router import Router

        if num_experts not in self._models:
            gen = torch.Generator().manual_seed(num_experts)
            F = self._tiny.config.intermediate_size
            L = self._tiny.config.num_hidden_layers
            parts = torch.stack([torch.randperm(F, generator=gen).view(num_experts, F // num_experts) for _ in range(L)])
            routers = []
            for _ in range(L):
                r = Router(self._tiny.config.hidden_size, num_experts)
                torch.nn.init.normal_(r.weight, std=0.5, generator=gen)
                routers.append(r)
            self._models[num_experts] = MoEModel(self._tiny, parts, routers, tokenizer=self._tok,
                                                 metadata={"key": f"tiny-K{num_experts}"})
        return self._models[num_experts]


def _small(options):
    from dmoe.experiments import placement_exp

    cfg = placement_exp.config(options)
    cfg.update(nodes=[2, 4], policies=["Top-8", "JESA(0.9,8)"], calibration_tokens=200)
    return cfg


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_granularity_and_placement_experiments(tmp_path, tiny_llama, tiny_tokenizer, monkeypatch):
    import dataclasses

    from dmoe.experiments import EXPERIMENTS

    monkeypatch.setitem(EXPERIMENTS, "placement", dataclasses.replace(EXPERIMENTS["placement"], config=_small))
    ctx = _TinyContext(tmp_path, tiny_llama, tiny_tokenizer)
    run_experiments(["granularity", "placement"], tmp_path, options=Options(quick=True, limit=2), context=ctx,
                    progress=False, log=lambda *_: None)
    report = (tmp_path / "report.md").read_text()
    for name in ("granularity", "placement"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
        assert f"![{name}]({name}.png)" in report
    g = json.loads((tmp_path / "granularity.json").read_text())
    variants = g["data"]["variants"]
    assert [(v["num_experts"], v["top_k"]) for v in variants] == [(8, 2), (32, 8)]
    for v in variants:
        assert v["active_fraction"] == 0.25 and v["mean_kl"] >= 0 and 0 <= v["agreement"] <= 1
    p = json.loads((tmp_path / "placement.json").read_text())
    rows = p["data"]["rows"]
    assert len(rows) == 2 * 3 * 2
    # Top-8 selects the same experts under every placement: same NLL, and grouping can only
    # lower the number of transmissions when experts of a node are co-selected
    top = {(r["nodes"], r["placement"]): r for r in rows if r["policy"] == "Top-8"}
    for n in (2, 4):
        assert top[(n, "coactivation")]["mean_nll"] == pytest.approx(top[(n, "round-robin")]["mean_nll"])
        assert top[(n, "coactivation")]["coactivation_kept"] >= top[(n, "round-robin")]["coactivation_kept"] - 1e-12
    assert "co-activation saving vs round-robin" in report
