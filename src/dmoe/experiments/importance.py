"""Layer importance measured, not assumed (issue 11): the calibrated JESA on the Fig. 10 front.

The paper sets gamma^(l) = gamma0^l because "lower layers matter more" (Section IV-A).
This experiment measures the model's importance profile on the fixed calibration set
(:func:`dmoe.importance.calibrate_cached`, never the evaluation questions), allocates the
per-layer thresholds optimally for a sweep of quality budgets (exact multiple-choice
knapsack, :func:`dmoe.optimize.qos_allocation.allocate_qos`), and runs the calibrated
``JESA(cal:B,D)`` beside the Fig. 10 policies -- Top-k, H(z, D), JESA(gamma0, D) -- and
the full model on the evaluation questions (all 135 anatomy questions by default).

Reported: energy per token, accuracy, answer NLL, agreement with the full model's answer
(and the mean KL to the full model when the evaluation records it), the NLL Pareto front,
the cheapest calibrated point within Top-2's NLL interval and its energy against Top-2's,
and whether the profile agrees with "lower layers matter more".
"""

from __future__ import annotations

import math

import numpy as np

from dmoe.experiments.base import AGREES, DIFFERS, NOT_TESTABLE, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import band, fmt, md_table, pct, policy_summary, question_config, statistics_line
from dmoe.experiments.plotting import csv_write, family_color, figure, save, yerr
from dmoe.experiments.stats import paired_bootstrap, pareto_front
from dmoe.policies import Dense, Homogeneous, JESAPolicy, TopK
from dmoe.system import SystemConfig

NAME = "importance"
#: Target of issue 11: at Top-2's NLL, at most this fraction of Top-2's energy.
TARGET_ENERGY_RATIO = 0.70


def config(options: Options) -> dict:
    if options.quick:
        ks, gammas, qos = [1, 2], [0.9], [0.5]
        fractions = [0.0, 0.25, 0.6]
        calib = {"qos": [0.1, 0.4, 1.0], "window": 10, "num_questions": 3, "base": "top"}
    else:
        # sized for a shared 2-core machine: 12 policy evaluations on 135 questions
        ks, gammas, qos = [1, 2, 3], [0.9, 0.98], [0.5]
        fractions = [0.0, 0.04, 0.07, 0.12, 0.25, 0.45]
        calib = {"qos": [0.1, 0.25, 0.4, 0.55, 1.0], "window": 5, "num_questions": 16, "base": "top"}
    return {
        **question_config(options),
        "ks": ks,
        "gammas": gammas,
        "qos": qos,
        "budget_fractions": fractions,
        "monotone": True,
        "max_experts": 2,
        "calibration": {**calib, "seed": options.seed},
        "seed": options.seed,
        "system": SystemConfig().to_dict(),
        "channel_redraw": "layer",
    }


def budgets_of(profile, fractions, monotone: bool = True) -> list[float]:
    """Absolute KL budgets [nat/token]: ``lo + f (hi - lo)`` between the least and the largest
    predicted KL of any allocation, rounded up to 3 significant digits (they name the policies)."""
    kl = profile.table("kl", monotone=monotone)
    lo = profile.base_kl + kl.min(axis=1).sum()
    hi = profile.base_kl + kl.max(axis=1).sum()
    out = []
    for f in fractions:
        b = lo + float(f) * (hi - lo)
        scale = 10.0 ** (math.floor(math.log10(abs(b))) - 2) if b != 0 else 1.0
        out.append(float(f"{math.ceil(b / scale - 1e-9) * scale:.3g}"))
    return out


