"""``dmoe lm-eval`` and ``dmoe lm-eval-tasks`` (registered by :mod:`dmoe.cli`)."""

from __future__ import annotations

import click

__all__ = ["lm_eval_command", "lm_eval_tasks_command", "default_tasks_dir"]


def default_tasks_dir():
    """Where ``dmoe lm-eval`` keeps the MMLU tasks when no ``--include_path`` is given:
    ``$DMOE_CACHE_DIR/lm_eval_tasks`` (default ``~/.cache/dmoe/lm_eval_tasks``)."""
    from ..model import default_cache_dir

    return default_cache_dir() / "lm_eval_tasks"


@click.command("lm-eval-tasks", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--subject", "subjects", multiple=True,
              help="MMLU subjects (repeat or comma-separate; 'all' and 'medical' are groups). Default all 57.")
def lm_eval_tasks_command(directory, subjects):
    """Write lm-evaluation-harness tasks (YAML + JSONL, no hub) for the MMLU subjects into
    DIRECTORY: dmoe_mmlu_<subject> (e.g. dmoe_mmlu_anatomy) and the group dmoe_mmlu. Use
    them with `--include_path DIRECTORY`."""
    from .tasks import write_lm_eval_tasks

    sel = [s.strip() for item in subjects for s in item.split(",") if s.strip()] or "all"
    try:
        names = write_lm_eval_tasks(directory, sel)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {len(names) - 1} tasks and the group {names[-1]} to {directory}")


@click.command("lm-eval", context_settings={"help_option_names": [], "ignore_unknown_options": True,
                                            "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_command(args):
    """lm-evaluation-harness with the `dmoe` model registered: the harness's own options, e.g.

    dmoe lm-eval --model dmoe --model_args 'policy=JESA(0.9,8)' --tasks dmoe_mmlu_anatomy --limit 10

    Without --include_path the MMLU tasks (dmoe lm-eval-tasks) are written once to the dmoe
    cache and included. `dmoe lm-eval --help` shows the harness's help. The harness's own
    `lm_eval --model dmoe ...` works too where the start-up file is installed (a wheel,
    scripts/install.sh, or `python -m dmoe_lm_eval_hook install`)."""
    try:
        from . import lm_eval as backend
    except ImportError as exc:
        raise click.ClickException(
            f"lm-evaluation-harness is not installed ({exc}); install the `eval` extra: pip install 'dmoe[eval]' "
            "(scripts/install.sh --dev installs it)"
        ) from exc
    argv = list(args)
    wants_help = any(a in ("-h", "--help") for a in argv)
    if not wants_help and not any(a == "--include_path" or a.startswith("--include_path=") for a in argv):
        from .tasks import TASK_PREFIX, write_lm_eval_tasks

        folder = default_tasks_dir()
        if not (folder / f"{TASK_PREFIX}.yaml").is_file():
            write_lm_eval_tasks(folder, "all")
        argv += ["--include_path", str(folder)]
    try:
        backend.main(argv)
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:  # bad model arguments, unknown tasks
        raise click.ClickException(str(exc).strip("'\"")) from exc
