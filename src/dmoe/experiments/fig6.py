"""Fig. 6 (Section VII-B): expert selection patterns of DES across layers for several gamma0.

As in the paper ("we manually create high-performing experts with higher gating scores and
set their power consumption to be proportionally higher. Meanwhile, we include some
low-performing, low-cost experts"), the gating scores are synthetic: K = 8 experts, the
first ``num_high`` = 3 "high-performing" (their gate logits have mean ``mu_high``), the others
"low-performing" (mean 0), Gaussian logit noise, softmax. Each expert's computation
energy a_j is proportional to its mean gating score (scaled so that the mean a_j is the
paper's 4.5e-3 J/token). Channel diversity enters through i.i.d. Rayleigh links: every
layer draws new channels, each link holds one random subcarrier (equal bandwidth, the
setting of P1), tokens come from uniformly random nodes. DES (Algorithm 1, exact P1(a))
selects experts for threshold gamma0^l and D = 2. The heat map is the probability that
each expert is selected, by layer. Pure numpy, no model.
"""

from __future__ import annotations

import numpy as np

from dmoe.channels.rates import draw_rates
from dmoe.energy import link_rate_from_subcarriers, token_costs
from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import md_table
from dmoe.experiments.plotting import csv_write, figure, save
from dmoe.optimize import random_subcarriers, select_experts
from dmoe.system import SystemConfig

NAME = "fig6"


def config(options: Options) -> dict:
    return {
        "num_experts": 8,
        "num_high": 3,
        "num_layers": 32,
        "gammas": [0.8, 0.85, 0.9],
        "max_experts": 2,
        "tokens_per_layer": options.draws or (400 if options.quick else 4000),
        "mu_high": 2.5,
        "sigma": 1.5,
        "mean_comp_energy": 4.5e-3,
        "num_subcarriers": 64,
        "seed": options.seed,
    }