def run(cfg: dict, ctx) -> dict:
    from dmoe.importance import calibrate_cached
    from dmoe.policies.calibrated import calibrated_policy
    from dmoe.optimize.qos_allocation import allocate_qos

    system = SystemConfig.from_dict(cfg["system"])
    d = cfg["max_experts"]
    model = ctx.model()
    cal = cfg["calibration"]
    profile, path, reused = calibrate_cached(
        model, qos=cal["qos"], max_experts=d, window=min(cal["window"], model.num_layers),
        num_questions=cal["num_questions"], system=system, seed=cal["seed"], base=cal["base"],
        cache_dir=getattr(ctx, "cache_dir", None), progress=getattr(ctx, "progress", False), log=ctx.log,
    )
    ctx.log(f"[{NAME}] profile {'reused from' if reused else 'written to'} {path} ({profile.seconds:.0f} s to measure)")
    monotone = cfg.get("monotone", True)
    budgets = budgets_of(profile, cfg["budget_fractions"], monotone)
    messages = []
    calibrated, seen = [], set()
    for b in dict.fromkeys(budgets):
        pol = calibrated_policy("JESA", profile, b, d, warn=messages.append, monotone=monotone)
        if pol.thresholds not in seen:  # a larger budget may buy nothing more
            seen.add(pol.thresholds)
            calibrated.append(pol)
    budgets = [p.budget for p in calibrated]
    policies = (
        [Dense()] + [TopK(k) for k in cfg["ks"]] + [JESAPolicy(g, d) for g in cfg["gammas"]]
        + [Homogeneous(z, d) for z in cfg["qos"]] + calibrated
    )
    family = {"Dense": "dense", "TopK": "Top-k", "JESA": "JESA", "Homogeneous": "H", "CalibratedJESA": "JESA-cal"}
    value_key = {"Dense": None, "TopK": "k", "JESA": "gamma0", "Homogeneous": "qos", "CalibratedJESA": "budget"}
    out = []
    for p in policies:
        rec = ctx.evaluate(p, subjects=cfg["subjects"], limit=cfg["limit"], seed=cfg["seed"], system=system,
                           channel_redraw=cfg["channel_redraw"], label=NAME)
        s = policy_summary(rec, seed=cfg["seed"])
        kind = p.params()["policy"]
        s["family"] = family[kind]
        s["value"] = p.params()[value_key[kind]] if value_key[kind] else None
        if kind == "CalibratedJESA":
            s["thresholds"] = list(p.thresholds)
        for key in ("per_token_comm_j", "per_token_comp_j", "infeasible_tokens", "expert_calls"):
            s.pop(key, None)
        out.append(s)
    predicted = []
    nll_table = np.asarray(profile.nll)
    for b in budgets:
        a = allocate_qos(profile, b, monotone=monotone)
        nll = profile.base_nll + float(nll_table[np.arange(len(a.levels)), a.levels].sum())
        predicted.append({"budget": b, "predicted_kl": a.predicted_loss, "predicted_energy_j": a.predicted_energy,
                          "predicted_nll": nll, "levels": a.levels.tolist(), "feasible": a.feasible})
    return {"policies": out, "profile": profile.to_dict(), "profile_path": str(path), "budgets": budgets,
            "predicted": predicted, "messages": messages}


# ---------------------------------------------------------------------- analysis
def _agreement(p, ref=None):
    """Agreement with the full model's answers (recorded by the evaluation) and its 95% Wilson interval."""
    if p.get("agreement") is None:
        return None
    return {"mean": float(p["agreement"]), "ci": list(p.get("agreement_ci") or [p["agreement"]] * 2)}


def profile_trend(profile: dict) -> dict:
    """Does the measured profile say lower layers matter more? Sensitivity of a window = its
    KL increment at the lowest QoS level; Spearman correlation with the window's position
    (negative: lower layers matter more, as the paper assumes)."""
    from scipy.stats import spearmanr

    kl = np.asarray(profile["kl"])
    nll = np.asarray(profile["nll"])
    sens = kl[:, 0] - kl[:, -1]
    sens_nll = nll[:, 0] - nll[:, -1]
    pos = np.arange(sens.size)
    if sens.size >= 3:
        rho, pval = spearmanr(pos, sens)
        rho_n, pval_n = spearmanr(pos, sens_nll)
    else:
        rho = pval = rho_n = pval_n = float("nan")
    labels = [f"{a}-{b}" for a, b in profile["windows"]]
    return {
        "windows": labels,
        "sensitivity_kl": sens.tolist(),
        "sensitivity_nll": sens_nll.tolist(),
        "spearman_kl": float(rho), "p_kl": float(pval),
        "spearman_nll": float(rho_n), "p_nll": float(pval_n),
        "most_sensitive": labels[int(np.argmax(sens))],
        "least_sensitive": labels[int(np.argmin(sens))],
    }


