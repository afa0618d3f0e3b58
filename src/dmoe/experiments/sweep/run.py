"""``run_sweep``: every point of a policy grid on the same questions, channels and seed.

The sweep is ``dmoe run`` with many policies (:func:`dmoe.main_job.run_main_job` evaluates
its policies side by side the same way): one deployment (:func:`dmoe.deployment.plan_deployment`),
one question set, one full-model reference, and one :func:`dmoe.runtime.evaluate_policy`
per point with the same ``seed`` (hence the same channel draws). Points are journaled as
they finish (:mod:`dmoe.experiments.sweep.store`), so an interrupted sweep resumes.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from dmoe.experiments.sweep.grid import DEFAULT_MAX_POINTS, SweepPoint, expand_points, parse_grid
from dmoe.experiments.sweep.record import FRONTS, csv_columns, pareto_flags, point_record
from dmoe.experiments.sweep.store import SWEEP_FORMAT, SweepStore, fingerprint

__all__ = ["run_sweep", "prepare_points"]

_RESERVED = {"index", "kind", "template", "policy", "policy_string", "values", "seconds", "energy_j",
             "num_questions", "num_tokens"}


def _policy_key(name: str, pol) -> tuple:
    # as dmoe.main_job._drop_duplicate_policies: same label and arguments, or (calibrated) same text
    if pol is None:
        return ("calibrated", "".join(str(name).split()).lower())
    return ("policy", pol.name, repr(sorted(pol.params().items(), key=lambda kv: kv[0])))


def _where(point: SweepPoint) -> str:
    if point.template is None:
        return f"`--add` {point.policy!r}"
    at = ", ".join(f"{k}={v}" for k, v in point.values.items())
    return f"`--policy` template {point.template!r} at {at or 'its only point'} (expands to {point.policy!r})"


def prepare_points(templates: Sequence[str], grid: Sequence[str], added: Sequence[str] = (), *,
                   max_points: int | None = DEFAULT_MAX_POINTS, log: Callable[[str], None] = print):
    """Parse the grid, expand the templates, parse every point's policy and drop duplicates,
    without any model.

    Args:
        templates: ``--policy`` templates (:func:`~dmoe.experiments.sweep.grid.expand_points`).
        grid: ``--grid`` specs (:func:`~dmoe.experiments.sweep.grid.parse_axis`).
        added: fixed policies (``--add``).
        max_points: the cap on points (``--max-points``); None: none.
        log: receives a note per dropped duplicate.

    Returns:
        ``(axes, points, parsed)``: the :class:`~dmoe.experiments.sweep.grid.GridAxis` list,
        ``[num_points]`` :class:`~dmoe.experiments.sweep.grid.SweepPoint` (re-indexed after
        duplicates were dropped) and their parsed policies (None for a calibrated policy,
        built once the model's profile is known).

    Raises:
        ValueError: as :func:`~dmoe.experiments.sweep.grid.parse_grid` and
            :func:`~dmoe.experiments.sweep.grid.expand_points`; a grid name that is a
            ``sweep.csv`` column; a point whose string is not a valid policy (naming the
            template and the grid values, or the ``--add``).
    """
    from dmoe.main_job import _parse_policies

    axes = parse_grid(list(grid), max_points=max_points)
    for a in axes:
        if a.name in _RESERVED or a.name.startswith(("energy_", "mean_", "pareto_", "latency_", "deadline_")):
            raise ValueError(f"`--grid` {a.spec!r}: the name {a.name!r} is taken by a sweep.csv column; rename it")
    points = expand_points(list(templates), axes, list(added), max_points=max_points)
    parsed = []
    for p in points:
        try:
            parsed.append(_parse_policies([p.policy])[0])
        except ValueError as exc:
            raise ValueError(f"{_where(p)} is not a valid policy: {exc}") from None
    seen, keep, keep_parsed = set(), [], []
    for p, pol in zip(points, parsed):
        key = _policy_key(p.policy, pol)
        if key in seen:
            log(f"note: {_where(p)} is the same policy as an earlier point; it runs once")
            continue
        seen.add(key)
        keep.append(SweepPoint(len(keep), p.policy, p.template, p.values))
        keep_parsed.append(pol)
    return axes, keep, keep_parsed


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("dmoe", "numpy", "torch", "transformers", "ray"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def run_sweep(
    *,
    templates: Sequence[str] = (),
    grid: Sequence[str] = (),
    added: Sequence[str] = (),
    output: str | Path,
    subjects: str | Sequence[str] | None = "anatomy",
    limit: int | None = None,
    seed: int = 0,
    max_points: int | None = DEFAULT_MAX_POINTS,
    model_source: str | None = None,
    num_experts: int | None = None,
    num_nodes: int | None = None,
    placement: str | None = None,
    max_experts: int | None = None,
    preset: str = "paper",
    num_subcarriers: int | None = None,
    snr_db: float | None = None,
    comp_throughput_tokens_per_s: float | None = None,
    noise_figure_db: float | None = None,
    tx_power_dbm: float | None = None,
    wire_dtype: str | None = None,
    hidden_state_bytes: int | None = None,
    channel=None,
    channel_redraw: str = "layer",
    combine: str | None = None,
    device: str | None = None,
    cache_dir: str | None = None,
    profile: str | Path | None = None,
    node_failure_rate: float = 0.0,
    node_rejoin: bool = True,
    ppl_texts: int = 0,
    engine: str = "local",
    ray_address: str | None = None,
    num_cpus: int | None = None,
    chunk_size: int | None = None,
    num_resamples: int = 2000,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
    on_point: Callable[[dict], None] | None = None,
) -> dict:
    """Run a policy sweep and write ``sweep.csv``, ``sweep.json`` and ``pareto.png`` to ``output``.

    Parameters
    ----------
    templates : sequence of str
        Policy templates with ``{name}`` placeholders, e.g. ``"JESA({g},8)"``; each expands over
        the product of the grids it names (:mod:`dmoe.experiments.sweep.grid`). Every
        expanded string is parsed as ``dmoe run --policy`` parses it.
    grid : sequence of str
        ``"name=start:stop:step"`` (stop included when on the grid; decimal arithmetic) or
        ``"name=v1,v2,..."``.
    added : sequence of str
        Fixed policies (baselines, Top-k levels): ``["Top-4", "dense"]``.
    output : path
        The sweep's directory (:mod:`dmoe.experiments.sweep.store`). A directory holding
        this sweep resumes it: points already written are not run again.
    subjects, limit, seed, model_source, num_experts, num_nodes, placement, max_experts, preset,
    num_subcarriers, snr_db, comp_throughput_tokens_per_s, noise_figure_db, tx_power_dbm,
    wire_dtype, hidden_state_bytes, channel, channel_redraw, combine, device, cache_dir,
    profile, node_failure_rate, node_rejoin
        As for :func:`dmoe.main_job.run_main_job` (``dmoe run``'s options); ``max_experts``
        here only sets D of the co-activation placement's statistics.
    ppl_texts : int, >= 0
        Held-out texts for each point's perplexity (default 0: none; it costs a second
        evaluation per point).
    max_points : int or None
        Refuse a sweep of more points (``--max-points``, default 200); None: no cap.
    engine : {"local", "ray"}
        ``"local"``: points one after another in this process. ``"ray"``: chunks of points
        as Ray tasks (:func:`dmoe.experiments.parallel.evaluate_chunks_on_ray`), each on the
        same questions, channels and seed; the same numbers.
    ray_address, num_cpus : optional
        Ray cluster to join, or the CPUs of an embedded Ray (default all).
    chunk_size : int, optional
        Points per Ray task (default: the pending points split into about 4 tasks per CPU).
    num_resamples : int
        Bootstrap resamples of the 95% intervals (seeded by ``seed``).
    progress : bool
        A progress bar over points.
    log : callable
        Receives progress lines and notes.
    command : str, optional
        The command line, recorded in ``sweep.json``.
    on_point : callable, optional
        Called with each point's record right after it is written (a hook: raising from it
        stops the sweep there, as a kill would).

    Returns
    -------
    dict
        The content of ``sweep.json``: ``configuration``, ``fingerprint``, ``grid``,
        ``points`` (records with the Pareto flags), ``pareto`` (indices per front),
        ``full_model``, ``versions``, ...

    Raises
    ------
    ValueError
        Before any model load or output, naming the argument: a bad grid (empty or reversed
        range, step <= 0, a non-number, a duplicate name), a grid used by no template, a
        placeholder without grid, a point that is not a valid policy (naming the point),
        too many points (saying how many), an output directory holding something else
        (saying what differs), and the checks of ``dmoe run`` (subjects, radio, policies
        against K and M).
    TypeError
        ``channel`` not a ChannelConfig.
    ConnectionError
        ``ray_address`` unreachable.
    NoLiveNodeError
        Every node failed in a point (the points before it are kept).
    """
    from dmoe.channels import ChannelConfig, check_channel_choice
    from dmoe.data import CALIBRATION_SUBJECTS, heldout_subjects, resolve_subjects
    from dmoe.deployment import check_radio_arguments, plan_deployment
    from dmoe.main_job import _check_policies
    from dmoe.runtime.faults import check_failure_rate
    from dmoe.wire import DEFAULT_WIRE_DTYPE

    if engine not in ("local", "ray"):
        raise ValueError(f"`engine` (--engine) must be 'local' or 'ray', got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise ValueError("`ray_address` (--ray-address) needs `engine`='ray' (--engine ray)")
    for name, value, low in (("num_resamples", num_resamples, 100), ("chunk_size", chunk_size, 1),
                             ("num_cpus", num_cpus, 1), ("max_points", max_points, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
    if isinstance(ppl_texts, bool) or not isinstance(ppl_texts, int) or ppl_texts < 0:
        raise ValueError(f"`ppl_texts` (--ppl-texts) must be a non-negative integer, got {ppl_texts!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` (--seed) must be a non-negative integer, got {seed!r}")
    node_failure_rate = check_failure_rate(node_failure_rate)
    preset_key = check_radio_arguments(preset, None, snr_db, noise_figure_db, tx_power_dbm, wire_dtype,
                                       hidden_state_bytes)
    channel = check_channel_choice(channel or ChannelConfig(), channel_redraw)
    axes, points, parsed = prepare_points(templates, grid, added, max_points=max_points, log=log)
    names = resolve_subjects(subjects)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` (--limit) must be a positive integer, got {limit!r}")
    if ray_address is not None:
        from dmoe.runtime.ray_engine import CONNECT_TIMEOUT_S, _check_reachable

        _check_reachable(ray_address, CONNECT_TIMEOUT_S)
    # K, N, placement and the radio system from the checkpoint's config only (no weights)
    plan = plan_deployment(
        model_source=model_source, num_experts=num_experts, num_nodes=num_nodes, placement=placement,
        preset=preset_key, num_subcarriers=num_subcarriers, snr_db=snr_db,
        comp_throughput_tokens_per_s=comp_throughput_tokens_per_s, noise_figure_db=noise_figure_db,
        tx_power_dbm=tx_power_dbm, channel=channel, wire_dtype=wire_dtype, hidden_state_bytes=hidden_state_bytes,
        max_experts=max_experts, seed=seed,
    )
    k = plan.num_experts
    for p, pol in zip(points, parsed):
        try:
            _check_policies([] if pol is None else [pol], plan.system, k)
        except ValueError as exc:
            raise ValueError(f"{_where(p)} does not fit the deployment: {exc}") from None
    # what decides the numbers, resolved (the CLI's and the API's defaults give the same fingerprint)
    coact_d = None
    if plan.placement_kind == "coactivation":
        coact_d = int(max_experts) if max_experts is not None else (max(2, k // 4) if plan.carved else 2)
    configuration = {
        "templates": list(templates), "grid": {a.name: a.labels() for a in axes}, "added": list(added),
        "points": [p.policy for p in points], "subjects": names, "limit": limit, "seed": seed,
        "model_source": model_source, "num_experts": k, "num_nodes": plan.num_nodes,
        "placement": plan.placement_kind, "coactivation_top_d": coact_d, "preset": plan.preset,
        "system": plan.system.to_dict(),
        "wire": f"{hidden_state_bytes} B" if hidden_state_bytes is not None else (wire_dtype or DEFAULT_WIRE_DTYPE),
        "channel": channel.to_dict(), "channel_redraw": channel_redraw, "combine": combine,
        "profile": None if profile is None else str(profile), "node_failure_rate": node_failure_rate,
        "node_rejoin": bool(node_rejoin), "ppl_texts": ppl_texts, "num_resamples": num_resamples,
    }
    if profile is not None and any(p is None for p in parsed) and not Path(profile).is_file():
        raise ValueError(f"`profile` (--profile) {str(profile)!r} is not a file (an importance profile of "
                         "`dmoe calibrate`, for the calibrated points)")
    store = SweepStore(output)
    stored = store.check(configuration)
    calib = sorted(set(names) & set(CALIBRATION_SUBJECTS))
    if calib and plan.carved:
        warnings.warn(f"subjects {calib} are in the routers' calibration set: their accuracy is optimistic",
                      stacklevel=2)
    if ppl_texts and not heldout_subjects(names):
        raise ValueError("`ppl_texts` (--ppl-texts): every MMLU subject outside the calibration set is evaluated, "
                         "so there is no held-out text; use --ppl-texts 0")

    done = store.finished() if stored is not None else {}
    for i, rec in done.items():
        if i >= len(points) or rec.get("policy_string") != points[i].policy:
            raise ValueError(f"`--output` (-o): {store.journal} holds point {i} as {rec.get('policy_string')!r}, "
                             "which this sweep does not have there; remove points.jsonl to start over")
    header = {
        "format": SWEEP_FORMAT, "fingerprint": fingerprint(configuration), "configuration": configuration,
        "seed": seed, "grid": {a.name: {"spec": a.spec, "values": a.labels()} for a in axes},
        "templates": list(templates), "added": list(added), "num_points": len(points),
        "command": command, "engine": engine, "versions": _versions(),
        "created": (stored or {}).get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
    }
    for key in ("full_model", "deployment"):
        if stored is not None and stored.get(key) is not None:
            header[key] = stored[key]
    if stored is not None and stored.get("versions", {}).get("dmoe") != header["versions"]["dmoe"]:
        log(f"note: the sweep in {output} was started with dmoe {stored.get('versions', {}).get('dmoe')}, "
            f"this is {header['versions']['dmoe']}")
    # sweep.json is first written by _evaluate, once the model, the calibrated policies and the full
    # model's reference are ready: a failure before that (no profile, a model that does not load)
    # leaves the directory as it was
    pending = [p for p in points if p.index not in done]
    if done:
        log(f"resuming {output}: {len(done)} of {len(points)} points already written, {len(pending)} to run")
    axis_names = [a.name for a in axes]

    def write_csv(recs):
        """Mark each record's Pareto flags among ``recs``, write them to the CSV, return the flags."""
        flags = pareto_flags(recs)
        for j, r in enumerate(recs):
            for f, _, _ in FRONTS:
                r[f] = flags[f][j]
        store.write_csv(recs, csv_columns(axis_names, recs), axis_names)
        return flags

    def rewrite_csv():
        write_csv([done[i] for i in sorted(done)])

    if pending or header.get("full_model") is None:
        _evaluate(plan, points, parsed, pending, done, store, header, rewrite_csv, names=names, limit=limit,
                  seed=seed, channel=channel, channel_redraw=channel_redraw, cache_dir=cache_dir, combine=combine,
                  device=device, profile=profile, node_failure_rate=node_failure_rate, node_rejoin=node_rejoin,
                  ppl_texts=ppl_texts, engine=engine, ray_address=ray_address, num_cpus=num_cpus,
                  chunk_size=chunk_size, num_resamples=num_resamples, progress=progress, log=log,
                  on_point=on_point, output=output)
    # the final outputs, from every point
    records = [done[i] for i in range(len(points))]
    flags = write_csv(records)
    payload = {**header, "complete": True, "points": records,
               "pareto": {f: [r["index"] for r, on in zip(records, flags[f]) if on] for f, _, _ in FRONTS}}
    store.write_json(payload)
    from dmoe.experiments.sweep.plot import plot_pareto

    n_q = records[0]["num_questions"] if records else 0
    dep = header.get("deployment") or {}
    title = (f"MMLU {', '.join(names)}: {n_q} question{'s' if n_q != 1 else ''}, seed {seed}; K = "
             f"{dep.get('num_experts', '?')} experts on N = {dep.get('num_nodes', '?')} nodes, "
             f"M = {dep.get('num_subcarriers', '?')}; error bars: 95% bootstrap over questions")
    plot_pareto(store.png_path, records, flags, title=title, full_model=header.get("full_model"))
    log(format_points(records))
    log(f"wrote {store.csv_path}, {store.json_path.name}, {store.png_path.name}")
    return payload


