"""Node loss: the seeded fault model, scheduled kills, and the record of what happened.

Fault model (``node_failure_rate`` p): at every layer round each node that is up fails
with probability p, independently. Whether it fails, and in which phase of the round, is
drawn from ``numpy.random.default_rng([seed, round, layer, 2])``: a stream of its own,
separate from the channel draws (``[seed, round, layer]``) and the policy's
(``[seed, round, layer, 1]``), so a run without failures is unchanged by the fault model
and every policy with the same seed meets the same failures. Two phases:

* ``"attention"``: the node dies before the round's attention and gating. The server
  finds out when it asks for gating scores; the node's queries are re-hosted and its
  expert is unavailable for this round's schedule.
* ``"experts"``: the node dies after the schedule was sent, while the experts compute.
  The server finds out when the node's outputs do not come back; the layer round is
  re-planned with its expert ineligible (the spent transmissions are charged, see
  :class:`~dmoe.runtime.ledger.EnergyLedger`).

:class:`NodeKill` schedules a kill of a given node at a given round, layer and phase
(the test hook; the Ray engine really kills the actor with ``ray.kill``). Both go through
the same path as a real, unannounced death (an actor process killed from outside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = ["FAULT_PHASES", "FaultLog", "FaultModel", "NoLiveNodeError", "NodeKill", "check_failure_rate"]

FAULT_PHASES = ("attention", "experts")


class NoLiveNodeError(RuntimeError):
    """Every node has failed: no expert can serve and no node can host a query.

    Attributes:
        round, layer: where it happened (layer 0-based, or None at the start of a round).
        partial: what was computed before (set by :func:`~dmoe.runtime.evaluate.evaluate_policy`
            to a :class:`~dmoe.runtime.evaluate.PolicyResult` over the questions answered).
    """

    def __init__(self, message: str, *, round: int | None = None, layer: int | None = None) -> None:
        super().__init__(message)
        self.round = round
        self.layer = layer
        self.partial = None


def check_failure_rate(rate) -> float:
    """``node_failure_rate`` (--node-failure-rate): a probability in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"`node_failure_rate` (--node-failure-rate) must be a number in [0, 1), got {rate!r}")
    rate = float(rate)
    if not math.isfinite(rate) or not 0.0 <= rate < 1.0:
        raise ValueError(f"`node_failure_rate` (--node-failure-rate) must lie in [0, 1), got {rate!r}")
    return rate


@dataclass(frozen=True)
class NodeKill:
    """Kill ``node`` at query round ``round``, layer ``layer`` (0-based), in ``phase``."""

    round: int
    layer: int
    node: int
    phase: str = "experts"

    def __post_init__(self) -> None:
        if self.phase not in FAULT_PHASES:
            raise ValueError(f"`phase` must be one of {FAULT_PHASES}, got {self.phase!r}")


@dataclass
class FaultModel:
    """Per node and layer round failures with probability ``rate`` plus scheduled kills.

    Args:
        rate: p in [0, 1).
        seed: the run's seed.
        kills: :class:`NodeKill` events (test hook).
    """

    rate: float = 0.0
    seed: int = 0
    kills: Sequence[NodeKill] = ()

    def __post_init__(self) -> None:
        self.rate = check_failure_rate(self.rate)
        self.kills = tuple(self.kills)

    def draw(self, round_index: int, layer: int, up: np.ndarray) -> dict[str, list[int]]:
        """Nodes to kill in this layer round, by phase.

        up : ``[K]`` bool, nodes currently up (only those can fail).
        Returns ``{"attention": [...], "experts": [...]}`` (sorted node indices).
        """
        k = up.shape[0]
        out: dict[str, set[int]] = {p: set() for p in FAULT_PHASES}
        if self.rate > 0:
            rng = np.random.default_rng([self.seed, round_index, layer, 2])
            fail = (rng.random(k) < self.rate) & up
            late = rng.random(k) < 0.5
            for j in np.flatnonzero(fail):
                out["experts" if late[j] else "attention"].add(int(j))
        for ev in self.kills:
            if ev.round == round_index and ev.layer == layer and 0 <= ev.node < k and up[ev.node]:
                out[ev.phase].add(int(ev.node))
        return {p: sorted(v) for p, v in out.items()}


@dataclass
class FaultLog:
    """What failed and how the server recovered, over a whole run.

    Attributes:
        failures: node failures detected.
        replans: layer rounds re-planned because an expert died after the schedule was sent.
        rehosted: queries moved to another node after their host died (resumed from the
            server's checkpoint of their last completed layer).
        joins: nodes started again (rejoin or new node) between rounds.
        events: ``(round, layer, node, what)`` tuples, ``what`` in {"failed", "rehost:<from>-><to>",
            "replan", "join"}; layer is None between layers.
    """

    failures: int = 0
    replans: int = 0
    rehosted: int = 0
    joins: int = 0
    events: list = field(default_factory=list)

    def record(self, round_index: int, layer: int | None, node: int, what: str) -> None:
        self.events.append((int(round_index), None if layer is None else int(layer), int(node), what))

    def summary(self) -> dict:
        return {"node_failures": self.failures, "replans": self.replans, "rehosted_queries": self.rehosted,
                "node_joins": self.joins}


def least_loaded(up: np.ndarray, load: Iterable[int]) -> int | None:
    """The up node hosting the fewest queries (ties: lowest index), None when none is up."""
    load = np.asarray(list(load))
    cand = np.flatnonzero(up)
    if cand.size == 0:
        return None
    return int(cand[np.argmin(load[cand])])
