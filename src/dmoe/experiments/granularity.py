"""Fine-grained experts (issue 12): quality at equal active fraction, K = 8 Top-2 vs K = 32 Top-8.

DeepSeekMoE (Dai et al., 2024) splits experts finer and activates proportionally more of
them: the same compute, more combinations. Here the carved SmolLM2 FFN (1536 neurons) is
split into K experts of 1536/K neurons (MoEfication) and the router's Top-k with
k/K = 1/4 runs centrally (``MoEModel.forward_masked`` with a Top-k rule; no radio, so the
comparison is about the model only). Measured per question, against the same model with
every expert (= the dense model):

* the NLL of the correct answer [nat] (DESIGN.md: the signal on a near-chance model);
* agreement: the sparse model picks the same option as the dense model;
* KL(dense || sparse) of the next-token distributions at the scored answer tokens [nat],
  averaged over the tokens of the question.

The better granularity (lower NLL and KL, paired bootstrap over questions) is reported; the
default model changes only if the fine one is better.
"""

from __future__ import annotations

import numpy as np
import torch

from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import fmt, md_table, question_config
from dmoe.experiments.plotting import csv_write, figure, save
from dmoe.experiments.stats import bootstrap_mean_interval, paired_bootstrap

NAME = "granularity"


def config(options: Options) -> dict:
    return {
        **question_config(options, quick_limit=16),
        # (experts per layer K, Top-k): the same 25 % of the FFN per token
        "variants": [[8, 2], [32, 8]] if options.quick else [[8, 2], [16, 4], [32, 8]],
        "seed": options.seed,
    }


def _top_k_rule(k: int):
    def rule(layer, scores):
        top = torch.topk(scores, k, dim=-1).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)

    return rule


@torch.no_grad()
def measure(model, queries, k: int) -> dict:
    """Per-question NLL (sparse and dense), agreement and mean KL for Top-``k`` of ``model``."""
    from dmoe.data.packing import option_logliks
    from dmoe.runtime.quality import token_kl

    nll, nll_dense, agree, kl = [], [], [], []
    rule = _top_k_rule(k)
    for q in queries:
        kw = dict(positions=q.positions, attention_mask=q.attention_mask)
        dense = model.forward_masked(q.input_ids, **kw)[q.score_rows].double()
        sparse = model.forward_masked(q.input_ids, selection=rule, **kw)[q.score_rows].double()
        ld, ls = option_logliks(dense, q), option_logliks(sparse, q)
        nll.append(float(-ls[q.answer]))
        nll_dense.append(float(-ld[q.answer]))
        agree.append(int(torch.argmax(ls) == torch.argmax(ld)))
        kl.append(float(token_kl(dense, sparse).mean()))
    return {"nll": nll, "nll_dense": nll_dense, "agree": agree, "kl": kl}


def run(cfg: dict, ctx) -> dict:
    out = []
    for num_experts, k in cfg["variants"]:
        model = ctx.model(num_experts)
        _, queries = ctx.packed(cfg["subjects"], cfg["limit"])
        ctx.log(f"[{NAME}] K = {num_experts}, Top-{k} on {len(queries)} questions ...")
        m = measure(model, queries, k)
        meta = getattr(model, "metadata", {}) or {}
        out.append({
            "num_experts": num_experts,
            "top_k": k,
            "active_fraction": k / num_experts,
            "router_top2_overlap": meta.get("mean_router_top2_overlap"),
            "mean_nll": float(np.mean(m["nll"])),
            "nll_ci": list(bootstrap_mean_interval(m["nll"], seed=cfg["seed"])),
            "dense_nll": float(np.mean(m["nll_dense"])),
            "agreement": float(np.mean(m["agree"])),
            "mean_kl": float(np.mean(m["kl"])),
            "kl_ci": list(bootstrap_mean_interval(m["kl"], seed=cfg["seed"])),
            "per_question": m,
        })
    return {"variants": out}


def _label(v) -> str:
    return f"K={v['num_experts']} Top-{v['top_k']}"


