"""The ``dmoe`` command line."""

from __future__ import annotations

import math
import shlex
import sys

import click

from .channels import CHANNEL_MODELS, DEFAULT_CARRIER_GHZ, DEFAULT_DELAY_SPREAD_NS, ChannelConfig


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


class _LazyGroup(click.Group):
    """A group whose heavy subcommands are imported only when named (or listed): ``dmoe
    run`` does not import the experiments (matplotlib, scipy.stats, ...). Click's
    documented pattern for lazy subcommands."""

    _lazy = {"reproduce": "dmoe.experiments.cli:reproduce"}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx, cmd_name):
        if cmd_name in self._lazy and cmd_name not in self.commands:
            import importlib

            module, attr = self._lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dmoe")
def main() -> None:
    """Expert selection and subcarrier allocation for distributed MoE at the wireless edge."""


@main.command()
@click.option("--subject", "subjects", multiple=True, default=("anatomy",), show_default=True,
              help="MMLU subject (repeat or comma-separate; 'medical' and 'all' are groups).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many questions per subject.")
@click.option("--policy", "policies", multiple=True,
              help="Policy to run (repeatable): dense, Top-k, H(z,D), JESA(g0,D), LB(g0,D), and the calibrated "
                   "JESA(cal:B,D), DES(cal:B,D), LB(cal:B,D) (B: budget of predicted KL to the full model [nat/token]; "
                   "needs `dmoe calibrate`); append "
                   "[T=<seconds>s] to bound each layer round's latency, e.g. 'JESA(0.9,2)[T=5s]'. "
                   "Default: dense, Top-<D/2>, Top-<D>, H(<qos>,<D>), JESA(<gamma0>,<D>), LB(<gamma0>,<D>).")
@click.option("--gamma0", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="Layer importance base of the default JESA and LB policies (gamma^(l) = gamma0^l).")
@click.option("--qos", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="QoS z of the default homogeneous policy H(z,D).")
@click.option("--max-experts", "-D", type=click.IntRange(min=1), default=None,
              help="D, the most experts per token (C2) of the default policies. Default: K/4 for a carved "
                   "model (8 of the default 32 experts, 2 of K = 8: 25% of the FFN), 2 for a real MoE.")
@click.option("--num-experts", "-K", type=click.IntRange(min=2), default=None,
              help="K, experts per layer. Default: the checkpoint's routed experts for a real MoE (giving "
                   "another K is an error); for the carved SmolLM2, 32 fine-grained experts on 8 nodes. With -K "
                   "and no --nodes, one expert per node.")
@click.option("--nodes", "-N", "num_nodes", type=click.IntRange(min=1), default=None,
              help="N edge nodes holding the K experts of each layer (N <= K). Default: 8 for the carved "
                   "default, else N = K, one expert per node.")
@click.option("--placement", type=click.Choice(["contiguous", "round-robin", "coactivation"]), default=None,
              help="How experts are placed on the N nodes when N < K (default: coactivation for a carved "
                   "model, contiguous for a real MoE); coactivation keeps experts the router selects together "
                   "on one node (calibration statistics).")
@click.option("--num-subcarriers", "-M", type=click.IntRange(min=1), default=None,
              help="M, OFDMA subcarriers. Default: the smallest power of two >= N(N-1) for N nodes (64 for 8).")
@click.option("--snr-db", type=float, default=10.0, show_default=True, help="P0/N0 [dB].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the channel draws (the same for every policy).")
@click.option("--channel-redraw", type=click.Choice(["layer", "round", "fixed"]), default="layer",
              show_default=True, help="New channel draw per layer round, per query round, or once.")
@click.option("--channel", "channel_model", type=click.Choice(list(CHANNEL_MODELS), case_sensitive=False),
              default="rayleigh", show_default=True,
              help="Fading: i.i.d. Rayleigh per subcarrier (the paper) or a 3GPP TR 38.901 TDL profile.")
