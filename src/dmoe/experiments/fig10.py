"""Fig. 10: accuracy against total energy for JESA (sweep of gamma0), H(z, D) (sweep of z)
and Top-k (k = 1..K), with the Pareto front.

Paper (Section VII-C, MMLU anatomy): JESA cuts the energy to about 50% of Top-k while
keeping high accuracy; JESA(0.92) saves 40% energy for a 5% accuracy drop against Top-2;
JESA needs less energy than H for the same accuracy and reaches higher accuracy for the
same energy; both converge to Top-k as gamma -> 1.

Because SmolLM2-135M answers MMLU near chance, the same analysis is repeated with the mean
negative log-likelihood (NLL) of the correct answer, which moves smoothly with the
experts removed, and with two measures against the full model (the dense model here, the
family's own top-k routing for a real MoE): the agreement of the chosen answers and the
mean KL(p_full || p_policy) over the scored tokens; full runs add the perplexity on
held-out text. "At equal or better accuracy" is tested on the point estimates and
reported with paired bootstrap intervals of the differences (same questions, same
channels).
"""

from __future__ import annotations

import numpy as np

from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import (
    band,
    fmt,
    md_table,
    pct,
    perplexity_summary,
    policy_summary,
    question_config,
    statistics_line,
)
from dmoe.experiments.plotting import csv_write, family_color, figure, save, yerr
from dmoe.experiments.stats import paired_bootstrap, pareto_front
from dmoe.policies import Homogeneous, JESAPolicy, TopK
from dmoe.system import SystemConfig

NAME = "fig10"


def config(options: Options) -> dict:
    if options.quick:
        gammas, qos, ks = [0.8, 0.9, 0.92, 0.95], [0.3, 0.5, 0.7], [1, 2, 3, 4, 6, 8]
    else:
        gammas = [0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99]
        qos = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
        ks = list(range(1, 9))
    return {
        **question_config(options),
        "gammas": gammas,
        "qos": qos,
        "ks": ks,
        "max_experts": 2,
        "ppl_texts": 0 if options.quick else 16,
        "seed": options.seed,
        "system": SystemConfig().to_dict(),
        "channel_redraw": "layer",
    }


def run(cfg: dict, ctx) -> dict:
    system = SystemConfig.from_dict(cfg["system"])
    d = cfg["max_experts"]
    policies = (
        [TopK(k) for k in cfg["ks"]]
        + [JESAPolicy(g, d) for g in cfg["gammas"]]
        + [Homogeneous(z, d) for z in cfg["qos"]]
    )
    out = []
    ppl_texts = int(cfg.get("ppl_texts", 0))
    for p in policies:
        rec = ctx.evaluate(p, subjects=cfg["subjects"], limit=cfg["limit"], seed=cfg["seed"], system=system,
                           channel_redraw=cfg["channel_redraw"], label=NAME)
        s = policy_summary(rec, seed=cfg["seed"])
        if ppl_texts:
            s.update(perplexity_summary(ctx.perplexity(
                p, exclude=cfg["subjects"], num_texts=ppl_texts, seed=cfg["seed"], system=system,
                channel_redraw=cfg["channel_redraw"], label=NAME), seed=cfg["seed"]))
        s["family"] = {"TopK": "Top-k", "JESA": "JESA", "Homogeneous": "H"}[p.params()["policy"]]
        s["value"] = {"TopK": "k", "JESA": "gamma0", "Homogeneous": "qos"}[p.params()["policy"]]
        s["value"] = p.params()[s["value"]]
        for key in ("per_token_comm_j", "per_token_comp_j", "per_token_total_j", "infeasible_tokens", "expert_calls"):
            s.pop(key, None)
        out.append(s)
    data = {"policies": out}
    if ppl_texts:
        data["full_model_perplexity"] = ctx.full_perplexity(exclude=cfg["subjects"], num_texts=ppl_texts)
    return data


# ---------------------------------------------------------------------- analysis
#: Quality measures compared: accuracy (higher is better), mean NLL and mean KL (lower).
_METRICS = ("accuracy", "nll", "kl")


def _at_least_as_good(p: dict, q: dict, metric: str) -> bool:
    """Whether point ``p`` is at least as good as ``q`` on ``metric``."""
    if metric == "accuracy":
        return p["accuracy"] >= q["accuracy"]
    key = {"nll": "mean_nll", "kl": "mean_kl"}[metric]
    return p[key] <= q[key]


