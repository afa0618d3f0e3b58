"""The main job: every policy on the same MMLU questions and the same channel draws."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .channels import ChannelConfig, check_channel_choice
from .defaults import DEFAULT_NUM_EXPERTS, DEFAULT_NUM_NODES, DEFAULT_PLACEMENT
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
from .policies import Dense, Policy, TopK, policy_from_name
from .results import (
    format_table,
    deadline_notes,
    latency_note,
    plot_latency,
    plot_per_layer,
    write_per_layer_csv,
    write_summary,
    write_summary_csv,
)
from .runtime.engines import ENGINES, make_engine
from .runtime.evaluate import PolicyResult, evaluate_policy
from .runtime.faults import NoLiveNodeError, check_failure_rate
from .runtime.quality import full_model_quality, full_reference, full_text_nll
from .system import SystemConfig

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
#: nodes with the co-activation placement; one home, :mod:`dmoe.defaults` (issue 19), shared
#: with :func:`dmoe.load_moe_model` and the CLI.
DEFAULT_RUN_EXPERTS = DEFAULT_NUM_EXPERTS
DEFAULT_RUN_NODES = DEFAULT_NUM_NODES
DEFAULT_RUN_PLACEMENT = DEFAULT_PLACEMENT


def default_policies(num_experts: int, *, carved: bool = True, gamma0: float = 0.9, qos: float = 0.5,
                     max_experts: int | None = None) -> list[str]:
    """The policies `dmoe run` runs when none are named.

    dense, Top-(D/2), Top-D, H(qos, D), JESA(gamma0, D), LB(gamma0, D) with D =
    ``max_experts`` or, by default, a quarter of the experts of a carved model (D = 2 of
    K = 8, the paper's; D = 8 of K = 32: the same 25 % of the FFN) and D = 2 for a real MoE.

    Raises:
        ValueError: ``max_experts`` < 1 or above ``num_experts``.
    """
    d = default_max_experts(num_experts, carved=carved, max_experts=max_experts)
    tops = sorted({max(1, d // 2), d})
    return ["dense", *[f"Top-{t}" for t in tops], f"H({qos!r},{d})", f"JESA({gamma0!r},{d})", f"LB({gamma0!r},{d})"]


def default_max_experts(num_experts: int, *, carved: bool = True, max_experts: int | None = None) -> int:
    """D of `dmoe run`'s default policies: ``max_experts`` or, by default, a quarter of the
    K experts of a carved model (at least 1) and 2 (at most K) for a real MoE.

    Raises:
        ValueError: ``max_experts`` < 1 or above ``num_experts``.
    """
    k = int(num_experts)
    d = int(max_experts) if max_experts is not None else (max(1, k // 4) if carved else min(2, k))
    if not 1 <= d <= k:
        raise ValueError(f"`max_experts` (--max-experts/-D) = {d} must lie in [1, K = {k}]")
    return d


def run_main_job(
    *,
    subjects: str | Sequence[str] | None = "anatomy",
    limit: int | None = None,
    policies: Sequence[str | Policy] | None = None,
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
    preset: str = "paper",
    noise_figure_db: float | None = None,
    tx_power_dbm: float | None = None,
    wire_dtype: str | None = None,
    hidden_state_bytes: int | None = None,
    run_config: Mapping | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[dict, list[PolicyResult]]:
    """Run ``policies`` through the DMoE runtime on MMLU and write the results.

    The deployment (K, N, placement, radio system, node geometry, s0) is resolved by
    :func:`dmoe.deployment.plan_deployment` before any weight loads and loaded by
    :meth:`~dmoe.deployment.DeploymentPlan.load`: the same code as ``dmoe generate``,
    ``dmoe chat`` and the lm-evaluation-harness model.

    Parameters
    ----------
    subjects, limit
        Question selection (:func:`dmoe.data.load_mmlu`); default all 135 anatomy questions.
    policies : sequence of str or Policy, optional
        Policies: :class:`~dmoe.policies.Policy` objects and strings parsed by
        :func:`dmoe.policies.policy_from_name` (built-in labels, plugins
        ``"mypkg.mod:BestChannel(0.8,8)"`` and entry-point names), mixed; None:
        :func:`default_policies` of the model's K (with ``gamma0``, ``qos``, ``max_experts``).
        Each policy's ``spec`` (import path and arguments) is recorded in the summary and,
        for a plugin, in ``config.toml``, so that the run repeats.
    system : SystemConfig, optional
        Radio and device parameters of the N = ``system.num_nodes`` nodes (N <= the model's
        K, which comes from ``num_experts``, the checkpoint or the default, never from
        ``system``: a ``system.num_nodes`` above K is a ValueError raised before any model
        load; below K the experts are placed on the nodes, see ``placement``). When
        omitted it is built from ``preset`` (:func:`dmoe.system.system_preset`) for the N
        nodes: in the paper preset M = ``num_subcarriers`` or the smallest power of two
        >= N(N-1), P0/N0 = ``snr_db`` (default 10 dB), the other fields the paper's defaults.
    num_experts : int, optional
        K asked for (``--num-experts``): the carved model's K (default
        :data:`DEFAULT_RUN_EXPERTS` = 32 on :data:`DEFAULT_RUN_NODES` = 8 nodes with the
        :data:`DEFAULT_RUN_PLACEMENT` placement; an explicit K runs one expert per node
        unless ``num_nodes`` is given); for a real MoE checkpoint it must equal the
        checkpoint's K.
    num_subcarriers, snr_db, comp_throughput_tokens_per_s : optional
        M (subcarriers, or resource blocks in an NR preset), P0/N0 [dB] (only where the
        noise is not given by a noise figure) and the nodes' FFN throughput [token/s],
        overriding the preset, when ``system`` is omitted.
    preset : str
        Radio numerology (``--system``, :data:`dmoe.system.SYSTEM_PRESETS`): ``"paper"``
        (default) or an NR FR1 preset (M = the carrier's resource blocks, B0 = the RB
        bandwidth, 23 dBm per node, NF 7 dB, N0 = k T0 B0 NF).
    noise_figure_db : float, optional
        Receiver noise figure [dB] >= 0 (``--noise-figure``): N0 = k T0 B0 NF, overriding
        the preset's (in the paper preset it replaces P0/N0 = ``snr_db``).
    tx_power_dbm : float, optional
        P_max, the node power budget [dBm] (``--tx-power-dbm``), overriding the preset's
        (NR presets: P0 = P_max / N_RB per RB follows it; paper preset: P0 stays 10 mW, so
        P_max must be >= 10 dBm).
    seed : int
        Channel draws and policy randomness; the same for every policy.
    channel_redraw : {"layer", "round", "fixed"}
        Block-fading redraw when ``channel`` has no speed.
    channel : ChannelConfig, optional
        Fading model (i.i.d. Rayleigh or TDL-A..E), mobility, imperfect CSI and the
        deployment (node layout and path loss); default the paper's i.i.d. Rayleigh with
        perfect CSI and the average gain 1e-2 on every link. With a layout the N node
        positions, LoS states and shadowing are drawn from ``seed`` before any model work
        and recorded in the config's ``"deployment"``.
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
        Directory for ``summary.json``, ``summary.csv`` (one row per policy: energy totals
        [J], per token [mJ/token] and per query [J/query], latency), ``per_layer.csv``,
        ``per_layer.png``, ``latency.png`` (per layer round and per query) and, with
        ``run_config``, ``config.toml``; created only once every policy has run, so a failed
        run writes nothing. A mean query latency above a minute adds a note (logged and in
        the summary's ``notes``) naming what dominates it (:func:`dmoe.results.latency_note`).
    ppl_texts : int, >= 0
        Held-out texts (:func:`dmoe.data.heldout_texts`, at most
        :data:`dmoe.data.TEXT_MAX_TOKENS` tokens each) for each policy's perplexity; 0
        disables it. When every non-calibration subject is evaluated, there is no held-out
        text: a warning says so and perplexity is skipped.
    command : str, optional
        The command line that started the run, recorded in the config.
    num_nodes : int, optional
        N edge nodes (``--nodes``) holding the K experts of each layer (issue 12); default
        ``system.num_nodes`` when a ``system`` is given, else as ``num_experts`` says.
        ``system.num_nodes`` must then equal it.
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
    wire_dtype : {"fp16", "bf16", "fp8", "int8"}, optional
        How hidden states travel (:mod:`dmoe.wire`): s0 [byte] = the loaded model's hidden
        size x bytes per element (+ 4 B of fp32 scale per token for fp8 / int8). None: the
        s0 of ``system`` when one is given, else fp16 (SmolLM2-135M: 576 x 2 = 1,152 B).
    hidden_state_bytes : int, optional
        s0 [byte] set explicitly; wins over ``wire_dtype`` and ``system``. The summary
        records s0 and where it came from (``hidden_state_bytes``, ``hidden_state_source``).
    run_config : mapping, optional
        The merged ``dmoe run`` configuration ({section: {key: value}}, :mod:`dmoe.config`):
        written as ``config.toml`` beside ``summary.json`` (``dmoe run --config
        <output>/config.toml`` repeats the run) and recorded in the summary as ``run_config``.
    on_stage : callable, optional
        Called with a stage name after each start-up stage has finished, in this order
        (:data:`dmoe.startup_progress.MAIN_JOB_STAGES`): ``"plan"`` (arguments, policies and
        the deployment plan checked), ``"questions"`` (MMLU questions and held-out texts
        read), ``"model"`` (the model loaded), ``"placement"`` (experts placed on the nodes),
``"engine"`` (the engine's N workers started); then the work begins, each
        part with its own progress bar: the full model's reference pass over the questions,
        its held-out pass, the policies. ``dmoe run`` draws its start-up progress bar with it
        (:class:`dmoe.startup_progress.StartupProgress`). Not called for stages a failure
        stops before.

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
    from .deployment import check_radio_arguments, plan_deployment

    if on_stage is not None and not callable(on_stage):
        raise TypeError(f"`on_stage` must be a callable taking a stage name, got {on_stage!r}")
    stage = on_stage if on_stage is not None else (lambda name: None)
    if engine not in ENGINES:
        raise ValueError(f"`engine` (--engine) must be one of {', '.join(ENGINES)}, got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise ValueError("`ray_address` (--ray-address) needs `engine`='ray' (--engine ray)")
    node_failure_rate = check_failure_rate(node_failure_rate)
    check_radio_arguments(preset, system, snr_db, noise_figure_db, tx_power_dbm, wire_dtype, hidden_state_bytes)
    if run_config is not None:
        from .config import dump_toml

        if not isinstance(run_config, Mapping) or not all(isinstance(v, Mapping) for v in run_config.values()):
            raise TypeError(f"`run_config` must map sections to {{key: value}} tables, got {run_config!r}")
        dump_toml(run_config)  # TOML-writable before any work (TypeError / ValueError otherwise)
    channel = check_channel_choice(channel or ChannelConfig(), channel_redraw)
    if ray_address is not None:
        from .runtime.ray_engine import CONNECT_TIMEOUT_S, _check_reachable

        _check_reachable(ray_address, CONNECT_TIMEOUT_S)

    names = resolve_subjects(subjects)
    if policies is not None:
        policies = list(policies)
        parsed = _parse_policies(policies)
        policies, parsed = _drop_duplicate_policies(policies, parsed, log)
        run_config = _record_policy_specs(run_config, policies, parsed, log)
    out_dir = Path(output) if output is not None else None
    if out_dir is not None:
        _check_output_dir(out_dir)
    # K, N, placement, the radio system and the node geometry, from the checkpoint's config only
    plan = plan_deployment(
        model_source=model_source, system=system, num_experts=num_experts, num_nodes=num_nodes, placement=placement,
        preset=preset, num_subcarriers=num_subcarriers, snr_db=snr_db,
        comp_throughput_tokens_per_s=comp_throughput_tokens_per_s, noise_figure_db=noise_figure_db,
        tx_power_dbm=tx_power_dbm, channel=channel, wire_dtype=wire_dtype, hidden_state_bytes=hidden_state_bytes,
        max_experts=max_experts, seed=seed,
    )
    k, carved = plan.num_experts, plan.carved
    if policies is None:
        policies = default_policies(k, carved=carved, gamma0=gamma0, qos=qos, max_experts=max_experts)
        parsed = _parse_policies(policies)
    _check_policies(parsed, plan.system, k)
    calib = sorted(set(names) & set(CALIBRATION_SUBJECTS))
    if calib and carved:
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
    stage("plan")
    try:
        texts, text_subjects = heldout_texts(ppl_texts, exclude=names)
    except ValueError as exc:
        raise ValueError(f"`ppl_texts` (--ppl-texts): {exc}") from exc
    questions = load_mmlu(names, limit=limit)
    stage("questions")
    deployed = plan.load(cache_dir=cache_dir, combine=combine, device=device, progress=progress, on_stage=stage)
    model, system, place, placement = deployed.model, deployed.system, deployed.placement, deployed.placement_kind
    preset, deployment, s0, s0_source, s0_dtype = (deployed.preset, deployed.large_scale, system.hidden_state_bytes,
                                                  deployed.hidden_state_source, deployed.wire_dtype)
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
    queries = [pack_question(model.tokenizer, q) for q in questions]
    packed_texts = [pack_text(model.tokenizer, t) for t in texts]
    log(
        f"{len(questions)} questions from {', '.join(names)}; {sum(q.num_tokens for q in queries)} "
        f"tokens per policy; K = {k} experts per layer on N = {system.num_nodes} nodes"
        f"{'' if place is None else f' ({placement} placement)'}, M = {system.num_subcarriers} "
        f"{'subcarriers' if preset in (None, 'paper') else 'resource blocks'} (system {preset or 'custom'}); "
        f"channel: {channel.label()}; s0 = {s0} B per hidden state: {s0_source}"
    )
    if deployment is not None and system.num_nodes > 1:
        dep = deployment.to_dict()
        # [N(N-1)] mean SNR of each link [dB]: P0 G_ij / N0
        snr = 10.0 * np.log10(system.snr_linear * deployment.gain[~np.eye(system.num_nodes, dtype=bool)])
        log(
            f"deployment: {channel.layout}, {channel.pathloss}: path loss {dep['path_loss_db_min']:.1f} / "
            f"{dep['path_loss_db_mean']:.1f} / {dep['path_loss_db_max']:.1f} dB (min / mean / max over links), "
            f"{dep['los_fraction']:.0%} of links LoS; mean SNR per link {snr.min():.1f} / {np.median(snr):.1f} / "
            f"{snr.max():.1f} dB (min / median / max)"
        )
        if system.noise_figure_db is None and np.median(snr) < 0.0:
            log(
                "note: N0 comes from --snr-db (P0/N0 before the path loss), so most links are below 0 dB SNR; "
                "an NR preset (--system) or --noise-figure sets N0 = k T0 B0 NF instead"
            )
    # one engine worker per node (N workers; worker n holds the experts placed on node n), started
    # before the full model's passes so that the start-up ends before the first work bar
    from .placement import experts_by_node

    # the nodes start with the experts the placement gives them (eq 6), not the default one each
    eng = make_engine(engine, model, num_nodes=system.num_nodes, address=ray_address,
                      node_experts=experts_by_node(place, system.num_nodes, model.num_layers))
    results: list[PolicyResult] = []
    failure = None
    try:
        stage("engine")
        # the full model (selection=None), once, shared by every policy
        reference = full_reference(model, queries, progress=progress)
        full_nll = full_text_nll(model, packed_texts, progress=progress) if packed_texts else None
        text_tokens = [t.score_rows.numel() for t in packed_texts]
        full_model = {
            "definition": "dense model (every expert)" if info_line["family"] == "carved" else
            f"the family's own top-{model.native_top_k} routing",
            **full_model_quality(reference, questions, full_nll, packed_texts),
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
        "policies": [{"name": p.name, "spec": p.spec, **p.params()} for p in parsed],
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
        "system_preset": preset,
        "deployment": None if deployment is None else deployment.to_dict(),
        "hidden_state_bytes": s0,
        "hidden_state_source": s0_source,
        "wire_dtype": s0_dtype,
        "num_experts": k,
        "num_nodes": system.num_nodes,
        "placement": None if place is None else {"kind": placement, "map": np.asarray(place).tolist()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command,
    }
    if run_config is not None:
        config["run_config"] = {str(sec): dict(values) for sec, values in run_config.items()}
    if failure is not None:
        config["error"] = str(failure)
    note = latency_note(
        results, hidden_state_bytes=s0, comp_throughput=float(np.min(system.comp_throughput_j)),
        hint=("try a smaller --hidden-state-bytes or an NR --system" if hidden_state_bytes is not None
              else "try --wire-dtype fp8 or an NR --system" if s0_dtype in (None, "fp16", "bf16")
              else "try an NR --system"),
    )
    config["notes"] = ([] if note is None else [note]) + deadline_notes(results)
    log(format_table(results))
    for line in config["notes"]:
        log(line)
    if out_dir is not None and results:
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"MMLU {', '.join(names)} — {len(questions)} question{'s' if len(questions) != 1 else ''}, seed {seed}"
        write_summary(out_dir / "summary.json", config, results)
        write_summary_csv(out_dir / "summary.csv", results)
        write_per_layer_csv(out_dir / "per_layer.csv", results)
        plot_per_layer(out_dir / "per_layer.png", results, title=title)
        plot_latency(out_dir / "latency.png", results, title=title)
        written = ["summary.csv", "per_layer.csv", "per_layer.png", "latency.png"]
        if run_config is not None:
            from .config import dump_toml

            (out_dir / "config.toml").write_text(
                dump_toml(run_config, header=f"the configuration of this run; repeat it with `dmoe run --config "
                                             f"{out_dir / 'config.toml'}`"), encoding="utf-8")
            written.append("config.toml")
        log(f"wrote {out_dir / 'summary.json'}, {', '.join(written)}")
    if failure is not None:
        where = f"; the results so far are in {out_dir}" if out_dir is not None and results else ""
        raise NoLiveNodeError(f"{failure}{where}", round=failure.round, layer=failure.layer) from failure
    return config, results


def _parse_policies(policies: Sequence, *, where: str | None = "`policies` (--policy)") -> list:
    """Parsed policies (None for a calibrated one: built once the model's profile is known).

    ``policies`` holds strings (:func:`~dmoe.policies.policy_from_name`: built-ins, plugins)
    and :class:`~dmoe.policies.Policy` objects. Errors (ValueError) are prefixed with ``where``.
    """
    from .policies.calibrated import is_calibrated_name, parse_calibrated

    if isinstance(policies, (str, Policy)):
        raise ValueError(f"{where or '`policies`'}: must be a sequence of policies, got one {policies!r}; wrap it "
                         "in a list")
    parsed = []
    for p in policies:
        if isinstance(p, Policy):
            parsed.append(p)
        elif isinstance(p, type) and issubclass(p, Policy):
            raise ValueError(f"{where or '`policies`'}: got the class {p.__qualname__}, not a policy; build one "
                             f"({p.__qualname__}(...)) or give its spec ('{p.__module__}:{p.__qualname__}(...)')")
        elif not isinstance(p, str):
            raise ValueError(f"{where or '`policies`'}: each must be a policy string or a dmoe.policies.Policy, "
                             f"got {type(p).__name__} {p!r}")
        elif is_calibrated_name(p):
            parsed.append(None)
        else:
            try:
                parsed.append(policy_from_name(p))
            except ValueError as exc:
                if where is None:
                    raise
                raise ValueError(f"{where}: {exc}") from exc
    for name in policies:
        if isinstance(name, str) and is_calibrated_name(name):
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

    Raises:
        ValueError: two different policies share a label (``name``), e.g. a subclass of
        ``TopK`` that keeps its base's ``"Top-2"`` beside ``"Top-2"``.
    """
    seen, keep_names, keep_parsed = set(), [], []
    for name, pol in zip(policies, parsed):
        key = ("policy", type(pol).__qualname__, pol.name, repr(sorted(pol.params().items(), key=lambda kv: kv[0]))) \
            if pol is not None else ("calibrated", "".join(str(name).split()).lower())
        if key in seen:
            label = name if isinstance(name, str) else pol.name
            log(f"note: policy {label!r} is given more than once; it runs once")
            continue
        seen.add(key)
        keep_names.append(name)
        keep_parsed.append(pol)
    labels = {}
    for name, pol in zip(keep_names, keep_parsed):
        if pol is None:
            continue
        first = labels.setdefault(pol.name, name)
        if first is not name:
            show = [n if isinstance(n, str) else (getattr(n, "spec", None) or type(n).__qualname__) for n in (first, name)]
            raise ValueError(
                f"`policies` (--policy): {show[0]!r} and {show[1]!r} are different policies with the same label "
                f"{pol.name!r} (tables, CSV and plots tell policies apart by it); set `name` in one of them"
            )
    return keep_names, keep_parsed


def _record_policy_specs(run_config, policies: list, parsed: list, log):
    """``run_config`` with the ``policies`` that ``config.toml`` records: each plugin (a
    policy whose class is not dmoe's, given as an object or a string) by its spec
    (``"mypkg.mod:BestChannel(0.8, 8)"``, :attr:`~dmoe.policies.Policy.spec`); built-in
    strings as typed. A policy without a spec (a class in ``__main__``) gets a note."""
    if run_config is None:
        return None
    recorded = []
    for name, pol in zip(policies, parsed):
        base = getattr(pol, "policy", pol)
        plugin = pol is not None and not type(base).__module__.startswith("dmoe.")
        if isinstance(name, str) and not plugin:
            recorded.append(name)
            continue
        spec = pol.spec
        if spec is None:
            log(f"note: policy {pol.name!r} cannot be recorded in config.toml (its class is defined in __main__ or a "
                "function, or an argument is not a literal); define it in an importable module to repeat the run")
            continue
        recorded.append(spec)
    out = {str(sec): dict(values) for sec, values in run_config.items()}
    out.setdefault("policies", {})["policies"] = recorded
    return out


def _calibrated_policies(parsed, names, model, profile, cache_dir, subjects, system, log):
    """Build the calibrated policies of ``names`` (None in ``parsed``) from the model's profile."""
    from .importance import find_profile, load_profile_for
    from .policies.calibrated import _CAL_RE, parse_calibrated

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
    dense (N = ``system.num_nodes`` nodes)."""
    n = system.num_nodes
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