def _scores(rng, n, mu, sigma):
    logits = mu[None, :] + sigma * rng.standard_normal((n, mu.size))
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def expert_profile(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """(mu [K] gate-logit means, a [K] J/token) of the synthetic experts."""
    k, h = cfg["num_experts"], cfg["num_high"]
    mu = np.where(np.arange(k) < h, cfg["mu_high"], 0.0)
    # mean score of each expert from a large fixed sample; a_j proportional to it
    mean_score = _scores(np.random.default_rng(12345), 200_000, mu, cfg["sigma"]).mean(axis=0)
    a = cfg["mean_comp_energy"] * mean_score / mean_score.mean()
    return mu, a


def run(cfg: dict, ctx=None) -> dict:
    k, L, n = cfg["num_experts"], cfg["num_layers"], cfg["tokens_per_layer"]
    mu, a = expert_profile(cfg)
    system = SystemConfig(num_nodes=k, num_subcarriers=cfg["num_subcarriers"], comp_energy_per_token=tuple(a))
    prob, infeasible, energy, n_sel = [], [], [], []
    for g in cfg["gammas"]:
        p_g, inf_g, e_g, s_g = [], [], [], []
        for layer in range(1, L + 1):
            # same channels and scores for every gamma0 at a layer (common random numbers)
            rng = np.random.default_rng([cfg["seed"], layer])
            scores = _scores(rng, n, mu, cfg["sigma"])
            source = rng.integers(0, k, size=n)
            rates = draw_rates(system, rng)
            beta = random_subcarriers(k, system.num_subcarriers, rng)
            costs = token_costs(link_rate_from_subcarriers(rates, beta), system)[source]
            res = select_experts(scores, costs, g**layer, cfg["max_experts"])
            p_g.append(res.selection.mean(axis=0))
            inf_g.append(float(np.mean(~res.feasible)))
            e_g.append(float(res.energy.mean()))
            s_g.append(float(res.selection.sum(axis=1).mean()))
        prob.append(p_g)
        infeasible.append(inf_g)
        energy.append(e_g)
        n_sel.append(s_g)
    return {
        "comp_energy_per_token": a.tolist(),
        "gate_logit_mean": mu.tolist(),
        "selection_probability": prob,  # [gamma][layer][expert]
        "infeasible_share": infeasible,  # [gamma][layer]
        "energy_per_token_j": energy,  # [gamma][layer]
        "experts_per_token": n_sel,  # [gamma][layer]
    }


def _high_share(cfg, data):
    """[gamma][layer] share of selections that go to the high-performing group."""
    p = np.asarray(data["selection_probability"])
    h = cfg["num_high"]
    tot = p.sum(axis=2)
    return np.where(tot > 0, p[:, :, :h].sum(axis=2) / np.maximum(tot, 1e-12), np.nan)


def shift_layers(cfg, data) -> list:
    """Per gamma0: the first layer at which fewer than half of the selections go to the
    high-performing experts (None if that never happens)."""
    share = _high_share(cfg, data)
    out = []
    for row in share:
        idx = np.flatnonzero(row < 0.5)
        out.append(int(idx[0]) + 1 if idx.size else None)
    return out


def plot(result: dict, path) -> None:
    cfg, data = result["config"], result["data"]
    p = np.asarray(data["selection_probability"])
    shifts = shift_layers(cfg, data)
    k, h = cfg["num_experts"], cfg["num_high"]
    a = data["comp_energy_per_token"]
    fig, axes = figure(ncols=len(cfg["gammas"]), width=4.6, height=3.9, squeeze=False)
    axes = axes[0]
    im = None
    vmax = max(0.05, float(np.ceil(p.max() * 10) / 10))  # same colour scale in every panel
    for ax, g, pg, sh in zip(axes, cfg["gammas"], p, shifts):
        im = ax.imshow(pg.T, aspect="auto", cmap="Blues", vmin=0, vmax=vmax, origin="upper",
                       extent=(0.5, cfg["num_layers"] + 0.5, k - 0.5, -0.5), interpolation="nearest")
        ax.axhline(h - 0.5, color="orange", lw=1)
        if sh is not None:
            ax.axvline(sh - 0.5, color="red", ls="--", lw=1)
        ax.set_title(f"γ0 = {g:g}" + (f" (shift at layer {sh})" if sh else ""), fontsize=10)
        ax.set_xlabel("layer l")
        ax.set_yticks(range(k))
        ax.set_yticklabels([f"E{j + 1} {'high' if j < h else 'low'} a={a[j] * 1e3:.1f}mJ" for j in range(k)], fontsize=7)
    axes[0].set_ylabel("expert (a_j = computation energy per token)")
    cbar = fig.colorbar(im, ax=list(axes), shrink=0.9)
    cbar.set_label("selection probability")
    fig.suptitle(f"Fig. 6 — DES selection patterns, threshold γ0^l, D = {cfg['max_experts']} "
                 f"(synthetic experts, {cfg['tokens_per_layer']} tokens per layer)", fontsize=11)
    save(fig, path)


def write_table(result: dict, path) -> None:
    cfg, data = result["config"], result["data"]
    rows = []
    for g, pg, inf, en, ns in zip(cfg["gammas"], data["selection_probability"], data["infeasible_share"],
                                  data["energy_per_token_j"], data["experts_per_token"]):
        for layer, (row, fi, e, s) in enumerate(zip(pg, inf, en, ns), start=1):
            rows.append([g, layer, *row, fi, e, s])
    csv_write(path, ["gamma0", "layer", *[f"p_expert{j + 1}" for j in range(cfg["num_experts"])],
                     "infeasible_share", "energy_per_token_j", "experts_per_token"], rows)


def report(result: dict) -> Section:
    cfg, data = result["config"], result["data"]
    share = _high_share(cfg, data)
    shifts = shift_layers(cfg, data)
    inf = np.asarray(data["infeasible_share"])
    early = share[:, :3].mean(axis=1)
    late = share[:, -3:].mean(axis=1)
    valid = [s for s in shifts if s is not None]
    delayed = len(valid) == len(shifts) and all(a < b for a, b in zip(valid, valid[1:]))
    claims = [
        Claim("at lower layers DES favours the high-performing (costly) experts", "dark cells on high experts at low l",
              "share of selections on high experts, layers 1-3: " + ", ".join(
                  f"{100 * e:.0f}% (γ0={g:g})" for g, e in zip(cfg["gammas"], early)),
              AGREES if np.all(early > 0.5) else DIFFERS),
        Claim("at higher layers DES shifts to the low-cost experts", "dark cells on low experts at high l",
              "share on high experts, last 3 layers: " + ", ".join(
                  f"{100 * e:.0f}% (γ0={g:g})" for g, e in zip(cfg["gammas"], late)),
              AGREES if np.all(late < 0.5) else (PARTLY if np.any(late < 0.5) else DIFFERS)),
        Claim("a larger γ0 delays the shift", "shift layer grows with γ0",
              "shift layer " + ", ".join(f"{s if s else 'none'} (γ0={g:g})" for g, s in zip(cfg["gammas"], shifts)),
              AGREES if delayed else (PARTLY if valid else DIFFERS)),
    ]
    rows = []
    for g, s, inf_g, en in zip(cfg["gammas"], shifts, inf, np.asarray(data["energy_per_token_j"])):
        rows.append([f"{g:g}", s or "none", f"{100 * inf_g[:3].mean():.0f}%", f"{en[:3].mean() * 1e3:.2f}",
                     f"{en[-3:].mean() * 1e3:.2f}"])
    table = md_table(["γ0", "shift layer", "infeasible tokens, layers 1-3", "energy/token layers 1-3 [mJ]",
                      "last 3 layers [mJ]"], rows)
    a = data["comp_energy_per_token"]
    notes = [
        f"Synthetic experts: gate logits N({cfg['mu_high']:g}, {cfg['sigma']:g}²) for E1-E{cfg['num_high']} and "
        f"N(0, {cfg['sigma']:g}²) for the rest, softmax; a_j = {', '.join(f'{x * 1e3:.2f}' for x in a)} mJ/token "
        f"(∝ mean score). K = {cfg['num_experts']}, M = {cfg['num_subcarriers']}, {cfg['num_layers']} layers "
        "(Mixtral-8x7B's depth).",
        "Infeasible tokens (Top-D scores below γ0^l, Remark 2) take their Top-2 experts, which are mostly the "
        "high-performing ones: at the lowest layers part of the preference for them comes from that rule.",
    ]
    return Section(
        summary=("DES selection probability of each expert at each layer with threshold γ0^l for "
                 f"γ0 ∈ {{{', '.join(f'{g:g}' for g in cfg['gammas'])}}}, D = {cfg['max_experts']}, synthetic "
                 "high-performing/costly and low-performing/cheap experts as the paper describes."),
        claims=claims,
        tables=[table],
        notes=notes,
        statistics=f"Each cell: {cfg['tokens_per_layer']} tokens with their own scores and a fresh channel draw per "
                   "layer (the same draws for every γ0). Binomial standard error of a cell ≤ "
                   f"{50 / np.sqrt(cfg['tokens_per_layer']):.1f} percentage points.",
    )


EXPERIMENT = Experiment(NAME, "DES selection patterns across layers", "Fig. 6 (Section VII-B)", False,
                        config, run, plot, write_table, report)