@click.option("--delay-spread", "delay_spread", type=float, default=DEFAULT_DELAY_SPREAD_NS, show_default=True,
              help="RMS delay spread of the TDL profiles [ns] (TR 38.901 Table 7.7.3-1 'nominal').")
@click.option("--speed-kmh", type=float, default=None,
              help="Node speed [km/h]: channels of consecutive layer rounds correlate by J0(2 pi f_D tau), "
                   "tau = the round's latency; 0 = static within a query round. Default: no mobility model "
                   "(independent block fading as --channel-redraw says).")
@click.option("--carrier-ghz", type=float, default=DEFAULT_CARRIER_GHZ, show_default=True,
              help="Carrier frequency [GHz] (Doppler shift).")
@click.option("--csi-error", type=float, default=0.0, show_default=True,
              help="Normalised variance in [0, 1] of the server's channel estimate error, CN(0, err * E|H|^2).")
@click.option("--csi-delay", type=int, default=0, show_default=True,
              help="Age of the server's channel estimate [layer rounds] (1 = the previous round's channel).")
@click.option("--comp-throughput", type=float, default=1e4, show_default=True,
              help="FFN throughput of every node [token/s] (latency model).")
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
@click.option("--profile", "profile", default=None,
              help="Layer-importance profile (JSON of `dmoe calibrate`) for calibrated policies; default the "
                   "cached one of the model with the most calibration passes.")
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
def run(subjects, limit, policies, gamma0, qos, max_experts, num_experts, num_nodes, placement, num_subcarriers,
        snr_db, seed, channel_redraw, channel_model, delay_spread, speed_kmh, carrier_ghz, csi_error, csi_delay,
        comp_throughput, combine, model_source, device, cache_dir, output, ppl_texts, profile, engine,
        ray_address, node_failure_rate, node_rejoin, quiet):
    """Run the DMoE protocol over MMLU for every policy; print and write the results."""
    from .main_job import run_main_job
    from .runtime.faults import NoLiveNodeError

    if not (math.isfinite(node_failure_rate) and 0.0 <= node_failure_rate < 1.0):
        raise click.BadParameter(f"must lie in [0, 1), got {node_failure_rate}", param_hint="'--node-failure-rate'")
    if ray_address is not None and engine != "ray":
        raise click.BadParameter("needs --engine ray", param_hint="'--ray-address'")
    for flag, value in (("--gamma0", gamma0), ("--qos", qos), ("--snr-db", snr_db), ("--delay-spread", delay_spread),
                        ("--carrier-ghz", carrier_ghz), ("--csi-error", csi_error),
                        ("--comp-throughput", comp_throughput), ("--speed-kmh", speed_kmh)):
        if value is not None and not math.isfinite(value):
            raise click.BadParameter(f"must be a finite number, got {value}", param_hint=f"'{flag}'")
    for flag, value, rule in (("--delay-spread", delay_spread, delay_spread >= 0),
                              ("--speed-kmh", speed_kmh, speed_kmh is None or speed_kmh >= 0),
                              ("--carrier-ghz", carrier_ghz, carrier_ghz > 0),
                              ("--csi-error", csi_error, 0 <= csi_error <= 1),
                              ("--csi-delay", csi_delay, csi_delay >= 0),
                              ("--comp-throughput", comp_throughput, comp_throughput > 0)):
        if not rule:
            need = {"--csi-error": "in [0, 1]", "--carrier-ghz": "> 0", "--comp-throughput": "> 0"}.get(flag, ">= 0")
            raise click.BadParameter(f"must be {need}, got {value}", param_hint=f"'{flag}'")
    if speed_kmh is not None and channel_redraw != "layer":
        raise click.BadParameter("cannot be combined with --speed-kmh (mobility decides how the channel changes)",
                                 param_hint="'--channel-redraw'")
    if device is not None:
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise click.BadParameter(f"not a torch device: {exc}", param_hint="'--device'") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine", param_hint="'--device'")
    try:
        channel = ChannelConfig(model=channel_model.lower(), delay_spread_ns=delay_spread, speed_kmh=speed_kmh,
                                carrier_ghz=carrier_ghz, csi_error=csi_error, csi_delay=csi_delay)
        run_main_job(
            subjects=[s for s in subjects], limit=limit, policies=list(policies) or None, num_experts=num_experts,
            gamma0=gamma0, qos=qos, max_experts=max_experts,
            num_subcarriers=num_subcarriers, snr_db=snr_db, num_nodes=num_nodes, placement=placement,
            comp_throughput_tokens_per_s=comp_throughput,
            seed=seed, channel_redraw=channel_redraw, channel=channel, model_source=model_source,
            cache_dir=cache_dir, combine=combine, device=device, output=output, ppl_texts=ppl_texts,
            progress=not quiet,
            command=shlex.join(["dmoe"] + sys.argv[1:]), log=click.echo, profile=profile, engine=engine,
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
              help="K (carved: default 32, what `dmoe run` uses; `dmoe reproduce` also builds K = 8, the "
                   "paper's; an MoE checkpoint's own K).")
