"""What happens on air when a schedule meets the true channel: failures and retransmissions.

The server schedules link i -> j on subcarrier m at its *estimated* rate r_est; the bits
meet the *true* rate r. The rule (our choice, stated in the README):

* r >= r_est: every packet (one hidden state, 8*s0 bits) goes through at r_est, as planned:
  energy ``P0 * 8*s0 / r_est`` and air time ``8*s0 / r_est`` per token.
* 0 < r < r_est: the first packet is sent at r_est and lost (outage). The receiver's NACK
  carries the rate it measured on that packet, and the link backs off to the true rate:
  the lost packet and the rest of the link's tokens are sent at r. One failed attempt per
  link; the ledger charges it (energy and time) on top of the s_ij successful packets.
* r == 0 (no usable channel): the first packet is lost as above, the NACK reports a dead
  subcarrier, and the link is declared failed: its tokens are not delivered, the expert is
  dropped for them (the source aggregates its other selected experts) and it computes
  nothing for them. No rate of 0 ever divides an energy or a time.

Several resource blocks per link (``rb_share``, :mod:`dmoe.optimize.resource_blocks`): each
token's hidden state is split over the link's RBs in the planned shares (its segment on RB
m is ``share_m * 8*s0`` bits) and every RB transmits from t = 0. The rule applies per RB:

* an RB whose true rate holds sends its bits at r_est as planned;
* an RB with 0 < r < r_est loses its first segment (sent at r_est) and sends all its bits
  again at r; the link counts one failed attempt (one lost token) however many of its
  RBs lost their segment;
* if any RB of the link is dead (r == 0) the tokens cannot be reassembled: the link is
  declared failed as above; every RB has sent its first segment at r_est (charged), and
  nothing more is sent.

The link's forward time is its slowest RB's, its energy P0 times the sum of its RBs'
on-times; ``scheduled_rate`` / ``true_rate`` are then energy-equivalent rates R^E
(:func:`dmoe.energy.link_rates_from_allocation`). With one RB per link this is the rule
above exactly.

With perfect CSI (r_est == r) nothing fails and the energy equals
:func:`dmoe.energy.schedule_energy` on the true rates. The return of the outputs (protocol
step 5) runs on the same subcarrier at the true rate measured during the forward transfer,
so it never fails; as in the paper's energy model it costs time but no charged energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..energy import (
    check_rb_share,
    computation_energy,
    link_rate_from_subcarriers,
    link_rates_from_allocation,
    link_token_counts,
    node_computation_energy,
)
from ..latency import link_air_time
from ..system import SystemConfig

__all__ = ["TransferOutcome", "transmit"]


@dataclass(frozen=True)
class TransferOutcome:
    """One layer round on air.

    Attributes:
        tokens_planned: ``[K, K], int64`` s_ij scheduled.
        tokens_delivered: ``[K, K], int64`` s_ij that reached expert j (diagonal: local).
        selection: ``[T, K], bool`` the experts that actually processed each token
            (``[T, E]`` with a placement; K is then the number of nodes N).
        scheduled_rate, true_rate: ``[K, K], float64`` [bit/s] on each link's subcarrier.
        failed: ``[K, K], bool`` links whose first packet was lost (r < r_est).
        dropped: ``[K, K], bool`` failed links declared dead (r == 0).
        energy_comm_planned, energy_comm_spent: ``[K, K], float64`` [J] (eq 3).
        energy_comp_planned, energy_comp_spent: ``[K], float64`` [J] (eq 4).
        forward_s, backward_s: ``[K, K], float64`` air time per link [s] (all attempts;
            backward indexed [i, j] for the return j -> i).
        node_load: ``[K], float64`` FFN work per node for :func:`dmoe.latency.round_timing`
            with a placement (delivered expert calls on node n times N / E, the same
            scaling as the computation energy); None without a placement (s_ij counts).
    """

    tokens_planned: np.ndarray
    tokens_delivered: np.ndarray
    selection: np.ndarray
    scheduled_rate: np.ndarray
    true_rate: np.ndarray
    failed: np.ndarray
    dropped: np.ndarray
    energy_comm_planned: np.ndarray
    energy_comm_spent: np.ndarray
    energy_comp_planned: np.ndarray
    energy_comp_spent: np.ndarray
    forward_s: np.ndarray
    backward_s: np.ndarray
    node_load: np.ndarray | None = None

    @property
    def failed_attempts(self) -> int:
        """Lost packets (each retransmitted, or its link declared failed)."""
        return int(self.failed.sum())

    @property
    def dropped_tokens(self) -> int:
        """Token transfers that never reached their expert."""
        return int(self.tokens_planned[self.dropped].sum())


def transmit(
    selection, source, subcarrier, estimated_rates, true_rates, system: SystemConfig, *, placement=None, rb_share=None
) -> TransferOutcome:
    """Apply the retransmission rule (module docstring) to one layer round's schedule.

    Args:
        selection: ``[T, K], bool`` alpha scheduled by the policy.
        source: ``[T], int`` node of each token.
        subcarrier: ``[K, K], int`` beta (-1 = none).
        estimated_rates: ``[K, K, M], float64`` [bit/s] the schedule was made on.
        true_rates: ``[K, K, M], float64`` [bit/s] the transmissions meet.
        system: P0, s0, a_j, b_j.
        placement: ``[E], int`` node of each expert when several experts share a node
            (issue 12): ``selection`` is then ``[T, E]``, K = ``system.num_nodes`` is the
            number of nodes N, links, rates and the token counts s_in are per node pair (one
            transmission per (token, remote node)), computation per expert
            (:func:`dmoe.energy.node_computation_energy`), and a dead link i -> n drops every
            expert of node n for the tokens of node i. None = one expert per node.
        rb_share: None (one subcarrier per link) or ``[K, K, M], float64`` the share of each
            link's bits on each resource block (``Schedule.rb_share``; module docstring).

    Returns:
        :class:`TransferOutcome` (all entries finite).

    Raises:
        RuntimeError: a token is scheduled on a link without subcarrier or with estimated
            rate 0 (the policy broke its contract).
    """
    selection = np.asarray(selection, dtype=bool)
    source = np.asarray(source)
    k = system.num_nodes
    sub = np.asarray(subcarrier)
    if placement is None:
        tokens = link_token_counts(selection, source, k)
    else:
        from ..placement import node_selection

        placement = np.asarray(placement, dtype=np.int64)
        # [K, K] tokens sent from node i to node n (one transmission per token and node)
        tokens = link_token_counts(node_selection(selection, placement, k), source, k)
    off = ~np.eye(k, dtype=bool)
    remote = off & (tokens > 0)
    if np.any(remote & (sub < 0)):
        i, j = np.argwhere(remote & (sub < 0))[0]
        raise RuntimeError(f"schedule sends tokens over link {i}->{j}, which has no subcarrier")
    bits, p0 = system.bits_per_token, system.tx_power_w
    if rb_share is None:
        r_est = link_rate_from_subcarriers(estimated_rates, sub)
        r_true = link_rate_from_subcarriers(true_rates, sub)
        if np.any(remote & ~(r_est > 0)):
            i, j = np.argwhere(remote & ~(r_est > 0))[0]
            raise RuntimeError(f"schedule sends tokens over link {i}->{j}, whose scheduled rate is 0")
        failed = remote & (r_true < r_est)
        dropped = failed & ~(r_true > 0)
        ok = remote & ~dropped
        # rate each delivered packet is sent at: r_est when it holds, else the backed-off true rate
        r_send = np.where(failed, r_true, r_est)
        one_lost = np.where(failed, bits / np.where(remote, r_est, 1.0), 0.0)  # [s] per link
        air_ok = link_air_time(np.where(ok, tokens, 0), np.where(ok, r_send, 1.0), bits)
        forward_s = air_ok + one_lost
        # eq (3), written as dmoe.energy.communication_energy writes it (same rounding)
        planned_comm = np.where(remote, p0 * bits * tokens / np.where(remote, r_est, 1.0), 0.0)
        spent_comm = np.where(ok, p0 * bits * tokens / np.where(ok, r_send, 1.0), 0.0) + p0 * one_lost
        time_true = r_true
    else:
        r_est, r_true, failed, dropped, ok, forward_s, planned_comm, spent_comm, time_true = _per_rb(
            tokens, remote, sub, rb_share, estimated_rates, true_rates, bits, p0
        )
    delivered = np.where(dropped, 0, tokens)
    eff = selection.copy()
    if dropped.any():
        # [T, K] token t's transfer to j went over a dead link ([T, E] via the placement)
        lost = dropped[source]
        eff &= ~(lost if placement is None else lost[:, placement])
    backward_s = link_air_time(np.where(ok, delivered, 0), np.where(ok, time_true, 1.0), bits)
    return TransferOutcome(
        tokens_planned=tokens,
        tokens_delivered=delivered,
        selection=eff,
        scheduled_rate=r_est,
        true_rate=r_true,
        failed=failed,
        dropped=dropped,
        energy_comm_planned=planned_comm,
        energy_comm_spent=spent_comm,
        energy_comp_planned=(
            computation_energy(tokens, system)
            if placement is None
            else node_computation_energy(selection, placement, system)
        ),
        energy_comp_spent=(
            computation_energy(delivered, system) if placement is None else node_computation_energy(eff, placement, system)
        ),
        forward_s=forward_s,
        backward_s=backward_s,
        node_load=(
            None
            if placement is None
            else np.bincount(placement, weights=eff.sum(axis=0).astype(np.float64), minlength=k)
            * (k / placement.shape[0])
        ),
    )


def _per_rb(tokens, remote, sub, rb_share, estimated_rates, true_rates, bits, p0):
    """The retransmission rule per resource block (module docstring), for ``transmit``."""
    est = np.asarray(estimated_rates, dtype=np.float64)
    true = np.asarray(true_rates, dtype=np.float64)
    k, _, m = est.shape
    share = check_rb_share(rb_share, k, m).copy()
    # a link without shares but with a subcarrier carries everything on it
    plain = (share.sum(axis=2) == 0) & (sub >= 0)
    i, j = np.nonzero(plain)
    share[i, j, sub[i, j]] = 1.0
    if np.any(remote & (share.sum(axis=2) == 0)):
        i, j = np.argwhere(remote & (share.sum(axis=2) == 0))[0]
        raise RuntimeError(f"schedule sends tokens over link {i}->{j}, which has no resource block")
    used = (share > 0) & remote[:, :, None]
    if np.any(used & ~(est > 0)):
        i, j = np.argwhere((used & ~(est > 0)).any(axis=2))[0]
        raise RuntimeError(f"schedule sends tokens over link {i}->{j}, whose scheduled rate is 0 on one of its RBs")
    r_est, t_est = link_rates_from_allocation(est, sub, share)
    r_true, t_true = link_rates_from_allocation(true, sub, share)
    fail_rb = used & (true < est)
    failed = fail_rb.any(axis=2)
    dropped = (fail_rb & ~(true > 0)).any(axis=2)
    ok = remote & ~dropped
    safe_est = np.where(est > 0, est, 1.0)
    safe_true = np.where(true > 0, true, 1.0)
    seg = bits * share  # [K, K, M] one token's segment on each RB [bit]
    load = tokens[:, :, None] * seg  # [K, K, M] bits planned on each RB
    first = np.where(used, seg / safe_est, 0.0)  # [s] the first segment at r_est
    redo = fail_rb & ok[:, :, None]
    # [K, K, M] on-time of each RB: as planned, or lost segment + everything at r
    on = np.where(used & ok[:, :, None], np.where(redo, first + load / safe_true, load / safe_est), 0.0)
    on = np.where(dropped[:, :, None] & used, first, on)
    # eq (3) on the estimated rates as dmoe.energy.schedule_energy writes it
    planned = np.where(remote, p0 * bits * tokens / np.where(remote, np.where(r_est > 0, r_est, 1.0), 1.0), 0.0)
    spent = np.where(failed, p0 * on.sum(axis=2), planned)
    forward = np.where(failed, on.max(axis=2), link_air_time(np.where(remote, tokens, 0), np.where(remote, t_est, 1.0), bits))
    return r_est, r_true, failed, dropped, ok, forward, planned, spent, t_true
