"""Many experts on few nodes (issue 12): energy and quality under three expert placements.

The carved model with E = 32 experts per layer (48 neurons each) runs on N in {2, 4, 8}
nodes through the DMoE runtime, with the experts placed contiguously, round robin, or by
co-activation (experts the routers select together for the same token share a node; the
routers' Top-8 co-selections on the calibration set, :func:`dmoe.runtime.routing.routing_coactivation`).
Policies at the same active fraction as the paper's Top-2 of 8: Top-8, H(0.5, 8),
JESA(0.9, 8) and LB(0.9, 8), all node-aware (one transmission per token and remote node).
Reported: energy per token, communication share, answer NLL and accuracy, and the saving
of co-activation placement over round robin.
"""

from __future__ import annotations

import numpy as np

from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import fmt, md_table, policy_summary, question_config, statistics_line
from dmoe.experiments.plotting import csv_write, family_color, figure, save
from dmoe.policies import policy_from_name
from dmoe.system import SystemConfig

NAME = "placement"
PLACEMENT_KINDS = ("contiguous", "round-robin", "coactivation")


def config(options: Options) -> dict:
    return {
        **question_config(options, quick_limit=8),
        "num_experts": 32,
        "nodes": [2, 4, 8],
        "placements": list(PLACEMENT_KINDS),
        "policies": ["Top-8", "H(0.5,8)", "JESA(0.9,8)", "LB(0.9,8)"],
        "coactivation_top_k": 8,
        "calibration_tokens": 2000 if options.quick else 4000,
        "seed": options.seed,
        "num_subcarriers": 64,
        "channel_redraw": "layer",
    }


def run(cfg: dict, ctx) -> dict:
    from dmoe.model.coactivation_cache import cached_coactivation
    from dmoe.placement import coactivation_kept, make_placement

    e = cfg["num_experts"]
    model = ctx.model(e)
    ctx.log(f"[{NAME}] routing statistics (Top-{cfg['coactivation_top_k']}) on the calibration set ...")
    # the counts of routing_coactivation, cached beside the build (computed once per model, D and size)
    coact = cached_coactivation(model, top_k=cfg["coactivation_top_k"], max_tokens=cfg["calibration_tokens"],
                                cache_dir=ctx.cache_dir)
    policies = [policy_from_name(p) for p in cfg["policies"]]
    rows = []
    for n in cfg["nodes"]:
        system = SystemConfig(num_nodes=n, num_subcarriers=cfg["num_subcarriers"])
        for kind in cfg["placements"]:
            place = make_placement(kind, e, n, coactivation=coact, seed=cfg["seed"])
            if place.ndim == 1:
                place = np.broadcast_to(place, (model.num_layers, e))
            kept = coactivation_kept(place, coact)
            for pol in policies:
                rec = ctx.evaluate(pol, subjects=cfg["subjects"], limit=cfg["limit"], seed=cfg["seed"], system=system,
                                   channel_redraw=cfg["channel_redraw"], label=NAME, num_experts=e,
                                   placement=np.asarray(place))
                s = policy_summary(rec, seed=cfg["seed"], per_question=False)
                tokens = max(int(rec["num_tokens"]), 1)
                s.update({
                    "nodes": n,
                    "placement": kind,
                    "coactivation_kept": kept,
                    "transmissions_per_token": float(np.sum(rec["per_layer"]["transmissions"]) / tokens),
                })
                rows.append(s)
    return {"rows": rows}


def _table(rows):
    """{(policy, nodes, placement): row}."""
    return {(r["policy"], r["nodes"], r["placement"]): r for r in rows}


def savings(result: dict) -> dict:
    """Saving of co-activation over round-robin placement per (policy, N): 1 - E_co / E_rr."""
    t = _table(result["data"]["rows"])
    cfg = result["config"]
    out = {}
    for p in cfg["policies"]:
        name = policy_from_name(p).name
        for n in cfg["nodes"]:
            co, rr = t.get((name, n, "coactivation")), t.get((name, n, "round-robin"))
            if co and rr:
                out[(name, n)] = 1.0 - co["energy_j"] / rr["energy_j"]
    return out


