"""Multiple-choice evaluation of a policy through the DMoE runtime.

Accuracy: the option with the highest log-likelihood of its text given the prompt is the
model's answer. Mean NLL: the mean over questions of ``-log p(correct answer text |
prompt)`` [nat] (DESIGN.md "Scoring": SmolLM2-135M is near chance on MMLU, so the NLL
carries the signal). Against the full model (:mod:`dmoe.runtime.quality`): agreement of the
chosen answers, mean KL(p_full || p_policy) over the scored tokens, and perplexity on
held-out text served through the runtime with the same policy (its energy is kept out of
the MMLU ledger).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..channels import ChannelConfig
from ..data.packing import PackedQuery, PackedText, option_logliks
from ..system import SystemConfig
from .engine import Engine
from .faults import NodeKill, NoLiveNodeError
from .ledger import LayerTotals
from .quality import FullReference, full_reference, perplexity, text_nll, token_kl
from .server import DMoERuntime


@dataclass
class PolicyResult:
    """Outcome of one policy on one set of questions.

    Attributes
    ----------
    policy : str
        The policy's name, e.g. ``"JESA(0.9,2)"``.
    accuracy : float
        Fraction of questions answered correctly, in [0, 1].
    mean_nll : float
        Mean negative log-likelihood of the correct answer's text [nat].
    energy_j, energy_comm_j, energy_comp_j : float
        Total, communication and computation energy over the whole run [J].
    num_questions, num_tokens : int
        Questions answered and tokens processed (per layer).
    per_layer : LayerTotals
        Per-layer arrays ``[num_layers]`` of energy, tokens and transmissions.
    selection_counts : ndarray [num_layers, num_experts], int
        Tokens processed by each expert at each layer.
    logliks : ndarray [num_questions, 4], float64
        Log-likelihood of every option [nat].
    answers : ndarray [num_questions], int
        Index of the correct option.
    seconds : float
        Wall-clock time of the run [s].
    energy_planned_j : float
        Energy the schedules planned on the server's channel estimate [J] (equal to
        ``energy_j`` with perfect CSI).
    failed_attempts, dropped_tokens : int
        Lost packets (retransmitted, or their link declared failed) and token transfers
        that never reached their expert (:mod:`dmoe.runtime.transfer`).
    latency_layer_round_s : ndarray [num_rounds, num_layers], float64
        Completion time of every layer round [s] (:mod:`dmoe.latency`).
    latency_query_s : ndarray [num_questions], float64
        Latency of each query: the sum of its query round's layer-round times [s].
        Wall-clock time of the run [s] (MMLU questions and held-out texts).
    agreement : float
        Fraction of questions where the policy's chosen option equals the full model's, in [0, 1].
    mean_kl : float
        KL(p_full || p_policy) [nat] of the next-token distribution, averaged over all
        scored tokens of all questions.
    perplexity : float or None
        ``exp(mean NLL per token)`` on the held-out texts; None when no text was given.
    full_choices : ndarray [num_questions], int
        The full model's chosen option.
    kl_per_question : ndarray [num_questions], float64
        Mean KL over each question's scored tokens [nat/token].
    scored_tokens : ndarray [num_questions], int
        Scored tokens of each question (``score_rows``); ``mean_kl`` is the
        ``scored_tokens``-weighted mean of ``kl_per_question``.
    text_nll : ndarray [num_texts], float64
        NLL of each held-out text summed over its predicted tokens [nat].
    text_tokens : ndarray [num_texts], int
        Predicted tokens of each held-out text.
    engine : str
        ``"local"`` or ``"ray"``.
    rounds : int
        Query rounds served.
    node_failures, replans, rehosted_queries, node_joins : int
        Node loss and recovery (:class:`~dmoe.runtime.faults.FaultLog`).
    energy_lost_j, energy_rehost_j : float
        Energy of failed layer-round attempts and of re-host transfers [J] (both already
        inside ``energy_j``).
    complete : bool
        False when the run stopped early (every node failed): then the numbers cover
        the ``num_questions`` questions answered before.
    round_seconds : float or None
        Wall-clock time of the MMLU rounds alone [s] (None: ``seconds``).
    latency_air_s : ndarray [num_rounds, num_layers], float64, or None
        Air time on the critical path of every layer round [s] (the rest of
        ``latency_layer_round_s`` is FFN time; :func:`dmoe.runtime.ledger.critical_air_time`).
    link_rates_bps, link_loads : ndarray [num_loaded_links], float64, or None
        Rate [bit/s] and hidden states carried of every loaded remote link of every layer round.
    energy_always_on_j : float
        Of ``energy_comp_j``, the always-on part (shared experts, dense layers) charged at
        the source nodes [J]; the same for every policy, 0 for the carved model.
    """

    policy: str
    accuracy: float
    mean_nll: float
    energy_j: float
    energy_comm_j: float
    energy_comp_j: float
    num_questions: int
    num_tokens: int
    per_layer: LayerTotals
    selection_counts: np.ndarray
    logliks: np.ndarray
    answers: np.ndarray
    seconds: float = 0.0
    energy_planned_j: float | None = None
    failed_attempts: int = 0
    dropped_tokens: int = 0
    latency_layer_round_s: np.ndarray | None = None
    latency_query_s: np.ndarray | None = None

    def latency_stats(self) -> dict:
        """Mean and 95th percentile latency per layer round and per query [s]."""
        lr = np.zeros(0) if self.latency_layer_round_s is None else np.asarray(self.latency_layer_round_s).ravel()
        q = np.zeros(0) if self.latency_query_s is None else np.asarray(self.latency_query_s)

        def pair(x):
            return (float(np.mean(x)), float(np.percentile(x, 95))) if x.size else (0.0, 0.0)

        (lm, lp), (qm, qp) = pair(lr), pair(q)
        return {
            "latency_layer_round_mean_s": lm,
            "latency_layer_round_p95_s": lp,
            "latency_query_mean_s": qm,
            "latency_query_p95_s": qp,
        }
    energy_always_on_j: float = 0.0
    agreement: float = float("nan")
    mean_kl: float = float("nan")
    perplexity: float | None = None
    full_choices: np.ndarray | None = None
    kl_per_question: np.ndarray | None = None
    scored_tokens: np.ndarray | None = None
    text_nll: np.ndarray | None = None
    text_tokens: np.ndarray | None = None
    engine: str = "local"
    rounds: int = 0
    node_failures: int = 0
    replans: int = 0
    rehosted_queries: int = 0
    node_joins: int = 0
    energy_lost_j: float = 0.0
    energy_rehost_j: float = 0.0
    complete: bool = True
    round_seconds: float | None = None
    latency_air_s: np.ndarray | None = None
    link_rates_bps: np.ndarray | None = None
    link_loads: np.ndarray | None = None
    deadline_s: float | None = None

    def deadline_stats(self) -> dict:
        """How the layer rounds met the policy's deadline T (``"<policy>[T=...s]"``, issue 20).

        A layer round misses when its completion time on air (all attempts, re-plans after a
        node loss included) exceeds T. Returns ``deadline_s`` (None without a deadline),
        ``deadline_rounds`` (layer rounds run), ``deadline_missed`` (how many exceeded T),
        ``deadline_miss_max_s`` and ``deadline_miss_mean_s`` (excess over T [s], the mean over
        the missed rounds; 0 when none missed); every value None without a deadline.
        """
        keys = ("deadline_rounds", "deadline_missed", "deadline_miss_max_s", "deadline_miss_mean_s")
        if self.deadline_s is None:
            return {"deadline_s": None, **{k: None for k in keys}}
        lr = np.zeros(0) if self.latency_layer_round_s is None else np.asarray(self.latency_layer_round_s).ravel()
        # [num_rounds * num_layers] excess over T [s] of the rounds that missed it
        excess = lr[lr > self.deadline_s * (1.0 + 1e-12)] - self.deadline_s
        return {
            "deadline_s": float(self.deadline_s),
            "deadline_rounds": int(lr.size),
            "deadline_missed": int(excess.size),
            "deadline_miss_max_s": float(excess.max()) if excess.size else 0.0,
            "deadline_miss_mean_s": float(excess.mean()) if excess.size else 0.0,
        }

    def deadline_missed_per_layer(self) -> np.ndarray | None:
        """``[num_layers], int64`` layer rounds per layer that missed the deadline (None without one)."""
        if self.deadline_s is None or self.latency_layer_round_s is None:
            return None
        lr = np.asarray(self.latency_layer_round_s, dtype=np.float64)
        return np.sum(lr > self.deadline_s * (1.0 + 1e-12), axis=0).astype(np.int64)

    @property
    def seconds_per_round(self) -> float:
        """Wall-clock time per query round of the MMLU questions (held-out texts excluded) [s]."""
        return (self.seconds if self.round_seconds is None else self.round_seconds) / max(self.rounds, 1)

    def per_unit(self) -> dict:
        """Energy per token [mJ/token] (over all layers: ``energy_j / num_tokens``) and per
        query [J/query] (``energy_j / num_questions``); None without tokens / questions."""
        tok = self.num_tokens if self.num_tokens > 0 else None
        q = self.num_questions if self.num_questions > 0 else None
        return {
            "energy_per_token_mj": None if tok is None else self.energy_j / tok * 1e3,
            "energy_comm_per_token_mj": None if tok is None else self.energy_comm_j / tok * 1e3,
            "energy_comp_per_token_mj": None if tok is None else self.energy_comp_j / tok * 1e3,
            "energy_per_query_j": None if q is None else self.energy_j / q,
        }

    def latency_breakdown(self) -> dict:
        """What the latency is made of: ``latency_air_share`` (air time on the critical
        paths / total layer-round time, in [0, 1]), ``link_rate_median_bps`` (median rate
        of the loaded links [bit/s]) and ``link_load_mean`` (mean hidden states per loaded
        link and layer round); None where nothing was recorded."""
        lat = 0.0 if self.latency_layer_round_s is None else float(np.sum(self.latency_layer_round_s))
        air_total = np.nan if self.latency_air_s is None else float(np.sum(self.latency_air_s))
        air = None if not np.isfinite(air_total) or lat <= 0 else min(air_total / lat, 1.0)
        rates = np.zeros(0) if self.link_rates_bps is None else np.asarray(self.link_rates_bps)
        loads = np.zeros(0) if self.link_loads is None else np.asarray(self.link_loads)
        return {
            "latency_air_share": air,
            "link_rate_median_bps": float(np.median(rates)) if rates.size else None,
            "link_load_mean": float(np.mean(loads)) if loads.size else None,
        }

    @property
    def choices(self) -> np.ndarray:
        """``[num_questions]`` int: the option the policy chose."""
        return self.logliks.argmax(axis=1)

    def summary(self) -> dict:
        """The JSON record of ``summary.json``'s ``results`` list."""
        return {
            "policy": self.policy,
            "accuracy": self.accuracy,
            "mean_nll": self.mean_nll,
            "agreement": self.agreement,
            "mean_kl": self.mean_kl,
            "perplexity": self.perplexity,
            "perplexity_tokens": None if self.text_tokens is None else int(np.sum(self.text_tokens)),
            "energy_j": self.energy_j,
            "energy_comm_j": self.energy_comm_j,
            "energy_comp_j": self.energy_comp_j,
            **self.per_unit(),
            "num_questions": self.num_questions,
            "num_tokens": self.num_tokens,
            "energy_planned_j": self.energy_j if self.energy_planned_j is None else self.energy_planned_j,
            "failed_attempts": self.failed_attempts,
            "dropped_tokens": self.dropped_tokens,
            **self.latency_stats(),
            **self.latency_breakdown(),
            **self.deadline_stats(),
            "energy_always_on_j": self.energy_always_on_j,
            "seconds": round(self.seconds, 2),
            "engine": self.engine,
            "rounds": self.rounds,
            "seconds_per_round": round(self.seconds_per_round, 4),
            "node_failures": self.node_failures,
            "replans": self.replans,
            "rehosted_queries": self.rehosted_queries,
            "node_joins": self.node_joins,
            "energy_lost_j": self.energy_lost_j,
            "energy_rehost_j": self.energy_rehost_j,
            "complete": self.complete,
        }


