"""lm-evaluation-harness backend: the model ``dmoe`` serves every request through the DMoE protocol.

The harness's own command line runs it, ``lm_eval --model dmoe --model_args
'policy=JESA(0.9,8)' --tasks dmoe_mmlu_anatomy --include_path DIR``: lm-evaluation-harness
0.4 discovers no plugin entry points, so the start-up file ``dmoe_lm_eval_hook.pth`` (see
:mod:`dmoe_lm_eval_hook`; installed by a wheel, and by ``scripts/install.sh`` for an editable
install) registers ``dmoe`` as a lazy placeholder when the harness's registry loads.
Importing this module registers :class:`DMoELM` itself
(``lm_eval.api.registry.register_model``), so without the hook ``dmoe lm-eval ...`` (the
harness's command line with the model registered; also ``python -m
dmoe.integrations.lm_eval ...``) works, and in Python importing this module before
``lm_eval.simple_evaluate(model="dmoe", ...)`` does.

Model arguments (``--model_args key=value,...``; names as ``dmoe run``'s options):
``model`` (checkpoint, dense model or dmoe build; default SmolLM2-135M-Instruct carved),
``policy`` (default ``JESA(0.9,D)``), ``prefill_policy``, ``decode_policy``,
``num_experts`` (``K``), ``nodes`` (``N``), ``placement``, ``num_subcarriers`` (``M``),
``max_experts`` (``D``); the radio, as ``dmoe run``'s ``--system``, ``--noise-figure``,
``--tx-power-dbm``, ``--layout``, ``--pathloss``, ``--wire-dtype``,
``--hidden-state-bytes``: ``system`` (preset, default ``paper``), ``noise_figure`` [dB],
``tx_power_dbm`` [dBm], ``layout`` (``disk:R``, ``grid:D`` or a CSV file), ``pathloss``,
``wire_dtype`` (s0 = the model's hidden size in fp16 by default), ``hidden_state_bytes``
[byte], ``snr_db`` (paper preset only; default 10 dB); ``seed``, ``channel``,
``delay_spread``, ``speed_kmh``, ``carrier_ghz``, ``csi_error``, ``csi_delay``,
``channel_redraw``, ``comp_throughput``, ``combine``, ``device``, ``cache_dir``,
``profile``, ``engine``, ``ray_address``, ``node_failure_rate``, ``node_rejoin``,
``max_length`` (tokens per query, default the model's context capped at 2048),
``max_gen_toks`` (default 256), ``prefix_token_id`` (the token an empty context and a
rolling window start from; default the tokenizer's end of text, else its beginning of
text), ``energy_json`` (path of the energy report) and ``progress``. An unknown argument
is an error naming the accepted ones; a bad value (an unknown preset, a layout without
positions, ...) fails before the model loads. The harness's ``batch_size`` is accepted and
ignored: the protocol serves N queries per round (one per node), whatever the batch size.

How requests are served:

* ``loglikelihood``: consecutive requests with the same context (a multiple-choice
  question's options) are packed into one tree-shaped query
  (:func:`dmoe.data.pack_continuations`; context and continuation tokenised apart, as
  ``dmoe run`` does), N queries per round in the order received; the log-likelihood of each
  continuation is the sum of its tokens' log-probabilities (float64), exactly what
  ``dmoe run`` computes (:func:`dmoe.data.option_logliks`). With the shipped MMLU tasks
  (:mod:`dmoe.integrations.tasks`) the rounds are ``dmoe run``'s: the same channels, the
  same schedules, the same log-likelihoods, hence the same ``acc`` and energy.
* ``loglikelihood_rolling``: the harness's rolling windows of at most ``max_length``
  tokens (prefix: the end-of-text token), each a causal query scored at every predicted
  token, N windows per round.
* ``generate_until``: :func:`dmoe.runtime.generate.generate` (prefill, then one decode
  round per token, KV caches at the hosts), N prompts per batch, stopping at the
  request's ``until`` strings, the end-of-text token or ``max_gen_toks``; ``do_sample``,
  ``temperature`` and ``top_p`` are honoured (greedy by default).

The energy ledger beside the harness's metrics: after each call the backend logs the
energy [J] (communication, computation), rounds, tokens and air time [s] of each request
type (and for generation the prefill / decode split), and with ``energy_json=PATH`` writes
them with the deployment's configuration to PATH (strict JSON), rewritten after every
call. ``DMoELM.energy_report()`` returns the same dict.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from dmoe_lm_eval_hook import MODEL_NAME

__all__ = ["DMoELM", "MODEL_ARGS", "main", "parse_model_args"]

log = logging.getLogger("lm_eval.dmoe")

#: Accepted ``--model_args`` and their defaults (aliases: K, N, M, D).
MODEL_ARGS = {
    "model": None, "policy": None, "prefill_policy": None, "decode_policy": None, "num_experts": None,
    "nodes": None, "placement": None, "num_subcarriers": None, "max_experts": None, "snr_db": None, "seed": 0,
    "system": "paper", "noise_figure": None, "tx_power_dbm": None, "layout": None, "pathloss": None,
    "wire_dtype": None, "hidden_state_bytes": None,
    "channel": "rayleigh", "delay_spread": None, "speed_kmh": None, "carrier_ghz": None, "csi_error": 0.0,
    "csi_delay": 0, "channel_redraw": "layer", "comp_throughput": None, "combine": None, "device": None,
    "cache_dir": None, "profile": None, "engine": "local", "ray_address": None, "node_failure_rate": 0.0,
    "node_rejoin": True, "max_length": None, "max_gen_toks": 256, "energy_json": None, "progress": True,
    "prefix_token_id": None,
}
_ALIASES = {"K": "num_experts", "N": "nodes", "M": "num_subcarriers", "D": "max_experts"}
#: Passed by the harness itself (``--batch_size`` ...): accepted, not used.
_HARNESS_ARGS = ("batch_size", "max_batch_size")
#: Default cap of ``max_length`` [tokens].
MAX_LENGTH_CAP = 2048


def parse_model_args(arg_string: str | None) -> dict:
    """``"policy=JESA(0.9,8),K=32"`` -> ``{"policy": "JESA(0.9,8)", "K": 32}``: commas inside
    brackets do not split; values as the harness's command line reads them (numbers,
    booleans, else strings).

    Raises:
        ValueError: an item without ``=``.
    """
    import ast

    out = {}
    if not arg_string or not arg_string.strip():
        return out
    parts, buf, depth = [], [], 0
    for ch in arg_string:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        if ch == "," and depth == 0:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    for item in (p.strip() for p in parts):
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"`model_args`: expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        low = v.strip().lower()
        if low in ("true", "false"):
            val = low == "true"
        else:
            try:
                val = ast.literal_eval(v.strip())
                if not isinstance(val, (int, float)):
                    val = v.strip()
            except (ValueError, SyntaxError):
                val = v.strip()
        out[k.strip()] = val
    return out


@dataclass
class _CausalQuery:
    """A causal sequence scored at ``score_rows`` (what the runtime reads of a query)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    attention_mask: None
    score_rows: torch.Tensor
    score_targets: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


