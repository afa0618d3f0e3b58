"""The ``dmoe sweep`` command (registered lazily by :mod:`dmoe.cli`)."""

from __future__ import annotations

import shlex
import sys

import click

from dmoe.cli_options import channel_from_options, channel_model_options, check_options, engine_options, system_options
from dmoe.experiments.sweep.grid import DEFAULT_MAX_POINTS


@click.command("sweep", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--policy", "templates", multiple=True,
              help="Policy template (repeatable): a `dmoe run --policy` string with {name} placeholders filled "
                   "from --grid, e.g. 'JESA({g},8)' or 'LB({g},{d})'; each template runs over the product of the "
                   "grids it names. A placeholder is a bare name (no format spec: 0.80 goes in as 0.8); a "
                   "literal brace is {{ or }}.")
@click.option("--grid", "grid", multiple=True,
              help="A grid parameter (repeatable): name=start:stop:step (stop included when on the grid; exact "
                   "decimals: g=0.80:0.99:0.01 is 20 points) or name=v1,v2,...")
@click.option("--add", "added", multiple=True,
              help="A fixed policy beside the grid (repeatable): baselines and Top-k levels, e.g. --add Top-8 "
                   "--add dense.")
@click.option("--subject", "subjects", multiple=True, default=("anatomy",), show_default=True,
              help="MMLU subject (repeat or comma-separate; 'medical' and 'all' are groups).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many questions per subject.")
@click.option("--max-experts", "-D", type=click.IntRange(min=1), default=None,
              help="D of the co-activation placement's routing statistics (as in `dmoe run`; default K/4 for a "
                   "carved model).")
@system_options
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the channel draws, the deployment and the bootstrap (the same for every point).")
@channel_model_options
@click.option("--output", "-o", default="results/sweep", show_default=True,
              help="Output directory (sweep.csv, sweep.json, pareto.png, points.jsonl); re-running the same "
                   "command resumes an interrupted sweep there.")
@click.option("--ppl-texts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Held-out texts for each point's perplexity (0: none; each text is served per point).")
@engine_options
@click.option("--max-points", type=click.IntRange(min=1), default=DEFAULT_MAX_POINTS, show_default=True,
              help="Refuse a sweep of more points (each point is a full evaluation).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help="--engine ray: points per Ray task (default: about 4 tasks per CPU).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def sweep(ctx, **o):
    """Run policy templates over a parameter grid on the same questions, channels and seed;
    write OUTPUT/sweep.csv (one row per point: energy, answer NLL, KL and agreement with 95%
    bootstrap intervals, Pareto flags), sweep.json (the configuration, to repeat it) and
    pareto.png (energy against NLL, KL and agreement, the non-dominated points marked).

    Example: dmoe sweep --policy 'JESA({g},8)' --grid g=0.80:0.99:0.01 --add Top-4 --add Top-8
    --add dense --limit 16 -o results/sweep
    """
    from dmoe.experiments.sweep.run import run_sweep
    from dmoe.runtime.faults import NoLiveNodeError

    check_options(o)
    try:
        run_sweep(
            templates=list(o["templates"]), grid=list(o["grid"]), added=list(o["added"]), output=o["output"],
            subjects=[s.strip() for item in o["subjects"] for s in item.split(",") if s.strip()], limit=o["limit"],
            seed=o["seed"], max_points=o["max_points"], model_source=o["model_source"], num_experts=o["num_experts"],
            num_nodes=o["num_nodes"], placement=o["placement"], max_experts=o["max_experts"],
            preset=o["preset"].lower(), num_subcarriers=o["num_subcarriers"], snr_db=o["snr_db"],
            comp_throughput_tokens_per_s=o["comp_throughput"], noise_figure_db=o["noise_figure"],
            tx_power_dbm=o["tx_power_dbm"], wire_dtype=o["wire_dtype"].lower(),
            hidden_state_bytes=o["hidden_state_bytes"], channel=channel_from_options(o),
            channel_redraw=o["channel_redraw"], combine=o["combine"], device=o["device"], cache_dir=o["cache_dir"],
            profile=o["profile"], node_failure_rate=o["node_failure_rate"], node_rejoin=o["node_rejoin"],
            ppl_texts=o["ppl_texts"], engine=o["engine"], ray_address=o["ray_address"], chunk_size=o["chunk_size"],
            progress=not o["quiet"], log=click.echo, command=shlex.join(["dmoe"] + sys.argv[1:]),
        )
    except (ValueError, TypeError, FileNotFoundError, OSError, NoLiveNodeError) as exc:
        raise click.ClickException(str(exc)) from exc


for _p in sweep.params:  # `dmoe run`'s --engine places the nodes; here it places the points
    if _p.name == "engine":
        _p.help = ("Where the points run: one after another in this process, or chunks of points as Ray tasks "
                   "(the same questions, channels and seed; the same numbers).")
    if _p.name == "ray_address":
        _p.help = "Join this Ray cluster for --engine ray (default: start Ray embedded with this machine's CPUs)."
