"""Deployment (beyond the paper, issue 16): the energy-latency frontier of Top-k, H, JESA and LB
in a 5G NR numerology with node geometry and 3GPP path loss.

Setup: ``dmoe run``'s default model (the carved SmolLM2 with K = 32 experts per layer on
N = 8 nodes, co-activation placement from the routers' Top-8 co-selections on the
calibration set), the NR preset ``nr-fr1-30khz-100mhz`` (:func:`dmoe.system.system_preset`:
273 resource blocks of 360 kHz, 23 dBm per node, NF 7 dB), nodes placed by a layout
(default ``disk:50``, uniform in a disk of radius 50 m) with TR 38.901 UMi-Street-Canyon
path loss, LoS states and shadowing drawn once from the seed
(:meth:`dmoe.channels.ChannelConfig.large_scale`), i.i.d. Rayleigh small-scale fading
redrawn every layer round, and s0 = the model's hidden size on the wire (fp16: 576 x 2 =
1,152 B; unlike the paper's figures, which keep 8 kB). Every point runs on the same
questions, seed and channel draws.

Points: each family (Top-k for several k, H(z, D), JESA(gamma0, D) and LB(gamma0, D) for
several z / gamma0) without a deadline; then representative policies of each family with a
layer-round deadline ``[T=...s]`` (:class:`dmoe.policies.Deadline`, through the public policy
strings, so any allocation the deadline policies use -- one resource block per link, or
several where :mod:`dmoe.optimize.resource_blocks` exists -- is what runs). The deadlines
are fractions of the measured no-deadline layer-round latency: T_ref = the median, over the
no-deadline Top-k, H and JESA points, of their mean layer-round latency, and
T = f x T_ref rounded to two significant digits, for the configured fractions f (so the
tighter ones bind). Whether the resource-block allocator is installed is recorded and enters
every evaluation's cache key.

Per point: energy per query [J/query] and per token [mJ/token], mean and 95th-percentile
query latency and layer-round latency [s], answer NLL, KL and agreement with the full
model, and with a deadline the share of layer rounds that completed within T on air
(``deadline_met_share``; plus any ``deadline*`` entries the evaluation records). The
non-dominated points in (mean query latency, energy per query), both minimised, are marked
(:func:`energy_latency_front`) among the schedulable policies Top-k, H and JESA, and so are
those of (KL, energy) and of all three (:func:`nondominated`, :data:`FRONTS`): a deadline
buys latency and energy with quality (excluded links cost tokens their experts), which the
two-dimensional front alone hides. LB is a lower bound on energy that shares subcarriers
between links (its latency is not physical), so it is drawn for reference and kept off the
fronts.

Verdict rules of the report's claims: "JESA saves energy against Top-D" agrees when
JESA(0.9, D) spends less than Top-D without a deadline in every deployment, else differs;
"JESA stays close to LB" agrees when JESA(0.9, D) is within 10% of LB(0.9, D) everywhere,
partly within 25%, else differs.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from dmoe.channels import ChannelConfig
from dmoe.experiments.base import AGREES, DIFFERS, PARTLY, Claim, Experiment, Options, Section
from dmoe.experiments.common import fmt, md_table, pct, question_config
from dmoe.experiments.plotting import csv_write, family_color, figure, plt, save
from dmoe.experiments.stats import bootstrap_mean_interval, bootstrap_ratio_interval, pareto_front
from dmoe.policies import policy_from_name
from dmoe.system import system_preset
from dmoe.wire import resolve_hidden_state_bytes

__all__ = ["EXPERIMENT", "FRONTS", "NAME", "config", "deadline_values", "energy_latency_front", "family_of",
           "nondominated", "resource_blocks_available"]

NAME = "deployment"
#: Questions in --quick mode (one query round on the N = 8 nodes).
QUICK_LIMIT = 4
#: Questions in a full run (one query round of 8 queries: the README's `dmoe run --limit 8`).
FULL_LIMIT = 8
#: The families in plotting order (labels as the policies print them).
FAMILIES = ("Top", "H", "JESA", "LB")
#: Marker of a point by its deadline's position in the sweep (no deadline: a circle).
_DEADLINE_MARKERS = ("^", "s", "D", "v", "P", "X")


def resource_blocks_available() -> bool:
    """True when :mod:`dmoe.optimize.resource_blocks` (several RBs per link under a
    deadline, issue 16 item 3) is installed; recorded with the results and part of every
    evaluation's cache key."""
    return importlib.util.find_spec("dmoe.optimize.resource_blocks") is not None


