"""The main job: every policy on the same MMLU questions and the same channel draws."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import warnings
from pathlib import Path
from typing import Sequence

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
from .runtime.evaluate import PolicyResult, evaluate_policy
from .runtime.quality import full_reference, full_text_nll, perplexity
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
    ppl_texts: int = 16,
    progress: bool = True,
    command: str | None = None,
    log=print,
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
    ppl_texts : int, >= 0
        Held-out texts (:func:`dmoe.data.heldout_texts`, at most
        :data:`dmoe.data.TEXT_MAX_TOKENS` tokens each) for each policy's perplexity; 0
        disables it. When every non-calibration subject is evaluated, there is no held-out
        text: a warning says so and perplexity is skipped.
    command : str, optional
        The command line that started the run, recorded in the config.

    Returns
    -------
    (config, results) : dict, list of PolicyResult

    Raises
    ------
    ValueError
        On an unknown subject or policy name, bad ``limit``, ``ppl_texts`` or configuration.
    """
    from .model import load_moe_model

    system = system or SystemConfig()
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
    if isinstance(ppl_texts, bool) or not isinstance(ppl_texts, int) or ppl_texts < 0:
        raise ValueError(f"`ppl_texts` (--ppl-texts) must be a non-negative integer, got {ppl_texts!r}")
    questions = load_mmlu(names, limit=limit)
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
    packed_texts = [pack_text(model.tokenizer, t) for t in texts]
    log(
        f"{len(questions)} questions from {', '.join(names)}; {sum(q.num_tokens for q in queries)} "
        f"tokens per policy; K = {system.num_experts} experts, M = {system.num_subcarriers} subcarriers"
    )
    # the full model (selection=None), once, shared by every policy
    reference = full_reference(model, queries)
    full_nll = full_text_nll(model, packed_texts) if packed_texts else None
    text_tokens = [t.score_rows.numel() for t in packed_texts]
    full_model = {
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
        f"full model (selection=None): accuracy {full_model['accuracy']:.3f}, mean NLL "
        f"{full_model['mean_nll']:.3f}"
        + ("" if full_model["perplexity"] is None else f", perplexity {full_model['perplexity']:.2f}")
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
            reference=reference,
            texts=packed_texts,
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
        "ppl_texts": len(packed_texts),
        "ppl_subjects": list(dict.fromkeys(text_subjects)),
        "ppl_max_tokens": TEXT_MAX_TOKENS,
        "full_model": full_model,
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
