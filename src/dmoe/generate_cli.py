"""``dmoe generate`` and ``dmoe chat``: text through the DMoE protocol (issue 17).

Both load a :class:`~dmoe.deployment.Deployment` (model, K experts on N nodes, radio system)
with ``dmoe run``'s model, system and channel options (:mod:`dmoe.cli_options`: ``--system``
preset, ``--noise-figure``, ``--tx-power-dbm``, ``--layout``, ``--pathloss``, ``--wire-dtype``,
``--hidden-state-bytes``, ...; checked before any work), generate with
:func:`dmoe.runtime.generate.generate`, stream the text as it is produced, then print the
energy and air time of the prefill and of the decode rounds (J, mJ per output token, time
to first token and time per output token on the radio ledger). ``--json PATH`` writes the
same figures (strict JSON) once everything has run; bad input fails before any work.

``dmoe chat`` formats the conversation with the tokenizer's chat template
(``tokenizer.apply_chat_template``; the default SmolLM2-135M-Instruct GGUF ships one, the
ChatML template with a default system prompt; ``--system-prompt`` replaces it). A tokenizer
without a template falls back to a plain transcript, ``"System: ...\\nUser: ...\\nAssistant:"``
with ``"\\nUser:"`` as a stop string, and says so.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from .channels import ChannelConfig
from .cli_options import (
    channel_from_options,
    channel_model_options,
    check_options,
    engine_options,
    option_group,
    system_options,
)

__all__ = ["chat", "generate", "deployment_options", "format_costs"]

#: The transcript used when a tokenizer has no chat template.
FALLBACK_STOP = "\nUser:"


#: ``dmoe run``'s model, system, channel and engine options (:mod:`dmoe.cli_options`: the
#: same names, defaults and checks) with ``--max-experts`` and ``--seed``.
deployment_options = option_group([
    click.option("--max-experts", "-D", type=click.IntRange(min=1), default=None,
                 help="D of the default policy JESA(0.9,D) and of the co-activation statistics "
                      "(default K/4 for a carved model, 2 for a real MoE)."),
    system_options,
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Seed of the channel draws, the deployment and the policy (and of sampling unless "
                      "--sampling-seed)."),
    channel_model_options,
    engine_options,
])

#: Policies, sampling, stopping and output of ``generate`` and ``chat``.
generation_options = option_group([
    click.option("--policy", default=None,
                 help="Policy of every round (default JESA(0.9,D)); any `dmoe run` policy name."),
    click.option("--prefill-policy", default=None, help="Policy of the prefill round (default --policy)."),
    click.option("--decode-policy", default=None, help="Policy of the decode rounds (default --policy)."),
    click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True,
                 help="Most tokens to generate."),
    click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="Sampling temperature; 0 = greedy."),
    click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
                 help="Nucleus sampling mass in (0, 1]."),
    click.option("--sampling-seed", type=click.IntRange(min=0), default=None,
                 help="Seed of the sampler (default --seed)."),
    click.option("--stop", "stop", multiple=True, help="Stop string (repeatable); the text is cut before it."),
    click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
                 help="Write the text, the configuration and the costs to this JSON file."),
    click.option("--quiet", is_flag=True, help="No progress bars or model information."),
])


def _check_common(opts: dict) -> ChannelConfig:
    """``dmoe run``'s checks of the deployment options; the ChannelConfig."""
    check_options(opts)
    try:
        return channel_from_options(opts)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _check_json_path(path) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise click.BadParameter(f"{str(parent)!r} is not a writable directory", param_hint="'--json'")
    return p


def _check_policy_names(opts: dict) -> None:
    """Parse the policy names before any model work (calibrated ones need the model)."""
    from .deployment import check_policy_name

    for flag in ("policy", "prefill_policy", "decode_policy"):
        if opts[flag] is not None:
            try:
                check_policy_name(opts[flag])
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'--{flag.replace('_', '-')}'") from exc


