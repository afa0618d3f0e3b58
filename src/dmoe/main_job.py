"""The main job: every policy on the same MMLU questions and the same channel draws."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import warnings
from pathlib import Path
from typing import Sequence

from .data import CALIBRATION_SUBJECTS, load_mmlu, pack_question, resolve_subjects
from .optimize.policies import Dense, TopK, policy_from_name
from .results import format_table, plot_per_layer, write_per_layer_csv, write_summary
from .runtime.engine import ENGINES, make_engine
from .runtime.evaluate import PolicyResult, evaluate_policy
from .runtime.faults import NoLiveNodeError, check_failure_rate
from .system import SystemConfig

#: The policies of `dmoe run` when none are given (Section VII-A-3 names).
DEFAULT_POLICIES: tuple[str, ...] = (
    "dense",
    "Top-1",
    "Top-2",
    "H(0.5,2)",
    "JESA(0.9,2)",
    "LB(0.9,2)",
)


def run_main_job(
    *,
    subjects: str | Sequence[str] | None = "anatomy",
    limit: int | None = None,
    policies: Sequence[str] = DEFAULT_POLICIES,
    system: SystemConfig | None = None,
    seed: int = 0,
    channel_redraw: str = "layer",
    model_source: str | None = None,
    cache_dir: str | None = None,
    combine: str = "sum",
    output: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
    log=print,
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
    policies : sequence of str
        Policy names parsed by :func:`dmoe.optimize.policies.policy_from_name`.
    system : SystemConfig, optional
        Radio and device parameters; ``num_experts`` sets K (default 8, Section VII-A).
    seed : int
        Channel draws and policy randomness; the same for every policy.
    channel_redraw : {"layer", "round", "fixed"}
    model_source : str, optional
        ``None``: SmolLM2-135M-Instruct made an MoE; or a local path / hub id.
    cache_dir : str, optional
        Where built MoE models are cached (default ``$DMOE_CACHE_DIR`` or ``~/.cache/dmoe``).
    combine : {"sum", "weighted"}
        Aggregation of expert outputs: sum of slices, or eq (8).
    output : path, optional
        Directory for ``summary.json``, ``per_layer.csv`` and ``per_layer.png``.
    command : str, optional
        The command line that started the run, recorded in the config.
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
        On an unknown subject or policy name, bad ``limit`` or configuration.
    ConnectionError
        ``ray_address`` unreachable (checked before the model loads).
    NoLiveNodeError
        Every node failed; the results so far (the interrupted policy's partial result
        included) are written first.
    """
    from .model import load_moe_model

    system = system or SystemConfig()
    if engine not in ENGINES:
        raise ValueError(f"`engine` (--engine) must be one of {', '.join(ENGINES)}, got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise ValueError("`ray_address` (--ray-address) needs `engine`='ray' (--engine ray)")
    node_failure_rate = check_failure_rate(node_failure_rate)
    if ray_address is not None:
        from .runtime.ray_engine import CONNECT_TIMEOUT_S, _check_reachable

        _check_reachable(ray_address, CONNECT_TIMEOUT_S)
    names = resolve_subjects(subjects)
    parsed = [policy_from_name(p) for p in policies]
    if not parsed:
        raise ValueError("`policies` must name at least one policy")
    calib = sorted(set(names) & set(CALIBRATION_SUBJECTS))
    if calib:
        warnings.warn(
            f"subjects {calib} are in the routers' calibration set: their accuracy is optimistic",
            stacklevel=2,
        )
    links = system.num_experts * (system.num_experts - 1)
    if any(isinstance(p, Dense) for p in parsed) and system.num_subcarriers < links:
        raise ValueError(
            f"`num_subcarriers` (--num-subcarriers/-M) = {system.num_subcarriers} is too small for "
            f"the dense policy: K(K-1) = {links} links may all be active at once and dense cannot "
            f"reroute; use M >= {links} or drop dense"
        )
    for p in parsed:
        if isinstance(p, TopK) and p.k > system.num_experts:
            raise ValueError(f"policy {p.name}: `k` must not exceed K = {system.num_experts}")
    questions = load_mmlu(names, limit=limit)
    out_dir = Path(output) if output is not None else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"`output` (--output/-o) must be a directory, but {str(out_dir)!r} is a file")
        out_dir.mkdir(parents=True, exist_ok=True)
    model = load_moe_model(
        model_source, num_experts=system.num_experts, cache_dir=cache_dir, progress=progress
    )
    model.combine = combine
    queries = [pack_question(model.tokenizer, q) for q in questions]
    log(
        f"{len(questions)} questions from {', '.join(names)}; {sum(q.num_tokens for q in queries)} "
        f"tokens per policy; K = {system.num_experts} experts, M = {system.num_subcarriers} subcarriers"
    )
    nodes = make_engine(engine, model, num_nodes=system.num_experts, address=ray_address)
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
                    progress=progress,
                    engine=nodes,
                    node_failure_rate=node_failure_rate,
                    node_rejoin=node_rejoin,
                )
            )
    except NoLiveNodeError as exc:
        failure = exc
        if exc.partial is not None:
            results.append(exc.partial)
    finally:
        nodes.shutdown()
    config = {
        "subjects": names,
        "limit": limit,
        "policies": [{"name": p.name, **p.params()} for p in parsed],
        "seed": seed,
        "channel_redraw": channel_redraw,
        "combine": combine,
        "engine": engine,
        "ray_address": ray_address,
        "node_failure_rate": node_failure_rate,
        "node_rejoin": node_rejoin,
        "model": dict(getattr(model, "metadata", {}) or {"source": model_source or "default"}),
        "system": system.to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command,
    }
    if failure is not None:
        config["error"] = str(failure)
    log(format_table(results))
    if out_dir is not None and results:
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
