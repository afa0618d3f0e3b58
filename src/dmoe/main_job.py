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
from .runtime.evaluate import PolicyResult, evaluate_policy
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
    profile: str | Path | None = None,
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
    profile : path, optional
        Layer-importance profile for calibrated policies (``JESA(cal:B,D)``); default
        the newest one ``dmoe calibrate`` cached beside the model build for that D.

    Returns
    -------
    (config, results) : dict, list of PolicyResult

    Raises
    ------
    ValueError
        On an unknown subject or policy name, bad ``limit`` or configuration; for a
        calibrated policy without a matching profile (telling the user to run
        ``dmoe calibrate``).
    """
    from .model import load_moe_model

    system = system or SystemConfig()
    names = resolve_subjects(subjects)
    from .optimize.calibrated import is_calibrated_name, parse_calibrated

    # calibrated policies need the model's profile: check their syntax now, build them after loading
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
    calib = sorted(set(names) & set(CALIBRATION_SUBJECTS))
    if calib:
        warnings.warn(
            f"subjects {calib} are in the routers' calibration set: their accuracy is optimistic",
            stacklevel=2,
        )
    links = system.num_experts * (system.num_experts - 1)
    if any(isinstance(p, Dense) for p in parsed if p is not None) and system.num_subcarriers < links:
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
    if any(p is None for p in parsed):
        parsed = _calibrated_policies(parsed, policies, model, profile, cache_dir, names, system, log)
    queries = [pack_question(model.tokenizer, q) for q in questions]
    log(
        f"{len(questions)} questions from {', '.join(names)}; {sum(q.num_tokens for q in queries)} "
        f"tokens per policy; K = {system.num_experts} experts, M = {system.num_subcarriers} subcarriers"
    )
    results = [
        evaluate_policy(
            model,
            queries,
            pol,
            system=system,
            seed=seed,
            channel_redraw=channel_redraw,
            progress=progress,
        )
        for pol in parsed
    ]
    config = {
        "subjects": names,
        "limit": limit,
        "policies": [{"name": p.name, **p.params()} for p in parsed],
        "seed": seed,
        "channel_redraw": channel_redraw,
        "combine": combine,
        "model": dict(getattr(model, "metadata", {}) or {"source": model_source or "default"}),
        "system": system.to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command,
    }
    log(format_table(results))
    if out_dir is not None:
        write_summary(out_dir / "summary.json", config, results)
        write_per_layer_csv(out_dir / "per_layer.csv", results)
        plot_per_layer(
            out_dir / "per_layer.png",
            results,
            title=f"MMLU {', '.join(names)} — {len(questions)} questions, seed {seed}",
        )
        log(f"wrote {out_dir / 'summary.json'}, per_layer.csv, per_layer.png")
    return config, results


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