class _Session:
    """What ``generate`` and ``chat`` share: the deployment, its runtime and policies."""

    def __init__(self, opts: dict, channel: ChannelConfig) -> None:
        from .startup_progress import GENERATE_STAGES, StartupProgress

        self.opts = opts
        quiet = opts["quiet"]
        # the start-up bar (issue 18): from here, before torch loads, to the engine's start
        with StartupProgress(GENERATE_STAGES, enabled=not quiet) as startup:
            startup.import_runtime()
            from .deployment import deploy
            from .runtime.generate import GenerationConfig  # noqa: F401 (the runtime, imported now)

            startup.stage("import dmoe")
            self.log = (lambda m: None) if quiet else startup.log(lambda m: click.echo(m, err=True))
            self._start(opts, channel, deploy, startup.stage)

    def _start(self, opts: dict, channel: ChannelConfig, deploy, on_stage) -> None:
        """Deploy the model, choose the policies and start the runtime (its engine)."""
        from .runtime.generate import GenerationConfig
        from .runtime.sampling import SamplingParams

        dep = deploy(on_stage=on_stage, model_source=opts["model_source"], num_experts=opts["num_experts"], num_nodes=opts["num_nodes"],
                     placement=opts["placement"], num_subcarriers=opts["num_subcarriers"], snr_db=opts["snr_db"],
                     comp_throughput_tokens_per_s=opts["comp_throughput"], combine=opts["combine"],
                     device=opts["device"], cache_dir=opts["cache_dir"], max_experts=opts["max_experts"],
                     seed=opts["seed"], progress=not opts["quiet"], preset=opts["preset"].lower(),
                     noise_figure_db=opts["noise_figure"], tx_power_dbm=opts["tx_power_dbm"], channel=channel,
                     wire_dtype=opts["wire_dtype"].lower(), hidden_state_bytes=opts["hidden_state_bytes"])
        self.dep = dep
        self.policy, self.prefill, self.decode = dep.policies(
            opts["policy"], opts["prefill_policy"], opts["decode_policy"], max_experts=opts["max_experts"],
            profile=opts["profile"], cache_dir=opts["cache_dir"], log=self.log)
        self.config = GenerationConfig(
            max_new_tokens=opts["max_new_tokens"],
            sampling=SamplingParams(opts["temperature"], opts["top_p"],
                                    opts["sampling_seed"] if opts["sampling_seed"] is not None else opts["seed"]),
            stop=tuple(opts["stop"]),
        )
        self.channel = channel
        info = dep.model.describe()
        unit = "subcarriers" if dep.preset in (None, "paper") else "resource blocks"
        self.log(f"model: {info.get('label', info['family'])}, K = {dep.num_experts} experts per layer on "
                 f"N = {dep.system.num_nodes} nodes"
                 f"{'' if dep.placement is None else f' ({dep.placement_kind} placement)'}, "
                 f"M = {dep.system.num_subcarriers} {unit} (system {dep.preset or 'custom'}); channel: "
                 f"{channel.label()}; s0 = {dep.system.hidden_state_bytes} B per hidden state: "
                 f"{dep.hidden_state_source}; policies: prefill {self.prefill.name}, decode {self.decode.name}; "
                 f"engine {opts['engine']}")
        self.runtime = dep.runtime(self.policy, channel_redraw=opts["channel_redraw"], engine=opts["engine"],
                                   ray_address=opts["ray_address"], node_failure_rate=opts["node_failure_rate"],
                                   node_rejoin=opts["node_rejoin"])
        on_stage("engine")

    def generate(self, prompt: str, *, stop=()):
        from .runtime.generate import GenerationConfig, generate

        cfg = self.config
        if stop:
            cfg = GenerationConfig(cfg.max_new_tokens, cfg.sampling, tuple(cfg.stop) + tuple(stop), cfg.stop_token_ids)
        res = generate(self.runtime, [prompt], cfg, prefill_policy=self.prefill, decode_policy=self.decode,
                       on_text=lambda q, t: click.echo(t, nl=False))
        click.echo("")
        return res

    def config_dict(self) -> dict:
        c = self.config
        return {
            **self.dep.describe(),
            "policies": {"prefill": {"name": self.prefill.name, **self.prefill.params()},
                         "decode": {"name": self.decode.name, **self.decode.params()}},
            "sampling": {"temperature": c.sampling.temperature, "top_p": c.sampling.top_p, "seed": c.sampling.seed},
            "max_new_tokens": c.max_new_tokens,
            "stop": list(c.stop),
            "seed": self.opts["seed"],
            "channel_redraw": self.opts["channel_redraw"],
            "engine": self.opts["engine"],
            "node_failure_rate": self.opts["node_failure_rate"],
            "command": shlex.join(["dmoe"] + sys.argv[1:]),
        }

    def close(self) -> None:
        self.runtime.close()