def config(options: Options) -> dict:
    """The JSON-ready configuration: questions (``--quick``: 4, else 8 anatomy questions),
    model and placement, preset, deployments (``--quick``: ``disk:50``; full: also
    ``disk:100``), the policy families, the deadline bases and fractions of T_ref, and
    whether the resource-block allocator is installed."""
    quick = options.quick
    deployments = [{"layout": "disk:50", "pathloss": "umi-street-canyon"}]
    if not quick:
        deployments.append({"layout": "disk:100", "pathloss": "umi-street-canyon"})
    if quick:
        families = {"Top": ["Top-4", "Top-8"], "H": ["H(0.5,8)"], "JESA": ["JESA(0.9,8)"], "LB": ["LB(0.9,8)"]}
        fractions = [0.5, 0.25]
    else:
        families = {"Top": ["Top-2", "Top-4", "Top-8", "Top-16"], "H": ["H(0.3,8)", "H(0.5,8)", "H(0.7,8)"],
                    "JESA": ["JESA(0.8,8)", "JESA(0.9,8)", "JESA(0.95,8)"],
                    "LB": ["LB(0.8,8)", "LB(0.9,8)", "LB(0.95,8)"]}
        fractions = [1.0, 0.5, 0.25]
    return {
        **question_config(options, quick_limit=QUICK_LIMIT),
        **({} if quick or options.limit is not None else {"limit": FULL_LIMIT}),
        "seed": options.seed,
        "num_experts": 32,
        "num_nodes": 8,
        "placement": "coactivation",
        "coactivation_top_k": 8,
        "coactivation_tokens": 4000,
        "preset": "nr-fr1-30khz-100mhz",
        "wire_dtype": "fp16",
        "carrier_ghz": 3.5,
        "channel_model": "rayleigh",
        "channel_redraw": "layer",
        "deployments": deployments,
        "families": families,
        "deadline_bases": ["Top-8", "H(0.5,8)", "JESA(0.9,8)", "LB(0.9,8)"],
        "deadline_fractions": fractions,
        "resource_blocks": resource_blocks_available(),
    }


# ------------------------------------------------------------------ pieces
def family_of(policy_name: str) -> str:
    """The family of a policy label: ``"Top"``, ``"H"``, ``"JESA"``, ``"LB"`` (a deadline
    suffix ``[T=...s]`` is ignored), or the label's head for any other policy."""
    base = policy_name.split("[", 1)[0].strip()
    for fam in ("Top", "JESA", "LB", "H"):
        if base.startswith(fam + "-") or base.startswith(fam + "("):
            return fam
    return base.split("(", 1)[0]


def _round_sig(x: float, digits: int = 2) -> float:
    if x <= 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def deadline_values(reference_s: float, fractions) -> list[float]:
    """Deadlines T = f x ``reference_s`` [s] rounded to two significant digits, one per
    fraction f, distinct and in the order given; empty when the reference is not a finite
    positive latency.

    Raises:
        ValueError: a fraction that is not a finite number > 0 (named).
    """
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
            raise ValueError(f"`deadline_fractions` must hold finite numbers > 0, got {f!r}")
    if not (isinstance(reference_s, (int, float)) and math.isfinite(reference_s) and reference_s > 0):
        return []
    out = []
    for f in fractions:
        t = _round_sig(float(f) * float(reference_s))
        if t > 0 and t not in out:
            out.append(t)
    return out


def energy_latency_front(latency_s, energy_j) -> np.ndarray:
    """Indices of the points not dominated in (latency, energy), both minimised, sorted by
    increasing latency.

    A point is dominated when another has latency <= and energy <= with at least one
    strict; exact duplicates are all kept (:func:`dmoe.experiments.stats.pareto_front`).

    Args:
        latency_s: ``[n]`` float, e.g. mean query latency [s].
        energy_j: ``[n]`` float, e.g. energy per query [J/query].

    Returns:
        ``[n_front]`` int64 indices into the inputs.

    Raises:
        ValueError: different lengths, or a value that is NaN or infinite.
    """
    lat = np.asarray(latency_s, dtype=np.float64).ravel()
    en = np.asarray(energy_j, dtype=np.float64).ravel()
    if lat.shape != en.shape:
        raise ValueError(f"`latency_s` and `energy_j` must have the same length, got {lat.size} and {en.size}")
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(en))):
        raise ValueError("`latency_s` and `energy_j` must be finite")
    idx = pareto_front(en, -lat)
    return idx[np.lexsort((en[idx], lat[idx]))] if idx.size else idx


