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
    energy_always_on_j: float = 0.0

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
) -> PolicyResult:
    """Answer packed MMLU questions with ``policy`` scheduling every layer round.

    Queries are served K at a time, query ``r*K + i`` on node ``i`` in round ``r``
    (protocol step 1: one query per node). Same ``seed`` → same channels for every policy.

    Parameters
    ----------
    model : dmoe.model.ExpertModel
    queries : sequence of PackedQuery (see :func:`dmoe.data.pack_question`)
    policy : dmoe.optimize.policies.Policy
    system : SystemConfig
    seed : int
    channel_redraw : {"layer", "round", "fixed"}
    rates_fn : callable(rng) -> [K, K, M] rates, optional
    progress : bool
        Show a progress bar over rounds.

    Returns
    -------
    PolicyResult

    Raises
    ------
    ValueError
        If ``queries`` is empty, or on the runtime's configuration errors.
    """
    if len(queries) == 0:
        raise ValueError("`queries` must hold at least one question")
    runtime = DMoERuntime(
        model, policy, system=system, seed=seed, channel_redraw=channel_redraw, rates_fn=rates_fn
    )
    K = system.num_experts
    name = getattr(policy, "name", type(policy).__name__)
    logliks = np.zeros((len(queries), 4))
    answers = np.array([q.answer for q in queries], dtype=np.int64)
    start = time.perf_counter()
    batches = [queries[b : b + K] for b in range(0, len(queries), K)]
    for b, batch in enumerate(tqdm(batches, desc=f"{name:>14}", unit="round", disable=not progress)):
        out = runtime.run_round(batch)
        for i, (q, lg) in enumerate(zip(batch, out.logits)):
            logliks[b * K + i] = option_logliks(lg, q).numpy()
    seconds = time.perf_counter() - start
    pred = logliks.argmax(axis=1)
    ledger = runtime.ledger
    totals = ledger.per_layer()
    return PolicyResult(
        policy=name,
        accuracy=float(np.mean(pred == answers)),
        mean_nll=float(-np.mean(logliks[np.arange(len(queries)), answers])),
        energy_j=ledger.energy_j,
        energy_comm_j=ledger.energy_comm_j,
        energy_comp_j=ledger.energy_comp_j,
        num_questions=len(queries),
        num_tokens=int(totals.tokens[0]),
        per_layer=totals,
        selection_counts=ledger.selection_counts,
        logliks=logliks,
        answers=answers,
        seconds=seconds,
        energy_always_on_j=ledger.energy_always_on_j,
    )