def plot(result: dict, path) -> None:
    vs = result["data"]["variants"]
    fig, axes = figure(ncols=3, width=3.6, height=3.4)
    labels = [_label(v) for v in vs]
    x = np.arange(len(vs))
    for ax, key, ci, title in (
        (axes[0], "mean_nll", "nll_ci", "answer NLL [nat] (lower is better)"),
        (axes[1], "mean_kl", "kl_ci", "KL(dense ‖ sparse) [nat/token]"),
        (axes[2], "agreement", None, "agreement with dense"),
    ):
        y = np.array([v[key] for v in vs])
        err = None
        if ci:
            lo = np.array([v[ci][0] for v in vs])
            hi = np.array([v[ci][1] for v in vs])
            err = np.vstack([y - lo, hi - y])
        ax.bar(x, y, yerr=err, color=["#888888", "#1f77b4", "#2ca02c"][: len(vs)], capsize=3)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if vs:
        axes[0].axhline(vs[0]["dense_nll"], color="black", ls="--", lw=1, label="dense")
        axes[0].legend(fontsize=8)
    save(fig, path)


def write_table(result: dict, path) -> None:
    header = ["num_experts", "top_k", "active_fraction", "mean_nll", "nll_lo", "nll_hi", "dense_nll", "agreement",
              "mean_kl", "kl_lo", "kl_hi"]
    rows = [[v["num_experts"], v["top_k"], v["active_fraction"], v["mean_nll"], *v["nll_ci"], v["dense_nll"],
             v["agreement"], v["mean_kl"], *v["kl_ci"]] for v in result["data"]["variants"]]
    csv_write(path, header, rows)


def compare(result: dict) -> dict:
    """Paired differences finest minus coarsest (NLL, KL, agreement) and whether finer is better."""
    vs = result["data"]["variants"]
    coarse, fine = vs[0], vs[-1]
    seed = result["config"]["seed"]
    pq_c, pq_f = coarse["per_question"], fine["per_question"]
    d_nll = paired_bootstrap(pq_f["nll"], pq_c["nll"], seed=seed)
    d_kl = paired_bootstrap(pq_f["kl"], pq_c["kl"], seed=seed)
    d_agree = paired_bootstrap(pq_f["agree"], pq_c["agree"], seed=seed)
    better = d_nll["hi"] < 0 and d_kl["hi"] < 0
    worse = d_nll["lo"] > 0 and d_kl["lo"] > 0
    return {"nll": d_nll, "kl": d_kl, "agreement": d_agree, "finer_better": better, "finer_worse": worse}


def report(result: dict) -> Section:
    vs = result["data"]["variants"]
    rows = [[_label(v), f"{v['active_fraction']:.0%}", f"{fmt(v['mean_nll'])} [{fmt(v['nll_ci'][0])}, {fmt(v['nll_ci'][1])}]",
             fmt(v["dense_nll"]), f"{v['agreement']:.1%}", f"{v['mean_kl']:.3f}"] for v in vs]
    c = compare(result)
    fine, coarse = vs[-1], vs[0]
    verdict = AGREES if c["finer_better"] else (DIFFERS if c["finer_worse"] else PARTLY)
    claims = [Claim(
        "finer experts keep more quality at the same active fraction (DeepSeekMoE)",
        "fine-grained segmentation helps",
        f"{_label(fine)} minus {_label(coarse)}: answer NLL {c['nll']['diff']:+.2f} "
        f"[{c['nll']['lo']:+.2f}, {c['nll']['hi']:+.2f}], KL {c['kl']['diff']:+.3f} "
        f"[{c['kl']['lo']:+.3f}, {c['kl']['hi']:+.3f}], agreement {c['agreement']['diff']:+.1%}",
        verdict,
        "95% paired bootstrap intervals over questions; 'agrees' needs both NLL and KL lower with "
        "intervals below 0.",
    )]
    return Section(
        summary=(
            "The carved SmolLM2 FFN split into K experts of 1536/K neurons, Top-k with k/K = 25% run centrally "
            f"on MMLU {', '.join(result['config']['subjects'])} ({len(fine['per_question']['nll'])} questions): "
            "quality against the dense model."
        ),
        claims=claims,
        tables=[md_table(["variant", "active", "answer NLL [95% CI]", "dense NLL", "agreement with dense",
                          "KL(dense‖sparse)"], rows)],
    )


EXPERIMENT = Experiment(NAME, "Fine-grained experts at equal active fraction", "issue 12 (not in the paper)", True,
                        config, run, plot, write_table, report)
