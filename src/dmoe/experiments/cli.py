"""The ``reproduce`` command (registered as ``dmoe reproduce``; also ``python -m dmoe.experiments``)."""

from __future__ import annotations

import shlex
import sys

import click

__all__ = ["reproduce"]


def _names_help() -> str:
    from dmoe.experiments.registry import EXPERIMENTS

    return ", ".join(f"{n} ({e.paper_ref.split(' (')[0]})" for n, e in EXPERIMENTS.items())


@click.command("reproduce", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", nargs=-1)
@click.option("--output", "-o", default="results/reproduce", show_default=True,
              help="Folder for <name>.png/.csv/.json, cache/ and report.md.")
@click.option("--quick", is_flag=True,
              help="Small subset (few questions, sweep points and channel draws): every figure and the report "
                   "in under 10 minutes on 2 CPU cores once the model is cached.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of channel draws, policy randomness and synthetic data (same for every policy).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Questions per MMLU subject (default: 16 anatomy / 5 per Table I subject with --quick, all otherwise).")
@click.option("--subjects", "subjects", multiple=True,
              help="MMLU subjects (repeat or comma-separate; 'medical' is a group). Replaces anatomy for the "
                   "figures and the medical subjects of Table I.")
@click.option("--draws", type=click.IntRange(min=1), default=None,
              help="Random instances per point of theorem1 and tokens per layer of fig6.")
@click.option("--force", is_flag=True, help="Recompute experiments even if DIR holds results for the same configuration.")
@click.option("--model", "model_source", default=None, help="Model source (default SmolLM2-135M-Instruct MoEfied).")
@click.option("--cache-dir", default=None, help="Model cache (default $DMOE_CACHE_DIR or ~/.cache/dmoe).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: run the independent policy evaluations as parallel Ray tasks (all CPUs of this machine, "
                   "or a cluster with --ray-address), into the same cache.")
@click.option("--ray-address", default=None, help="Ray cluster to join (needs --engine ray).")
@click.option("--list", "list_only", is_flag=True, help="List the experiments and exit.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def reproduce(names, output, quick, seed, limit, subjects, draws, force, model_source, cache_dir, engine, ray_address,
              list_only, quiet):
    """Reproduce the paper's figures and table: NAME ... is any of fig5 fig6 fig7 fig8 fig9
    fig10 table1 theorem1 importance robustness, granularity and placement (many experts on few
    nodes), deployment (the energy-latency frontier in a 5G NR preset with node geometry), or
    all (default).

    The paper's figures keep the paper's s0 = 8 kB (8,192 B) per hidden state, not the running
    model's (1,152 B for SmolLM2 in fp16, what `dmoe run --wire-dtype` charges); report.md says
    so. The deployment experiment charges the running model's s0.

    Writes DIR/<name>.png, DIR/<name>.csv, DIR/<name>.json per experiment and DIR/report.md.
    Finished experiments and policy evaluations are cached in DIR, so an interrupted run resumes.
    """
    from dmoe.experiments.base import Options
    from dmoe.experiments.registry import EXPERIMENTS, resolve_names
    from dmoe.experiments.runner import run_experiments

    if list_only:
        for n, e in EXPERIMENTS.items():
            w = max(len(k) for k in EXPERIMENTS) + 2
            r = max(len(x.paper_ref) for x in EXPERIMENTS.values()) + 2
            click.echo(f"{n:<{w}}{e.paper_ref:<{r}}{e.title}{'' if e.needs_model else '  (no model)'}")
        return
    try:
        resolve_names(names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    subj = tuple(s.strip() for item in subjects for s in item.split(",") if s.strip()) or None
    options = Options(quick=quick, seed=seed, limit=limit, subjects=subj, draws=draws)
    try:
        run_experiments(
            list(names), output, options=options, force=force, model_source=model_source, cache_dir=cache_dir,
            progress=not quiet, log=lambda msg: click.echo(msg, err=True),
            command=shlex.join(["dmoe"] + sys.argv[1:]), engine=engine, ray_address=ray_address,
        )
    except (ValueError, FileNotFoundError, OSError, ConnectionError) as exc:
        raise click.ClickException(str(exc)) from exc