def analyse(data: dict, seed: int = 0) -> dict:
    """Savings, Pareto fronts and paired comparisons (JSON-ready)."""
    pts = data["policies"]
    energy = np.array([p["energy_per_token_j"] for p in pts])
    acc = np.array([p["accuracy"] for p in pts])
    nll = np.array([p["mean_nll"] for p in pts])
    kl = np.array([p["mean_kl"] for p in pts])
    by = {p["policy"]: p for p in pts}
    top2 = by.get("Top-2")
    jesa = sorted((p for p in pts if p["family"] == "JESA"), key=lambda p: p["value"])
    hom = sorted((p for p in pts if p["family"] == "H"), key=lambda p: p["value"])
    out = {
        "pareto_accuracy": [pts[i]["policy"] for i in pareto_front(energy, acc)],
        "pareto_nll": [pts[i]["policy"] for i in pareto_front(energy, -nll)],
        "pareto_kl": [pts[i]["policy"] for i in pareto_front(energy, -kl)],
    }

    def paired(a, b):
        return {
            "accuracy": paired_bootstrap(a["correct"], b["correct"], seed=seed),
            "nll": paired_bootstrap(a["nll"], b["nll"], seed=seed),
            "kl": paired_bootstrap(a["kl"], b["kl"], seed=seed),
        }

    if top2 is not None:
        e2 = top2["energy_per_token_j"]
        ok_acc = [p for p in jesa if p["accuracy"] >= top2["accuracy"]]
        ok_nll = [p for p in jesa if p["mean_nll"] <= top2["mean_nll"]]
        best_acc = min(ok_acc, key=lambda p: p["energy_per_token_j"]) if ok_acc else None
        best_nll = min(ok_nll, key=lambda p: p["energy_per_token_j"]) if ok_nll else None
        out["vs_top2"] = {
            "best_jesa_equal_accuracy": None if best_acc is None else {
                "policy": best_acc["policy"],
                "saving": 1.0 - best_acc["energy_per_token_j"] / e2,
                **paired(best_acc, top2),
            },
            "best_jesa_equal_nll": None if best_nll is None else {
                "policy": best_nll["policy"],
                "saving": 1.0 - best_nll["energy_per_token_j"] / e2,
                **paired(best_nll, top2),
            },
            "per_jesa": [
                {"policy": p["policy"], "gamma0": p["value"], "energy_ratio": p["energy_per_token_j"] / e2,
                 **paired(p, top2)}
                for p in jesa
            ],
        }
    # JESA against H: for each H point, the cheapest JESA point at least as good
    rows = []
    for h in hom:
        for metric in _METRICS:
            cand = [p for p in jesa if _at_least_as_good(p, h, metric)]
            if cand:
                best = min(cand, key=lambda p: p["energy_per_token_j"])
                rows.append({"h": h["policy"], "metric": metric, "jesa": best["policy"],
                             "saving": 1.0 - best["energy_per_token_j"] / h["energy_per_token_j"]})
            else:
                rows.append({"h": h["policy"], "metric": metric, "jesa": None, "saving": None})
    out["vs_h"] = rows
    # how many H points are dominated by (or tied with) a JESA point
    def dominated(h, metric):
        return any(p["energy_per_token_j"] <= h["energy_per_token_j"] and _at_least_as_good(p, h, metric)
                   for p in jesa)

    out["h_dominated"] = {m: int(sum(dominated(h, m) for h in hom)) for m in _METRICS}
    out["num_h"] = len(hom)
    if top2 is not None and jesa:
        out["jesa_max_gamma_energy_ratio"] = jesa[-1]["energy_per_token_j"] / top2["energy_per_token_j"]
        out["jesa_max_gamma"] = jesa[-1]["value"]
    if top2 is not None and hom:
        out["h_max_qos_energy_ratio"] = hom[-1]["energy_per_token_j"] / top2["energy_per_token_j"]
        out["h_max_qos"] = hom[-1]["value"]
    return out