def analyse(data: dict, seed: int = 0) -> dict:
    pts = data["policies"]
    by = {p["policy"]: p for p in pts}
    ref = by.get("dense")
    energy = np.array([p["energy_per_token_j"] for p in pts])
    nll = np.array([p["mean_nll"] for p in pts])
    sparse = [i for i, p in enumerate(pts) if p["family"] != "dense"]
    front = [pts[sparse[i]]["policy"] for i in pareto_front(energy[sparse], -nll[sparse])]
    out = {"pareto_nll": front, "agreement": {p["policy"]: _agreement(p, ref) for p in pts}}
    cal = sorted((p for p in pts if p["family"] == "JESA-cal"), key=lambda p: p["value"])
    out["calibrated_on_front"] = [p["policy"] for p in cal if p["policy"] in front]
    top2 = by.get("Top-2")
    if top2 is not None:
        e2 = top2["energy_per_token_j"]
        rows = []
        for p in cal + [q for q in pts if q["family"] in ("JESA", "H")]:
            rows.append({"policy": p["policy"], "family": p["family"], "energy_ratio": p["energy_per_token_j"] / e2,
                         "nll": paired_bootstrap(p["nll"], top2["nll"], seed=seed),
                         "within_top2_ci": p["mean_nll"] <= top2["nll_ci"][1]})
        out["vs_top2"] = rows
        ok = [r for r in rows if r["family"] == "JESA-cal" and r["within_top2_ci"]]
        out["best_calibrated_at_top2_nll"] = min(ok, key=lambda r: r["energy_ratio"]) if ok else None
        ok_paper = [r for r in rows if r["family"] == "JESA" and r["within_top2_ci"]]
        out["best_paper_jesa_at_top2_nll"] = min(ok_paper, key=lambda r: r["energy_ratio"]) if ok_paper else None
    out["trend"] = profile_trend(data["profile"])
    return out


