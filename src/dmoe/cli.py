"""The ``dmoe`` command line."""

from __future__ import annotations

import math
import shlex
import sys

import click



def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dmoe")
def main() -> None:
    """Expert selection and subcarrier allocation for distributed MoE at the wireless edge."""


@main.command()
@click.option("--subject", "subjects", multiple=True, default=("anatomy",), show_default=True,
              help="MMLU subject (repeat or comma-separate; 'medical' and 'all' are groups).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many questions per subject.")
@click.option("--policy", "policies", multiple=True,
              help="Policy to run (repeatable): dense, Top-k, H(z,D), JESA(g0,D), LB(g0,D). "
                   "Default: dense, Top-1, Top-2, H(<qos>,<D>), JESA(<gamma0>,<D>), LB(<gamma0>,<D>).")
@click.option("--gamma0", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="Layer importance base of the default JESA and LB policies (gamma^(l) = gamma0^l).")
@click.option("--qos", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="QoS z of the default homogeneous policy H(z,D).")
@click.option("--max-experts", "-D", type=click.IntRange(min=1), default=2, show_default=True,
              help="D, the most experts per token (C2) of the default policies.")
@click.option("--num-experts", "-K", type=click.IntRange(min=2), default=None,
              help="K, experts per layer = expert nodes. Default: the checkpoint's routed experts for a "
                   "real MoE (giving another K is an error), 8 for a carved dense model.")
@click.option("--num-subcarriers", "-M", type=click.IntRange(min=1), default=None,
              help="M, OFDMA subcarriers. Default: the smallest power of two >= K(K-1) (64 for K = 8).")
@click.option("--snr-db", type=float, default=10.0, show_default=True, help="P0/N0 [dB].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the channel draws (the same for every policy).")
@click.option("--channel-redraw", type=click.Choice(["layer", "round", "fixed"]), default="layer",
              show_default=True, help="New channel draw per layer round, per query round, or once.")
@click.option("--combine", type=click.Choice(["sum", "weighted"]), default=None,
              help="Carved model only: aggregate selected slices by their sum (default) or eq (8)'s "
                   "weighted mean. A real MoE combines with its family's own weights.")
@click.option("--model", "model_source", default=None,
              help="A Mixture-of-Experts checkpoint (local dir or hub id: Mixtral, Qwen2-MoE, Qwen3-MoE, "
                   "OLMoE, DeepSeek-V3, GPT-OSS, Granite-MoE), a dense model to carve into experts, or a "
                   "dmoe build; default SmolLM2-135M-Instruct carved.")
@click.option("--device", default=None,
              help="Torch device for the model, e.g. cuda or cpu (default cpu).")
@click.option("--cache-dir", default=None, help="Model cache (default $DMOE_CACHE_DIR or ~/.cache/dmoe).")
@click.option("--output", "-o", default="results/run", show_default=True, help="Output directory.")
@click.option("--ppl-texts", type=click.IntRange(min=0), default=16, show_default=True,
              help="Held-out MMLU question texts (subjects neither evaluated nor used for calibration) "
                   "for each policy's perplexity; 0 disables it.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the expert nodes run: this process, or one Ray actor (process) per node.")
@click.option("--ray-address", default=None,
              help="Join this Ray cluster (auto, host:port, ray://host:port); default: start Ray embedded "
                   "with this machine's CPUs. Needs --engine ray.")
@click.option("--node-failure-rate", type=float, default=0.0, show_default=True,
              help="Probability in [0, 1) that a node fails in a layer round (seeded; failed nodes' queries "
                   "are re-hosted and the round re-planned).")
@click.option("--node-rejoin/--no-node-rejoin", default=True, show_default=True,
              help="Failed nodes rejoin at the next query round.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(subjects, limit, policies, gamma0, qos, max_experts, num_experts, num_subcarriers, snr_db,
        seed, channel_redraw, combine, model_source, device, cache_dir, output, ppl_texts, engine, ray_address,
        node_failure_rate, node_rejoin, quiet):
    """Run the DMoE protocol over MMLU for every policy; print and write the results."""
    from .main_job import run_main_job
    from .runtime.faults import NoLiveNodeError

    if not (math.isfinite(node_failure_rate) and 0.0 <= node_failure_rate < 1.0):
        raise click.BadParameter(f"must lie in [0, 1), got {node_failure_rate}", param_hint="'--node-failure-rate'")
    if ray_address is not None and engine != "ray":
        raise click.BadParameter("needs --engine ray", param_hint="'--ray-address'")
    for flag, value in (("--gamma0", gamma0), ("--qos", qos), ("--snr-db", snr_db)):
        if not math.isfinite(value):
            raise click.BadParameter(f"must be a finite number, got {value}", param_hint=f"'{flag}'")
    if not policies:
        policies = ("dense", "Top-1", "Top-2", f"H({qos!r},{max_experts})",
                    f"JESA({gamma0!r},{max_experts})", f"LB({gamma0!r},{max_experts})")
    if device is not None:
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise click.BadParameter(f"not a torch device: {exc}", param_hint="'--device'") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine", param_hint="'--device'")
    try:
        run_main_job(
            subjects=[s for s in subjects], limit=limit, policies=list(policies), num_experts=num_experts,
            num_subcarriers=num_subcarriers, snr_db=snr_db,
            seed=seed, channel_redraw=channel_redraw, model_source=model_source,
            cache_dir=cache_dir, combine=combine, device=device, output=output, ppl_texts=ppl_texts,
            progress=not quiet,
            command=shlex.join(["dmoe"] + sys.argv[1:]), log=click.echo, engine=engine,
            ray_address=ray_address, node_failure_rate=node_failure_rate, node_rejoin=node_rejoin,
        )
    except (ValueError, FileNotFoundError, TypeError, OSError, NoLiveNodeError) as exc:
        _fail(exc)


@main.command()
def subjects():
    """List the MMLU subjects and their question counts."""
    from .data import CALIBRATION_SUBJECTS, MEDICAL_SUBJECTS, list_subjects, load_mmlu

    try:
        for name in list_subjects():
            tag = " (medical)" if name in MEDICAL_SUBJECTS else " (router calibration)" if name in CALIBRATION_SUBJECTS else ""
            click.echo(f"{name:<40}{len(load_mmlu(name)):>5}{tag}")
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)


@main.command("build-model")
@click.option("--model", "model_source", default=None,
              help="Dense model path or hub id to carve (default SmolLM2), or an MoE checkpoint to check.")
@click.option("--num-experts", "-K", type=click.IntRange(min=2), default=None,
              help="K (carved default 8; an MoE checkpoint's own K).")
@click.option("--cache-dir", default=None)
@click.option("--rebuild", is_flag=True, help="Rebuild even if a valid cached build exists.")
def build_model(model_source, num_experts, cache_dir, rebuild):
    """Build (or check) the cached MoE model."""
    from .model import load_moe_model

    try:
        model = load_moe_model(model_source, num_experts=num_experts, cache_dir=cache_dir, rebuild=rebuild)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    where = getattr(model, "metadata", {}).get("cache_path") or getattr(model, "metadata", {}).get("source", {}).get("location", "")
    click.echo(f"{model.family} model ready: {model.num_layers} layers x {model.num_experts} experts ({where})")


def _register_reproduce() -> None:
    from .experiments.cli import reproduce

    main.add_command(reproduce)


_register_reproduce()


if __name__ == "__main__":  # pragma: no cover
    main()