class DMoELM(LM):
    """The DMoE runtime as an lm-evaluation-harness language model (module docstring).

    Raises:
        ValueError: an unknown model argument (naming the accepted ones), a bad value
            (unknown policy, placement, channel, ...), a model without a tokenizer.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__()
        args = dict(MODEL_ARGS)
        unknown = []
        for k, v in kwargs.items():
            key = _ALIASES.get(k, k)
            if key in args:
                args[key] = v
            elif k in _HARNESS_ARGS or (k == "device" and v is None):
                continue
            else:
                unknown.append(k)
        if unknown:
            raise ValueError(
                f"unknown model argument(s) {', '.join(f'`{k}`' for k in sorted(unknown))} for the dmoe model; "
                f"accepted: {', '.join(sorted(MODEL_ARGS))} (aliases K, N, M, D)"
            )
        self.args = args
        from ..channels import DEFAULT_CARRIER_GHZ, DEFAULT_DELAY_SPREAD_NS, ChannelConfig
        from ..deployment import check_policy_name, deploy
        from ..runtime.faults import check_failure_rate
        from ..runtime.generate import context_length

        if args["engine"] not in ("local", "ray"):
            raise ValueError(f"`engine` must be 'local' or 'ray', got {args['engine']!r}")
        check_failure_rate(args["node_failure_rate"])
        for key in ("max_gen_toks", "max_length"):
            v = args[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"`{key}` must be an integer >= 1, got {v!r}")
        self.channel = ChannelConfig(
            model=str(args["channel"]).lower(),
            delay_spread_ns=DEFAULT_DELAY_SPREAD_NS if args["delay_spread"] is None else float(args["delay_spread"]),
            speed_kmh=None if args["speed_kmh"] is None else float(args["speed_kmh"]),
            carrier_ghz=DEFAULT_CARRIER_GHZ if args["carrier_ghz"] is None else float(args["carrier_ghz"]),
            csi_error=float(args["csi_error"]), csi_delay=int(args["csi_delay"]),
            layout=None if args["layout"] is None else str(args["layout"]),
            pathloss=None if args["pathloss"] is None else str(args["pathloss"]).lower(),
        )
        for key in ("policy", "prefill_policy", "decode_policy"):  # names checked before the model loads
            if args[key] is not None:
                check_policy_name(str(args[key]))
        self.deployment = deploy(
            model_source=args["model"], num_experts=args["num_experts"], num_nodes=args["nodes"],
            placement=args["placement"], num_subcarriers=args["num_subcarriers"], snr_db=args["snr_db"],
            comp_throughput_tokens_per_s=args["comp_throughput"], combine=args["combine"], device=args["device"],
            cache_dir=args["cache_dir"], max_experts=args["max_experts"], seed=int(args["seed"]),
            progress=bool(args["progress"]), preset=args["system"], noise_figure_db=args["noise_figure"],
            tx_power_dbm=args["tx_power_dbm"], channel=self.channel, wire_dtype=args["wire_dtype"],
            hidden_state_bytes=args["hidden_state_bytes"],
        )
        dep = self.deployment
        self.tokenizer = dep.model.tokenizer
        if self.tokenizer is None:
            raise ValueError(f"the model {args['model']!r} has no tokenizer: the harness sends text")
        self.policy, self.prefill_policy, self.decode_policy = dep.policies(
            *(None if args[k] is None else str(args[k]) for k in ("policy", "prefill_policy", "decode_policy")),
            max_experts=args["max_experts"], profile=args["profile"], cache_dir=args["cache_dir"], log=log.info)
        self.runtime = dep.runtime(self.policy, channel_redraw=str(args["channel_redraw"]), engine=args["engine"],
                                   ray_address=args["ray_address"], node_failure_rate=float(args["node_failure_rate"]),
                                   node_rejoin=bool(args["node_rejoin"]))
        ctx = context_length(dep.model)
        self.max_length = int(args["max_length"]) if args["max_length"] else min(ctx or MAX_LENGTH_CAP, MAX_LENGTH_CAP)
        if ctx is not None and self.max_length > ctx:
            raise ValueError(f"`max_length` ({self.max_length}) exceeds the model's context of {ctx} tokens")
        self.max_gen_toks = int(args["max_gen_toks"])
        eot = args["prefix_token_id"]
        if eot is None:
            eot = getattr(self.tokenizer, "eos_token_id", None)
        if eot is None:
            eot = getattr(self.tokenizer, "bos_token_id", None)
        if eot is not None and (isinstance(eot, bool) or not isinstance(eot, int) or not 0 <= eot < dep.model.vocab_size):
            raise ValueError(f"`prefix_token_id` must be a token id in [0, {dep.model.vocab_size}), got {eot!r}")
        self.prefix_token_id = None if eot is None else int(eot)
        self._report = {"config": self._config(), "requests": {}}

    # ------------------------------------------------------------------ harness API
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "DMoELM":
        """Like the harness's, but commas inside brackets do not split (``policy=JESA(0.9,8)``)."""
        return cls._create(parse_model_args(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "DMoELM":
        return cls._create(dict(arg_dict), additional_config)

    @classmethod
    def _create(cls, args: dict, additional_config: dict | None) -> "DMoELM":
        """The harness adds ``batch_size``, ``max_batch_size`` (ignored) and its ``--device``
        (default "cuda"): used for the model unless ``device`` is a model argument, and only
        when that device exists here (else the model stays on the CPU)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        device = extra.pop("device", None)
        if device is not None and "device" not in args:
            if str(device).startswith("cuda") and not torch.cuda.is_available():
                log.info("dmoe: --device %s is not available here; the model runs on the CPU", device)
            else:
                args["device"] = device
        return cls(**args, **extra)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or "dmoe").replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        """The tokenizer's chat template applied to ``chat_history`` (text, not token ids)."""
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Log-likelihood of each continuation given its context [nat] and whether greedy
        decoding would produce it (module docstring)."""
        from ..data.packing import option_logliks, pack_continuations

        if not requests:
            return []
        groups = []  # [(context ids, [(request index, continuation ids)])]
        last_key = None
        for i, req in enumerate(requests):
            context, continuation = req.args
            if not continuation:
                raise ValueError(f"request {i}: the continuation is empty")
            n = len(context) - len(context.rstrip())
            if n:  # a context's trailing spaces belong to the continuation (the harness's rule)
                context, continuation = context[:-n], context[-n:] + continuation
            key = (context, getattr(req, "doc_id", None), getattr(req, "task_name", None))
            cont = self._encode(continuation)
            if not cont:
                raise ValueError(f"request {i}: the continuation {continuation!r} tokenises to nothing")
            if key != last_key:
                ctx = self._encode(context)
                if not ctx:
                    if self.prefix_token_id is None:
                        raise ValueError(f"request {i}: an empty context needs an end-of-text token")
                    ctx = [self.prefix_token_id]
                groups.append((ctx, []))
                last_key = key
            groups[-1][1].append((i, cont))
        queries = []
        for ctx, items in groups:
            longest = max(len(c) for _, c in items)
            if longest >= self.max_length:
                raise ValueError(f"a continuation of {longest} tokens does not fit `max_length` = {self.max_length}")
            ctx = ctx[-(self.max_length - longest):]  # left-truncated, as the harness's HF model does
            queries.append(pack_continuations(ctx, [c for _, c in items]))
        out: list = [None] * len(requests)
        with self._charged("loglikelihood", len(requests)):
            logits = self._serve(queries, "loglikelihood", disable_tqdm)
            for (ctx, items), q, lg in zip(groups, queries, logits):
                # dmoe run's own sums (float64), so that the harness's arg max is dmoe run's
                ll = option_logliks(lg, q)
                greedy = lg.argmax(dim=-1) == q.score_targets
                for k, (i, _) in enumerate(items):
                    out[i] = (float(ll[k]), bool(greedy[q.score_option == k].all()))
        for req, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood [nat] of each whole string, in rolling windows of ``max_length``."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        if not requests:
            return []
        if self.prefix_token_id is None:
            raise ValueError("loglikelihood_rolling needs an end-of-text (or beginning-of-text) token: "
                             "give `prefix_token_id`")
        windows, owner = [], []
        for i, req in enumerate(requests):
            (text,) = req.args
            ids = self._encode(text)
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    ids, self.prefix_token_id, self.max_length, context_len=1)):
                seq = torch.tensor(ctx + cont, dtype=torch.long)
                c = len(ctx)
                windows.append(_CausalQuery(seq, torch.arange(seq.numel()), None,
                                            torch.arange(c - 1, c - 1 + len(cont)), torch.tensor(cont)))
                owner.append(i)
        totals = [0.0] * len(requests)
        with self._charged("loglikelihood_rolling", len(requests)):
            logits = self._serve(windows, "loglikelihood_rolling", disable_tqdm)
            for i, w, lg in zip(owner, windows, logits):
                logp = torch.log_softmax(lg.double(), dim=-1)
                totals[i] += float(logp.gather(1, w.score_targets[:, None]).sum())
        for req, res in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, res)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Generated text of each request, cut before its first ``until`` string."""
        from ..runtime.generate import GenerationConfig, generate
        from ..runtime.sampling import SamplingParams

        if not requests:
            return []
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out: list = [None] * len(requests)
        with self._charged("generate_until", len(requests)) as rec:
            for key, idx in groups.items():
                kw = dict(requests[idx[0]].args[1] or {})
                until = kw.pop("until", None) or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(kw.pop("max_gen_toks", self.max_gen_toks))
                do_sample = bool(kw.pop("do_sample", False))
                temperature = float(kw.pop("temperature", 0.0) or 0.0)
                top_p = float(kw.pop("top_p", 1.0) or 1.0)
                if kw:
                    log.warning("dmoe: ignoring generation arguments %s", sorted(kw))
                sampling = SamplingParams(temperature if do_sample else 0.0, top_p if do_sample else 1.0,
                                          seed=int(self.args["seed"]))
                if max_new >= self.max_length:
                    raise ValueError(f"`max_gen_toks` ({max_new}) must be below `max_length` ({self.max_length})")
                prompts = [self._encode(requests[i].args[0])[-(self.max_length - max_new):] or
                           [self.prefix_token_id] for i in idx]
                cfg = GenerationConfig(max_new_tokens=max_new, sampling=sampling, stop=tuple(s for s in until if s))
                res = generate(self.runtime, prompts, cfg, prefill_policy=self.prefill_policy,
                               decode_policy=self.decode_policy)
                for i, o in zip(idx, res.outputs):
                    out[i] = o.text
                for phase in ("prefill", "decode", "rebuild"):
                    part = getattr(res, phase).to_dict()
                    acc = rec.setdefault(phase, {k: 0 for k in part})
                    for k, v in part.items():
                        acc[k] += v
                rec["output_tokens"] = rec.get("output_tokens", 0) + res.output_tokens
        for req, res in zip(requests, out):
            self.cache_hook.add_partial("generate_until", req.args, res)
        return out

    # ------------------------------------------------------------------ serving
    def _serve(self, queries, what: str, disable_tqdm: bool) -> list[torch.Tensor]:
        """Serve ``queries`` N per round (query i of a round on node i); their logits."""
        rt = self.runtime
        rt.policy = self.policy
        n = rt.num_nodes
        out = []
        bar = tqdm(range(0, len(queries), n), desc=f"dmoe {what}", unit="round",
                   disable=disable_tqdm or not self.args["progress"])
        for b in bar:
            out.extend(rt.run_round(queries[b:b + n]).logits)
        return out

    class _Charge:
        def __init__(self, lm, what, count):
            self.lm, self.what, self.count, self.rec = lm, what, count, {}

        def __enter__(self):
            rt = self.lm.runtime
            self.before = (rt.ledger.energy_j, rt.ledger.energy_comm_j, rt.ledger.energy_comp_j, rt.rounds,
                           int(rt.ledger.per_layer().tokens[0]), time.perf_counter())
            return self.rec

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                self.lm._record(self.what, self.count, self.before, self.rec)

    def _charged(self, what: str, count: int):
        return self._Charge(self, what, count)

    def _record(self, what: str, count: int, before, extra: dict) -> None:
        rt = self.runtime
        led = rt.ledger
        lat = rt.latency.layer_round_s
        rounds = range(before[3], rt.rounds)
        entry = {
            "requests": count,
            "energy_j": led.energy_j - before[0],
            "energy_comm_j": led.energy_comm_j - before[1],
            "energy_comp_j": led.energy_comp_j - before[2],
            "rounds": len(rounds),
            "tokens": int(led.per_layer().tokens[0]) - before[4],
            "air_time_s": float(lat[[r for r in rounds if r < lat.shape[0]]].sum()) if len(rounds) else 0.0,
            "wall_s": time.perf_counter() - before[5],
            **extra,
        }
        acc = self._report["requests"].get(what)
        if acc is None:
            self._report["requests"][what] = entry
        else:
            for k, v in entry.items():
                if isinstance(v, dict):
                    for kk, vv in v.items():
                        acc.setdefault(k, {}).setdefault(kk, 0)
                        acc[k][kk] += vv
                else:
                    acc[k] = acc.get(k, 0) + v
        self._report["total"] = {
            "energy_j": led.energy_j, "energy_comm_j": led.energy_comm_j, "energy_comp_j": led.energy_comp_j,
            "rounds": rt.rounds, "air_time_s": float(lat.sum()), "node_failures": rt.faults.failures,
            "rehosted_queries": rt.faults.rehosted,
        }
        e = self._report["requests"][what]
        log.info("dmoe energy ledger, %s: %d requests, %.6g J (comm %.6g J, comp %.6g J), %d rounds, %d tokens, "
                 "air time %.6g s", what, e["requests"], e["energy_j"], e["energy_comm_j"], e["energy_comp_j"],
                 e["rounds"], e["tokens"], e["air_time_s"])
        path = self.args["energy_json"]
        if path:
            Path(path).write_text(json.dumps(self._report, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    def energy_report(self) -> dict:
        """``{"config": ..., "requests": {type: energy, rounds, tokens, air time, ...}, "total": ...}``."""
        return json.loads(json.dumps(self._report))

    def _config(self) -> dict:
        dep = self.deployment
        return {
            **dep.describe(),
            "policies": {"loglikelihood": self.policy.name, "prefill": self.prefill_policy.name,
                         "decode": self.decode_policy.name},
            "seed": int(self.args["seed"]),
            "channel_redraw": self.args["channel_redraw"],
            "engine": self.args["engine"],
            "node_failure_rate": float(self.args["node_failure_rate"]),
            "max_length": self.max_length,
        }

    def __del__(self) -> None:  # the engine's processes (Ray) go with the model
        rt = getattr(self, "runtime", None)
        if rt is not None:
            try:
                rt.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


def main(argv=None) -> None:
    """The harness's command line with the ``dmoe`` model registered (``dmoe lm-eval``)."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    if argv is None:
        cli_evaluate()
        return
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":  # pragma: no cover
    # the module under its own name registers the model (a copy named __main__ would clash
    # with the placeholder of dmoe_lm_eval_hook)
    from dmoe.integrations.lm_eval import main as _main

    _main()
else:
    # the harness's own models: its get_model imports them only into an empty registry
    import lm_eval.models  # noqa: F401

    register_model(MODEL_NAME)(DMoELM)
