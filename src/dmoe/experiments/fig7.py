"""Fig. 7: energy per token at each layer for Top-2, JESA(gamma0, D) and LB(gamma0, D).

Paper (Section VII-C): Top-2's cost per token is steady across layers; JESA's falls at
higher layers, faster for smaller gamma0; JESA is close to the lower bound LB.
"""

from __future__ import annotations

import numpy as np

from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import early_late_ratio, fmt, md_table, policy_summary, question_config, statistics_line
from dmoe.experiments.plotting import csv_write, figure, save, sequential_colors
from dmoe.policies import JESAPolicy, LowerBound, TopK
from dmoe.system import SystemConfig

NAME = "fig7"


def config(options: Options) -> dict:
    return {
        **question_config(options),
        "gammas": [0.8, 0.9] if options.quick else [0.8, 0.85, 0.9, 0.95],
        "max_experts": 2,
        "seed": options.seed,
        "system": SystemConfig().to_dict(),
        "channel_redraw": "layer",
    }


def run(cfg: dict, ctx) -> dict:
    system = SystemConfig.from_dict(cfg["system"])
    d = cfg["max_experts"]
    policies = [TopK(2)] + [JESAPolicy(g, d) for g in cfg["gammas"]] + [LowerBound(g, d) for g in cfg["gammas"]]
    out = []
    for p in policies:
        rec = ctx.evaluate(p, subjects=cfg["subjects"], limit=cfg["limit"], seed=cfg["seed"], system=system,
                           channel_redraw=cfg["channel_redraw"], label=NAME)
        out.append(policy_summary(rec, seed=cfg["seed"], per_question=False))
    return {"policies": out}


def half_energy_layer(curve) -> int | None:
    """First layer whose energy per token is at most half the mean of layers 1-3 (None: never)."""
    c = np.asarray(curve, dtype=np.float64)
    below = np.flatnonzero(c <= 0.5 * c[:3].mean())
    return int(below[0]) + 1 if below.size else None


def _by_name(data):
    return {p["policy"]: p for p in data["policies"]}


