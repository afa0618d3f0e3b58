"""The ``dmoe`` command line."""

from __future__ import annotations

import math
import shlex
import sys

import click

from .cli_options import channel_from_options, channel_model_options, check_options, engine_options, system_options
from .defaults import DEFAULT_NUM_EXPERTS
from .wire import DEFAULT_WIRE_DTYPE, WIRE_DTYPES, resolve_hidden_state_bytes


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


class _LazyGroup(click.Group):
    """A group whose heavy subcommands are imported only when named (or listed): ``dmoe
    run`` does not import the experiments (matplotlib, scipy.stats, ...). Click's
    documented pattern for lazy subcommands."""

    _lazy = {
        "reproduce": "dmoe.experiments.cli:reproduce",
        "sweep": "dmoe.experiments.sweep.cli:sweep",
        # text through the protocol and the lm-evaluation-harness commands
        "generate": "dmoe.generate_cli:generate",
        "chat": "dmoe.generate_cli:chat",
        "lm-eval": "dmoe.integrations.cli:lm_eval_command",
        "lm-eval-tasks": "dmoe.integrations.cli:lm_eval_tasks_command",
    }

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


def _load_config_file(ctx: click.Context, param: click.Parameter, value) -> None:
    """``--config FILE``: validate FILE and make it the defaults of the other options (flags win)."""
    from .config import ConfigError, read_config

    if value is None:
        return
    try:
        values = read_config(value, ctx.command)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta["dmoe.config_file"] = str(value)


def _with_origin(ctx: click.Context, exc: click.BadParameter) -> None:
    """Make ``exc`` name the configuration file and key when the offending option came from it."""
    from click.core import ParameterSource

    from .config import section_of

    hint = str(exc.param_hint or "").strip("'\"")
    for p in ctx.command.params:
        if p.name and (hint in getattr(p, "opts", []) or hint == p.name):
            if ctx.get_parameter_source(p.name) is ParameterSource.DEFAULT_MAP:
                exc.message = (f"{exc.message} (set by `{p.name}` in [{section_of(p.name)}] of "
                               f"{ctx.meta.get('dmoe.config_file')})")
            break


@main.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), is_eager=True,
              expose_value=False, callback=_load_config_file,
              help="TOML configuration file: these options by parameter name in tables ([system], [channel], "
                   "[policies], ...; `dmoe config --defaults` prints every table and key); flags on the command "
                   "line override it. Every run writes its merged configuration to OUTPUT/config.toml, which "
                   "repeats it.")
@click.option("--subject", "subjects", multiple=True, default=("anatomy",), show_default=True,
              help="MMLU subject (repeat or comma-separate; 'medical' and 'all' are groups).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many questions per subject.")
@click.option("--policy", "policies", multiple=True,
              help="Policy to run (repeatable): dense, Top-k, H(z,D), JESA(g0,D), LB(g0,D), and the calibrated "
                   "JESA(cal:B,D), DES(cal:B,D), LB(cal:B,D) (B: budget of predicted KL to the full model [nat/token]; "
                   "needs `dmoe calibrate`); append "
                   "[T=<seconds>s] to bound each layer round's latency, e.g. 'JESA(0.9,2)[T=5s]'. "
                   "Your own: 'mypkg.mod:BestChannel(0.8,8)' (import path, literal arguments) or the name a "
                   "package registers under the entry-point group dmoe.policies (README: Write your own policy). "
                   "Default: dense, Top-<D/2>, Top-<D>, H(<qos>,<D>), JESA(<gamma0>,<D>), LB(<gamma0>,<D>).")
@click.option("--gamma0", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="Layer importance base of the default JESA and LB policies (gamma^(l) = gamma0^l).")
@click.option("--qos", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="QoS z of the default homogeneous policy H(z,D).")
@click.option("--max-experts", "-D", type=click.IntRange(min=1), default=None,
              help="D, the most experts per token (C2) of the default policies. Default: K/4 for a carved "
                   "model (8 of the default 32 experts, 2 of K = 8: 25% of the FFN), 2 for a real MoE.")
@system_options
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the channel draws and the deployment (the same for every policy).")
@channel_model_options
@click.option("--output", "-o", default="results/run", show_default=True, help="Output directory.")
@click.option("--ppl-texts", type=click.IntRange(min=0), default=16, show_default=True,
              help="Held-out MMLU question texts (subjects neither evaluated nor used for calibration) "
                   "for each policy's perplexity; 0 disables it.")
