"""The main job: every policy on the same MMLU questions and the same channel draws."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .channels import ChannelConfig, check_grid_resolution
from .data import (
    CALIBRATION_SUBJECTS,
    TEXT_MAX_TOKENS,
    heldout_subjects,
    heldout_texts,
    load_mmlu,
    pack_question,
    pack_text,
    resolve_subjects,
)
from .optimize.policies import Dense, TopK, policy_from_name
from .results import format_table, plot_per_layer, write_per_layer_csv, write_summary
from .runtime.engine import ENGINES, make_engine
from .runtime.evaluate import PolicyResult, evaluate_policy
from .runtime.faults import NoLiveNodeError, check_failure_rate
from .runtime.quality import full_reference, full_text_nll, perplexity
from .system import SystemConfig, default_num_subcarriers

#: The paper's policies (Section VII-A-3 names): the defaults of `dmoe run` with D = 2.
DEFAULT_POLICIES: tuple[str, ...] = (
    "dense",
    "Top-1",
    "Top-2",
    "H(0.5,2)",
    "JESA(0.9,2)",
    "LB(0.9,2)",
)

#: `dmoe run`'s carved default (issue 12): K = 32 fine-grained experts per layer on N = 8
#: nodes. At the same active fraction (25 % of the FFN: Top-8 of 32 against Top-2 of 8) the
#: finer split keeps more quality (``dmoe reproduce granularity``; README).
DEFAULT_RUN_EXPERTS = 32
DEFAULT_RUN_NODES = 8
#: placement of the carved default (``dmoe reproduce placement``; README)
DEFAULT_RUN_PLACEMENT = "coactivation"


def default_policies(num_experts: int, *, carved: bool = True, gamma0: float = 0.9, qos: float = 0.5,
                     max_experts: int | None = None) -> list[str]:
    """The policies `dmoe run` runs when none are named.

    dense, Top-(D/2), Top-D, H(qos, D), JESA(gamma0, D), LB(gamma0, D) with D =
    ``max_experts`` or, by default, a quarter of the experts of a carved model (D = 2 of
    K = 8, the paper's; D = 8 of K = 32: the same 25 % of the FFN) and D = 2 for a real MoE.

    Raises:
        ValueError: ``max_experts`` < 1 or above ``num_experts``.
    """
    k = int(num_experts)
    d = int(max_experts) if max_experts is not None else (max(1, k // 4) if carved else min(2, k))
    if not 1 <= d <= k:
        raise ValueError(f"`max_experts` (--max-experts/-D) = {d} must lie in [1, K = {k}]")
    tops = sorted({max(1, d // 2), d})
    return ["dense", *[f"Top-{t}" for t in tops], f"H({qos!r},{d})", f"JESA({gamma0!r},{d})", f"LB({gamma0!r},{d})"]


def run_main_job(
    *,
    subjects: str | Sequence[str] | None = "anatomy",
    limit: int | None = None,
    policies: Sequence[str] | None = None,
    system: SystemConfig | None = None,
    num_experts: int | None = None,
    num_subcarriers: int | None = None,
    snr_db: float | None = None,
    comp_throughput_tokens_per_s: float | None = None,
    seed: int = 0,
    channel_redraw: str = "layer",
    channel: ChannelConfig | None = None,
    model_source: str | None = None,
    cache_dir: str | None = None,
    combine: str | None = None,
    device: str | None = None,
    output: str | Path | None = None,
    ppl_texts: int = 16,
    progress: bool = True,
    command: str | None = None,
    log=print,
    num_nodes: int | None = None,
    placement: str | None = None,
    profile: str | Path | None = None,
    gamma0: float = 0.9,
    qos: float = 0.5,
    max_experts: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    node_failure_rate: float = 0.0,
    node_rejoin: bool = True,
) -> tuple[dict, list[PolicyResult]]:
    """Run ``policies`` through the DMoE runtime on MMLU and write the results.

    Parameters
    ----------
    subjects, limit
        Question selection (:func:`dmoe.data.load_mmlu`); default all 135 anatomy questions.
    policies : sequence of str, optional
        Policy names parsed by :func:`dmoe.optimize.policies.policy_from_name`; None:
        :func:`default_policies` of the model's K (with ``gamma0``, ``qos``, ``max_experts``).
    system : SystemConfig, optional
        Radio and device parameters. ``system.num_experts`` must equal the model's K. When
        omitted it is built from the model: K = the model's routed experts per layer,
        M = ``num_subcarriers`` or the smallest power of two >= K(K-1), P0/N0 = ``snr_db``
        (default 10 dB), the other fields the paper's defaults.
    num_experts : int, optional
        K asked for (``--num-experts``): the carved model's K (default
        :data:`DEFAULT_RUN_EXPERTS` = 32 on :data:`DEFAULT_RUN_NODES` = 8 nodes with the
        :data:`DEFAULT_RUN_PLACEMENT` placement; an explicit K runs one expert per node
        unless ``num_nodes`` is given); for a real MoE checkpoint it must equal the
        checkpoint's K.
    num_subcarriers, snr_db, comp_throughput_tokens_per_s : optional
        M, P0/N0 [dB] and the nodes' FFN throughput [token/s] when ``system`` is omitted.
    seed : int
        Channel draws and policy randomness; the same for every policy.
    channel_redraw : {"layer", "round", "fixed"}
        Block-fading redraw when ``channel`` has no speed.
    channel : ChannelConfig, optional
        Fading model (i.i.d. Rayleigh or TDL-A..E), mobility and imperfect CSI; default the
        paper's i.i.d. Rayleigh with perfect CSI.
    model_source : str, optional
        ``None``: SmolLM2-135M-Instruct carved into experts; a transformers MoE checkpoint
        (local directory or hub id) of a supported family; a dense model to carve; a
        dmoe build.
    cache_dir : str, optional
        Where carved models are cached (default ``$DMOE_CACHE_DIR`` or ``~/.cache/dmoe``).
    combine : {"sum", "weighted"}, optional
        Carved model only: sum of slices (default) or eq (8). A real MoE uses its family's
        own combination.
    device : str, optional
        Torch device of the model (default CPU; e.g. ``"cuda"``).
    output : path, optional
        Directory for ``summary.json``, ``per_layer.csv`` and ``per_layer.png``; created
        only once every policy has run, so a failed run writes nothing.
    ppl_texts : int, >= 0
        Held-out texts (:func:`dmoe.data.heldout_texts`, at most
        :data:`dmoe.data.TEXT_MAX_TOKENS` tokens each) for each policy's perplexity; 0
        disables it. When every non-calibration subject is evaluated, there is no held-out
        text: a warning says so and perplexity is skipped.
    command : str, optional
        The command line that started the run, recorded in the config.
    num_nodes : int, optional
        N edge nodes (``--nodes``) holding the K experts of each layer (issue 12); default
        N = K, one expert per node. ``system.num_experts`` is then N.
    placement : {"contiguous", "round-robin", "coactivation"}, optional
        How experts are placed on the nodes (:mod:`dmoe.placement`); default when N < K:
        "coactivation" for a carved model, "contiguous" for a real MoE. "coactivation"
        counts the routers' Top-D co-selections on the calibration set (D =
        ``max_experts``, by default K/4 for a carved model (at least 2) and 2 for a real
        MoE; the same whatever policies run), seeded by ``seed``.
    profile : path, optional
        Layer-importance profile for calibrated policies (``JESA(cal:B,D)``); default
        the cached one of the model for that D with the most calibration passes.
    gamma0, qos, max_experts : optional
        gamma0 of the default JESA and LB, z of the default H, and their D
        (:func:`default_policies`); used only when ``policies`` is None.
    engine : {"local", "ray"}
        Where the expert nodes run (:mod:`dmoe.runtime.engine`); one engine serves every
        policy of the job.
    ray_address : str, optional
        Ray cluster to join (``engine="ray"``); None starts Ray embedded.
    node_failure_rate : float in [0, 1)
        Per node and layer round failure probability (:mod:`dmoe.runtime.faults`).
    node_rejoin : bool
        Failed nodes rejoin at the next query round.

    Returns
    -------
    (config, results) : dict, list of PolicyResult

    Raises
    ------
    ValueError
        On an unknown subject or policy name, bad ``limit``, ``ppl_texts`` or configuration: a policy
        with k or D above K, M too small for dense, ``num_experts`` contradicting the
        checkpoint, an unsupported architecture, NaN router outputs (naming the layer); a
        calibrated policy without a matching profile (telling the user to run
        ``dmoe calibrate``).
    FileNotFoundError, OSError
        Missing checkpoint files, an unwritable output location, an unreachable hub id.
    ConnectionError
        ``ray_address`` unreachable (checked before the model loads).
    NoLiveNodeError
        Every node failed; the results so far (the interrupted policy's partial result
        included) are written first.
    """
    from .model import inspect_checkpoint, load_expert_model

    if engine not in ENGINES:
        raise ValueError(f"`engine` (--engine) must be one of {', '.join(ENGINES)}, got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise ValueError("`ray_address` (--ray-address) needs `engine`='ray' (--engine ray)")
    node_failure_rate = check_failure_rate(node_failure_rate)
    channel = channel or ChannelConfig()
    if not isinstance(channel, ChannelConfig):
        raise TypeError(f"`channel` must be a ChannelConfig, got {type(channel).__name__}")
    if channel.speed_kmh is not None and channel_redraw != "layer":
        raise ValueError(
            f"`channel_redraw` (--channel-redraw) = {channel_redraw!r} cannot be combined with `speed_kmh` "
            "(--speed-kmh): with a speed, mobility decides how the channel changes between layer rounds"
        )
    if ray_address is not None:
        from .runtime.ray_engine import CONNECT_TIMEOUT_S, _check_reachable

        _check_reachable(ray_address, CONNECT_TIMEOUT_S)

    names = resolve_subjects(subjects)
    if policies is not None:
        policies = list(policies)
        parsed = _parse_policies(policies)
        policies, parsed = _drop_duplicate_policies(policies, parsed, log)
    out_dir = Path(output) if output is not None else None
    if out_dir is not None:
        _check_output_dir(out_dir)
    from .placement import PLACEMENTS, make_placement

    if placement is not None and placement not in PLACEMENTS:
        raise ValueError(f"`placement` (--placement) must be one of {', '.join(PLACEMENTS)}; got {placement!r}")
    if num_nodes is not None and system is not None and system.num_experts != int(num_nodes):
        raise ValueError(f"`num_nodes` ({num_nodes}) differs from `system.num_experts` ({system.num_experts})")
    if num_nodes is None and system is not None and num_experts is not None and int(num_experts) != system.num_experts:
        raise ValueError(f"`num_experts` ({num_experts}) differs from `system.num_experts` ({system.num_experts})")
    asked_k = num_experts if num_experts is not None else (
        system.num_experts if system is not None and num_nodes is None else None
    )
    # what the checkpoint is, from its config only: K is known before any weight is loaded
    info = inspect_checkpoint(model_source)
    if info.kind == "moe":
        if asked_k is not None and info.num_experts is not None and int(asked_k) != info.num_experts:
            raise ValueError(
                f"`num_experts` (--num-experts/-K) = {asked_k} contradicts the checkpoint: this "
                f"{info.family.label} model has K = {info.num_experts} routed experts per layer (one per node); "
                "omit --num-experts"
            )
        k = info.num_experts
    else:
        k = int(asked_k) if asked_k is not None else DEFAULT_RUN_EXPERTS
    if num_nodes is not None:
        nodes = int(num_nodes)
    elif system is not None:
        nodes = system.num_experts
    else:
        # the carved default: 32 experts on 8 nodes; an explicit -K keeps one expert per node
        nodes = DEFAULT_RUN_NODES if info.kind != "moe" and asked_k is None else k
    if placement is None and info.kind != "moe" and nodes < k:
        # a carved model on fewer nodes than experts: co-activation placement (the best measured)
        placement = DEFAULT_RUN_PLACEMENT
    if policies is None:
        policies = default_policies(k, carved=info.kind != "moe", gamma0=gamma0, qos=qos, max_experts=max_experts)
        parsed = _parse_policies(policies)
    if nodes > k:
        raise ValueError(
            f"`num_nodes` (--nodes) N = {nodes} must not exceed the experts per layer K = {k} (--num-experts)"
        )
    if placement is None and nodes != k:
        placement = "contiguous"
    if system is None:
        extra = {} if snr_db is None else {"snr_db": snr_db}
        if comp_throughput_tokens_per_s is not None:
            extra["comp_throughput_tokens_per_s"] = comp_throughput_tokens_per_s
        system = SystemConfig(
            num_experts=nodes,
            num_subcarriers=num_subcarriers if num_subcarriers is not None else default_num_subcarriers(nodes),
            **extra,
        )
    _check_policies(parsed, system, k)
    # a delay profile the OFDM grid cannot resolve is refused before any work (issue 20)
    check_grid_resolution(channel.make_model(), system.subcarrier_spacing_hz,
                          warn=lambda m: warnings.warn(m, stacklevel=3))
    calib = sorted(set(names) & set(CALIBRATION_SUBJECTS))
    if calib and info.kind != "moe":
        warnings.warn(
            f"subjects {calib} are in the routers' calibration set: their accuracy is optimistic",
            stacklevel=2,
        )
    if isinstance(ppl_texts, bool) or not isinstance(ppl_texts, int) or ppl_texts < 0:
        raise ValueError(f"`ppl_texts` (--ppl-texts) must be a non-negative integer, got {ppl_texts!r}")
    if ppl_texts and not heldout_subjects(names):
        warnings.warn(
            "perplexity skipped: every MMLU subject outside the calibration set is evaluated, "
            "so there is no held-out text",
            stacklevel=2,
        )
        ppl_texts = 0
    try:
        texts, text_subjects = heldout_texts(ppl_texts, exclude=names)
    except ValueError as exc:
        raise ValueError(f"`ppl_texts` (--ppl-texts): {exc}") from exc
    questions = load_mmlu(names, limit=limit)
    model = load_expert_model(
        model_source, num_experts=k, cache_dir=cache_dir, progress=progress,
        combine=combine, device=device,
    )
    if model.num_experts != k:
        raise ValueError(f"the model has K = {model.num_experts} experts per layer, expected {k}")
    if model.tokenizer is None:
        raise ValueError(
            f"the model at {model_source!r} has no tokenizer (tokenizer.json / tokenizer_config.json); "
            "`dmoe run` needs one to encode MMLU questions"
        )
    info_line = model.describe()
    log(
        f"model: {info_line.get('label', info_line['family'])} ({info_line['family']}), K = {model.num_experts} "
        f"routed experts per layer, native top-k = {info_line['native_top_k']}, "
        f"shared experts: {info_line.get('shared_experts', 'none')}"
        + (f", dense layers {info_line['dense_layers']}" if info_line.get("dense_layers") else "")
    )
    log(f"gating scores: {info_line.get('gate', '')}; combination: {info_line.get('combine', '')}")
    if any(p is None for p in parsed):
        parsed = _calibrated_policies(parsed, policies, model, profile, cache_dir, names, system, log)
        _check_policies(parsed, system, k)
    place = None
    if placement is not None:
        coact = None
        if placement == "coactivation":
            from .model.coactivation_cache import cached_coactivation

            # the routers' Top-D co-selections, D = the default policies' D (not the policy
            # list's, so that a policy's result does not depend on which others run with it);
            # cached beside the model build (they depend on the model and D only)
            top = int(max_experts) if max_experts is not None else (max(2, k // 4) if info.kind != "moe" else 2)
            coact = cached_coactivation(model, top_k=min(top, k), cache_dir=cache_dir)
        place = make_placement(placement, k, nodes, coactivation=coact, seed=seed)
    queries = [pack_question(model.tokenizer, q) for q in questions]
    packed_texts = [pack_text(model.tokenizer, t) for t in texts]
    log(
        f"{len(questions)} questions from {', '.join(names)}; {sum(q.num_tokens for q in queries)} "
        f"tokens per policy; K = {k} experts per layer on N = {system.num_experts} nodes"
        f"{'' if place is None else f' ({placement} placement)'}, M = {system.num_subcarriers} subcarriers; "
        f"channel: {channel.label()}"
    )
    # the full model (selection=None), once, shared by every policy
    reference = full_reference(model, queries)
    full_nll = full_text_nll(model, packed_texts) if packed_texts else None
    text_tokens = [t.score_rows.numel() for t in packed_texts]
    full_model = {
        "definition": "dense model (every expert)" if info_line["family"] == "carved" else
        f"the family's own top-{model.native_top_k} routing",
        "accuracy": float(
            sum(int(c == q.answer) for c, q in zip(reference.choices, questions)) / len(questions)
        ),
        "mean_nll": float(-sum(reference.logliks[i, q.answer] for i, q in enumerate(questions)) / len(questions)),
        "perplexity": None if full_nll is None else perplexity(full_nll, text_tokens),
    }
    if packed_texts:
        log(
            f"perplexity: {len(packed_texts)} held-out texts ({sum(text_tokens)} predicted tokens) from "
            f"{', '.join(dict.fromkeys(text_subjects))}"
        )
    log(
        f"full model ({full_model['definition']}): accuracy {full_model['accuracy']:.3f}, mean NLL "
        f"{full_model['mean_nll']:.3f}"
        + ("" if full_model["perplexity"] is None else f", perplexity {full_model['perplexity']:.2f}")
    )
    # one engine worker per node (N workers; worker n holds the experts placed on node n)
    eng = make_engine(engine, model, num_nodes=system.num_experts, address=ray_address)
    results: list[PolicyResult] = []
    failure = None
    try:
        for pol in parsed:
            results.append(
                evaluate_policy(
                    model,
                    queries,
                    pol,
                    system=system,
                    seed=seed,
                    channel_redraw=channel_redraw,
                    channel=channel,
                    progress=progress,
                    placement=place,
                    engine=eng,
                    node_failure_rate=node_failure_rate,
                    node_rejoin=node_rejoin,
                    reference=reference,
                    texts=packed_texts,
                )
            )
    except NoLiveNodeError as exc:
        failure = exc
        if exc.partial is not None:
            results.append(exc.partial)
    finally:
        eng.shutdown()
    config = {
        "subjects": names,
        "limit": limit,
        "policies": [{"name": p.name, **p.params()} for p in parsed],
        "seed": seed,
        "channel_redraw": channel_redraw,
        "channel": channel.to_dict(),
        "combine": model.combine,
        "device": str(model.device),
        "engine": engine,
        "ray_address": ray_address,
        "node_failure_rate": node_failure_rate,
        "node_rejoin": node_rejoin,
        "ppl_texts": len(packed_texts),
        "ppl_subjects": list(dict.fromkeys(text_subjects)),
        "ppl_max_tokens": TEXT_MAX_TOKENS,
        "full_model": full_model,
        "model": dict(getattr(model, "metadata", {}) or {"source": model_source or "default"}),
        "expert_model": info_line,
        "system": system.to_dict(),
        "num_experts": k,
        "num_nodes": system.num_experts,
        "placement": None if place is None else {"kind": placement, "map": np.asarray(place).tolist()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command,
    }
    if failure is not None:
        config["error"] = str(failure)
    log(format_table(results))
    if out_dir is not None and results:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_summary(out_dir / "summary.json", config, results)
        write_per_layer_csv(out_dir / "per_layer.csv", results)
        plot_per_layer(
            out_dir / "per_layer.png",
            results,
            title=f"MMLU {', '.join(names)} — {len(questions)} questions, seed {seed}",
        )
        log(f"wrote {out_dir / 'summary.json'}, per_layer.csv, per_layer.png")
    if failure is not None:
        where = f"; the results so far are in {out_dir}" if out_dir is not None and results else ""
        raise NoLiveNodeError(f"{failure}{where}", round=failure.round, layer=failure.layer) from failure
    return config, results


def _parse_policies(policies: Sequence[str]) -> list:
    """Parsed policies (None for a calibrated one: built once the model's profile is known)."""
    from .optimize.calibrated import is_calibrated_name, parse_calibrated

    parsed = [None if is_calibrated_name(p) else policy_from_name(p) for p in policies]
    for name in policies:
        if is_calibrated_name(name):
            try:
                parse_calibrated(name, profile=None)
            except ValueError as exc:
                if "malformed" in str(exc):
                    raise
    if not parsed:
        raise ValueError("`policies` must name at least one policy")
    return parsed


def _drop_duplicate_policies(policies: list, parsed: list, log) -> tuple[list, list]:
    """Keep the first of policies that are the same (issue 20: ``--policy Top-8 --policy top-8`` ran twice).

    Two policies are the same when they parse to equal policies (same label and arguments), or,
    for calibrated ones (parsed once the profile is known), when their names agree up to case
    and spaces. A note names each dropped duplicate.
    """
    seen, keep_names, keep_parsed = set(), [], []
    for name, pol in zip(policies, parsed):
        key = ("policy", pol.name, repr(sorted(pol.params().items(), key=lambda kv: kv[0]))) if pol is not None \
            else ("calibrated", "".join(str(name).split()).lower())
        if key in seen:
            log(f"note: policy {name!r} is given more than once; it runs once")
            continue
        seen.add(key)
        keep_names.append(name)
        keep_parsed.append(pol)
    return keep_names, keep_parsed


def _calibrated_policies(parsed, names, model, profile, cache_dir, subjects, system, log):
    """Build the calibrated policies of ``names`` (None in ``parsed``) from the model's profile."""
    from .importance import find_profile, load_profile_for
    from .optimize.calibrated import _CAL_RE, parse_calibrated

    out = []
    for pol, name in zip(parsed, names):
        if pol is not None:
            out.append(pol)
            continue
        d = int(_CAL_RE.fullmatch(name).group(4))
        path = profile if profile is not None else find_profile(model, d, cache_dir)
        prof = load_profile_for(model, d, path=path, cache_dir=cache_dir)
        overlap = sorted(set(subjects) & set(prof.config.get("subjects", [])))
        if overlap:
            warnings.warn(
                f"subjects {overlap} are in the importance profile's calibration set ({path}): "
                "the calibrated policy's results on them are optimistic",
                stacklevel=3,
            )
        if system.to_dict() != prof.config.get("system"):
            log(f"note: {name} uses a profile calibrated under other system parameters ({path}); "
                "its energies are relative, the allocation may be less than optimal here")
        pol = parse_calibrated(name, profile=prof, warn=lambda m: log(f"warning: {m}"))
        log(f"{pol.name}: profile {path}; thresholds per layer {', '.join(f'{t:g}' for t in pol.thresholds)}")
        out.append(pol)
    return out


def _check_output_dir(out_dir: Path) -> None:
    """Raise unless ``out_dir`` is (or can become) a writable directory; creates nothing."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"`output` (--output/-o) must be a directory, but {str(out_dir)!r} is a file")
    parent = out_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`output` (--output/-o): {str(parent)!r} is not a writable directory")


def _check_policies(parsed, system: SystemConfig, num_experts: int | None = None) -> None:
    """Every policy fits K and M: k <= K, D <= K (K experts per layer), and M >= N(N-1) for
    dense (N = ``system.num_experts`` nodes)."""
    n = system.num_experts
    k = n if num_experts is None else int(num_experts)
    links = n * (n - 1)
    if any(isinstance(p, Dense) for p in parsed) and system.num_subcarriers < links:
        raise ValueError(
            f"`num_subcarriers` (--num-subcarriers/-M) = {system.num_subcarriers} is too small for "
            f"the dense policy: N(N-1) = {links} links may all be active at once and dense cannot "
            f"reroute; use M >= {links} or drop dense"
        )
    for p in parsed:
        p = getattr(p, "policy", p)  # a Deadline wraps its base policy
        if isinstance(p, TopK) and p.k > k:
            raise ValueError(f"policy {p.name}: `k` must not exceed K = {k}")
        d = getattr(p, "max_experts", None)
        if d is not None and d > k:
            raise ValueError(f"policy {p.name}: `max_experts` D = {d} must not exceed K = {k} (the model's experts)")