def evaluate_policy(
    model,
    queries: Sequence[PackedQuery],
    policy,
    *,
    system: SystemConfig,
    seed: int = 0,
    channel_redraw: str = "layer",
    rates_fn: Callable | None = None,
    channel: ChannelConfig | None = None,
    progress: bool = True,
    reference: FullReference | None = None,
    texts: Sequence[PackedText] = (),
    placement=None,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    node_failure_rate: float = 0.0,
    node_kills: Sequence[NodeKill] = (),
    node_rejoin: bool = True,
) -> PolicyResult:
    """Answer packed MMLU questions with ``policy`` scheduling every layer round.

    Queries are served K at a time, query ``r*K + i`` on node ``i`` in round ``r``
    (protocol step 1: one query per node). Same ``seed`` → same channels for every policy.

    Parameters
    ----------
    model : dmoe.model.ExpertModel
    queries : sequence of PackedQuery (see :func:`dmoe.data.pack_question`)
    policy : dmoe.policies.Policy
    system : SystemConfig
    seed : int
    channel_redraw : {"layer", "round", "fixed"}
    rates_fn : callable(rng) -> [K, K, M] rates, optional
    channel : ChannelConfig, optional
        Fading model, mobility and CSI (default: the paper's i.i.d. Rayleigh, perfect CSI).
    progress : bool
        Show a progress bar over rounds.
    reference : FullReference, optional
        The full model's outputs on ``queries`` (:func:`~dmoe.runtime.quality.full_reference`);
        computed here when not given. Pass one to share it between policies.
    texts : sequence of PackedText
        Held-out texts for perplexity (:func:`evaluate_perplexity`); none: ``perplexity``
        is None. Their energy is not part of the result.
    placement : ndarray [num_experts] or [num_layers, num_experts], optional
        Node of each expert when experts outnumber the ``system.num_nodes`` nodes.
    engine : {"local", "ray"} or Engine
        Where the expert nodes run (:mod:`dmoe.runtime.engine`); pass an Engine to reuse
        its nodes across calls (a name starts and stops one for this call).
    ray_address : str, optional
        Ray cluster to join; None: embedded Ray.
    node_failure_rate : float in [0, 1)
        Per node and layer round failure probability (:mod:`dmoe.runtime.faults`).
    node_kills : sequence of NodeKill
        Scheduled node kills (test hook).
    node_rejoin : bool
        Failed nodes rejoin at the next round.

    Returns
    -------
    PolicyResult

    Raises
    ------
    ValueError
        If ``queries`` is empty, ``reference`` does not fit ``queries``, or on the
        runtime's configuration errors.
    NoLiveNodeError
        When every node has failed; its ``partial`` attribute holds the
        :class:`PolicyResult` of the questions answered before (``complete`` False).
    """
    if len(queries) == 0:
        raise ValueError("`queries` must hold at least one question")
    if reference is None:
        reference = full_reference(model, queries)
    reference.check(queries)
    runtime = DMoERuntime(
        model, policy, system=system, seed=seed, channel_redraw=channel_redraw, rates_fn=rates_fn, channel=channel,
        placement=placement,
        engine=engine,
        ray_address=ray_address, node_failure_rate=node_failure_rate, node_kills=node_kills, node_rejoin=node_rejoin,
    )
    try:
        K = system.num_nodes
        name = getattr(policy, "name", type(policy).__name__)
        logliks = np.zeros((len(queries), 4))
        kl = np.zeros(len(queries))
        scored = np.array([q.score_rows.numel() for q in queries], dtype=np.int64)
        answers = np.array([q.answer for q in queries], dtype=np.int64)
        start = time.perf_counter()
        batches = [queries[b : b + K] for b in range(0, len(queries), K)]
        answered = 0
        try:
            for b, batch in enumerate(tqdm(batches, desc=f"{name:>14}", unit="round", disable=not progress)):
                out = runtime.run_round(batch)
                for i, (q, lg) in enumerate(zip(batch, out.logits)):
                    logliks[b * K + i] = option_logliks(lg, q).numpy()
                    kl[b * K + i] = float(reference.token_kl(b * K + i, lg).mean())
                answered += len(batch)
        except NoLiveNodeError as exc:
            exc.partial = _result(runtime, name, logliks[:answered], answers[:answered], kl[:answered],
                                  scored[:answered], reference, None, time.perf_counter() - start, complete=False)
            raise
        round_seconds = time.perf_counter() - start
        ppl = evaluate_perplexity(
            model, texts, policy, system=system, seed=seed, channel_redraw=channel_redraw, rates_fn=rates_fn,
            channel=channel, engine=runtime.engine_object, placement=placement,
        ) if len(texts) else None
        res = _result(runtime, name, logliks, answers, kl, scored, reference, ppl, time.perf_counter() - start)
        res.round_seconds = round_seconds
        return res
    finally:
        runtime.close()