@click.option("--cache-dir", default=None)
@click.option("--rebuild", is_flag=True, help="Rebuild even if a valid cached build exists.")
def build_model(model_source, num_experts, cache_dir, rebuild):
    """Build (or check) the cached MoE model."""
    from .main_job import DEFAULT_RUN_EXPERTS
    from .model import inspect_checkpoint, load_moe_model

    try:
        if num_experts is None and inspect_checkpoint(model_source).kind != "moe":
            num_experts = DEFAULT_RUN_EXPERTS
        model = load_moe_model(model_source, num_experts=num_experts, cache_dir=cache_dir, rebuild=rebuild)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    where = getattr(model, "metadata", {}).get("cache_path") or getattr(model, "metadata", {}).get("source", {}).get("location", "")
    click.echo(f"{model.family} model ready: {model.num_layers} layers x {model.num_experts} experts ({where})")


def _float_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"must be comma-separated numbers, got {value!r}") from exc


@main.command()
@click.option("--model", "model_source", default=None,
              help="An MoE checkpoint, a dense model to carve, or a dmoe build (as in `dmoe run`); default "
                   "SmolLM2-135M-Instruct carved.")
@click.option("--num-experts", "-K", type=click.IntRange(min=2), default=None,
              help="K (carved models; default 8). A real MoE has its own K.")
@click.option("--device", default=None, help="Torch device for the model (default cpu).")
@click.option("--cache-dir", default=None, help="Model cache (default $DMOE_CACHE_DIR or ~/.cache/dmoe).")
@click.option("--max-experts", "-D", type=click.IntRange(min=1), default=2, show_default=True,
              help="D of every QoS level (the calibrated policy must use the same D).")
@click.option("--qos", "qos", default="0.1,0.2,0.3,0.4,1.0", show_default=True, callback=_float_list,
              help="QoS levels z (comma-separated, in [0, 1]).")
@click.option("--window", "-w", type=click.IntRange(min=1), default=5, show_default=True,
              help="Layers per window (one level per window).")
@click.option("--questions", "-n", "num_questions", type=click.IntRange(min=1), default=16, show_default=True,
              help="Calibration questions (round-robin over the routers' calibration subjects).")
@click.option("--subject", "subjects", multiple=True,
              help="Calibration subjects instead of the routers' calibration set (repeat or comma-separate).")
@click.option("--base", type=click.Choice(["top", "full"]), default="top", show_default=True,
              help="What the layers outside the measured window run: the top QoS level, or the full model.")
@click.option("--num-subcarriers", "-M", type=click.IntRange(min=1), default=None,
              help="M (default the smallest power of two >= K(K-1)).")
