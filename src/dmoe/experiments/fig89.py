"""Fig. 8 and Fig. 9: communication (Fig. 8) and computation (Fig. 9) energy per token at
each layer for JESA(gamma0, D), H(z, D) and Top-2.

Paper (Section VII-C): JESA keeps higher energy at lower layers and reduces it gradually
with depth; H(z, D) behaves like Top-2 scaled down, reducing energy at a similar rate at
every layer; both use less than Top-2, and JESA uses less than H on average.
"""

from __future__ import annotations

import numpy as np

from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import early_late_ratio, fmt, md_table, policy_summary, question_config, statistics_line
from dmoe.experiments.plotting import csv_write, family_color, figure, save
from dmoe.policies import Homogeneous, JESAPolicy, TopK
from dmoe.system import SystemConfig

_COMPONENT = {"fig8": ("comm", "communication"), "fig9": ("comp", "computation")}


def config(options: Options) -> dict:
    return {
        **question_config(options),
        "gamma0": 0.9,
        "qos": 0.5,
        "max_experts": 2,
        "seed": options.seed,
        "system": SystemConfig().to_dict(),
        "channel_redraw": "layer",
    }


def _policies(cfg):
    d = cfg["max_experts"]
    return [TopK(2), Homogeneous(cfg["qos"], d), JESAPolicy(cfg["gamma0"], d)]


def _run(name):
    def run(cfg: dict, ctx) -> dict:
        system = SystemConfig.from_dict(cfg["system"])
        out = []
        for p in _policies(cfg):
            rec = ctx.evaluate(p, subjects=cfg["subjects"], limit=cfg["limit"], seed=cfg["seed"], system=system,
                               channel_redraw=cfg["channel_redraw"], label=name)
            out.append(policy_summary(rec, seed=cfg["seed"], per_question=False))
        return {"policies": out}

    return run


def _plot(name):
    key, word = _COMPONENT[name]

    def plot(result: dict, path) -> None:
        cfg, data = result["config"], result["data"]
        fig, ax = figure(width=7.2, height=4.6)
        markers = {"Top": "s", "H": "^", "JESA": "o"}
        for p in data["policies"]:
            y = np.asarray(p[f"per_token_{key}_j"]) * 1e3
            layers = np.arange(1, y.size + 1)
            m = next((v for k, v in markers.items() if p["policy"].startswith(k)), "o")
            ax.plot(layers, y, marker=m, ms=3, color=family_color(p["policy"]), label=p["policy"])
        ax.set_xlabel("layer l")
        ax.set_ylabel(f"{word} energy per token [mJ]")
        fig_no = name[3:]
        ax.set_title(f"Fig. {fig_no} — {word} energy per token by layer (MMLU {', '.join(cfg['subjects'])}, "
                     f"{data['policies'][0]['num_questions']} questions)", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
        save(fig, path)

    return plot


def _table(name):
    key, _ = _COMPONENT[name]

    def write_table(result: dict, path) -> None:
        rows = []
        for p in result["data"]["policies"]:
            for i, v in enumerate(p[f"per_token_{key}_j"]):
                rows.append([p["policy"], i + 1, v])
        csv_write(path, ["policy", "layer", f"{key}_energy_per_token_j"], rows)

    return write_table


def _report(name):
    key, word = _COMPONENT[name]

    def report(result: dict) -> Section:
        cfg, data = result["config"], result["data"]
        pols = {p["policy"].split("(")[0]: p for p in data["policies"]}
        curve = {n: np.asarray(p[f"per_token_{key}_j"]) for n, p in pols.items()}
        mean = {n: float(c.mean()) for n, c in curve.items()}
        # H relative to Top-2 layer by layer: "similar rate across layers" = flat ratio
        with np.errstate(divide="ignore", invalid="ignore"):
            h_ratio = curve["H"] / curve["Top-2"]
            j_ratio = curve["JESA"] / curve["Top-2"]
        h_ratio = h_ratio[np.isfinite(h_ratio)]
        j_ratio = j_ratio[np.isfinite(j_ratio)]
        h_spread = float(h_ratio.std()) if h_ratio.size else float("nan")
        j_trend = early_late_ratio(curve["JESA"])
        j_first, h_first = curve["JESA"][:5].mean(), curve["H"][:5].mean()
        rows = []
        for n, p in pols.items():
            c = curve[n]
            rows.append([p["policy"], fmt(c.mean() * 1e3), fmt(c[:5].mean() * 1e3), fmt(c[-5:].mean() * 1e3),
                         f"{mean[n] / mean['Top-2']:.2f}" if mean["Top-2"] > 0 else "n/a"])
        both_below = mean["H"] < mean["Top-2"] and mean["JESA"] < mean["Top-2"]
        claims = [
            Claim(
                f"JESA keeps higher {word} energy at lower layers and reduces it gradually",
                "JESA ≥ H at the first layers, then falls",
                f"JESA layers 1-5 {j_first * 1e3:.3g} mJ vs H {h_first * 1e3:.3g} mJ; JESA last/first-5 ratio {j_trend:.2f}",
                AGREES if (j_first >= h_first and j_trend < 0.8) else (PARTLY if j_trend < 0.8 else DIFFERS),
            ),
            Claim(
                "H(z, D) reduces energy at a similar rate across layers (a scaled Top-2)",
                "H parallel to Top-2",
                f"H/Top-2 per layer: mean {h_ratio.mean():.2f}, s.d. {h_spread:.2f} "
                f"(JESA/Top-2 from {j_ratio[:5].mean():.2f} to {j_ratio[-5:].mean():.2f})",
                AGREES if h_spread < 0.1 else PARTLY,
                "" if h_spread < 0.1 else "Our routers' score concentration varies by layer, so the share of "
                "tokens whose cheapest qualifying set is one expert varies by layer too.",
            ),
            Claim(
                f"both H and JESA use less {word} energy than Top-2",
                "both below Top-2",
                f"mean per layer: H {mean['H'] / mean['Top-2']:.2f}×, JESA {mean['JESA'] / mean['Top-2']:.2f}× Top-2",
                AGREES if both_below else DIFFERS,
            ),
            Claim(
                f"JESA has lower average {word} energy than H",
                "JESA < H",
                f"JESA {mean['JESA'] * 1e3:.3g} mJ vs H {mean['H'] * 1e3:.3g} mJ per token per layer",
                AGREES if mean["JESA"] < mean["H"] else DIFFERS,
                "" if mean["JESA"] < mean["H"] else "With our routers' scores the H threshold is easy to meet "
                "with one cheap expert at many layers.",
            ),
        ]
        table = md_table(["policy", "mean [mJ/token]", "layers 1-5", "last 5 layers", "vs Top-2"], rows)
        return Section(
            summary=(
                f"{word.capitalize()} energy per token at every layer for Top-2, H({cfg['qos']:g}, {cfg['max_experts']}) "
                f"and JESA({cfg['gamma0']:g}, {cfg['max_experts']}) on MMLU {', '.join(cfg['subjects'])} "
                "(the paper does not give z and γ0 for these figures; we use the defaults of `dmoe run`)."
            ),
            claims=claims,
            tables=[table],
            statistics=statistics_line(data["policies"]),
        )

    return report


FIG8 = Experiment("fig8", "Communication energy per token at each layer", "Fig. 8 (Section VII-C)", True,
                  config, _run("fig8"), _plot("fig8"), _table("fig8"), _report("fig8"))
FIG9 = Experiment("fig9", "Computation energy per token at each layer", "Fig. 9 (Section VII-C)", True,
                  config, _run("fig9"), _plot("fig9"), _table("fig9"), _report("fig9"))
