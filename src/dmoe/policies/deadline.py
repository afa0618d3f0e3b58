"""Latency-bounded scheduling: any policy, with several resource blocks per link, and
restricted to links that meet a deadline.

Beyond the paper (which minimises energy only): ``Deadline(policy, deadline_s)``, named
``"<policy>[T=<deadline>s]"`` (e.g. ``"JESA(0.9,2)[T=5s]"``), bounds the completion time of
every layer round (:mod:`dmoe.latency`: forward air time, FFN time, backward air time,
slowest path) by T on the rates it is given:

1. before selection, every link that cannot carry even one token in time on its fastest
   resource blocks (2 * 8*s0 / (sum of its B best rates) + 1 / c_j > T, B =
   ``system.max_rbs_per_node`` or all M) is excluded (its rates are set to 0, so the
   policy sees the expert as unreachable from that node and reroutes);
2. the policy schedules (a JESA-based policy gets T and allocates resource blocks under
   it itself, :func:`~dmoe.optimize.jesa.jesa`); if the schedule's completion time
   exceeds T, links first take more resource blocks: the RBs are re-allocated for the
   schedule's traffic by :func:`~dmoe.optimize.resource_blocks.allocate_resource_blocks`
   with each transfer's air-time budget (T - n_j / c_j) / 2 (forward and backward on the
   same RBs, TDD reciprocity: :func:`dmoe.latency.air_time_budget`) and the per-node
   budget; the lower bound, which ignores C3, lets every link take its own best RBs
   (:func:`~dmoe.optimize.resource_blocks.relaxed_resource_blocks`);
3. if the round is still late, the slowest quarter (at least one) of the loaded links on
   late paths (by their forward + backward air time) is excluded, and the policy
   schedules again; this repeats until the deadline holds or only computation is late
   (at most K(K-1) rounds, as each excludes a link).

Tokens that lose experts to the deadline may no longer meet their QoS threshold; the
policy then reports them as infeasible as usual (Remark 2). ``Schedule.info`` records
the round's deadline outcome on the estimated rates: ``deadline_met``, the planned
latency ``planned_latency_s``, by how much it misses T (``deadline_miss_s``, 0 when met),
``multi_rb_links`` and ``rbs_used`` (a run counts the misses from these), besides the
exclusions. A schedule that meets T as the policy made it is returned unchanged (with a
loose deadline the result is the policy's, bit for bit).
With a ``placement`` (several experts per node, issue 12) the links are node pairs and a
token is counted once per remote node it needs.
``available`` (experts of failed nodes, issue 9) passes through to the wrapped policy.
"""

from __future__ import annotations

import math

import numpy as np

from dmoe.latency import air_time_budget, round_timing, schedule_air_time
from dmoe.policies.allocation import node_demand
from dmoe.policies.base import Policy, Schedule, _fmt, policy_inputs
from dmoe.policies.builtin import Dense
from dmoe.optimize.resource_blocks import allocate_resource_blocks, relaxed_resource_blocks

__all__ = ["Deadline"]