@click.option("--snr-db", type=float, default=10.0, show_default=True, help="P0/N0 [dB].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Recalibrate even if a cached profile with these settings exists.")
@click.option("--budget", "budgets", type=float, multiple=True,
              help="Also print the optimal allocation for this KL budget [nat/token] (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def calibrate(model_source, num_experts, device, cache_dir, max_experts, qos, window, num_questions, subjects, base,
              num_subcarriers, snr_db, seed, force, budgets, quiet):
    """Measure the model's layer importance (quality loss and energy of each QoS level at each
    window of layers) and cache it beside the model build, with a heatmap PNG.

    Cost: QUESTIONS x (WINDOWS x (LEVELS - 1) + 2) forward passes (base top); the defaults on
    the 30-layer default model: 16 x (6 x 4 + 2) = 416 passes, about 9 minutes on 2 busy CPU
    cores. Then use the profile with `dmoe run --policy 'JESA(cal:B,D)'`.
    """
    import warnings as _warnings

    from .importance import calibrate_cached
    from .model import load_expert_model
    from .optimize.importance import allocate_qos
    from .system import SystemConfig, default_num_subcarriers

    if not math.isfinite(snr_db):
        raise click.BadParameter(f"must be a finite number, got {snr_db}", param_hint="'--snr-db'")
    for b in budgets:  # checked before minutes of calibration, not after
        if not math.isfinite(b):
            raise click.BadParameter(f"must be a finite number [nat/token], got {b}", param_hint="'--budget'")
    for z in qos or ():
        if not (math.isfinite(z) and 0.0 <= z <= 1.0):
            raise click.BadParameter(f"every level must lie in [0, 1], got {z}", param_hint="'--qos'")
    subj = tuple(x.strip() for item in subjects for x in item.split(",") if x.strip()) or None
    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always", UserWarning)
            if subj is not None:
                from .importance import calibration_questions

                calibration_questions(num_questions, subj)  # validates subjects, warns on overlap
        for w in caught:
            click.echo(f"warning: {w.message}", err=True)
        model = load_expert_model(model_source, num_experts=num_experts, cache_dir=cache_dir, progress=not quiet,
                                  device=device)
        k = int(model.num_experts)
        if max_experts > k:
            raise ValueError(f"`max_experts` (-D) = {max_experts} must not exceed the model's K = {k}")
        m = num_subcarriers if num_subcarriers is not None else default_num_subcarriers(k)
        system = SystemConfig(num_experts=k, num_subcarriers=m, snr_db=snr_db)
        prof, path, reused = calibrate_cached(
            model, qos=qos, max_experts=max_experts, window=min(window, model.num_layers), num_questions=num_questions,
            subjects=subj, system=system, seed=seed, base=base, cache_dir=cache_dir, force=force,
            progress=not quiet, log=lambda m: click.echo(m, err=True),
        )
        click.echo(("reused " if reused else "wrote ") + f"{path} and {path.with_suffix('.png')}")
        click.echo(format_profile(prof))
        for b in budgets:
            a = allocate_qos(prof, b)
            click.echo(f"budget {b:g} nat/token: thresholds {', '.join(f'{t:g}' for t in a.thresholds)}; predicted KL "
                       f"{a.predicted_loss:.4g}, energy {a.predicted_energy * 1e3:.4g} mJ/token"
                       + ("" if a.feasible else f" ({a.message})"))
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)


def format_profile(prof) -> str:
    """Plain-text table of a profile: one row per window, KL / NLL increments per level."""
    head = "layers    " + "".join(f"{'z=' + format(z, 'g'):>22}" for z in prof.qos)
    lines = [f"increments over base {prof.base!r} (base: KL {prof.base_kl:.4g} nat/token, NLL +{prof.base_nll:.4g} nat); "
             "cell = KL [nat/token] / NLL [nat] / energy [mJ/token]", head]
    for (a, b), kl, nll, en in zip(prof.windows, prof.kl, prof.nll, prof.energy):
        cells = "".join(f"{f'{k:.3f}/{n:+.1f}/{e * 1e3:.0f}':>22}" for k, n, e in zip(kl, nll, en))
        lines.append(f"{f'{a}-{b}':<10}{cells}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
