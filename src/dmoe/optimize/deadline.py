"""Latency-bounded scheduling: any policy, restricted to links that meet a deadline.

Beyond the paper (which minimises energy only): ``Deadline(policy, deadline_s)``, named
``"<policy>[T=<deadline>s]"`` (e.g. ``"JESA(0.9,2)[T=5s]"``), bounds the completion time of
every layer round (:mod:`dmoe.latency`: forward air time, FFN time, backward air time,
slowest path) by T on the rates it is given:

1. before selection, every link that cannot carry even one token in time
   (2 * 8*s0 / best rate of the link + 1 / c_j > T) is excluded (its rates are set to 0,
   so the policy sees the expert as unreachable from that node and reroutes);
2. the policy schedules; if the schedule's completion time exceeds T, the slowest quarter
   (at least one) of the loaded links on late paths (by their forward + backward air time)
   is excluded as well, and the policy schedules again; this repeats until the deadline
   holds or only computation is late (at most K(K-1) rounds, as each excludes a link).

Tokens that lose experts to the deadline may no longer meet their QoS threshold; the
policy then reports them as infeasible as usual (Remark 2). ``Schedule.info`` says whether
the deadline was met on the estimated rates (``deadline_met``) and the planned latency.
With a ``placement`` (several experts per node, issue 12) the links are node pairs and a
token is counted once per remote node it needs.
``available`` (experts of failed nodes, issue 9) passes through to the wrapped policy.
"""

from __future__ import annotations

import math

import numpy as np

from dmoe.energy import link_rate_from_subcarriers
from dmoe.latency import link_air_time, round_timing
from dmoe.optimize.policies import Dense, Policy, Schedule, _fmt, _inputs, _node_demand

__all__ = ["Deadline"]


class Deadline(Policy):
    """``policy`` restricted to links that meet a layer-round deadline (module docstring).

    Args:
        policy: any :class:`~dmoe.optimize.policies.Policy` that can reroute (not dense).
        deadline_s: T [s] > 0, the bound on each layer round's completion time.

    Raises:
        ValueError: ``deadline_s`` not a finite positive number, or ``policy`` is dense
            (every expert is mandatory, so links cannot be excluded).
        TypeError: ``policy`` is not a Policy.
    """

    def __init__(self, policy: Policy, deadline_s: float):
        if not isinstance(policy, Policy):
            raise TypeError(f"`policy` must be a Policy, got {type(policy).__name__}")
        if isinstance(policy, Dense):
            raise ValueError("`policy` dense cannot take a deadline: it uses every expert and cannot reroute")
        if isinstance(deadline_s, bool) or not isinstance(deadline_s, (int, float, np.integer, np.floating)):
            raise ValueError(f"`deadline_s` must be a number [s], got {deadline_s!r}")
        if not math.isfinite(float(deadline_s)) or float(deadline_s) <= 0:
            raise ValueError(f"`deadline_s` must be a finite number > 0 [s], got {deadline_s!r}")
        self.policy = policy
        self.deadline_s = float(deadline_s)
        self.name = f"{policy.name}[T={_fmt(self.deadline_s)}s]"

    def params(self) -> dict:
        return {"policy": "Deadline", "name": self.name, "base": self.policy.params(), "deadline_s": self.deadline_s}

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None) -> Schedule:
        # with a placement (issue 12) links, rates and token counts are per node pair
        scores, source, rates, system, placement, avail = _inputs(scores, source, rates, layer, system, placement, available)
        k = rates.shape[0]
        place_kw = {} if placement is None else {"placement": placement}
        bits, limit = system.bits_per_token, self.deadline_s
        off = ~np.eye(k, dtype=bool)
        usable = rates.copy()
        # step 1: links too slow for a single token
        best = usable.max(axis=2)
        with np.errstate(divide="ignore"):
            one_token = 2.0 * bits / best + 1.0 / system.comp_throughput_j[None, :]
        usable[off & ~(one_token <= limit)] = 0.0
        excluded_first = int(np.count_nonzero(off & ~(one_token <= limit)))
        for attempt in range(1, k * k + 1):
            sched = self.policy.schedule(scores, source, usable, layer, system=system, rng=rng, available=avail,
                                         **place_kw)
            tokens = _node_demand(sched.selection, source, placement, k)
            air = link_air_time(tokens, link_rate_from_subcarriers(usable, sched.subcarrier), bits)
            load = None
            if placement is not None:
                # [K] FFN work per node, as dmoe.runtime.transfer.TransferOutcome.node_load
                calls = np.asarray(sched.selection, dtype=bool).sum(axis=0).astype(np.float64)
                load = np.bincount(placement, weights=calls, minlength=k) * (k / placement.shape[0])
            timing = round_timing(tokens, air, air, system, load=load)
            if timing.latency_s <= limit:
                break
            loaded = off & (tokens > 0)
            # [K, K] completion time of each path i -> j -> i
            path = np.where(loaded, timing.ready_s[None, :] + air, 0.0)
            late = loaded & (path > limit)
            if not late.any():
                break  # only computation exceeds T: excluding links cannot help
            # exclude the slowest quarter (at least one) of the late links, by air time
            n_drop = max(1, int(np.ceil(late.sum() / 4)))
            key = np.where(late, 2 * air, -1.0).ravel()
            drop = np.argsort(-key, kind="stable")[:n_drop]
            late = np.zeros(k * k, dtype=bool)
            late[drop] = True
            late = late.reshape(k, k)
            usable[late] = 0.0
        info = dict(sched.info)
        info.update(
            deadline_s=limit,
            deadline_met=bool(timing.latency_s <= limit),
            planned_latency_s=timing.latency_s,
            deadline_attempts=attempt,
            links_excluded=int(np.count_nonzero(off & (usable.max(axis=2) <= 0) & (rates.max(axis=2) > 0))),
            links_excluded_first=excluded_first,
        )
        return Schedule(sched.selection, sched.subcarrier, sched.feasible, sched.threshold, sched.exclusive, info)