def plot(result: dict, path) -> None:
    cfg, data = result["config"], result["data"]
    pols = _by_name(data)
    fig, ax = figure(width=7.2, height=4.6)
    top = pols["Top-2"]
    layers = np.arange(1, len(top["per_token_total_j"]) + 1)
    ax.plot(layers, np.asarray(top["per_token_total_j"]) * 1e3, color="black", marker="s", ms=3, label="Top-2")
    colors = sequential_colors(len(cfg["gammas"]), "plasma")
    d = cfg["max_experts"]
    for g, c in zip(cfg["gammas"], colors):
        j = pols[f"JESA({g:g},{d})"]
        lb = pols[f"LB({g:g},{d})"]
        ax.plot(layers, np.asarray(j["per_token_total_j"]) * 1e3, color=c, marker="o", ms=3, label=f"JESA({g:g},{d})")
        ax.plot(layers, np.asarray(lb["per_token_total_j"]) * 1e3, color=c, ls="--", lw=1.2, label=f"LB({g:g},{d})")
    ax.set_xlabel("layer l")
    ax.set_ylabel("energy per token [mJ]")
    ax.set_title(f"Fig. 7 — energy per token by layer (MMLU {', '.join(cfg['subjects'])}, "
                 f"{top['num_questions']} questions)", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    save(fig, path)


def write_table(result: dict, path) -> None:
    data = result["data"]
    header = ["policy", "layer", "energy_per_token_j", "comm_per_token_j", "comp_per_token_j", "infeasible_tokens"]
    rows = []
    for p in data["policies"]:
        for i, (t, cm, cp) in enumerate(zip(p["per_token_total_j"], p["per_token_comm_j"], p["per_token_comp_j"])):
            rows.append([p["policy"], i + 1, t, cm, cp, p["infeasible_tokens"][i]])
    csv_write(path, header, rows)


def report(result: dict) -> Section:
    cfg, data = result["config"], result["data"]
    pols = _by_name(data)
    d = cfg["max_experts"]
    top = pols["Top-2"]
    top_curve = np.asarray(top["per_token_total_j"])
    cv = float(top_curve.std() / top_curve.mean())
    rows, ratios, lb_gap, half = [], {}, {}, {}
    for p in data["policies"]:
        curve = np.asarray(p["per_token_total_j"])
        r = early_late_ratio(curve)
        rows.append([p["policy"], fmt(curve.mean() * 1e3), fmt(curve[:5].mean() * 1e3), fmt(curve[-5:].mean() * 1e3),
                     f"{r:.2f}", half_energy_layer(curve) or "never", f"{p['energy_j'] / top['energy_j']:.2f}"])
    for g in cfg["gammas"]:
        j, lb = pols[f"JESA({g:g},{d})"], pols[f"LB({g:g},{d})"]
        ratios[g] = early_late_ratio(j["per_token_total_j"])
        half[g] = half_energy_layer(j["per_token_total_j"])
        lb_gap[g] = j["energy_j"] / lb["energy_j"] - 1.0
    gs = sorted(ratios)
    falls = all(ratios[g] < 0.8 for g in gs)
    n_layers = len(top_curve)
    half_key = [half[g] if half[g] is not None else n_layers + 1 for g in gs]
    order_ok = all(a <= b for a, b in zip(half_key, half_key[1:]))
    strict = all(a < b for a, b in zip(half_key, half_key[1:]))
    worst_gap = max(lb_gap.values())
    claims = [
        Claim(
            "Top-2's energy per token is steady across layers",
            "fluctuates around a constant",
            f"coefficient of variation across layers {cv:.2f}",
            AGREES if cv < 0.15 else PARTLY,
            "" if cv < 0.15 else "Top-2's cost varies with which experts the router favours at each layer "
            "(a_j grows with j, so layers preferring high-index experts cost more).",
        ),
        Claim(
            "JESA's energy per token falls at higher layers",
            "strong downward trend",
            "last-5/first-5 layer ratio " + ", ".join(f"{ratios[g]:.2f} (γ0={g:g})" for g in gs),
            AGREES if falls else (PARTLY if any(ratios[g] < 0.8 for g in gs) else DIFFERS),
        ),
        Claim(
            "smaller γ0 makes the curve fall faster",
            "ordering of the curves by γ0",
            "energy per token first falls to half its layer 1-3 value at layer "
            + ", ".join(f"{half[g] if half[g] is not None else 'never'} (γ0={g:g})" for g in gs),
            AGREES if strict else (PARTLY if order_ok else DIFFERS),
        ),
        Claim(
            "JESA is close to the lower bound LB",
            "near-optimal for all γ0",
            "JESA above LB by " + ", ".join(f"{100 * lb_gap[g]:.1f}% (γ0={g:g})" for g in gs),
            AGREES if worst_gap < 0.10 else (PARTLY if worst_gap < 0.25 else DIFFERS),
            "" if worst_gap < 0.10 else "With M = 64 subcarriers for 56 links the links compete for their best "
            "subcarriers, so C3 costs JESA more than with the thousands of subcarriers of Remark 3.",
        ),
    ]
    table = md_table(
        ["policy", "mean over layers [mJ/token]", "layers 1-5", "last 5 layers", "last/first", "half-energy layer",
         "total vs Top-2"], rows
    )
    return Section(
        summary=(
            f"Energy per token (communication + computation) at every layer for Top-2, JESA(γ0, {d}) and "
            f"LB(γ0, {d}) with γ0 ∈ {{{', '.join(f'{g:g}' for g in cfg['gammas'])}}}, on MMLU "
            f"{', '.join(cfg['subjects'])} through the DMoE runtime (K = 8, M = 64)."
        ),
        claims=claims,
        tables=[table],
        statistics=statistics_line(data["policies"]),
    )


EXPERIMENT = Experiment(NAME, "Energy per token at each layer", "Fig. 7 (Section VII-C)", True,
                        config, run, plot, write_table, report)