def plot(result: dict, path) -> None:
    cfg, rows = result["config"], result["data"]["rows"]
    t = _table(rows)
    names = [policy_from_name(p).name for p in cfg["policies"]]
    fig, axes = figure(ncols=len(names), width=3.3, height=3.4, sharey=True)
    styles = {"contiguous": ":", "round-robin": "--", "coactivation": "-"}
    for ax, name in zip(np.atleast_1d(axes), names):
        for kind in cfg["placements"]:
            y = [t[(name, n, kind)]["energy_per_token_j"] * 1e3 for n in cfg["nodes"]]
            ax.plot(cfg["nodes"], y, ls=styles.get(kind, "-"), marker="o", ms=3, color=family_color(name), label=kind)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("nodes N")
        ax.set_xticks(cfg["nodes"])
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("energy per token [mJ] (all layers)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    save(fig, path)


def write_table(result: dict, path) -> None:
    header = ["policy", "nodes", "placement", "energy_per_token_j", "energy_comm_j", "energy_comp_j", "mean_nll",
              "accuracy", "transmissions_per_token", "coactivation_kept"]
    rows = [[r["policy"], r["nodes"], r["placement"], r["energy_per_token_j"], r["energy_comm_j"], r["energy_comp_j"],
             r["mean_nll"], r["accuracy"], r["transmissions_per_token"], r["coactivation_kept"]]
            for r in result["data"]["rows"]]
    csv_write(path, header, rows)


def report(result: dict) -> Section:
    cfg, rows = result["config"], result["data"]["rows"]
    t = _table(rows)
    sav = savings(result)
    names = [policy_from_name(p).name for p in cfg["policies"]]
    table_rows = []
    for name in names:
        for n in cfg["nodes"]:
            cells = [name, n]
            for kind in cfg["placements"]:
                r = t[(name, n, kind)]
                cells.append(f"{fmt(r['energy_per_token_j'] * 1e3)} ({fmt(r['mean_nll'])})")
            s = sav.get((name, n))
            cells.append("" if s is None else f"{100 * s:+.1f}%")
            table_rows.append(cells)
    header = ["policy", "N"] + [f"{k}: mJ/token (NLL)" for k in cfg["placements"]] + ["co-activation saving vs round-robin"]
    kept = {(r["nodes"], r["placement"]): r["coactivation_kept"] for r in rows}
    kept_rows = [[n] + [f"{kept[(n, k)]:.2f}" for k in cfg["placements"]] for n in cfg["nodes"]]
    sched = [v for (name, _), v in sav.items() if not name.startswith("LB")]
    all_pos = bool(sched) and all(v > 0 for v in sched)
    mean_sav = float(np.mean(sched)) if sched else float("nan")
    claims = [Claim(
        "co-activation aware placement saves energy over round robin (one transmission serves all "
        "co-selected experts of a node)",
        "not in the paper (issue 12)",
        "saving per (policy, N): " + ", ".join(f"{name} N={n}: {100 * v:+.1f}%" for (name, n), v in sav.items()),
        AGREES if all_pos else (PARTLY if mean_sav > 0 else DIFFERS),
        f"mean saving of the schedulable policies {100 * mean_sav:+.1f}%; quality (NLL) of Top-8 is the same "
        "under every placement (the same experts), JESA and H trade it against energy.",
    )]
    return Section(
        summary=(
            f"The carved model with E = {cfg['num_experts']} experts per layer on N ∈ {{{', '.join(map(str, cfg['nodes']))}}} "
            f"nodes, MMLU {', '.join(cfg['subjects'])}, through the DMoE runtime with node-aware policies "
            f"(M = {cfg['num_subcarriers']}); energy per token over all layers, in brackets the answer NLL [nat]."
        ),
        claims=claims,
        tables=[md_table(header, table_rows),
                md_table(["N"] + [f"co-activation kept: {k}" for k in cfg["placements"]], kept_rows)],
        statistics=statistics_line(rows),
    )


EXPERIMENT = Experiment(NAME, "Expert placement: many experts on few nodes", "issue 12 (not in the paper)", True,
                        config, run, plot, write_table, report)