def plot(result: dict, path) -> None:
    cfg, data = result["config"], result["data"]
    pts = data["policies"]
    an = analyse(data, cfg["seed"])
    fig, axes = figure(ncols=3, width=5.4, height=4.6)
    markers = {"Top-k": "s", "JESA": "o", "H": "^", "JESA-cal": "*", "dense": "D"}
    colors = {"JESA-cal": "#ff7f0e"}
    ax = axes[0]
    for fam in ("Top-k", "H", "JESA", "JESA-cal"):
        ps = sorted((p for p in pts if p["family"] == fam), key=lambda p: p["energy_per_token_j"])
        if not ps:
            continue
        x = np.array([p["energy_per_token_j"] for p in ps])
        y = np.array([p["mean_nll"] for p in ps])
        ci = np.array([p["nll_ci"] for p in ps])
        label = {"Top-k": "Top-k", "H": f"H(z, {cfg['max_experts']})", "JESA": f"JESA(γ0, {cfg['max_experts']})",
                 "JESA-cal": f"JESA(cal:B, {cfg['max_experts']}) (calibrated)"}[fam]
        ax.errorbar(x, y, yerr=yerr(y, ci), color=colors.get(fam, family_color(ps[0]["policy"])),
                    marker=markers[fam], ms=8 if fam == "JESA-cal" else 5, capsize=2, lw=1.2, elinewidth=0.8,
                    label=label)
    by = {p["policy"]: p for p in pts}
    fx = [by[n]["energy_per_token_j"] for n in an["pareto_nll"]]
    fy = [by[n]["mean_nll"] for n in an["pareto_nll"]]
    ax.plot(fx, fy, color="orange", lw=6, alpha=0.3, zorder=0, solid_capstyle="round", label="Pareto front (NLL)")
    if "Top-2" in by:
        t2 = by["Top-2"]
        ax.axhspan(t2["nll_ci"][0], t2["nll_ci"][1], color="grey", alpha=0.12, label="Top-2 NLL 95% CI")
        ax.axvline(TARGET_ENERGY_RATIO * t2["energy_per_token_j"], color="grey", ls=":", lw=1,
                   label=f"{TARGET_ENERGY_RATIO:.0%} of Top-2 energy")
    ax.set_xlabel("energy per token, all layers [J]")
    ax.set_ylabel("mean NLL of the correct answer [nat]")
    ax.set_title("NLL vs energy (lower-left is better)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    for fam in ("Top-k", "H", "JESA", "JESA-cal"):
        ps = sorted((p for p in pts if p["family"] == fam and p.get("mean_kl") is not None),
                    key=lambda p: p["energy_per_token_j"])
        if not ps:
            continue
        x = np.array([p["energy_per_token_j"] for p in ps])
        y = np.array([p["mean_kl"] for p in ps])
        ci = np.array([p["kl_ci"] for p in ps])
        ax.errorbar(x, y, yerr=yerr(y, ci), color=colors.get(fam, family_color(ps[0]["policy"])),
                    marker=markers[fam], ms=8 if fam == "JESA-cal" else 5, capsize=2, lw=1.0, elinewidth=0.8,
                    label=fam)
    ax.set_xlabel("energy per token, all layers [J]")
    ax.set_ylabel("mean KL to the full model [nat/token]")
    ax.set_title("KL to the full model over scored tokens (95% bootstrap)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[2]
    prof = data["profile"]
    L = prof["num_layers"]
    layers = np.arange(1, L + 1)
    sens = np.zeros(L)
    kl = np.asarray(prof["kl"])
    for (a, b), s in zip(prof["windows"], kl[:, 0] - kl[:, -1]):
        sens[a - 1 : b] = s
    ax.bar(layers, sens, color="#cccccc", label=f"KL increment at z = {prof['qos'][0]:g} (profile)")
    ax.set_xlabel("layer l")
    ax.set_ylabel("KL increment [nat/token]")
    ax2 = ax.twinx()
    cal = sorted((p for p in pts if p["family"] == "JESA-cal"), key=lambda p: p["value"])
    for p, c in zip(cal, np.linspace(0.2, 0.9, max(len(cal), 1))):
        ax2.step(layers, p["thresholds"], where="mid", color=(1.0, c * 0.6, 0.0), lw=1.2, label=p["policy"])
    g = cfg["gammas"][len(cfg["gammas"]) // 2]
    ax2.plot(layers, g ** layers, color=family_color("JESA"), ls="--", lw=1, label=f"γ0^l, γ0 = {g:g}")
    ax2.set_ylabel("C1 threshold per layer")
    ax2.set_ylim(0, 1.05)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=6, loc="upper right")
    ax.set_title("measured importance and calibrated thresholds", fontsize=10)
    fig.suptitle(f"Layer importance measured, not assumed — MMLU {', '.join(cfg['subjects'])} "
                 f"({pts[0]['num_questions']} questions)", fontsize=11)
    save(fig, path)


def write_table(result: dict, path) -> None:
    an = analyse(result["data"], result["config"]["seed"])
    rows = []
    for p in result["data"]["policies"]:
        ag = an["agreement"].get(p["policy"])
        rows.append([p["policy"], p["family"], p["value"], p["energy_per_token_j"], p["accuracy"], p["mean_nll"],
                     p["nll_ci"][0], p["nll_ci"][1], None if ag is None else ag["mean"], p.get("mean_kl"),
                     int(p["policy"] in an["pareto_nll"]), " ".join(f"{t:g}" for t in p.get("thresholds", []))])
    csv_write(path, ["policy", "family", "parameter", "energy_per_token_j", "accuracy", "mean_nll", "nll_lo",
                     "nll_hi", "agreement", "mean_kl", "pareto_nll", "thresholds"], rows)


def report(result: dict) -> Section:
    cfg, data = result["config"], result["data"]
    an = analyse(data, cfg["seed"])
    pts = data["policies"]
    by = {p["policy"]: p for p in pts}
    claims, tables, notes = [], [], []
    cal = [p for p in pts if p["family"] == "JESA-cal"]
    on = an["calibrated_on_front"]
    claims.append(Claim(
        "Calibrated JESA lies on the NLL Pareto front (issue 11 goal)",
        "— (issue 11)",
        f"{len(on)}/{len(cal)} calibrated points on the front ({', '.join(on) or 'none'}); front: "
        + ", ".join(an["pareto_nll"]),
        AGREES if cal and len(on) == len(cal) else (PARTLY if on else DIFFERS),
    ))
    best = an.get("best_calibrated_at_top2_nll")
    if "Top-2" in by:
        t2 = by["Top-2"]
        if best:
            verdict = AGREES if best["energy_ratio"] <= TARGET_ENERGY_RATIO else PARTLY
            ours = (f"{best['policy']}: {best['energy_ratio']:.2f}× Top-2's energy, NLL "
                    f"{by[best['policy']]['mean_nll']:.1f} vs Top-2 {t2['mean_nll']:.1f} {band(t2['nll_ci'])} "
                    f"(paired ΔNLL {best['nll']['diff']:+.2f} {band([best['nll']['lo'], best['nll']['hi']], 1, 2)})")
        else:
            verdict = DIFFERS
            ours = f"no calibrated point within Top-2's NLL interval {band(t2['nll_ci'])}"
        paper = an.get("best_paper_jesa_at_top2_nll")
        ours += ("; best JESA(γ0) there: " + (f"{paper['policy']} at {paper['energy_ratio']:.2f}×" if paper else "none"))
        claims.append(Claim("At Top-2's NLL (within its CI) at most 70% of Top-2's energy (issue 11 goal)",
                            "≤ 0.70× Top-2", ours, verdict))
    tr = an["trend"]
    lower_more = tr["spearman_kl"] < 0
    claims.append(Claim(
        "Lower layers matter more: γ^(l) = γ0^l decreasing in l (Section IV-A)",
        "γ0^l, γ0 < 1",
        f"most sensitive window {tr['most_sensitive']}, least {tr['least_sensitive']}; Spearman ρ(window, KL "
        f"sensitivity) = {tr['spearman_kl']:+.2f} (p = {tr['p_kl']:.2g}), ρ(window, NLL sensitivity) = "
        f"{tr['spearman_nll']:+.2f} (p = {tr['p_nll']:.2g})",
        AGREES if lower_more and tr["p_kl"] < 0.05 else (PARTLY if lower_more else DIFFERS),
        "Sensitivity = what lowering a window from the top level to the lowest costs, measured on the "
        "calibration set with every other layer at the top level.",
    ))
    claims.append(Claim(
        "The same on each tiny MoE family (the transformers MoE families)",
        "—",
        "not part of this run (it evaluates the carved default); the tiny random checkpoints of the eight "
        "families are calibrated by docs/importance/tiny_families.py (results in docs/importance/"
        "tiny_families.txt), and `dmoe calibrate --model <checkpoint>` measures any of them",
        NOT_TESTABLE,
        "Random weights carry no learned structure, so they cannot confirm or refute the paper's claim.",
    ))
    rows = []
    for p in sorted(pts, key=lambda p: p["energy_per_token_j"]):
        ag = an["agreement"].get(p["policy"])
        rows.append([p["policy"], fmt(p["energy_per_token_j"]),
                     f"{p['mean_nll']:.2f} {band(p['nll_ci'], 1, 2)}",
                     f"{p['accuracy'] * 100:.1f} {band(p['accuracy_ci'], 100)}",
                     "n/a" if ag is None else f"{100 * ag['mean']:.1f} {band(ag['ci'], 100)}",
                     "n/a" if p.get("mean_kl") is None else f"{p['mean_kl']:.2f} {band(p['kl_ci'], 1, 2)}",
                     "N" if p["policy"] in an["pareto_nll"] else ""])
    tables.append("All points (N = on the NLL Pareto front of the sparse policies):\n\n" + md_table(
        ["policy", "energy per token [J]", "mean NLL [nat] (95% CI)", "accuracy [%] (95% CI)",
         "agreement with full [%] (95% CI)", "mean KL to full [nat/token] (95% CI)", "Pareto"], rows))
    if "vs_top2" in an:
        rows = [[r["policy"], f"{r['energy_ratio']:.2f}",
                 f"{r['nll']['diff']:+.2f} {band([r['nll']['lo'], r['nll']['hi']], 1, 2)}",
                 "yes" if r["within_top2_ci"] else "no"] for r in an["vs_top2"]]
        tables.append("Against Top-2 (paired over the same questions and channels):\n\n" + md_table(
            ["policy", "energy / Top-2", "Δ NLL vs Top-2 [nat] (95% CI)", "NLL within Top-2's CI"], rows))
    pred = {round(r["budget"], 12): r for r in data["predicted"]}
    rows = []
    for p in sorted(cal, key=lambda p: p["value"]):
        r = pred.get(round(p["value"], 12))
        if r is None:
            continue
        rows.append([p["policy"], f"{r['predicted_kl']:.3f}", f"{r['predicted_nll']:+.1f}",
                     f"{p['mean_nll'] - by['dense']['mean_nll']:+.1f}" if "dense" in by else "n/a",
                     fmt(r["predicted_energy_j"]), " ".join(f"{t:g}" for t in p["thresholds"])])
    tables.append("Calibrated allocations: predicted (calibration set) against realised (evaluation set):\n\n" + md_table(
        ["policy", "predicted KL [nat/token]", "predicted ΔNLL vs full [nat]", "realised ΔNLL vs full [nat]",
         "predicted energy [J/token]", "thresholds per layer"], rows))
    prof = data["profile"]
    rows = [[f"{a}-{b}", *[f"{k:.3f} / {n:+.1f}" for k, n in zip(kl, nl)]]
            for (a, b), kl, nl in zip(prof["windows"], prof["kl"], prof["nll"])]
    tables.append(f"Measured profile (increments over the base {prof['base']!r}: KL [nat/token] / answer NLL [nat]; "
                  f"base against the full model: KL {prof['base_kl']:.3f}, NLL {prof['base_nll']:+.1f}):\n\n" + md_table(
                      ["layers", *[f"z = {z:g}" for z in prof["qos"]]], rows))
    c = prof["config"]
    notes.append(f"Calibration: {c['num_questions']} questions of {', '.join(c['subjects'])} (the routers' calibration "
                 f"subjects, disjoint from the evaluation), windows of {c['window']} layers, {c['passes']} forward "
                 f"passes in {prof['seconds']:.0f} s; D = {prof['max_experts']}.")
    notes.append("Budgets B are the summed predicted KL to the full model [nat/token] between the least and the "
                 "largest any allocation reaches; the predicted loss assumes the windows' increments add up"
                 + (", and each level's loss is made at least that of the levels above it (noise removal)."
                    if cfg.get("monotone", True) else "."))
    notes.extend(data.get("messages", []))
    return Section(
        summary=(f"The calibrated JESA(cal:B, {cfg['max_experts']}) over {len(cal)} budgets against Top-k, "
                 f"H(z, {cfg['max_experts']}), JESA(γ0, {cfg['max_experts']}) and the full model on MMLU "
                 f"{', '.join(cfg['subjects'])}."),
        claims=claims, tables=tables, notes=notes, statistics=statistics_line([p for p in pts if p["family"] != "dense"]),
    )


EXPERIMENT = Experiment(NAME, "Layer importance measured, calibrated JESA", "Issue 11 (Section IV-A, Fig. 10)", True,
                        config, run, plot, write_table, report)