def nondominated(objectives) -> np.ndarray:
    """Which points no other point dominates, every objective minimised.

    Point j dominates point i when it is <= in every objective and < in at least one;
    exact duplicates do not dominate each other (both are kept).

    Args:
        objectives: ``[n, m]`` float, finite (e.g. latency [s], energy [J], KL [nat]).

    Returns:
        ``[n]`` bool.

    Raises:
        ValueError: not a 2-D array, or a value that is NaN or infinite.
    """
    x = np.asarray(objectives, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"`objectives` must be [n, m], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("`objectives` must be finite")
    le = np.all(x[:, None, :] <= x[None, :, :], axis=2)  # [j, i]: j <= i everywhere
    lt = np.any(x[:, None, :] < x[None, :, :], axis=2)  # [j, i]: j < i somewhere
    return ~np.any(le & lt, axis=0)


def _finite(x):
    """A float, or None for NaN / infinity / None (strict JSON)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _point(rec, policy, family: str, deadline_s, seed: int) -> dict:
    """The numbers kept from one evaluation."""
    nll_ci = bootstrap_mean_interval(rec.nll, seed=seed)
    kl_ci = bootstrap_ratio_interval(rec.kl * rec.scored, rec.scored, seed=seed)
    n, tok = max(int(rec["num_questions"]), 1), max(int(rec["num_tokens"]), 1)
    out = {
        "policy": rec["policy"],
        "family": family,
        "base": getattr(policy, "policy", policy).name,
        "deadline_s": deadline_s,
        "energy_j": _finite(rec["energy_j"]),
        "energy_comm_j": _finite(rec["energy_comm_j"]),
        "energy_comp_j": _finite(rec["energy_comp_j"]),
        "energy_per_query_j": _finite(rec["energy_j"] / n),
        "energy_per_token_mj": _finite(rec["energy_j"] / tok * 1e3),
        "latency_query_mean_s": _finite(rec.get("latency_query_mean_s")),
        "latency_query_p95_s": _finite(rec.get("latency_query_p95_s")),
        "latency_layer_round_mean_s": _finite(rec.get("latency_layer_round_mean_s")),
        "latency_layer_round_p95_s": _finite(rec.get("latency_layer_round_p95_s")),
        "mean_nll": _finite(rec["mean_nll"]),
        "nll_ci": [_finite(v) for v in nll_ci],
        "mean_kl": _finite(rec["mean_kl"]),
        "kl_ci": [_finite(v) for v in kl_ci],
        "agreement": _finite(rec["agreement"]),
        "accuracy": _finite(rec["accuracy"]),
        "infeasible_token_layers": int(np.sum(rec["per_layer"]["infeasible_tokens"])),
        "failed_attempts": int(rec.get("failed_attempts", 0)),
        "dropped_tokens": int(rec.get("dropped_tokens", 0)),
        "num_questions": int(rec["num_questions"]),
        "num_tokens": int(rec["num_tokens"]),
        "deadline_met_share": None,
        "bound": family == "LB",
    }
    rounds = rec.get("latency_layer_round_s")
    if deadline_s is not None and rounds is not None:
        lr = np.asarray(rounds, dtype=np.float64).ravel()
        lr = lr[np.isfinite(lr)]
        if lr.size:
            out["deadline_met_share"] = float(np.mean(lr <= deadline_s * (1 + 1e-9)))
    # what a later runtime may record about deadlines (e.g. counts of missed rounds), as is
    extra = {k: v for k, v in rec.items() if k.startswith("deadline") and isinstance(v, (int, float, bool))}
    if extra:
        out["recorded"] = {k: (_finite(v) if isinstance(v, float) else v) for k, v in extra.items()}
    return out


#: the fronts marked on every point: flag -> the objectives (all minimised)
FRONTS = {
    "pareto": ("latency_query_mean_s", "energy_per_query_j"),
    "pareto_kl": ("mean_kl", "energy_per_query_j"),
    "pareto_3d": ("latency_query_mean_s", "energy_per_query_j", "mean_kl"),
}


def _mark_fronts(points: list[dict]) -> list[str]:
    """Set the :data:`FRONTS` flags on every point (the schedulable policies only: LB never
    is on a front) and return the labels of the (latency, energy) front by latency."""
    for p in points:
        for flag in FRONTS:
            p[flag] = False
    front = []
    for flag, keys in FRONTS.items():
        cand = [i for i, p in enumerate(points) if not p["bound"] and all(p[k] is not None for k in keys)]
        if not cand:
            continue
        if flag == "pareto":
            idx = energy_latency_front([points[i][keys[0]] for i in cand], [points[i][keys[1]] for i in cand])
            on = [cand[i] for i in idx]
            front = [points[i]["policy"] for i in on]
        else:
            mask = nondominated([[points[i][k] for k in keys] for i in cand])
            on = [c for c, m in zip(cand, mask) if m]
        for i in on:
            points[i][flag] = True
    return front


def _deployment_label(dep: dict) -> str:
    names = {"umi-street-canyon": "UMi-Street-Canyon", "inh-office": "InH-Office", "free-space": "free space"}
    return f"{dep['layout']}, {names.get(dep['pathloss'], dep['pathloss'])}"


def run(cfg: dict, ctx) -> dict:
    """Evaluate every point (module docstring) through ``ctx``'s cache.

    Returns:
        ``{"hidden_state_bytes", "hidden_state_source", "system", "resource_blocks",
        "placement" [L][E], "deployments": [{layout, pathloss, label, channel, path_loss_db
        (min, mean, max), los_fraction, snr_db (min, median, max), positions_m,
        reference_round_s, deadlines_s, points, front}]}``; each point holds the numbers of
        :func:`_point` and the :data:`FRONTS` flags. No NaN (None where undefined).
    """
    from dmoe.model.coactivation_cache import cached_coactivation
    from dmoe.placement import make_placement

    e, n = int(cfg["num_experts"]), int(cfg["num_nodes"])
    model = ctx.model(e)
    s0, s0_source = resolve_hidden_state_bytes(int(model.hidden_size), wire_dtype=cfg["wire_dtype"])
    system = system_preset(cfg["preset"], num_nodes=n).replace(hidden_state_bytes=s0)
    place = None
    if cfg["placement"] is not None and n < e:
        coact = None
        if cfg["placement"] == "coactivation":
            ctx.log(f"[{NAME}] routing statistics (Top-{cfg['coactivation_top_k']}) on the calibration set ...")
            # routing_coactivation's counts, cached beside the build
            coact = cached_coactivation(model, top_k=min(int(cfg["coactivation_top_k"]), e),
                                        max_tokens=int(cfg["coactivation_tokens"]), cache_dir=ctx.cache_dir)
        place = np.asarray(make_placement(cfg["placement"], e, n, coactivation=coact, seed=cfg["seed"]))
    extra = {"resource_blocks": bool(cfg["resource_blocks"])}
    common = dict(subjects=cfg["subjects"], limit=cfg["limit"], seed=cfg["seed"], system=system,
                  channel_redraw=cfg["channel_redraw"], num_experts=e, placement=place, key_extra=extra)
    out = []
    for dep in cfg["deployments"]:
        channel = ChannelConfig(cfg["channel_model"], carrier_ghz=cfg["carrier_ghz"], layout=dep["layout"],
                                pathloss=dep["pathloss"])
        label = _deployment_label(dep)
        large = channel.large_scale(n, cfg["seed"])
        gains = large.gain[~np.eye(n, dtype=bool)]
        snr = 10.0 * np.log10(system.snr_linear * gains)
        points = []
        for fam in FAMILIES:
            for name in cfg["families"].get(fam, []):
                pol = policy_from_name(name)
                rec = ctx.evaluate(pol, channel=channel, label=f"{NAME} {dep['layout']}", **common)
                points.append(_point(rec, pol, family_of(pol.name), None, cfg["seed"]))
        ref_lat = [p["latency_layer_round_mean_s"] for p in points
                   if not p["bound"] and p["latency_layer_round_mean_s"] is not None]
        t_ref = float(np.median(ref_lat)) if ref_lat else None
        # while planning (engine="ray") the latencies are placeholders: the deadline points
        # are derived from measured ones, so they run in order later
        deadlines = [] if getattr(ctx, "planning", False) or t_ref is None else \
            deadline_values(t_ref, cfg["deadline_fractions"])
        for base in cfg["deadline_bases"]:
            for t in deadlines:
                pol = policy_from_name(f"{base}[T={t:g}s]")
                rec = ctx.evaluate(pol, channel=channel, label=f"{NAME} {dep['layout']}", **common)
                points.append(_point(rec, pol, family_of(pol.name), t, cfg["seed"]))
        front = _mark_fronts(points)
        dd = large.to_dict()
        out.append({
            **dep,
            "label": label,
            "channel": channel.to_dict(),
            "path_loss_db": [dd["path_loss_db_min"], dd["path_loss_db_mean"], dd["path_loss_db_max"]],
            "los_fraction": dd["los_fraction"],
            "snr_db": [float(snr.min()), float(np.median(snr)), float(snr.max())],
            "positions_m": dd["positions_m"],
            "reference_round_s": t_ref,
            "deadlines_s": deadlines,
            "points": points,
            "front": front,
        })
    return {
        "hidden_state_bytes": int(s0),
        "hidden_state_source": s0_source,
        "system": system.to_dict(),
        "resource_blocks": bool(cfg["resource_blocks"]),
        "placement": None if place is None else place.tolist(),
        "deployments": out,
    }


# ------------------------------------------------------------------ plot
def _log_if_wide(ax, axis: str, values) -> None:
    """A log scale with plain tick labels (1, 2, 3, 5, 10, ...) when the values span more than 8x."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    v = np.asarray([x for x in values if x is not None and x > 0], dtype=np.float64)
    if v.size and v.max() / v.min() > 8:
        target = ax.xaxis if axis == "x" else ax.yaxis
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        target.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        target.set_minor_formatter(NullFormatter())


def _marker(p: dict, deadlines) -> str:
    if p["deadline_s"] is None:
        return "o"
    i = deadlines.index(p["deadline_s"]) if p["deadline_s"] in deadlines else len(_DEADLINE_MARKERS) - 1
    return _DEADLINE_MARKERS[min(i, len(_DEADLINE_MARKERS) - 1)]


def _scatter(ax, points, deadlines, xkey: str, flag: str) -> None:
    pts = [p for p in points if p[xkey] is not None and p["energy_per_query_j"] is not None]
    for fam in FAMILIES:
        fp = [p for p in pts if p["family"] == fam]
        if not fp:
            continue
        c = family_color(fam)
        # the family's own non-dominated points in this plane, joined by a thin line
        idx = energy_latency_front([p[xkey] for p in fp], [p["energy_per_query_j"] for p in fp])
        ax.plot([fp[i][xkey] for i in idx], [fp[i]["energy_per_query_j"] for i in idx], color=c, lw=1.0,
                alpha=0.6, ls=":" if fam == "LB" else "-")
        for p in fp:
            ax.plot(p[xkey], p["energy_per_query_j"], _marker(p, deadlines), ms=6, color=c,
                    mfc="none" if p["bound"] else c, mew=1.2, alpha=0.9)
    fr = sorted((p for p in pts if p.get(flag)), key=lambda p: (p[xkey], p["energy_per_query_j"]))
    if fr:
        ax.step([p[xkey] for p in fr], [p["energy_per_query_j"] for p in fr], where="post", color="black",
                lw=1.0, ls="--", alpha=0.7)
        ax.plot([p[xkey] for p in fr], [p["energy_per_query_j"] for p in fr], "o", ms=12, mfc="none",
                mec="black", mew=1.0)
        for p in fr:
            ax.annotate(p["policy"], (p[xkey], p["energy_per_query_j"]), fontsize=6, xytext=(5, 4),
                        textcoords="offset points")
    _log_if_wide(ax, "x", [p[xkey] for p in pts])
    _log_if_wide(ax, "y", [p["energy_per_query_j"] for p in pts])
    ax.grid(alpha=0.3, which="both")


def plot(result: dict, path) -> None:
    from matplotlib.lines import Line2D

    cfg, data = result["config"], result["data"]
    deps = data["deployments"]
    fig, axes = figure(ncols=2, nrows=len(deps), width=6.2, height=4.4, squeeze=False)
    for row, dep in zip(axes, deps):
        ax, ax2 = row
        _scatter(ax, dep["points"], dep["deadlines_s"], "latency_query_mean_s", "pareto")
        _scatter(ax2, dep["points"], dep["deadlines_s"], "mean_kl", "pareto_kl")
        snr = dep["snr_db"]
        ref = "" if dep["reference_round_s"] is None else f", T_ref = {dep['reference_round_s']:.2g} s"
        ax.set_title(f"{dep['label']}: link SNR {snr[0]:.0f} / {snr[1]:.0f} / {snr[2]:.0f} dB (min / median / max)"
                     f"{ref}", fontsize=9)
        ax.set_xlabel("mean query latency [s]")
        ax.set_ylabel("energy per query [J/query]")
        ax2.set_title(f"{dep['label']}: energy against quality (ringed: its front)", fontsize=9)
        ax2.set_xlabel("mean KL to the full model [nat/token]")
        ax2.set_ylabel("energy per query [J/query]")
    # one legend for every panel: colour = family, marker = deadline (as a fraction of T_ref)
    handles = [Line2D([], [], color=family_color(f), marker="o", ls="-", mfc="none" if f == "LB" else None,
                      label=f"{f}{' (lower bound, hollow; off the fronts)' if f == 'LB' else ''}") for f in FAMILIES]
    handles.append(Line2D([], [], color="#555555", marker="o", ls="none", label="no deadline"))
    for i, f in enumerate(cfg["deadline_fractions"]):
        handles.append(Line2D([], [], color="#555555", marker=_DEADLINE_MARKERS[min(i, len(_DEADLINE_MARKERS) - 1)],
                              ls="none", label=f"T = {f:g} × T_ref"))
    handles.append(Line2D([], [], color="black", marker="o", ms=10, mfc="none", ls="--",
                          label="front of Top-k, H, JESA (ringed)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        f"Energy against latency — {cfg['preset']}, K = {cfg['num_experts']} experts on N = {cfg['num_nodes']} "
        f"nodes ({cfg['placement']}), s0 = {data['hidden_state_bytes']} B, MMLU {', '.join(cfg['subjects'])} "
        f"({deps[0]['points'][0]['num_questions'] if deps and deps[0]['points'] else 0} questions)",
        fontsize=10)
    save(fig, path)
    plt.close("all")


# ------------------------------------------------------------------ table
_COLUMNS = ["deployment", "policy", "family", "deadline_s", "energy_per_query_j", "energy_per_token_mj", "energy_j",
            "energy_comm_j", "energy_comp_j", "latency_query_mean_s", "latency_query_p95_s",
            "latency_layer_round_mean_s", "latency_layer_round_p95_s", "mean_nll", "mean_kl", "agreement",
            "accuracy", "deadline_met_share", "infeasible_token_layers", "num_questions", "num_tokens", "pareto",
            "pareto_kl", "pareto_3d"]


def write_table(result: dict, path) -> None:
    rows = []
    for dep in result["data"]["deployments"]:
        for p in dep["points"]:
            rows.append([dep["label"]] + [int(p[c]) if isinstance(p.get(c), bool) else p.get(c) for c in _COLUMNS[1:]])
    csv_write(path, _COLUMNS, rows)


# ------------------------------------------------------------------ report
def _find(points, name):
    return next((p for p in points if p["policy"] == name), None)


def _share(x) -> str:
    return "" if x is None else pct(x, 0)


def report(result: dict) -> Section:
    cfg, data = result["config"], result["data"]
    deps = data["deployments"]
    d = 8
    for name in cfg["deadline_bases"]:
        pol = policy_from_name(name)
        if family_of(pol.name) == "JESA":
            d = int(pol.max_experts)
    jesa, top, lb = f"JESA(0.9,{d})", f"Top-{d}", f"LB(0.9,{d})"
    claims = []
    sav = {}
    gaps = {}
    for dep in deps:
        j, t, b = (_find(dep["points"], x) for x in (jesa, top, lb))
        if j and t and t["energy_j"]:
            sav[dep["label"]] = 1.0 - j["energy_j"] / t["energy_j"]
        if j and b and b["energy_j"]:
            gaps[dep["label"]] = j["energy_j"] / b["energy_j"] - 1.0
    if sav:
        claims.append(Claim(
            f"JESA saves energy against Top-k at the same D ({jesa} against {top}, no deadline)",
            "JESA far below Top-2 (Fig. 7, i.i.d. Rayleigh, 8 kB)",
            "saving " + ", ".join(f"{pct(v)} ({k})" for k, v in sav.items()),
            AGREES if all(v > 0 for v in sav.values()) else DIFFERS,
            "In the NR preset radio energy is small beside computation (a_j = j mJ/token), so the saving is "
            "mostly computation: JESA picks fewer and cheaper experts.",
        ))
    if gaps:
        worst = max(gaps.values())
        claims.append(Claim(
            "JESA stays close to the lower bound LB",
            "near-optimal (Fig. 7)",
            "JESA above LB by " + ", ".join(f"{pct(v)} ({k})" for k, v in gaps.items()),
            AGREES if worst <= 0.10 else (PARTLY if worst <= 0.25 else DIFFERS),
        ))
    tables, notes = [], []
    for dep in deps:
        rows = []
        for p in dep["points"]:
            rows.append([
                ("**" + p["policy"] + "**") if p.get("pareto") else p["policy"],
                "" if p["deadline_s"] is None else f"{p['deadline_s']:g}",
                fmt(p["energy_per_query_j"]), fmt(p["energy_per_token_mj"]),
                fmt(p["latency_query_mean_s"]), fmt(p["latency_query_p95_s"]),
                fmt(p["latency_layer_round_mean_s"]), fmt(p["latency_layer_round_p95_s"]),
                fmt(p["mean_nll"]), fmt(p["mean_kl"]), fmt(p["agreement"], 3), _share(p["deadline_met_share"]),
                *("✓" if p.get(flag) else "" for flag in FRONTS),
            ])
        tables.append(f"*{dep['label']}* (path loss {dep['path_loss_db'][0]:.0f} / {dep['path_loss_db'][1]:.0f} / "
                      f"{dep['path_loss_db'][2]:.0f} dB min / mean / max, {pct(dep['los_fraction'], 0)} of links LoS; "
                      f"T_ref = {fmt(dep['reference_round_s'])} s; fronts of the schedulable policies, all minimised: "
                      "L/E mean query latency and energy (**bold**), KL/E KL and energy, L/E/KL all three)\n\n"
                      + md_table(["policy", "T [s]", "energy [J/query]", "energy [mJ/token]", "query mean [s]",
                                  "query p95 [s]", "round mean [s]", "round p95 [s]", "NLL [nat]", "KL [nat]",
                                  "agreement", "rounds within T", "L/E", "KL/E", "L/E/KL"], rows))
        notes.append(_observation(dep, jesa))
    notes.append(
        f"s0: this experiment charges the hidden state of the model that runs, {data['hidden_state_bytes']} B "
        f"({data['hidden_state_source']}), not the paper's 8 kB that the paper's figures keep."
    )
    notes.append(
        "Resource blocks: " + (
            "the deadline policies could give a link several RBs (dmoe.optimize.resource_blocks was installed)."
            if data.get("resource_blocks") else
            "one RB per active link (this build has no dmoe.optimize.resource_blocks), so a deadline can only "
            "exclude slow links and reroute their tokens; with several RBs per link a tight deadline would "
            "instead speed links up.")
    )
    notes.append(
        "LB(γ0,D) lets links share subcarriers; its latency is not physical, so it is drawn hollow and kept off "
        "the front. The deadline bounds each layer round on the server's (here perfect) channel knowledge; "
        "'rounds within T' is the share of layer rounds that completed within T on air."
    )
    first = deps[0]["points"][0] if deps and deps[0]["points"] else None
    n_pts = sum(len(dep["points"]) for dep in deps)
    return Section(
        summary=(
            f"Beyond the paper (issue 16): `dmoe run`'s default model (K = {cfg['num_experts']} experts per layer "
            f"on N = {cfg['num_nodes']} nodes, {cfg['placement']} placement) in the 5G NR preset `{cfg['preset']}` "
            f"(273 RBs of 360 kHz, 23 dBm, NF 7 dB, {cfg['carrier_ghz']:g} GHz) with node geometry "
            f"({'; '.join(dep['label'] for dep in deps)}; TR 38.901 path loss, LoS and shadowing drawn once from "
            f"the seed) and i.i.d. Rayleigh fading. s0 = {data['hidden_state_bytes']} B, the model's own hidden "
            f"state in {cfg['wire_dtype']} (unlike the paper's figures, which keep 8 kB). {n_pts} points: Top-k, "
            f"H(z,D), JESA(γ0,D) and LB(γ0,D) without a deadline, and "
            f"{', '.join(cfg['deadline_bases'])} with layer-round deadlines T = "
            f"{', '.join(f'{f:g}' for f in cfg['deadline_fractions'])} × T_ref, T_ref the median mean layer-round "
            "latency of the no-deadline Top-k, H and JESA points; the energy-latency front of the schedulable "
            "policies is marked."
        ),
        claims=claims,
        tables=tables,
        notes=notes,
        statistics=(
            "" if first is None else
            f"Each point: {first['num_questions']} MMLU questions ({first['num_tokens']} tokens per layer), "
            f"seed {cfg['seed']}: the same deployment, fading draws (a new draw per layer round) and questions for "
            "every point. Latency: mean and 95th percentile over queries and over layer rounds."
        ),
    )


def _observation(dep: dict, jesa_name: str) -> str:
    """One sentence of numbers about a deployment's frontier."""
    pts = [p for p in dep["points"] if not p["bound"] and p["latency_query_mean_s"] is not None]
    if not pts:
        return f"{dep['label']}: no schedulable point."
    fastest = min(pts, key=lambda p: (p["latency_query_mean_s"], p["energy_per_query_j"]))
    cheapest = min(pts, key=lambda p: (p["energy_per_query_j"], p["latency_query_mean_s"]))
    j = _find(dep["points"], jesa_name)
    parts = [f"{dep['label']}: the front holds {len(dep['front'])} of {len(pts)} schedulable points "
             f"({', '.join(dep['front'])})."]
    parts.append(f"Cheapest: {cheapest['policy']} at {fmt(cheapest['energy_per_query_j'])} J/query and "
                 f"{fmt(cheapest['latency_query_mean_s'])} s per query; fastest: {fastest['policy']} at "
                 f"{fmt(fastest['latency_query_mean_s'])} s and {fmt(fastest['energy_per_query_j'])} J/query "
                 f"(KL {fmt(fastest['mean_kl'])} nat).")
    if j is not None:
        parts.append(f"{jesa_name} without a deadline: {fmt(j['energy_per_query_j'])} J/query, "
                     f"{fmt(j['latency_query_mean_s'])} s per query, round {fmt(j['latency_layer_round_mean_s'])} s "
                     f"mean / {fmt(j['latency_layer_round_p95_s'])} s p95, KL {fmt(j['mean_kl'])} nat.")
        bounded = [p for p in dep["points"] if p["base"] == jesa_name and p["deadline_s"] is not None]
        if bounded:
            parts.append("With deadlines: " + "; ".join(
                f"T = {p['deadline_s']:g} s: {fmt(p['energy_per_query_j'])} J/query, "
                f"{fmt(p['latency_query_mean_s'])} s per query, KL {fmt(p['mean_kl'])} nat"
                + ("" if p["deadline_met_share"] is None else f", {_share(p['deadline_met_share'])} of rounds within T")
                for p in bounded) + ".")
    # what a deadline costs in quality, per base policy (the loosest and the tightest T)
    costs = []
    for base in dict.fromkeys(p["base"] for p in pts if p["deadline_s"] is not None):
        free = _find(pts, base)
        bounded = sorted((p for p in pts if p["base"] == base and p["deadline_s"] is not None),
                         key=lambda p: -p["deadline_s"])
        if free is None or free["mean_kl"] is None:
            continue
        costs.append(f"{base} {fmt(free['mean_kl'])} → " + " → ".join(
            f"{fmt(p['mean_kl'])} (T = {p['deadline_s']:g} s)" for p in bounded))
    if costs:
        parts.append("KL [nat] as the deadline tightens: " + "; ".join(costs) + ".")
    return " ".join(parts)


EXPERIMENT = Experiment(NAME, "Deployment: energy-latency frontier in a 5G NR preset with geometry",
                        "issue 16 (not in the paper)", True, config, run, plot, write_table, report)
