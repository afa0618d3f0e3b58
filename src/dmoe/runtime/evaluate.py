"""Multiple-choice evaluation of a policy through the DMoE runtime.

Accuracy: the option with the highest log-likelihood of its text given the prompt is the
model's answer. Mean NLL: the mean over questions of ``-log p(correct answer text |
prompt)`` [nat] (DESIGN.md "Scoring": SmolLM2-135M is near chance on MMLU, so the NLL
carries the signal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data.packing import PackedQuery, option_logliks
from ..system import SystemConfig
from .engine import Engine
from .faults import NodeKill, NoLiveNodeError
from .ledger import LayerTotals
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
    engine: str = "local"
    rounds: int = 0
    node_failures: int = 0
    replans: int = 0
    rehosted_queries: int = 0
    node_joins: int = 0
    energy_lost_j: float = 0.0
    energy_rehost_j: float = 0.0
    complete: bool = True
    energy_always_on_j: float = 0.0

    @property
    def seconds_per_round(self) -> float:
        """Wall-clock time per query round [s]."""
        return self.seconds / max(self.rounds, 1)

    def summary(self) -> dict:
        """The JSON record of ``summary.json``'s ``results`` list."""
        return {
            "policy": self.policy,
            "accuracy": self.accuracy,
            "mean_nll": self.mean_nll,
            "energy_j": self.energy_j,
            "energy_comm_j": self.energy_comm_j,
            "energy_comp_j": self.energy_comp_j,
            "num_questions": self.num_questions,
            "num_tokens": self.num_tokens,
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
    progress: bool = True,
    engine: str | Engine = "local",
    ray_address: str | None = None,
    node_failure_rate: float = 0.0,
    node_kills: Sequence[NodeKill] = (),
    node_rejoin: bool = True,
) -> PolicyResult:
    """Answer packed MMLU questions with ``policy`` scheduling every layer round.

    Queries are served K at a time, query ``r*K + i`` on node ``i`` in round ``r``
    (protocol step 1: one query per node). Same ``seed`` → same channels (and same node
    failures) for every policy and every engine.

    Parameters
    ----------
    model : ExpertModel
    queries : sequence of PackedQuery (see :func:`dmoe.data.pack_question`)
    policy : dmoe.optimize.policies.Policy
    system : SystemConfig
    seed : int
    channel_redraw : {"layer", "round", "fixed"}
    rates_fn : callable(rng) -> [K, K, M] rates, optional
    progress : bool
        Show a progress bar over rounds.
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
        If ``queries`` is empty, or on the runtime's configuration errors.
    NoLiveNodeError
        When every node has failed; its ``partial`` attribute holds the
        :class:`PolicyResult` of the questions answered before (``complete`` False).
    """
    if len(queries) == 0:
        raise ValueError("`queries` must hold at least one question")
    runtime = DMoERuntime(
        model, policy, system=system, seed=seed, channel_redraw=channel_redraw, rates_fn=rates_fn, engine=engine,
        ray_address=ray_address, node_failure_rate=node_failure_rate, node_kills=node_kills, node_rejoin=node_rejoin,
    )
    try:
        K = system.num_experts
        name = getattr(policy, "name", type(policy).__name__)
        logliks = np.zeros((len(queries), 4))
        answers = np.array([q.answer for q in queries], dtype=np.int64)
        start = time.perf_counter()
        batches = [queries[b : b + K] for b in range(0, len(queries), K)]
        answered = 0
        try:
            for b, batch in enumerate(tqdm(batches, desc=f"{name:>14}", unit="round", disable=not progress)):
                out = runtime.run_round(batch)
                for i, (q, lg) in enumerate(zip(batch, out.logits)):
                    logliks[b * K + i] = option_logliks(lg, q).numpy()
                answered += len(batch)
        except NoLiveNodeError as exc:
            exc.partial = _result(runtime, name, logliks[:answered], answers[:answered], time.perf_counter() - start,
                                  complete=False)
            raise
        return _result(runtime, name, logliks, answers, time.perf_counter() - start)
    finally:
        runtime.close()


def _result(runtime: DMoERuntime, name: str, logliks, answers, seconds: float, *, complete: bool = True):
    ledger = runtime.ledger
    totals = ledger.per_layer()
    n = len(answers)
    pred = logliks.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    faults = runtime.faults
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
        engine=runtime.engine_name,
        rounds=runtime.rounds if complete else -(-n // runtime.num_nodes),
        node_failures=faults.failures,
        replans=faults.replans,
        rehosted_queries=faults.rehosted,
        node_joins=faults.joins,
        energy_lost_j=ledger.energy_lost_j,
        energy_rehost_j=ledger.energy_rehost_j,
        complete=complete,
        energy_always_on_j=ledger.energy_always_on_j,
    )