def format_points(records: Sequence[dict]) -> str:
    """A plain-text table of the points: policy, energy, quality, Pareto marks (N: NLL, K: KL, A: agreement)."""
    lines = [f"{'policy':<22}{'J/query':>10}{'mJ/token':>10}{'NLL':>9}{'KL':>9}{'agree':>7}{'acc':>7}  front",
             "-" * 82]

    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    for r in records:
        mark = "".join(c for c, (f, _, _) in zip("NKA", FRONTS) if r.get(f))
        lines.append(f"{r['policy']:<22}{num(r['energy_per_query_j'], '.3f'):>10}"
                     f"{num(r['energy_per_token_mj'], '.2f'):>10}"
                     f"{num(r['mean_nll'], '.3f'):>9}{num(r['mean_kl'], '.4f'):>9}{num(r['agreement'], '.3f'):>7}"
                     f"{num(r['accuracy'], '.3f'):>7}  {mark}")
    return "\n".join(lines)


def _evaluate(plan, points, parsed, pending, done, store, header, rewrite_csv, *, names, limit, seed, channel,
              channel_redraw, cache_dir, combine, device, profile, node_failure_rate, node_rejoin, ppl_texts,
              engine, ray_address, num_cpus, chunk_size, num_resamples, progress, log, on_point, output):
    """Load the model once, evaluate the ``pending`` points and journal each one."""
    from tqdm.auto import tqdm

    from dmoe.data import heldout_texts, load_mmlu, pack_question, pack_text
    from dmoe.main_job import _calibrated_policies, _check_policies
    from dmoe.runtime.engines import make_engine
    from dmoe.runtime.evaluate import evaluate_policy
    from dmoe.runtime.quality import full_model_quality, full_reference, full_text_nll

    texts, _ = heldout_texts(ppl_texts, exclude=names)
    questions = load_mmlu(names, limit=limit)
    deployed = plan.load(cache_dir=cache_dir, combine=combine, device=device, progress=progress)
    model, system, place = deployed.model, deployed.system, deployed.placement
    if model.tokenizer is None:
        raise ValueError(f"the model at {plan.model_source!r} has no tokenizer; `dmoe sweep` needs one to encode "
                         "MMLU questions")
    if any(p is None for p in parsed):
        parsed = _calibrated_policies(parsed, [p.policy for p in points], model, profile, cache_dir, names, system,
                                      log)
        _check_policies(parsed, system, plan.num_experts)
    queries = [pack_question(model.tokenizer, q) for q in questions]
    packed_texts = [pack_text(model.tokenizer, t) for t in texts]
    reference = full_reference(model, queries)
    full_nll = full_text_nll(model, packed_texts) if packed_texts else None
    header["full_model"] = full_model_quality(reference, questions, full_nll, packed_texts)
    header["deployment"] = {
        "num_experts": int(model.num_experts), "num_nodes": int(system.num_nodes),
        "num_subcarriers": int(system.num_subcarriers), "placement": deployed.placement_kind,
        "hidden_state_bytes": int(system.hidden_state_bytes), "hidden_state_source": deployed.hidden_state_source,
        "system": system.to_dict(), "system_preset": deployed.preset,
        "large_scale": None if deployed.large_scale is None else deployed.large_scale.to_dict(),
        "model": dict(getattr(model, "metadata", {}) or {"source": plan.model_source or "default"}),
        "num_questions": len(questions), "num_tokens": sum(q.num_tokens for q in queries),
        "device": str(model.device),
    }
    store.write_json(header)
    log(f"{len(questions)} questions from {', '.join(names)}; K = {model.num_experts} experts on N = "
        f"{system.num_nodes} nodes, M = {system.num_subcarriers}; channel: {channel.label()}; full model: "
        f"accuracy {header['full_model']['accuracy']:.3f}, mean NLL {header['full_model']['mean_nll']:.3f}")
    if not pending:
        return
    kwargs = dict(system=system, seed=seed, channel_redraw=channel_redraw, channel=channel, placement=place,
                  node_failure_rate=node_failure_rate, node_rejoin=node_rejoin, reference=reference,
                  texts=packed_texts)
    bar = tqdm(total=len(points), initial=len(points) - len(pending), desc="sweep", unit="point",
               disable=not progress)

    def finish(point, result):
        rec = point_record(point, result, seed=seed, num_resamples=num_resamples)
        store.append(rec)
        done[point.index] = rec
        rewrite_csv()
        bar.update(1)
        bar.set_postfix_str(point.policy)
        if on_point is not None:
            on_point(rec)

    try:
        if engine == "local":
            from dmoe.placement import experts_by_node

            eng = make_engine("local", model, num_nodes=system.num_nodes,
                              node_experts=experts_by_node(place, system.num_nodes, model.num_layers))
            try:
                for p in pending:
                    finish(p, evaluate_policy(model, queries, parsed[p.index], engine=eng, progress=False, **kwargs))
            finally:
                eng.shutdown()
        else:
            import os

            from dmoe.experiments.parallel import evaluate_chunks_on_ray

            cpus = num_cpus or os.cpu_count() or 1
            size = chunk_size or max(1, math.ceil(len(pending) / (4 * cpus)))
            # round-robin, so that every task gets points from across the grid (costs vary along it)
            n_chunks = math.ceil(len(pending) / size)
            chunks = [(c, pending[c::n_chunks]) for c in range(n_chunks)]
            by_chunk = dict(chunks)
            evaluate_chunks_on_ray(
                model, queries, [(c, [parsed[p.index] for p in pts]) for c, pts in chunks], kwargs,
                address=ray_address, num_cpus=num_cpus,
                on_done=lambda c, results: [finish(p, r) for p, r in zip(by_chunk[c], results)])
    except BaseException:
        log(f"sweep stopped: {len(done)} of {len(points)} points are in {output}; run the same command to resume")
        raise
    finally:
        bar.close()