def _result(runtime: DMoERuntime, name: str, logliks, answers, kl, scored, reference, ppl, seconds: float, *,
            complete: bool = True) -> PolicyResult:
    ledger = runtime.ledger
    totals = ledger.per_layer()
    n = len(answers)
    pred = logliks.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    full = reference.choices[:n]
    faults = runtime.faults
    totals.latency_mean_s, totals.latency_p95_s = runtime.latency.per_layer()
    return PolicyResult(
        policy=name,
        accuracy=float(np.mean(pred == answers)) if n else float("nan"),
        mean_nll=float(-np.mean(logliks[np.arange(n), answers])) if n else float("nan"),
        energy_j=ledger.energy_j,
        energy_comm_j=ledger.energy_comm_j,
        energy_comp_j=ledger.energy_comp_j,
        num_questions=n,
        num_tokens=int(totals.tokens[0]),
        per_layer=totals,
        selection_counts=ledger.selection_counts,
        logliks=logliks,
        answers=answers,
        seconds=seconds,
        energy_planned_j=ledger.energy_planned_j,
        failed_attempts=ledger.failed_attempts,
        dropped_tokens=ledger.dropped_tokens,
        latency_layer_round_s=runtime.latency.layer_round_s,
        latency_query_s=runtime.latency.query_s,
        energy_always_on_j=ledger.energy_always_on_j,
        agreement=float(np.mean(pred == full)) if n else float("nan"),
        mean_kl=float(np.sum(kl * scored) / np.sum(scored)) if n else float("nan"),
        perplexity=None if ppl is None else perplexity(ppl[0], ppl[1]),
        full_choices=full.copy(),
        kl_per_question=kl,
        scored_tokens=scored,
        text_nll=None if ppl is None else ppl[0],
        text_tokens=None if ppl is None else ppl[1],
        engine=runtime.engine_name,
        rounds=runtime.rounds if complete else -(-n // runtime.num_nodes),
        node_failures=faults.failures,
        replans=faults.replans,
        rehosted_queries=faults.rehosted,
        node_joins=faults.joins,
        energy_lost_j=ledger.energy_lost_j,
        energy_rehost_j=ledger.energy_rehost_j,
        complete=complete,
        latency_air_s=runtime.latency.air_s,
        link_rates_bps=runtime.latency.link_rates_bps,
        link_loads=runtime.latency.link_loads,
        deadline_s=getattr(runtime.policy, "deadline_s", None),
    )


def evaluate_perplexity(
    model,
    texts: Sequence[PackedText],
    policy,
    *,
    system: SystemConfig,
    seed: int = 0,
    channel_redraw: str = "layer",
    rates_fn: Callable | None = None,
    channel: ChannelConfig | None = None,
    engine: str | Engine = "local",
    placement=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Serve held-out texts through the DMoE runtime with ``policy`` and score every token.

    The texts run on a runtime of their own, N texts per round, text ``r*N + i`` on node
    ``i``: the policy schedules their tokens at every layer exactly as for questions, and
    their energy goes to that runtime's ledger, which is dropped, so the MMLU energy of
    :func:`evaluate_policy` is untouched.

    Parameters
    ----------
    model, policy, system, seed, channel_redraw, rates_fn, channel, engine, placement
        As for :func:`evaluate_policy` (no node failures here).
    texts : sequence of PackedText (:func:`dmoe.data.pack_text`), at least one

    Returns
    -------
    (nll, tokens) : ndarray [num_texts] float64 [nat], ndarray [num_texts] int64
        NLL of each text summed over its predicted tokens, and the number of those tokens;
        ``dmoe.runtime.quality.perplexity(nll, tokens)`` is the perplexity.

    Raises
    ------
    ValueError
        If ``texts`` is empty, or on the runtime's configuration errors.
    """
    if len(texts) == 0:
        raise ValueError("`texts` must hold at least one text")
    runtime = DMoERuntime(
        model, policy, system=system, seed=seed, channel_redraw=channel_redraw, rates_fn=rates_fn, channel=channel,
        engine=engine, placement=placement,
    )
    K = system.num_nodes
    nll = np.zeros(len(texts))
    tokens = np.array([t.score_rows.numel() for t in texts], dtype=np.int64)
    try:
        for b in range(0, len(texts), K):
            out = runtime.run_round(texts[b : b + K])
            for i, (t, lg) in enumerate(zip(texts[b : b + K], out.logits)):
                nll[b + i] = text_nll(lg, t)
    finally:
        runtime.close()
    return nll, tokens