def plot(result: dict, path) -> None:
    cfg, data = result["config"], result["data"]
    pts = data["policies"]
    an = analyse(data, cfg["seed"])
    fig, axes = figure(ncols=3, width=5.6, height=4.8)
    markers = {"Top-k": "s", "JESA": "o", "H": "^"}
    for ax, metric in zip(axes, _METRICS):
        for fam in ("Top-k", "H", "JESA"):
            ps = sorted((p for p in pts if p["family"] == fam), key=lambda p: p["value"])
            if not ps:
                continue
            x = np.array([p["energy_per_token_j"] for p in ps])
            if metric == "accuracy":
                y = np.array([p["accuracy"] for p in ps]) * 100
                ci = np.array([p["accuracy_ci"] for p in ps]) * 100
            elif metric == "nll":
                y = np.array([p["mean_nll"] for p in ps])
                ci = np.array([p["nll_ci"] for p in ps])
            else:
                y = np.array([p["mean_kl"] for p in ps])
                ci = np.array([p["kl_ci"] for p in ps])
            color = family_color(ps[0]["policy"])
            label = {"Top-k": "Top-k (k = " + ",".join(str(p["value"]) for p in ps) + ")",
                     "H": f"H(z, {cfg['max_experts']})", "JESA": f"JESA(γ0, {cfg['max_experts']})"}[fam]
            ax.errorbar(x, y, yerr=yerr(y, ci), color=color, marker=markers[fam], ms=5,
                        capsize=2, lw=1.2, elinewidth=0.8, label=label)
            for xi, yi, p in zip(x, y, ps):
                ax.annotate(f"{p['value']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        front = an[f"pareto_{metric}"]
        by = {p["policy"]: p for p in pts}
        fx = [by[n]["energy_per_token_j"] for n in front]
        fy = [by[n]["accuracy"] * 100 if metric == "accuracy" else by[n]["mean_" + metric] for n in front]
        ax.plot(fx, fy, color="orange", lw=6, alpha=0.35, zorder=0, solid_capstyle="round", label="Pareto front")
        ax.set_xlabel("energy per token, all layers [J]")
        ax.grid(alpha=0.3)
        if metric == "accuracy":
            ax.set_ylabel("accuracy [%]")
            ax.axhline(25, color="grey", ls=":", lw=1)
            ax.annotate("chance (4 options)", (1.0, 25), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", fontsize=7, color="grey")
            ax.set_title("accuracy vs energy (95% Wilson intervals)", fontsize=10)
        elif metric == "nll":
            ax.set_ylabel("mean NLL of the correct answer [nat]")
            ax.set_title("mean NLL vs energy (lower is better; 95% bootstrap)", fontsize=10)
        else:
            ax.set_ylabel("mean KL(full ‖ policy) per scored token [nat]")
            ax.set_title("KL from the full model vs energy (lower is better)", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"Fig. 10 — accuracy–energy tradeoff on MMLU {', '.join(cfg['subjects'])} "
                 f"({pts[0]['num_questions']} questions)", fontsize=11)
    save(fig, path)


def write_table(result: dict, path) -> None:
    rows = []
    an = analyse(result["data"], result["config"]["seed"])
    for p in result["data"]["policies"]:
        rows.append([p["policy"], p["family"], p["value"], p["energy_per_token_j"], p["energy_comm_j"],
                     p["energy_comp_j"], p["accuracy"], p["accuracy_ci"][0], p["accuracy_ci"][1],
                     p["mean_nll"], p["nll_ci"][0], p["nll_ci"][1], p["agreement"], p["agreement_ci"][0],
                     p["agreement_ci"][1], p["mean_kl"], p["kl_ci"][0], p["kl_ci"][1], p.get("perplexity"),
                     p["num_questions"], int(p["policy"] in an["pareto_accuracy"]),
                     int(p["policy"] in an["pareto_nll"]), int(p["policy"] in an["pareto_kl"])])
    csv_write(path, ["policy", "family", "parameter", "energy_per_token_j", "energy_comm_j", "energy_comp_j",
                     "accuracy", "accuracy_lo", "accuracy_hi", "mean_nll", "nll_lo", "nll_hi", "agreement",
                     "agreement_lo", "agreement_hi", "mean_kl", "kl_lo", "kl_hi", "perplexity", "questions",
                     "pareto_accuracy", "pareto_nll", "pareto_kl"], rows)


def _diff(p, metric, scale=100.0, digits=1):
    d = p[metric]
    return f"{d['diff'] * scale:+.{digits}f} {band([d['lo'], d['hi']], scale, digits)}"


def report(result: dict) -> Section:
    cfg, data = result["config"], result["data"]
    an = analyse(data, cfg["seed"])
    pts = data["policies"]
    by = {p["policy"]: p for p in pts}
    top2 = by.get("Top-2")
    claims: list[Claim] = []
    tables: list[str] = []
    notes: list[str] = []
    if top2 is not None and "vs_top2" in an:
        v = an["vs_top2"]
        ba, bn = v["best_jesa_equal_accuracy"], v["best_jesa_equal_nll"]
        ours = []
        if ba:
            ours.append(f"accuracy ≥ Top-2: {ba['policy']} saves {pct(ba['saving'])} "
                        f"(Δacc {_diff(ba, 'accuracy')} pp, ΔNLL {_diff(ba, 'nll', 1, 2)}, ΔKL {_diff(ba, 'kl', 1, 3)})")
        else:
            ours.append("no JESA point reaches Top-2's accuracy")
        if bn:
            ours.append(f"NLL ≤ Top-2: {bn['policy']} saves {pct(bn['saving'])}")
        else:
            closest = max(v["per_jesa"], key=lambda r: r["gamma0"]) if v["per_jesa"] else None
            ours.append("no JESA point matches Top-2's NLL" + (
                f" (closest {closest['policy']}: ΔNLL {_diff(closest, 'nll', 1, 2)} nat at "
                f"{closest['energy_ratio']:.2f}× the energy)" if closest else ""))
        saving_nll = bn["saving"] if bn else None
        saving_acc = ba["saving"] if ba else None
        if saving_nll is not None and saving_nll >= 0.3:
            verdict = AGREES
        elif saving_acc is not None and saving_acc >= 0.3:
            verdict = PARTLY
        else:
            verdict = DIFFERS
        claims.append(Claim(
            "JESA reduces the energy to about 50% of Top-k while keeping high accuracy",
            "≈50% of Top-k energy",
            "; ".join(ours),
            verdict,
            "" if verdict == AGREES else (
                "Accuracy is near chance for every policy (SmolLM2-135M on MMLU), so 'equal accuracy' is reached "
                "trivially; the NLL shows what removing experts costs. Our experts are slices of one dense FFN: "
                "every slice left out removes part of the layer's output, whereas the paper's experts are complete "
                "models, any of which answers well on its own."
            ),
        ))
        g92 = next((r for r in v["per_jesa"] if abs(r["gamma0"] - 0.92) < 1e-9), None)
        if g92:
            drop = -g92["accuracy"]["diff"]
            ratio = g92["energy_ratio"]
            saving = 1.0 - ratio
            # agrees: a clear energy cut (>= 25%) for an accuracy drop of at most 10 points
            nll_rise = g92["nll"]["lo"] > 0 and g92["nll"]["diff"] > 0.1 * top2["mean_nll"]
            # agrees: a clear energy cut (>= 25%) for an accuracy drop of at most 10 points and no large NLL rise
            if saving >= 0.25 and drop <= 0.10:
                verdict = PARTLY if nll_rise else AGREES
            else:
                verdict = PARTLY if saving >= 0.15 else DIFFERS
            claims.append(Claim(
                "JESA(0.92): 40% less energy for a 5% accuracy drop vs Top-2",
                "−40% energy, −5% accuracy",
                f"{pct(1 - ratio)} less energy; Δacc {_diff(g92, 'accuracy')} pp; ΔNLL {_diff(g92, 'nll', 1, 2)} nat",
                verdict,
                ("Accuracy is near chance, so its drop is within noise; " if drop <= 0.10 else "")
                + (f"the NLL rises by {g92['nll']['diff']:.1f} nat ({100 * g92['nll']['diff'] / top2['mean_nll']:.0f}%, "
                   "interval excludes 0): the quality loss is larger than the accuracy shows."
                   if g92["nll"]["lo"] > 0 else "the NLL does not rise significantly."),
            ))
        rows = [[r["policy"], f"{r['energy_ratio']:.2f}", _diff(r, "accuracy"), _diff(r, "nll", 1, 2),
                 _diff(r, "kl", 1, 3)]
                for r in v["per_jesa"]]
        tables.append("JESA against Top-2 (paired over the same questions and channels):\n\n" + md_table(
            ["policy", "energy / Top-2", "Δ accuracy [pp] (95% CI)", "Δ NLL [nat] (95% CI)",
             "Δ KL [nat/token] (95% CI)"], rows))
    if an["num_h"]:
        n_h = an["num_h"]
        sav_acc = [r["saving"] for r in an["vs_h"] if r["metric"] == "accuracy" and r["saving"] is not None]
        sav_nll = [r["saving"] for r in an["vs_h"] if r["metric"] == "nll" and r["saving"] is not None]
        dom = an["h_dominated"]
        ok = dom["nll"] >= 0.75 * n_h
        claims.append(Claim(
            "JESA needs less energy than H for the same accuracy (JESA always outperforms H)",
            "JESA's curve above/left of H's",
            f"H points matched or beaten by a JESA point (≤ energy, ≥ quality): accuracy {dom['accuracy']}/{n_h}, "
            f"NLL {dom['nll']}/{n_h}, KL {dom['kl']}/{n_h}; energy saved at equal-or-better quality: accuracy "
            f"{'median ' + pct(float(np.median(sav_acc))) if sav_acc else 'n/a'}, NLL "
            f"{'median ' + pct(float(np.median(sav_nll))) if sav_nll else 'n/a'}",
            AGREES if ok else (PARTLY if dom["nll"] + dom["accuracy"] > 0 else DIFFERS),
            "" if ok else "On our model, selecting one cheap expert at the upper layers (what JESA does) costs more "
            "NLL than H's uniform thresholds, because the MoEfied upper layers are not redundant.",
        ))
        rows = [[r["h"], r["metric"], r["jesa"] or "none", pct(r["saving"]) if r["saving"] is not None else "n/a"]
                for r in an["vs_h"]]
        tables.append("For each H(z, D), the cheapest JESA point at least as good:\n\n" + md_table(
            ["H point", "quality measure", "cheapest JESA ≥ it", "energy saved"], rows))
    if "jesa_max_gamma_energy_ratio" in an:
        r = an["jesa_max_gamma_energy_ratio"]
        claims.append(Claim(
            "JESA and H converge to Top-k as γ → 1",
            "curves meet Top-k",
            f"JESA(γ0={an['jesa_max_gamma']:g}) uses {r:.2f}× Top-2's energy"
            + (f"; H(z={an['h_max_qos']:g}) {an['h_max_qos_energy_ratio']:.2f}×" if "h_max_qos_energy_ratio" in an else ""),
            AGREES if r >= 0.85 else PARTLY,
            "" if r >= 0.85 else f"γ0 = {an['jesa_max_gamma']:g} still lowers the threshold γ0^l well below 1 "
            "at the upper layers of a 30-layer model; the limit is only reached as γ0 → 1.",
        ))
    has_ppl = all("perplexity" in p for p in pts)
    rows = [[p["policy"], fmt(p["energy_per_token_j"]), f"{p['accuracy'] * 100:.1f} {band(p['accuracy_ci'], 100)}",
             f"{p['mean_nll']:.2f} {band(p['nll_ci'], 1, 2)}",
             f"{p['agreement'] * 100:.1f} {band(p['agreement_ci'], 100)}",
             f"{p['mean_kl']:.3f} {band(p['kl_ci'], 1, 3)}"]
            + ([f"{p['perplexity']:.2f} {band(p['perplexity_ci'], 1, 2)}"] if has_ppl else [])
            + [("A" if p["policy"] in an["pareto_accuracy"] else "") + ("N" if p["policy"] in an["pareto_nll"] else "")
               + ("K" if p["policy"] in an["pareto_kl"] else "")]
            for p in sorted(pts, key=lambda p: p["energy_per_token_j"])]
    tables.insert(0, "All points (agreement: same answer as the full model; KL: mean KL(full ‖ policy) per scored "
                  "token; Pareto: A = on the accuracy front, N = on the NLL front, K = on the KL front):\n\n"
                  + md_table(["policy", "energy per token, all layers [J]", "accuracy [%] (95% CI)",
                              "mean NLL [nat] (95% CI)", "agreement [%] (95% CI)", "mean KL [nat] (95% CI)"]
                             + (["perplexity (95% CI)"] if has_ppl else []) + ["Pareto"], rows))
    if "full_model_perplexity" in data:
        notes.append(f"Perplexity on {cfg['ppl_texts']} held-out MMLU question texts (subjects neither evaluated "
                     f"nor used for calibration), served through the runtime with each policy; the full model's "
                     f"perplexity on them is {data['full_model_perplexity']:.2f}.")
    notes.append("Energy per token counts all 30 layers (communication + computation) divided by the tokens of one layer.")
    return Section(
        summary=(
            f"Accuracy and mean NLL against total energy for JESA(γ0, {cfg['max_experts']}) with γ0 ∈ "
            f"{{{', '.join(f'{g:g}' for g in cfg['gammas'])}}}, H(z, {cfg['max_experts']}) with z ∈ "
            f"{{{', '.join(f'{z:g}' for z in cfg['qos'])}}} and Top-k with k ∈ {{{', '.join(str(k) for k in cfg['ks'])}}} "
            f"on MMLU {', '.join(cfg['subjects'])}."
        ),
        claims=claims,
        tables=tables,
        notes=notes,
        statistics=statistics_line(pts, full_model=True),
    )


EXPERIMENT = Experiment(NAME, "Accuracy against energy, Pareto front", "Fig. 10 (Section VII-C)", True,
                        config, run, plot, write_table, report)