class Deadline(Policy):
    """``policy`` restricted to links that meet a layer-round deadline (module docstring).

    Args:
        policy: any :class:`~dmoe.policies.base.Policy` that can reroute (not dense).
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

    @property
    def spec(self) -> str | None:
        """The base policy's spec with the deadline appended (``"JESA(0.9,2)[T=5s]"``), or
        None when the base policy has none."""
        base = self.policy.spec
        return None if base is None else f"{base}[T={_fmt(self.deadline_s)}s]"

    def params(self) -> dict:
        return {"policy": "Deadline", "name": self.name, "base": self.policy.params(), "deadline_s": self.deadline_s}

    def schedule(self, scores, source, rates, layer, *, system, rng=None, placement=None, available=None) -> Schedule:
        # with a placement (issue 12) links, rates and token counts are per node pair
        scores, source, rates, system, placement, avail = policy_inputs(
            scores, source, rates, layer, system, placement, available
        )
        k, _, m = rates.shape
        place_kw = {} if placement is None else {"placement": placement}
        if getattr(self.policy, "accepts_deadline", False):
            place_kw["deadline_s"] = self.deadline_s
        bits, limit = system.bits_per_token, self.deadline_s
        budget = system.max_rbs_per_node
        off = ~np.eye(k, dtype=bool)
        usable = rates.copy()
        # step 1: links too slow for a single token even on their fastest RBs
        take = m if budget is None else min(m, budget)
        best = -np.sort(-usable, axis=2)[:, :, :take].sum(axis=2)
        with np.errstate(divide="ignore"):
            one_token = 2.0 * bits / best + 1.0 / system.comp_throughput_j[None, :]
        usable[off & ~(one_token <= limit)] = 0.0
        excluded_first = int(np.count_nonzero(off & ~(one_token <= limit)))
        for attempt in range(1, k * k + 1):
            sched = self.policy.schedule(scores, source, usable, layer, system=system, rng=rng, available=avail,
                                         **place_kw)
            tokens = node_demand(sched.selection, source, k, placement=placement)
            load = None
            if placement is not None:
                # [K] FFN work per node, as dmoe.runtime.transfer.TransferOutcome.node_load
                calls = np.asarray(sched.selection, dtype=bool).sum(axis=0).astype(np.float64)
                load = np.bincount(placement, weights=calls, minlength=k) * (k / placement.shape[0])
            sub, share = sched.subcarrier, sched.rb_share
            air = schedule_air_time(tokens, usable, sub, bits, share)
            timing = round_timing(tokens, air, air, system, load=load)
            if timing.latency_s > limit:
                # step 2: more resource blocks before anything is excluded
                sub, share = self._more_blocks(sched, tokens, usable, system, load, sub, share)
                air = schedule_air_time(tokens, usable, sub, bits, share)
                timing = round_timing(tokens, air, air, system, load=load)
            if timing.latency_s <= limit:
                break
            loaded = off & (tokens > 0)
            # [K, K] completion time of each path i -> j -> i
            path = np.where(loaded, timing.ready_s[None, :] + air, 0.0)
            late = loaded & (path > limit)
            if not late.any():
                break  # only computation exceeds T: excluding links cannot help
            # step 3: exclude the slowest quarter (at least one) of the late links, by air time
            n_drop = max(1, int(np.ceil(late.sum() / 4)))
            key = np.where(late, 2 * air, -1.0).ravel()
            drop = np.argsort(-key, kind="stable")[:n_drop]
            late = np.zeros(k * k, dtype=bool)
            late[drop] = True
            late = late.reshape(k, k)
            usable[late] = 0.0
        carried = (share > 0) if share is not None else None
        info = dict(sched.info)
        info.update(
            deadline_s=limit,
            deadline_met=bool(timing.latency_s <= limit),
            planned_latency_s=timing.latency_s,
            deadline_miss_s=max(0.0, timing.latency_s - limit),
            deadline_attempts=attempt,
            links_excluded=int(np.count_nonzero(off & (usable.max(axis=2) <= 0) & (rates.max(axis=2) > 0))),
            links_excluded_first=excluded_first,
            multi_rb_links=0 if carried is None else int(np.count_nonzero(carried.sum(axis=2) > 1)),
            rbs_used=int(np.count_nonzero(sub[off & (tokens > 0)] >= 0)) if carried is None
            else int(np.count_nonzero(carried.any(axis=(0, 1)))),
        )
        return Schedule(sched.selection, sub, sched.feasible, sched.threshold, sched.exclusive, info, share)

    def _more_blocks(self, sched, tokens, usable, system, load, sub, share):
        """Step 2: re-allocate the RBs for ``tokens`` under each transfer's air-time budget."""
        air = air_time_budget(tokens, self.deadline_s, system, load=load)
        kw = dict(tx_power_w=system.tx_power_w, bits_per_token=system.bits_per_token, deadline_s=air,
                  max_rbs_per_node=system.max_rbs_per_node)
        if not sched.exclusive:
            new_sub, new_share = relaxed_resource_blocks(usable, tokens, **kw)
            return new_sub, (new_share if (new_share > 0).sum(axis=2).max(initial=0) > 1 else None)
        alloc = allocate_resource_blocks(usable, tokens, **kw)
        if alloc.unserved.any():  # the policy served links beyond the node budget: keep its schedule
            return sub, share
        return alloc.subcarrier, (alloc.rb_share if alloc.multi_rb else None)