def format_costs(summary: dict, engine: str) -> str:
    """The prefill / decode table and the per-token line of a generation summary."""
    rows = [("prefill", summary["prefill"]), ("decode", summary["decode"])]
    head = f"{'phase':<9}{'rounds':>8}{'tokens':>8}{'energy [J]':>13}{'comm [J]':>12}{'comp [J]':>12}{'air time [s]':>14}"
    lines = [head]
    for name, p in rows:
        lines.append(f"{name:<9}{p['rounds']:>8}{p['tokens']:>8}{p['energy_j']:>13.4g}{p['energy_comm_j']:>12.4g}"
                     f"{p['energy_comp_j']:>12.4g}{p['air_time_s']:>14.4g}")
    rb = summary["rebuild"]
    if rb["rounds"]:
        lines.append(f"{'rebuild':<9}{rb['rounds']:>8}{rb['tokens']:>8}{rb['energy_j']:>13.4g}"
                     f"{rb['energy_comm_j']:>12.4g}{rb['energy_comp_j']:>12.4g}{rb['air_time_s']:>14.4g}"
                     f"  (within the phases above; {rb['rehosted_queries']} re-hosts)")

    def mj(x):
        return "n/a" if x is None else f"{x:.4g} mJ"

    def s(x):
        return "n/a" if x is None else f"{x:.4g} s"

    lines.append(
        f"{summary['output_tokens']} output tokens: {summary['energy_j']:.4g} J, "
        f"{mj(summary['energy_per_output_token_mj'])} per output token (decode {mj(summary['decode']['energy_per_token_mj'])}"
        f" per token); time to first token {s(summary['ttft_s'])}, time per output token {s(summary['tpot_s'])} "
        f"on the radio ledger; {summary['tokens_per_s_wall'] or 0:.3g} tokens/s wall-clock ({engine} engine)"
    )
    return "\n".join(lines)


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _errors():
    from .runtime.faults import NoLiveNodeError

    return (ValueError, FileNotFoundError, TypeError, OSError, NoLiveNodeError)


@click.command("generate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("prompt")
@generation_options
@deployment_options
def generate(prompt, **opts):
    """Generate a continuation of PROMPT through the DMoE protocol, streaming it, then print
    the energy and air time of the prefill and of the decode rounds."""
    if not prompt.strip():
        raise click.BadParameter("must not be empty", param_hint="'PROMPT'")
    channel = _check_common(opts)
    _check_policy_names(opts)
    json_path = _check_json_path(opts["json_path"])
    try:
        session = _Session(opts, channel)
        try:
            res = session.generate(prompt)
        finally:
            session.close()
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    summary = res.summary()
    click.echo("")
    click.echo(format_costs(summary, opts["engine"]))
    if json_path is not None:
        o = res.outputs[0]
        _write_json(json_path, {"config": session.config_dict(), "prompt": prompt, "text": o.text,
                                "prompt_ids": o.prompt_ids, "token_ids": o.token_ids,
                                "finish_reason": o.finish_reason, "costs": summary})


@click.command("chat", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("message", required=False)
@click.option("--system-prompt", "system_prompt", default=None,
              help="System message (default: the chat template's own, if any); --system is the radio preset.")
@generation_options
@deployment_options
def chat(message, system_prompt, **opts):
    """Chat with the model through the DMoE protocol, formatted with the tokenizer's chat
    template. With MESSAGE: one answer; without: read messages from stdin, one per line,
    until an empty line or end of input."""
    if message is not None and not message.strip():
        raise click.BadParameter("must not be empty", param_hint="'MESSAGE'")
    channel = _check_common(opts)
    _check_policy_names(opts)
    json_path = _check_json_path(opts["json_path"])
    turns = []
    try:
        session = _Session(opts, channel)
        try:
            tok = session.dep.model.tokenizer
            if tok is None:
                raise ValueError("the model has no tokenizer: `dmoe chat` needs one")
            templated = getattr(tok, "chat_template", None) is not None
            if not templated:
                session.log("note: the tokenizer has no chat template; using a plain 'User:/Assistant:' transcript")
            messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
            interactive = message is None
            while True:
                if interactive:
                    line = sys.stdin.readline()
                    if not line or not line.strip():
                        break
                    text = line.rstrip("\n")
                else:
                    text = message
                messages.append({"role": "user", "content": text})
                prompt = _chat_prompt(tok, messages, templated)
                res = session.generate(prompt, stop=() if templated else (FALLBACK_STOP,))
                o = res.outputs[0]
                messages.append({"role": "assistant", "content": o.text})
                summary = res.summary()
                click.echo(format_costs(summary, opts["engine"]), err=interactive)
                turns.append({"user": text, "assistant": o.text, "prompt": prompt, "token_ids": o.token_ids,
                              "finish_reason": o.finish_reason, "costs": summary})
                if not interactive:
                    break
        finally:
            session.close()
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    if json_path is not None:
        _write_json(json_path, {"config": {**session.config_dict(), "chat_template": templated},
                                "messages": messages, "turns": turns})


def _chat_prompt(tok, messages, templated: bool) -> str:
    if templated:
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"