@engine_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def run(ctx, **kwargs):
    """Run the DMoE protocol over MMLU for every policy; print and write the results
    (OUTPUT/summary.json, summary.csv, per_layer.csv, per_layer.png, latency.png, config.toml)."""
    try:
        _run(ctx, kwargs)
    except click.BadParameter as exc:
        _with_origin(ctx, exc)
        raise


def _run(ctx, o: dict) -> None:
    """``dmoe run`` with its parameters ``o`` by name: the start-up progress bar
    (:mod:`dmoe.startup_progress`) appears once the options are checked, before torch loads."""
    from .config import sectioned
    from .startup_progress import RUN_STAGES, StartupProgress

    check_options(o, finite=(("--gamma0", "gamma0"), ("--qos", "qos")))
    try:
        channel = channel_from_options(o)
        with StartupProgress(RUN_STAGES, enabled=not o["quiet"]) as startup:
            startup.import_runtime()
            from .main_job import run_main_job

            startup.stage("import dmoe")
            run_main_job(
                subjects=list(o["subjects"]), limit=o["limit"], policies=list(o["policies"]) or None,
                num_experts=o["num_experts"], gamma0=o["gamma0"], qos=o["qos"], max_experts=o["max_experts"],
                num_subcarriers=o["num_subcarriers"], snr_db=o["snr_db"], num_nodes=o["num_nodes"],
                placement=o["placement"], comp_throughput_tokens_per_s=o["comp_throughput"],
                seed=o["seed"], channel_redraw=o["channel_redraw"], channel=channel, model_source=o["model_source"],
                cache_dir=o["cache_dir"], combine=o["combine"], device=o["device"], output=o["output"],
                ppl_texts=o["ppl_texts"], progress=not o["quiet"],
                command=shlex.join(["dmoe"] + sys.argv[1:]), log=startup.log(click.echo), profile=o["profile"],
                engine=o["engine"], ray_address=o["ray_address"], node_failure_rate=o["node_failure_rate"],
                node_rejoin=o["node_rejoin"], preset=o["preset"].lower(), noise_figure_db=o["noise_figure"],
                tx_power_dbm=o["tx_power_dbm"], wire_dtype=o["wire_dtype"].lower(),
                hidden_state_bytes=o["hidden_state_bytes"],
                run_config=sectioned({p.name: ctx.params[p.name] for p in ctx.command.params if p.name in ctx.params}),
                on_stage=startup.stage,
            )
    except _run_errors() as exc:
        where = ctx.meta.get("dmoe.config_file")
        if where is not None:
            raise click.ClickException(
                f"{exc} (options from the configuration file {where} and the command line)") from exc
        _fail(exc)


def _run_errors() -> tuple[type[BaseException], ...]:
    """The errors ``dmoe run`` reports as a message. Evaluated only when an error arrives;
    :class:`~dmoe.runtime.faults.NoLiveNodeError` is among them once its module has loaded
    (it cannot be raised before), so that an early error does not import torch."""
    faults = sys.modules.get("dmoe.runtime.faults")
    return (ValueError, FileNotFoundError, TypeError, OSError) + ((faults.NoLiveNodeError,) if faults else ())


@main.command("config")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--defaults", is_flag=True, help="Print the defaults of `dmoe run` as a commented TOML file.")
def config_cmd(file, defaults):
    """Print a `dmoe run` configuration as TOML: the defaults (--defaults), or FILE checked
    (tables, keys, types and ranges; policy strings, the layout and the channel as `dmoe run`
    checks them before the model loads) and merged over the defaults (what `dmoe run --config FILE`
    runs with no other flag).

    Save the defaults, edit them, run: `dmoe config --defaults > deploy.toml`, then
    `dmoe run --config deploy.toml`.
    """
    from .config import ConfigError, default_values, defaults_toml, dump_toml, read_config, sectioned

    if defaults == (file is not None):
        raise click.UsageError("give either --defaults or a FILE to check")
    if defaults:
        click.echo(defaults_toml(run), nl=False)
        return
    try:
        values = {**default_values(run), **read_config(file, run)}
        _check_config_values(values, file)
    except ConfigError as exc:
        _fail(exc)
    click.echo(dump_toml(sectioned(values), header=f"{file} merged over the defaults of `dmoe run`"), nl=False)


