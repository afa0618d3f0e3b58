"""The energy ledger of a DMoE run: what was actually sent and computed, per layer.

Every charge is computed here from what the runtime did (which token went to which expert,
on which subcarrier, at which rate), independently of what a policy believes its schedule
costs. Units (DESIGN.md): communication energy of one hidden state sent from node i to node
j != i on subcarrier m is ``P0 * 8 * s0 / r_ij^(m)`` [J] (eq 3 with one subcarrier per
link; a link on several resource blocks pays P0 times the sum of its RBs' on-times,
``Schedule.rb_share``); computation energy of expert j is ``a_j`` [J] per token processed plus ``b_j`` [J]
once per round in which it processes at least one token (eq 4). In-situ processing
(i == j) costs no communication.

Always-on part (shared experts, the whole FFN of a dense layer, e.g. DeepSeek-V3's first
layers): it runs at each token's source node i with no transmission, so it costs no
communication, and its computation is charged there as ``c^(l) * a_i`` [J] per token,
where ``c^(l)`` is its size in units of one routed expert (``model.always_on_size(layer)``,
the ratio of FFN parameter counts). The charge does not depend on the policy: it is the
same for every policy on the same questions. It is part of ``energy_comp_j`` and is also
reported alone as ``energy_always_on_j``. The carved default has no always-on part.

The return of the FFN output to the source node (protocol step 5) is counted in
``backward_transmissions`` but not charged: the paper's energy model (eq 3) and its
objective P1/P2 charge each selected remote expert one hidden-state transfer, and the
ledger follows the model the solvers optimise.

Several experts per node (issue 12): with a ``placement`` (node of each expert, one
mapping or one per layer) ``system.num_nodes`` is the number of nodes N, subcarriers
serve node pairs, one transmission is charged per (token, remote node) however many of
that node's experts the token uses, and computation per expert
(:func:`dmoe.energy.node_computation_energy`). One expert per node is ``placement=None``.
:meth:`EnergyLedger.charge_outcome` takes the placement-aware outcome of
:func:`dmoe.runtime.transfer.transmit` (per node pair, true vs estimated rates).

Node failures (issue 9). Every schedule that was sent is charged in full, including a
layer round whose attempt failed because an expert died after the schedule was sent: its
transmissions and computations were spent (the attempt's per-token energy is also kept
as ``energy_lost_j``), and the re-planned attempt is charged again. Only completed tokens
count as ``tokens`` and in ``selection_counts`` and ``infeasible_tokens``. Re-hosting a
query whose node died sends the server's checkpoint, the query's hidden states after its
last completed layer (``S`` tokens x s0 bytes; the runtime keeps no KV cache, every
layer attends over the whole sequence, so these states are the query's whole state), to
the new host: charged ``S * P0 * 8 * s0 / R`` [J] with R the best rate into the new host
(max over live nodes i and subcarriers m of r_i,new^(m)) of this layer round's channel
(the edge server's downlink is not in the paper's model; this charges it like the best
link a neighbour could relay it on). Before layer 1 completes only token ids move (not
charged).

With imperfect channel knowledge the schedule's *planned* energy (on the estimated rates)
and the energy *spent* (on the true rates, every failed attempt included, see
:mod:`dmoe.runtime.transfer`) differ; :meth:`EnergyLedger.charge_outcome` records both and
the ``energy_*`` read-outs are the energy spent. :class:`LatencyLedger` records each layer
round's completion time (:mod:`dmoe.latency`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..energy import computation_energy, link_token_counts, node_computation_energy, schedule_energy
from ..latency import RoundTiming
from ..system import SystemConfig
from .transfer import TransferOutcome


@dataclass
class LayerTotals:
    """Per-layer totals accumulated over all rounds, each an array ``[num_layers]``.

    ``energy_*_planned_j`` is what the schedules expected on the estimated channel (equal to
    the spent energy with perfect CSI); ``failed_attempts`` counts lost packets (each
    retransmitted or its link declared failed) and ``dropped_tokens`` token transfers that
    never arrived; ``latency_mean_s`` / ``latency_p95_s`` are the mean and 95th percentile
    over query rounds of the layer round's completion time [s].
    """

    energy_comm_j: np.ndarray
    energy_comp_j: np.ndarray
    tokens: np.ndarray
    expert_calls: np.ndarray
    transmissions: np.ndarray
    infeasible_tokens: np.ndarray
    energy_comm_planned_j: np.ndarray | None = None
    energy_comp_planned_j: np.ndarray | None = None
    failed_attempts: np.ndarray | None = None
    dropped_tokens: np.ndarray | None = None
    latency_mean_s: np.ndarray | None = None
    latency_p95_s: np.ndarray | None = None
    energy_always_on_j: np.ndarray | None = None


@dataclass
class EnergyLedger:
    """Accumulates communication and computation energy of a DMoE run.

    Parameters
    ----------
    num_layers : int
        L, number of decoder layers (rounds per query batch).
    system : SystemConfig
        Radio and device parameters (P0, s0, a_j, b_j); ``num_experts`` = N nodes.
    placement : ndarray [num_experts] or [num_layers, num_experts], int, optional
        Node of each expert (validated by the runtime); None = one expert per node.
    """

    num_layers: int
    system: SystemConfig
    placement: np.ndarray | None = None
    _comm: np.ndarray = field(init=False)
    _comp: np.ndarray = field(init=False)
    _tokens: np.ndarray = field(init=False)
    _calls: np.ndarray = field(init=False)
    _tx: np.ndarray = field(init=False)
    _infeasible: np.ndarray = field(init=False)
    _selection_counts: np.ndarray = field(init=False)
    _lost: np.ndarray = field(init=False)
    _rehost: np.ndarray = field(init=False)
    _rehost_tokens: np.ndarray = field(init=False)
    _comm_planned: np.ndarray = field(init=False)
    _comp_planned: np.ndarray = field(init=False)
    _failed: np.ndarray = field(init=False)
    _dropped: np.ndarray = field(init=False)
    _always_on: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        L = self.num_layers
        K = self.system.num_nodes if self.placement is None else np.asarray(self.placement).shape[-1]
        self._comm = np.zeros(L)
        self._comp = np.zeros(L)
        self._tokens = np.zeros(L, dtype=np.int64)
        self._calls = np.zeros(L, dtype=np.int64)
        self._tx = np.zeros(L, dtype=np.int64)
        self._infeasible = np.zeros(L, dtype=np.int64)
        # [num_layers, num_experts] how often each expert was selected
        self._selection_counts = np.zeros((L, K), dtype=np.int64)
        # [num_layers] energy of failed attempts [J]; re-host transfers [J] and [tokens]
        self._lost = np.zeros(L)
        self._rehost = np.zeros(L)
        self._rehost_tokens = np.zeros(L, dtype=np.int64)
        self._comm_planned = np.zeros(L)
        self._comp_planned = np.zeros(L)
        self._failed = np.zeros(L, dtype=np.int64)
        self._dropped = np.zeros(L, dtype=np.int64)
        self._always_on = np.zeros(L)

    def charge(
        self,
        layer: int,
        selection: np.ndarray,
        source: np.ndarray,
        subcarrier: np.ndarray,
        rates: np.ndarray,
        feasible: np.ndarray | None = None,
        completed: np.ndarray | None = None,
        rb_share: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """Charge one layer round.

        Parameters
        ----------
        layer : int
            0-based layer index.
        selection : ndarray [num_tokens, num_experts], bool
            alpha: experts that processed each token.
        source : ndarray [num_tokens], int
            Node holding each token.
        subcarrier : ndarray [num_nodes, num_nodes], int
            beta: the subcarrier each link used (-1: none).
        rates : ndarray [num_nodes, num_nodes, num_subcarriers], float [bit/s]
            The channel realisation of this round.
        feasible : ndarray [num_tokens], bool, optional
            Tokens whose QoS could be met (counted, not charged).
        completed : ndarray [num_tokens], bool, optional
            Tokens whose layer round completed (default all). The energy of the others'
            share (their transmissions and expert calls) is also recorded as lost.
        rb_share : ndarray [num_nodes, num_nodes, num_subcarriers], float, optional
            The share of each link's bits on each resource block when links hold several
            (``Schedule.rb_share``): each link is charged P0 times the sum of its RBs'
            on-times (:func:`dmoe.energy.schedule_energy`). None: one subcarrier per link.

        Returns
        -------
        (comm, comp) : float, float [J]
            Energy charged for this round.

        Raises
        ------
        RuntimeError
            If a token was sent over a link that has no subcarrier or a zero rate: the
            schedule broke the contract and its energy would be infinite.
        """
        selection = np.asarray(selection, dtype=bool)
        sub = np.asarray(subcarrier)
        K = self.system.num_nodes
        place = None
        if self.placement is not None:
            from ..placement import layer_placement, node_selection

            place = layer_placement(self.placement, layer)
            # [K, K] tokens sent from node i to node n (one transmission per token and node)
            tokens = link_token_counts(node_selection(selection, place, K), source, K)
        else:
            # [K, K] tokens sent from node i to expert j (s_ij in tokens)
            tokens = link_token_counts(selection, source, K)
        remote = tokens.copy()
        np.fill_diagonal(remote, 0)
        if np.any((remote > 0) & (sub < 0)):
            i, j = np.argwhere((remote > 0) & (sub < 0))[0]
            raise RuntimeError(f"schedule sends tokens over link {i}->{j}, which has no subcarrier")
        try:
            # eq (2)-(4) on the subcarriers actually allocated
            bill = schedule_energy(
                selection, source, sub, rates, self.system, zero_rate="raise", placement=place, rb_share=rb_share
            )
        except ValueError as exc:
            raise RuntimeError(f"schedule sends tokens over a zero-rate link: {exc}") from exc
        comm, comp = float(bill.comm), float(bill.comp)
        self._comm[layer] += comm
        self._comp[layer] += comp
        self._comm_planned[layer] += comm
        self._comp_planned[layer] += comp
        self._calls[layer] += int(selection.sum())
        self._tx[layer] += int(remote.sum())
        done = np.ones(selection.shape[0], dtype=bool) if completed is None else np.asarray(completed, dtype=bool)
        self._tokens[layer] += int(done.sum())
        self._selection_counts[layer] += selection[done].sum(axis=0)
        if feasible is not None:
            self._infeasible[layer] += int(np.count_nonzero(~np.asarray(feasible, dtype=bool)[done]))
        if not done.all():
            lost = schedule_energy(
                selection[~done], source[~done], sub, rates, self.system, zero_rate="raise", rb_share=rb_share
            )
            self._lost[layer] += float(lost.comm) + float(lost.comp)
        return comm, comp

    def charge_rehost(self, layer: int, num_tokens: int, rate: float) -> float:
        """Charge re-hosting a query: ``num_tokens`` hidden states sent at ``rate`` [bit/s].

        Returns the energy [J] (``num_tokens * P0 * 8 * s0 / rate``, module docstring).
        Raises RuntimeError for a non-positive rate (the transfer would never finish).
        """
        if not rate > 0:
            raise RuntimeError(f"re-host transfer at rate {rate!r}: the new host has no usable link")
        energy = int(num_tokens) * self.system.tx_power_w * self.system.bits_per_token / float(rate)
        self._comm[layer] += energy
        self._comm_planned[layer] += energy
        self._rehost[layer] += energy
        self._rehost_tokens[layer] += int(num_tokens)
        return energy

    def charge_outcome(
        self,
        layer: int,
        outcome: TransferOutcome,
        feasible: np.ndarray | None = None,
        *,
        completed: np.ndarray | None = None,
        source: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """Charge one layer round as it happened on air (:func:`dmoe.runtime.transfer.transmit`).

        Parameters
        ----------
        layer : int
            0-based layer index.
        outcome : TransferOutcome
            Planned and spent energies, failed and dropped links, effective selection.
        feasible : ndarray [num_tokens], bool, optional
            Tokens whose QoS could be met (counted, not charged).
        completed : ndarray [num_tokens], bool, optional
            Tokens whose layer round completed (default all; issue 9). The others' share of
            the spent energy is also recorded as lost: on each delivered link its tokens'
            fraction of the link's spent energy, plus their experts' computation (eq 4).
        source : ndarray [num_tokens], int
            Node holding each token; required with ``completed``.

        Returns
        -------
        (comm, comp) : float, float [J]
            Energy spent in this round.

        Raises
        ------
        ValueError
            ``completed`` given without ``source``.
        """
        selection = outcome.selection
        comm = float(outcome.energy_comm_spent.sum())
        comp = float(outcome.energy_comp_spent.sum())
        self._comm[layer] += comm
        self._comp[layer] += comp
        self._comm_planned[layer] += float(outcome.energy_comm_planned.sum())
        self._comp_planned[layer] += float(outcome.energy_comp_planned.sum())
        self._calls[layer] += int(selection.sum())
        remote = outcome.tokens_planned.copy()
        np.fill_diagonal(remote, 0)
        self._tx[layer] += int(remote.sum()) + outcome.failed_attempts
        self._failed[layer] += outcome.failed_attempts
        self._dropped[layer] += outcome.dropped_tokens
        done = np.ones(selection.shape[0], dtype=bool) if completed is None else np.asarray(completed, dtype=bool)
        self._tokens[layer] += int(done.sum())
        self._selection_counts[layer] += selection[done].sum(axis=0)
        if feasible is not None:
            self._infeasible[layer] += int(np.count_nonzero(~np.asarray(feasible, dtype=bool)[done]))
        if not done.all():
            if source is None:
                raise ValueError("`source` is required together with `completed`")
            k = self.system.num_nodes
            lost_sel = selection[~done]
            if self.placement is None:
                # [K, K] delivered transfers of the tokens whose round failed
                lost_tok = link_token_counts(lost_sel, np.asarray(source)[~done], k)
                lost_comp = float(computation_energy(lost_tok, self.system).sum())
            else:
                from ..placement import layer_placement, node_selection

                place = layer_placement(self.placement, layer)
                # [N, N] delivered node-pair transfers of the tokens whose round failed
                lost_tok = link_token_counts(node_selection(lost_sel, place, k), np.asarray(source)[~done], k)
                lost_comp = float(node_computation_energy(lost_sel, place, self.system).sum())
            share = np.divide(
                lost_tok, outcome.tokens_delivered, out=np.zeros((k, k)), where=outcome.tokens_delivered > 0
            )
            lost_comm = float((outcome.energy_comm_spent * share).sum())
            self._lost[layer] += lost_comm + lost_comp
        return comm, comp

    def charge_always_on(self, layer: int, source: np.ndarray, size: float, *, dense_layer: bool = False) -> float:
        """Charge the always-on part of one layer round at the tokens' source nodes.

        Parameters
        ----------
        layer : int
            0-based layer index.
        source : ndarray [num_tokens], int
            Node holding each token (where its always-on part runs).
        size : float
            c^(l) >= 0, the always-on computation in units of one routed expert.
        dense_layer : bool
            The layer has no routed experts (nothing was scheduled): its tokens are
            counted here instead of in :meth:`charge`.

        Returns
        -------
        float
            Energy charged [J]: ``size * sum_t a_{source(t)}``.

        Raises
        ------
        ValueError
            If ``size`` is negative or not finite.
        """
        size = float(size)
        if not np.isfinite(size) or size < 0:
            raise ValueError(f"`size` must be a finite number >= 0, got {size!r}")
        source = np.asarray(source, dtype=np.int64)
        a = self.system.comp_energy_per_token_j
        if self.placement is not None:
            # a routed expert on node n costs a_n N / E with a placement (dmoe.energy.expert_comp_energy)
            a = a * (self.system.num_nodes / np.asarray(self.placement).shape[-1])
        energy = size * float(a[source].sum())
        self._comp[layer] += energy
        self._comp_planned[layer] += energy
        self._always_on[layer] += energy
        if dense_layer:
            self._tokens[layer] += source.shape[0]
        return energy

    # ---------------------------------------------------------------- read-outs
    @property
    def energy_planned_j(self) -> float:
        """Total energy the schedules planned on the estimated channel [J]."""
        return float(self._comm_planned.sum() + self._comp_planned.sum())

    @property
    def failed_attempts(self) -> int:
        """Lost packets over the run (each retransmitted or its link declared failed)."""
        return int(self._failed.sum())

    @property
    def dropped_tokens(self) -> int:
        """Token transfers that never reached their expert."""
        return int(self._dropped.sum())

    @property
    def energy_always_on_j(self) -> float:
        """Always-on computation energy [J] (included in :attr:`energy_comp_j`)."""
        return float(self._always_on.sum())

    @property
    def energy_comm_j(self) -> float:
        """Total communication energy [J]."""
        return float(self._comm.sum())

    @property
    def energy_comp_j(self) -> float:
        """Total computation energy [J]."""
        return float(self._comp.sum())

    @property
    def energy_j(self) -> float:
        """Total energy [J]."""
        return self.energy_comm_j + self.energy_comp_j

    @property
    def energy_lost_j(self) -> float:
        """Energy of layer-round attempts that failed (already inside the totals) [J]."""
        return float(self._lost.sum())

    @property
    def energy_rehost_j(self) -> float:
        """Energy of re-host transfers (already inside ``energy_comm_j``) [J]."""
        return float(self._rehost.sum())

    @property
    def rehost_tokens(self) -> int:
        """Hidden states sent to re-host queries [tokens]."""
        return int(self._rehost_tokens.sum())

    @property
    def selection_counts(self) -> np.ndarray:
        """``[num_layers, num_experts]`` int: how many tokens each expert processed."""
        return self._selection_counts.copy()

    def per_layer(self) -> LayerTotals:
        """Per-layer totals (copies)."""
        return LayerTotals(
            self._comm.copy(),
            self._comp.copy(),
            self._tokens.copy(),
            self._calls.copy(),
            self._tx.copy(),
            self._infeasible.copy(),
            self._comm_planned.copy(),
            self._comp_planned.copy(),
            self._failed.copy(),
            self._dropped.copy(),
            energy_always_on_j=self._always_on.copy(),
        )


@dataclass
class LatencyLedger:
    """Completion time of every layer round of a run (:func:`dmoe.latency.round_timing`),
    and what made it up: the air time on each round's critical path and the rate and load of
    every loaded link (what a person needs to see why a query takes minutes, issue 16).

    Parameters
    ----------
    num_layers : int
        L.
    """

    num_layers: int
    _rounds: list = field(init=False, default_factory=list)
    _air: list = field(init=False, default_factory=list)
    _sizes: list = field(init=False, default_factory=list)
    _rates: list = field(init=False, default_factory=list)
    _link_tokens: list = field(init=False, default_factory=list)

    def charge(self, round_index: int, layer: int, timing: RoundTiming, num_queries: int, *,
               link_rate=None, link_tokens=None) -> None:
        """Record layer round ``layer`` (0-based) of query round ``round_index`` (0-based,
        consecutive) serving ``num_queries`` queries. A second charge of the same layer round
        (a re-planned attempt after a node loss, issue 9) adds its time.

        ``link_rate`` ``[K, K]`` [bit/s] (the rate each link sent at) and ``link_tokens``
        ``[K, K]`` (hidden states it carried), both optional, are kept for the loaded
        remote links (:attr:`link_rates_bps`, :attr:`link_loads`)."""
        while len(self._rounds) <= round_index:
            self._rounds.append(np.zeros(self.num_layers))
            self._air.append(np.zeros(self.num_layers))
            self._sizes.append(0)
        self._rounds[round_index][layer] += timing.latency_s
        # a timing without the phase breakdown (a bare ``latency_s``): air time unknown (NaN)
        self._air[round_index][layer] += critical_air_time(timing) if hasattr(timing, "ready_s") else np.nan
        self._sizes[round_index] = int(num_queries)
        if link_rate is not None and link_tokens is not None:
            s = np.asarray(link_tokens, dtype=np.float64)
            loaded = (s > 0) & ~np.eye(s.shape[0], dtype=bool)
            self._rates.append(np.asarray(link_rate, dtype=np.float64)[loaded])
            self._link_tokens.append(s[loaded])

    @property
    def layer_round_s(self) -> np.ndarray:
        """``[num_rounds, num_layers], float64`` completion time of every layer round [s]."""
        return np.array(self._rounds, dtype=np.float64).reshape(-1, self.num_layers)

    @property
    def air_s(self) -> np.ndarray:
        """``[num_rounds, num_layers], float64`` air time (forward + backward transfers) on
        the critical path of every layer round [s]; the rest of :attr:`layer_round_s` is FFN
        time. NaN where the round's timing had no phase breakdown."""
        return np.array(self._air, dtype=np.float64).reshape(-1, self.num_layers)

    @property
    def link_rates_bps(self) -> np.ndarray:
        """``[num_loaded_links], float64`` rate [bit/s] of every loaded remote link of every
        layer round charged with ``link_rate`` (empty when none was)."""
        return np.concatenate(self._rates) if self._rates else np.zeros(0)

    @property
    def link_loads(self) -> np.ndarray:
        """``[num_loaded_links], float64`` hidden states each of those links carried."""
        return np.concatenate(self._link_tokens) if self._link_tokens else np.zeros(0)

    @property
    def query_s(self) -> np.ndarray:
        """``[num_queries], float64`` latency of each query [s]: the sum over layers of its
        query round's layer-round times (the K queries of a round share them)."""
        lat = self.layer_round_s.sum(axis=1)
        return np.repeat(lat, np.asarray(self._sizes, dtype=np.int64))

    def per_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """``([num_layers], [num_layers])`` mean and 95th percentile over rounds [s]."""
        lr = self.layer_round_s
        if lr.shape[0] == 0:
            z = np.zeros(self.num_layers)
            return z, z.copy()
        return lr.mean(axis=0), np.percentile(lr, 95, axis=0)


def critical_air_time(timing: RoundTiming) -> float:
    """Air time [s] on the critical path of a layer round: its latency minus the FFN time of
    the node on the slowest path i -> j -> i (:func:`dmoe.latency.round_timing`: the path
    ends at ``ready_j + backward_ij``, ``ready_j = arrive_j + compute_j``), so forward plus
    backward transfer time of that path. 0 for an empty round.

    Args:
        timing: the round's :class:`~dmoe.latency.RoundTiming` (``backward_s`` 0 where unloaded).
    """
    if timing.latency_s <= 0.0:
        return 0.0
    ready = np.asarray(timing.ready_s, dtype=np.float64)
    back = np.asarray(timing.backward_s, dtype=np.float64).max(axis=0, initial=0.0)
    # [K] completion of the slowest path through node j (nodes that processed nothing: -inf)
    end = np.where(ready > 0, ready + back, -np.inf)
    j = int(np.argmax(end))
    return float(max(timing.latency_s - float(np.asarray(timing.compute_s)[j]), 0.0))
