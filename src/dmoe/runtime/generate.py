"""Autoregressive generation through the DMoE protocol (issue 17).

Up to N prompts form a batch, prompt q hosted on node q (protocol step 1). The batch's
**prefill** is one query round over the whole prompts, as :meth:`DMoERuntime.run_round`
serves a question, except that each host keeps its queries' keys and values at every
attention block (a KV cache, :class:`~dmoe.model.kv_cache.KVCache`; eq 6: every node
holds every attention block). Its last-row logits give every query its first new token.
Then every **decode step** is one more query round: each unfinished query feeds the token
it just produced (one hidden state per query per layer round), and at every layer the
policy schedules those tokens on that round's channel (the channel process advances, the
energy and latency ledgers charge the round) exactly as in the prefill. A query stops at
``max_new_tokens``, at a stop token (the tokenizer's end of sequence) or when its text
contains a stop string (the text is cut before it); finished queries are released and the
batch goes on with the others. Prompts beyond N wait for the next batch.

``prefill_policy`` and ``decode_policy`` may differ (decode rounds carry one token per
query and are latency-bound on the radio); the runtime's policy serves both by default.

**Node loss.** A host that dies loses its queries' KV caches. The server drops such a
query from the round (:meth:`DMoERuntime.serve`), and the batch re-hosts it on the
least-loaded live node and **rebuilds** its cache at once: one more query round over all
its tokens so far (prompt, generated tokens and the token of the interrupted step), from
the embedding, scheduled and charged like a prefill (``rebuild`` in the report; its
rounds are also part of their phase). Its last-row logits are the interrupted step's, so
no query is lost and, with a deterministic policy and greedy decoding, the text is the
same as without the fault. Failed nodes rejoin at the next round (``node_rejoin``).

**Costs on the radio ledger.** Prefill and decode are reported apart
(:class:`PhaseCost`): energy [J] (communication and computation), air time [s] (the sum
over a phase's query rounds of their layer rounds' completion times, :mod:`dmoe.latency`),
rounds and tokens. Time to first token (TTFT) is the air time of a query's prefill round;
time per output token (TPOT) is the air time of the decode rounds a query took part in
over its output tokens after the first. All of it comes from the runtime's ledgers, read
before and after each round, so a runtime can serve other work too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .node import HostedQuery
from .sampling import SamplingParams, TokenSampler
from .server import DMoERuntime, RoundState

__all__ = [
    "FINISH_REASONS",
    "GenerationConfig",
    "GenerationOutput",
    "GenerationResult",
    "PhaseCost",
    "context_length",
    "generate",
]

#: Why a query stopped: its token budget, a stop token (end of sequence), a stop string.
FINISH_REASONS = ("length", "eos", "stop")


@dataclass(frozen=True)
class GenerationConfig:
    """What to generate.

    Attributes:
        max_new_tokens: the most tokens generated per prompt, >= 1.
        sampling: :class:`~dmoe.runtime.sampling.SamplingParams` (default greedy).
        stop: stop strings: a query stops when its generated text contains one, and its
            text is cut before the first one (needs a tokenizer).
        stop_token_ids: token ids that end a query (kept in ``token_ids``, not in the
            text); None: the tokenizer's ``eos_token_id`` (none without a tokenizer).

    Raises:
        ValueError: ``max_new_tokens`` < 1 or not an integer; an empty stop string;
            negative stop token ids.
    """

    max_new_tokens: int = 64
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"`max_new_tokens` must be an integer >= 1, got {n!r}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"`stop` strings must be non-empty strings, got {s!r}")
        if self.stop_token_ids is not None:
            ids = tuple(int(t) for t in self.stop_token_ids)
            if any(t < 0 for t in ids):
                raise ValueError(f"`stop_token_ids` must be token ids >= 0, got {self.stop_token_ids!r}")
            object.__setattr__(self, "stop_token_ids", ids)
        if not isinstance(self.sampling, SamplingParams):
            raise TypeError(f"`sampling` must be a SamplingParams, got {type(self.sampling).__name__}")


@dataclass
class PhaseCost:
    """What one phase (prefill, decode, or the rebuilds within them) cost on the ledgers.

    Attributes:
        energy_j, energy_comm_j, energy_comp_j: energy spent [J].
        air_time_s: sum of the phase's layer-round completion times [s].
        rounds: query rounds.
        tokens: tokens fed through the layers (prompt tokens, decoded tokens, rebuilt tokens).
    """

    energy_j: float = 0.0
    energy_comm_j: float = 0.0
    energy_comp_j: float = 0.0
    air_time_s: float = 0.0
    rounds: int = 0
    tokens: int = 0

    def add(self, other: "PhaseCost") -> None:
        for f in ("energy_j", "energy_comm_j", "energy_comp_j", "air_time_s", "rounds", "tokens"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def to_dict(self) -> dict:
        return {"energy_j": self.energy_j, "energy_comm_j": self.energy_comm_j, "energy_comp_j": self.energy_comp_j,
                "air_time_s": self.air_time_s, "rounds": self.rounds, "tokens": self.tokens}


@dataclass
class GenerationOutput:
    """One prompt's generation.

    Attributes:
        prompt_ids: the prompt's token ids.
        token_ids: the generated token ids (a final stop token included).
        text: the generated text without special tokens (cut before a stop string), or
            None without a tokenizer.
        finish_reason: ``"length"``, ``"eos"`` or ``"stop"``.
        ttft_s: time to first token on the radio ledger [s] (its prefill round's air time).
        decode_air_time_s: air time of the decode rounds it took part in [s].
        logits: ``[len(token_ids), V]`` float32, the logits each token was chosen from
            (only with ``return_logits``).
        selections: ``[num_layers, len(prompt_ids) + len(token_ids) - 1, num_experts]``
            bool, the experts that processed every token fed through the layers (only when
            the runtime has ``record_selection``; a rebuilt query's rows are the rebuild's).
    """

    prompt_ids: list[int]
    token_ids: list[int]
    text: str | None
    finish_reason: str
    ttft_s: float = 0.0
    decode_air_time_s: float = 0.0
    logits: torch.Tensor | None = None
    selections: np.ndarray | None = None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first [s] (None with a single token)."""
        n = len(self.token_ids) - 1
        return self.decode_air_time_s / n if n > 0 else None


@dataclass
class GenerationResult:
    """Everything :func:`generate` produced and spent.

    Attributes:
        outputs: one :class:`GenerationOutput` per prompt, in order.
        prefill, decode: :class:`PhaseCost` of the prefill rounds and of the decode rounds
            (rebuilds included in the phase they interrupted).
        rebuild: the rebuild rounds alone (node loss; already in ``prefill``/``decode``).
        rehosted: re-hosts with a rebuilt cache (a query that loses two hosts counts twice).
        wall_s: wall-clock time [s].
        policies: ``{"prefill": name, "decode": name}``.
    """

    outputs: list[GenerationOutput]
    prefill: PhaseCost
    decode: PhaseCost
    rebuild: PhaseCost
    rehosted: int = 0
    wall_s: float = 0.0
    policies: dict = field(default_factory=dict)

    @property
    def output_tokens(self) -> int:
        return sum(len(o.token_ids) for o in self.outputs)

    def summary(self) -> dict:
        """JSON-ready (strict: no NaN) totals and per-token figures."""
        n_out = self.output_tokens
        n_dec = sum(max(len(o.token_ids) - 1, 0) for o in self.outputs)
        energy = self.prefill.energy_j + self.decode.energy_j
        ttft = [o.ttft_s for o in self.outputs]
        tpot = [o.tpot_s for o in self.outputs if o.tpot_s is not None]
        return {
            "policies": dict(self.policies),
            "prompts": len(self.outputs),
            "prompt_tokens": sum(len(o.prompt_ids) for o in self.outputs),
            "output_tokens": n_out,
            "energy_j": energy,
            "energy_per_output_token_mj": 1e3 * energy / n_out if n_out else None,
            "prefill": self.prefill.to_dict(),
            "decode": {**self.decode.to_dict(),
                       "energy_per_token_mj": 1e3 * self.decode.energy_j / n_dec if n_dec else None},
            "rebuild": {**self.rebuild.to_dict(), "rehosted_queries": self.rehosted},
            "ttft_s": float(np.mean(ttft)) if ttft else None,
            "tpot_s": float(np.mean(tpot)) if tpot else None,
            "air_time_s": self.prefill.air_time_s + self.decode.air_time_s,
            "wall_s": self.wall_s,
            "tokens_per_s_wall": n_out / self.wall_s if self.wall_s > 0 else None,
            "finish_reasons": [o.finish_reason for o in self.outputs],
        }


def context_length(model) -> int | None:
    """The model's context window [tokens] (``config.max_position_embeddings``), or None."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if n else None


def _prompt_ids(model, prompt) -> list[int]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("`prompts`: a prompt is empty (or only whitespace)")
        if model.tokenizer is None:
            raise ValueError("`prompts`: the model has no tokenizer; give token ids")
        return [int(i) for i in model.tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    ids = [int(i) for i in (prompt.tolist() if isinstance(prompt, torch.Tensor) else prompt)]
    return ids


def generate(
    runtime: DMoERuntime,
    prompts: Sequence[str | Sequence[int] | torch.Tensor],
    config: GenerationConfig | None = None,
    *,
    prefill_policy=None,
    decode_policy=None,
    on_text: Callable[[int, str], None] | None = None,
    on_token: Callable[[int, int], None] | None = None,
    return_logits: bool = False,
) -> GenerationResult:
    """Generate a continuation of every prompt through the DMoE protocol (module docstring).

    Parameters
    ----------
    runtime : DMoERuntime
        The edge server (model, system, channel, engine); its ledgers are charged.
    prompts : sequence of str, or of token ids ``[P]``
        Strings need the model's tokenizer (encoded without special tokens: apply a chat
        template before, as ``dmoe chat`` does).
    config : GenerationConfig, optional
        Default: 64 greedy tokens.
    prefill_policy, decode_policy : Policy, optional
        Policies of the prefill and of the decode rounds (default the runtime's policy).
    on_text : callable(query, text), optional
        Streaming: called with each new piece of a query's text as soon as it is final
        (text that might still turn out to start a stop string, or an incomplete UTF-8
        character, is held back until it is decided).
    on_token : callable(query, token_id), optional
        Called with every generated token (test hook: it may kill a node).
    return_logits : bool
        Keep the logits every token was chosen from (``GenerationOutput.logits``).

    Returns
    -------
    GenerationResult

    Raises
    ------
    ValueError
        Before any round: no prompt, an empty prompt, a prompt longer than the context or
        plus ``max_new_tokens`` beyond the model's context, stop strings without a tokenizer, token ids out of
        the vocabulary.
    NoLiveNodeError
        Every node has failed.
    """
    cfg = config or GenerationConfig()
    if not isinstance(cfg, GenerationConfig):
        raise TypeError(f"`config` must be a GenerationConfig, got {type(cfg).__name__}")
    model = runtime.model
    if len(prompts) == 0:
        raise ValueError("`prompts` must hold at least one prompt")
    ids = [_prompt_ids(model, p) for p in prompts]
    vocab = int(model.vocab_size)
    ctx = context_length(model)
    for i, p in enumerate(ids):
        if not p:
            raise ValueError(f"`prompts`[{i}] is empty (zero tokens)")
        if min(p) < 0 or max(p) >= vocab:
            raise ValueError(f"`prompts`[{i}] holds token ids outside the vocabulary [0, {vocab})")
        if ctx is not None and len(p) + cfg.max_new_tokens > ctx:
            raise ValueError(
                f"`prompts`[{i}] ({len(p)} tokens) plus `max_new_tokens` ({cfg.max_new_tokens}) exceed the model's "
                f"context of {ctx} tokens" + (" (the prompt alone fills it)" if len(p) >= ctx else ""))
    if cfg.stop and model.tokenizer is None:
        raise ValueError("`stop` strings need the model's tokenizer")
    stop_ids = cfg.stop_token_ids
    if stop_ids is None:
        eos = getattr(model.tokenizer, "eos_token_id", None) if model.tokenizer is not None else None
        stop_ids = () if eos is None else ((int(eos),) if np.ndim(eos) == 0 else tuple(int(e) for e in eos))
    prefill = prefill_policy if prefill_policy is not None else runtime.policy
    decode = decode_policy if decode_policy is not None else runtime.policy
    result = GenerationResult([], PhaseCost(), PhaseCost(), PhaseCost(),
                              policies={"prefill": _name(prefill), "decode": _name(decode)})
    start = time.perf_counter()
    base = runtime.policy
    try:
        n_nodes = runtime.num_nodes
        for b in range(0, len(ids), n_nodes):
            batch = _Batch(runtime, ids[b:b + n_nodes], b, cfg, frozenset(stop_ids), prefill, decode, on_text,
                           on_token, return_logits, result)
            result.outputs.extend(batch.run())
    finally:
        runtime.policy = base
    result.wall_s = time.perf_counter() - start
    return result


def _name(policy) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


class _Batch:
    """Up to N prompts decoded together (module docstring)."""

    def __init__(self, runtime, prompts, offset, cfg, stop_ids, prefill, decode, on_text, on_token,
                 return_logits, result: GenerationResult):
        self.rt = runtime
        self.cfg = cfg
        self.stop_ids = stop_ids
        self.policies = {"prefill": prefill, "decode": decode}
        self.on_text = on_text
        self.on_token = on_token
        self.result = result
        self.tok = runtime.model.tokenizer
        n = len(prompts)
        self.prompts = prompts
        # per query: the tokens its KV cache holds once the current round completes
        self.fed = [list(p) for p in prompts]
        self.samplers = [TokenSampler(cfg.sampling, offset + q) for q in range(n)]
        self.out = [GenerationOutput(list(p), [], None if self.tok is None else "", "length") for p in prompts]
        self.logits: list[list[torch.Tensor]] | None = [[] for _ in range(n)] if return_logits else None
        self.emitted = [0] * n
        self.selections: list[np.ndarray | None] = [None] * n
        self.holdback = max((len(s) for s in cfg.stop), default=1) - 1
        hosted = [HostedQuery(q, torch.tensor(p, dtype=torch.long), torch.arange(len(p)), None,
                              torch.tensor([len(p) - 1]), cached=True) for q, p in enumerate(prompts)]
        self.st = RoundState.new(hosted, runtime.up)

    # ------------------------------------------------------------------ rounds
    def _round(self, phase: str, qids, *, rebuild: bool = False) -> dict[int, torch.Tensor]:
        """One query round of the active queries ``qids``; charges its cost to ``phase``."""
        rt, st = self.rt, self.st
        rt.policy = self.policies[phase]
        led = rt.ledger
        before = (led.energy_j, led.energy_comm_j, led.energy_comp_j)
        r = rt.start_round()
        st.active = list(qids)
        if rebuild:
            rt.place(r, st, st.active)
        elif phase == "prefill":
            rt.place(r, st, st.active)
        else:
            rt.extend(r, st, st.active)
        record = None
        if rt.record_selection:
            shape = (int(rt.model.num_layers), int(rt.model.num_experts))
            record = {q: np.zeros((shape[0], st.tokens[q], shape[1]), dtype=bool) for q in qids}
        logits = rt.serve(r, st, record)
        if record is not None:
            for q in logits:
                old = self.selections[q]
                self.selections[q] = record[q] if phase == "prefill" or rebuild or old is None \
                    else np.concatenate([old, record[q]], axis=1)
        lat = rt.latency.layer_round_s
        air = float(lat[r].sum()) if r < lat.shape[0] else 0.0
        cost = PhaseCost(led.energy_j - before[0], led.energy_comm_j - before[1], led.energy_comp_j - before[2],
                         air, 1, int(sum(st.tokens[q] for q in qids)))
        getattr(self.result, phase).add(cost)
        if rebuild:
            self.result.rebuild.add(cost)
        for q in qids:
            if phase == "prefill":
                self.out[q].ttft_s += air
            else:
                self.out[q].decode_air_time_s += air
        return logits

    def _rebuild(self, phase: str, logits: dict) -> None:
        """Re-host every lost query and rebuild its KV cache from its tokens (module docstring)."""
        st, rt = self.st, self.rt
        while st.lost:
            qids = sorted(st.lost)
            for q in qids:
                p = self.fed[q]
                st.hosted[q] = HostedQuery(q, torch.tensor(p, dtype=torch.long), torch.arange(len(p)), None,
                                           torch.tensor([len(p) - 1]), cached=True)
                st.tokens[q] = len(p)
                st.ckpt[q] = None
                st.host[q] = -1
            active = list(st.active)
            got = self._round(phase, qids, rebuild=True)
            for q in qids:
                if q in got:
                    rt.faults.record(rt.rounds - 1, None, int(st.host[q]), f"rebuild:{q}:{len(self.fed[q])}")
                    self.result.rehosted += 1
                    logits.setdefault(q, got[q])
            st.active = active

    def run(self) -> list[GenerationOutput]:
        n = len(self.prompts)
        logits = self._round("prefill", range(n))
        self._rebuild("prefill", logits)
        live = self._advance(list(range(n)), logits)
        while live:
            for q in live:
                tok = self.out[q].token_ids[-1]
                pos = len(self.fed[q])
                self.fed[q].append(tok)
                self.st.hosted[q] = HostedQuery(q, torch.tensor([tok]), torch.tensor([pos]), None, torch.tensor([0]),
                                                cached=True)
                self.st.tokens[q] = 1
                self.st.ckpt[q] = None
            logits = self._round("decode", live)
            self._rebuild("decode", logits)
            live = self._advance(live, logits)
        for q in range(n):
            if self.logits is not None:
                self.out[q].logits = torch.stack(self.logits[q]) if self.logits[q] else None
            self.out[q].selections = self.selections[q]
        return self.out

    # ------------------------------------------------------------------ tokens
    def _advance(self, qids, logits: dict) -> list[int]:
        """Choose every query's next token; finish queries; returns the ones still going."""
        live, done = [], []
        for q in qids:
            row = logits[q][-1].float()
            if self.logits is not None:
                self.logits[q].append(row.clone())
            tok = self.samplers[q](row)
            o = self.out[q]
            o.token_ids.append(tok)
            if self.on_token is not None:
                self.on_token(q, tok)
            finished = self._text(q, tok)
            if not finished and tok in self.stop_ids:
                o.finish_reason, finished = "eos", True
                self._flush(q)
            if not finished and len(o.token_ids) >= self.cfg.max_new_tokens:
                finished = True
                self._flush(q)
            (done if finished else live).append(q)
        if done:
            self.rt.release(self.st, done)
        self.st.active = list(live)
        return live

    def _text(self, q: int, tok: int) -> bool:
        """Update query q's text; True when it hit a stop string (text cut before it)."""
        if self.tok is None:
            return False
        o = self.out[q]
        ids = [t for t in o.token_ids if t not in self.stop_ids]
        # special tokens (<|endoftext|>, chat markers) are control, not text
        full = self.tok.decode(ids, skip_special_tokens=True) if ids else ""
        cut = [full.find(s) for s in self.cfg.stop if s in full]
        if cut:
            o.text = full[:min(cut)]
            o.finish_reason = "stop"
            self._emit(q, len(o.text))
            return True
        o.text = full
        safe = len(full) - self.holdback
        while safe > self.emitted[q] and full[safe - 1] == "\ufffd":
            safe -= 1
        self._emit(q, safe)
        return False

    def _flush(self, q: int) -> None:
        if self.out[q].text is not None:
            self._emit(q, len(self.out[q].text))

    def _emit(self, q: int, upto: int) -> None:
        if self.on_text is not None and upto > self.emitted[q]:
            self.on_text(q, self.out[q].text[self.emitted[q]:upto])
        self.emitted[q] = max(self.emitted[q], upto)