def _check_config_values(values: dict, file) -> None:
    """What `dmoe run` checks from the options alone, without the model: policy strings (the
    calibrated ones by their form), the layout, the pathloss / layout pairing and the channel.

    Raises:
        ConfigError: naming the key, the file and the rule.
    """
    from .channels import ChannelConfig
    from .channels.geometry import parse_layout
    from .config import ConfigError
    from .main_job import _parse_policies

    def fail(key, exc):
        raise ConfigError(f"`{key}` in {file}: {exc}") from None

    if values.get("policies"):
        try:
            _parse_policies(list(values["policies"]), where=None)
        except ValueError as exc:
            fail("policies", exc)
    if values.get("layout") is not None:
        try:
            parse_layout(values["layout"])
        except ValueError as exc:
            fail("layout", exc)
    elif values.get("pathloss") is not None:
        fail("pathloss", "needs a `layout` (node positions)")
    try:
        ChannelConfig(model=str(values.get("channel_model", "rayleigh")).lower(),
                      delay_spread_ns=values.get("delay_spread", 100.0), speed_kmh=values.get("speed_kmh"),
                      carrier_ghz=values.get("carrier_ghz", 3.5), csi_error=values.get("csi_error", 0.0),
                      csi_delay=values.get("csi_delay", 0))
    except ValueError as exc:
        fail("channel", exc)


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
              help=f"K (carved: default {DEFAULT_NUM_EXPERTS}, what `dmoe run` uses; `dmoe reproduce` also builds "
                   "K = 8, the paper's; an MoE checkpoint's own K).")
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
              help=f"K (carved models; default {DEFAULT_NUM_EXPERTS}, as `dmoe run`). A real MoE has its own K.")
@click.option("--device", default=None, help="Torch device for the model (default cpu).")
@click.option("--cache-dir", default=None, help="Model cache (default $DMOE_CACHE_DIR or ~/.cache/dmoe).")
@click.option("--max-experts", "-D", type=click.IntRange(min=1), default=None,
              help="D of every QoS level (the calibrated policy must use the same D). Default: as `dmoe run`'s "
                   "policies, a quarter of K for a carved model (8 of 32), 2 for a real MoE.")
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
@click.option("--wire-dtype", type=click.Choice(list(WIRE_DTYPES), case_sensitive=False), default=DEFAULT_WIRE_DTYPE,
              show_default=True, help="s0 = the model's hidden size on the wire, as in `dmoe run` (use the same).")
@click.option("--hidden-state-bytes", type=click.IntRange(min=1), default=None,
              help="s0 [byte] per hidden state, set explicitly (overrides --wire-dtype).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Recalibrate even if a cached profile with these settings exists.")
@click.option("--budget", "budgets", type=float, multiple=True,
              help="Also print the optimal allocation for this KL budget [nat/token] (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def calibrate(model_source, num_experts, device, cache_dir, max_experts, qos, window, num_questions, subjects, base,
              num_subcarriers, snr_db, wire_dtype, hidden_state_bytes, seed, force, budgets, quiet):
    """Measure the model's layer importance (quality loss and energy of each QoS level at each
    window of layers) and cache it beside the model build, with a heatmap PNG.

    Cost: QUESTIONS x (WINDOWS x (LEVELS - 1) + 2) forward passes (base top); the defaults on
    the 30-layer default model: 16 x (6 x 4 + 2) = 416 passes, about 9 minutes on 2 busy CPU
    cores. Then use the profile with `dmoe run --policy 'JESA(cal:B,D)'`.
    """
    import warnings as _warnings

    from .importance import calibrate_cached
    from .model import load_expert_model
    from .optimize.qos_allocation import allocate_qos
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
        if max_experts is None:
            from .main_job import default_max_experts

            max_experts = default_max_experts(k, carved=getattr(model, "family", "carved") == "carved")
        if max_experts > k:
            raise ValueError(f"`max_experts` (-D) = {max_experts} must not exceed the model's K = {k}")
        m = num_subcarriers if num_subcarriers is not None else default_num_subcarriers(k)
        s0, _ = resolve_hidden_state_bytes(int(model.hidden_size), wire_dtype=wire_dtype.lower(),
                                           explicit=hidden_state_bytes)
        system = SystemConfig(num_nodes=k, num_subcarriers=m, snr_db=snr_db, hidden_state_bytes=s0)
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
