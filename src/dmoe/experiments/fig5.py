"""Fig. 5 (Section IV-A): final accuracy against the starting layer of a window of 4
consecutive layers whose QoS z is lowered, with z = 0.5 on every other layer.

Paper: lower layers are more critical for accuracy, upper layers allow more flexibility
(accuracy rises with the window's starting layer), which motivates a non-increasing
layer importance gamma^(l).

Beside accuracy and NLL, each window is compared with the full model (here the dense
model): agreement of the chosen answers and the mean KL(p_full || p_policy) over the
scored tokens.

The paper does not give the lowered z nor D; we use z = 0.1 in the window and D = 2, with
JESA (Algorithm 2) choosing the experts (:class:`~dmoe.policies.layerwise.LayerwiseQoS`).
The reference is the same policy without a window (z = 0.5 on all layers).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import band, md_table, policy_summary, question_config, statistics_line
from dmoe.experiments.plotting import csv_write, figure, save, yerr
from dmoe.experiments.stats import paired_bootstrap
from dmoe.policies import Homogeneous
from dmoe.policies.layerwise import LayerwiseQoS
from dmoe.system import SystemConfig

NAME = "fig5"


def config(options: Options) -> dict:
    return {
        **question_config(options),
        "starts": [1, 8, 14, 20, 27] if options.quick else "all",
        "width": 4,
        "qos": 0.5,
        "low_qos": 0.1,
        "max_experts": 2,
        "seed": options.seed,
        "system": SystemConfig().to_dict(),
        "channel_redraw": "layer",
    }


def run(cfg: dict, ctx) -> dict:
    system = SystemConfig.from_dict(cfg["system"])
    num_layers = ctx.model().num_layers
    width = cfg["width"]
    starts = list(range(1, num_layers - width + 2)) if cfg["starts"] == "all" else [
        s for s in cfg["starts"] if s + width - 1 <= num_layers]
    # the reference (z on every layer) is H(z, D), the same policy that Fig. 8-10 evaluate
    base = Homogeneous(cfg["qos"], cfg["max_experts"])
    kw = dict(subjects=cfg["subjects"], limit=cfg["limit"], seed=cfg["seed"], system=system,
              channel_redraw=cfg["channel_redraw"], label=NAME)
    ref = policy_summary(ctx.evaluate(base, **kw), seed=cfg["seed"])
    windows = []
    for s in starts:
        pol = LayerwiseQoS.window(num_layers, s, width, cfg["low_qos"], cfg["qos"], cfg["max_experts"])
        summ = policy_summary(ctx.evaluate(pol, **kw), seed=cfg["seed"])
        summ["start"] = s
        windows.append(summ)
    return {"num_layers": num_layers, "reference": ref, "windows": windows}


def _arrays(data):
    w = data["windows"]
    starts = np.array([p["start"] for p in w])
    acc = np.array([p["accuracy"] for p in w])
    acc_ci = np.array([p["accuracy_ci"] for p in w])
    nll = np.array([p["mean_nll"] for p in w])
    nll_ci = np.array([p["nll_ci"] for p in w])
    return starts, acc, acc_ci, nll, nll_ci


def _kl_arrays(data):
    w = data["windows"]
    return np.array([p["mean_kl"] for p in w]), np.array([p["kl_ci"] for p in w])


def plot(result: dict, path) -> None:
    cfg, data = result["config"], result["data"]
    starts, acc, acc_ci, nll, nll_ci = _arrays(data)
    ref = data["reference"]
    kl, kl_ci = _kl_arrays(data)
    fig, axes = figure(ncols=3, width=5.2, height=4.2)
    ax = axes[0]
    ax.errorbar(starts, acc * 100, yerr=yerr(acc * 100, acc_ci * 100), marker="o",
                capsize=2, color="#1f77b4", label=f"z = {cfg['low_qos']:g} on layers s..s+{cfg['width'] - 1}")
    ax.axhline(ref["accuracy"] * 100, color="black", ls="--", lw=1, label=f"z = {cfg['qos']:g} on all layers")
    ax.axhline(25, color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("starting layer s of the lowered-QoS window")
    ax.set_ylabel("accuracy [%]")
    ax.set_title("accuracy (95% Wilson intervals)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.errorbar(starts, nll, yerr=yerr(nll, nll_ci), marker="o", capsize=2, color="#d62728",
                label="lowered-QoS window")
    ax.axhline(ref["mean_nll"], color="black", ls="--", lw=1, label="no window")
    ax.set_xlabel("starting layer s of the lowered-QoS window")
    ax.set_ylabel("mean NLL of the correct answer [nat]")
    ax.set_title("mean NLL (lower is better; 95% bootstrap)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.errorbar(starts, kl, yerr=yerr(kl, kl_ci), marker="o", capsize=2, color="#9467bd",
                label="lowered-QoS window")
    ax.axhline(ref["mean_kl"], color="black", ls="--", lw=1, label="no window")
    ax.set_xlabel("starting layer s of the lowered-QoS window")
    ax.set_ylabel("mean KL(full ‖ policy) per scored token [nat]")
    ax.set_title("KL from the full model (lower is better)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Fig. 5 — lowered QoS on {cfg['width']} consecutive layers (MMLU {', '.join(cfg['subjects'])}, "
                 f"{ref['num_questions']} questions, D = {cfg['max_experts']})", fontsize=11)
    save(fig, path)


def write_table(result: dict, path) -> None:
    data = result["data"]
    ref = data["reference"]
    rows = []
    for start, p in [("none", ref)] + [(p["start"], p) for p in data["windows"]]:
        rows.append([start, p["accuracy"], *p["accuracy_ci"], p["mean_nll"], *p["nll_ci"], p["agreement"],
                     *p["agreement_ci"], p["mean_kl"], *p["kl_ci"], p["energy_per_token_j"]])
    csv_write(path, ["window_start", "accuracy", "accuracy_lo", "accuracy_hi", "mean_nll", "nll_lo", "nll_hi",
                     "agreement", "agreement_lo", "agreement_hi", "mean_kl", "kl_lo", "kl_hi",
                     "energy_per_token_j"], rows)


def report(result: dict) -> Section:
    cfg, data = result["config"], result["data"]
    starts, acc, _, nll, _ = _arrays(data)
    ref = data["reference"]
    seed = cfg["seed"]
    rho_acc = float(spearmanr(starts, acc).statistic) if len(starts) > 2 and np.ptp(acc) > 0 else float("nan")
    rho_nll = float(spearmanr(starts, -nll).statistic) if len(starts) > 2 else float("nan")
    w = data["windows"]
    third = max(1, len(w) // 3)
    early, late = w[:third], w[-third:]
    # paired: early windows vs late windows on the same questions (mean over the windows of each group)
    e_nll = np.mean([p["nll"] for p in early], axis=0)
    l_nll = np.mean([p["nll"] for p in late], axis=0)
    e_acc = np.mean([p["correct"] for p in early], axis=0)
    l_acc = np.mean([p["correct"] for p in late], axis=0)
    d_nll = paired_bootstrap(e_nll, l_nll, seed=seed)
    d_kl = paired_bootstrap(np.mean([p["kl"] for p in early], axis=0), np.mean([p["kl"] for p in late], axis=0),
                            seed=seed)
    kl, _ = _kl_arrays(data)
    rho_kl = float(spearmanr(starts, -kl).statistic) if len(starts) > 2 and np.ptp(kl) > 0 else float("nan")
    kl_ok = d_kl["lo"] > 0
    d_acc = paired_bootstrap(l_acc, e_acc, seed=seed)
    nll_ok = d_nll["lo"] > 0
    acc_ok = d_acc["lo"] > 0
    worst = max(w, key=lambda p: p["mean_nll"])
    worst_txt = (f"layers {worst['start']}–{worst['start'] + cfg['width'] - 1} hurt the NLL most "
                 f"({worst['mean_nll'] - ref['mean_nll']:+.1f} nat vs no window)")
    claims = [
        Claim(
            "lowering the QoS at lower layers hurts accuracy more than at upper layers",
            "accuracy rises with the starting layer",
            f"Spearman ρ(start, accuracy) = {rho_acc:.2f}; late − early windows: Δacc "
            f"{d_acc['diff'] * 100:+.1f} pp {band([d_acc['lo'], d_acc['hi']], 100)}",
            # agrees: significant; partly: right direction (or the NLL agrees); differs: wrong direction
            AGREES if acc_ok else (PARTLY if (d_acc["diff"] > 0 or nll_ok) else DIFFERS),
            "" if acc_ok else "Accuracy is near chance (25%) for every window, so its trend is within noise.",
        ),
        Claim(
            "(NLL, our added measure) lower layers are more critical",
            "—",
            f"Spearman ρ(start, −NLL) = {rho_nll:.2f}; early − late windows: ΔNLL {d_nll['diff']:+.2f} nat "
            f"{band([d_nll['lo'], d_nll['hi']], 1, 2)}; {worst_txt}",
            AGREES if nll_ok else (PARTLY if (d_nll["diff"] > 0 or rho_nll > 0.3) else DIFFERS),
            "" if nll_ok else (
                "In the MoEfied SmolLM2 the lowest layers are not the only critical ones"
                + (": the layers next to the output head matter most, plausibly because no later layer can make up "
                   "for the FFN slices removed there." if worst is w[-1] else ".")),
        ),
        Claim(
            "(KL from the full model, our added measure) lower layers are more critical",
            "—",
            f"Spearman ρ(start, −KL) = {rho_kl:.2f}; early − late windows: ΔKL {d_kl['diff']:+.3f} nat/token "
            f"{band([d_kl['lo'], d_kl['hi']], 1, 3)}",
            AGREES if kl_ok else (PARTLY if (d_kl["diff"] > 0 or rho_kl > 0.3) else DIFFERS),
            "" if kl_ok else (
                "Windows at the upper layers move the next-token distribution more than windows at the lower "
                "layers: in the MoEfied SmolLM2 the layers next to the output head matter most."
                if d_kl["hi"] < 0 else "The KL does not fall significantly as the window moves up."),
        ),
    ]
    rows = []
    for name, p in [("none (reference)", ref)] + [(f"{p['start']}–{p['start'] + cfg['width'] - 1}", p) for p in w]:
        rows.append([name, f"{p['accuracy'] * 100:.1f} {band(p['accuracy_ci'], 100)}",
                     f"{p['mean_nll']:.2f} {band(p['nll_ci'], 1, 2)}",
                     f"{p['agreement'] * 100:.1f} {band(p['agreement_ci'], 100)}",
                     f"{p['mean_kl']:.3f} {band(p['kl_ci'], 1, 3)}", f"{p['energy_per_token_j']:.3g}"])
    table = md_table(["lowered layers", "accuracy [%] (95% CI)", "mean NLL [nat] (95% CI)",
                      "agreement with full [%] (95% CI)", "mean KL [nat] (95% CI)", "energy per token [J]"], rows)
    return Section(
        summary=(
            f"QoS z = {cfg['low_qos']:g} on {cfg['width']} consecutive layers starting at layer s, z = {cfg['qos']:g} "
            f"elsewhere, D = {cfg['max_experts']}, experts chosen by JESA; s over "
            f"{len(w)} positions of the {data['num_layers']}-layer model. The lowered z and D are not stated in the "
            "paper (our choice)."
        ),
        claims=claims,
        tables=[table],
        statistics=statistics_line([ref], full_model=True) + f" Early/late groups: the first and last {third} window positions.",
    )


EXPERIMENT = Experiment(NAME, "Layer importance: lowered QoS window", "Fig. 5 (Section IV-A)", True,
                        config, run, plot, write_table, report)
