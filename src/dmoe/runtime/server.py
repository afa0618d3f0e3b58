"""The DMoE protocol (Section III-C): the edge server's loop, one code for every engine.

:class:`DMoERuntime` plays the edge server; the N expert nodes (N = K, one expert each,
in the paper; fewer with a ``placement``, issue 12) run wherever its engine puts them
(:mod:`dmoe.runtime.engine`, made by :mod:`dmoe.runtime.engines`: in this process, or one
Ray actor per node). A *round* serves up to N queries, query q hosted on node q (step 1).
For each layer l = 1..L it runs

2. attention and gating at each query's host node; the gating scores go to the server;
3. the policy's schedule for all tokens of the round (expert selection alpha and
   subcarrier allocation beta) on this layer round's channel realisation, over the
   experts that are up;
4. forward transmission of each hidden state to the nodes of its selected experts (one
   batch per source and node: a token goes once to a node) and the FFN of each selected
   expert on the rows that selected it;
5. backward transmission and aggregation at the host node with the model's combination
   weights, plus the model's always-on part (shared experts) computed at the host; the
   host returns each query's layer output, which the server keeps as the query's
   checkpoint;

and charges the :class:`~dmoe.runtime.ledger.EnergyLedger` with what was sent and
computed. A dense layer (e.g. DeepSeek-V3's first layers) is not scheduled: its whole FFN
is the always-on part, run at the host. Finally each host computes the next-token logits
the server scores (returned on the CPU). Every phase is one call per node (batched over
everything the node hosts or receives): a layer round is an ``ffn`` call per expert node,
which reads its rows from each host's source batch (the FFN inputs the host's attention
call returned), and a ``combine`` call per host, which also runs step 2 of the next layer
when no node can fail before it (its scores and source batch come back with it). The model is any
:class:`~dmoe.model.interface.ExpertModel`.

Node loss (issue 9): a node that dies (fault model, scheduled kill, or a real process
death) is detected when its call fails. The server marks its experts unavailable; a query
it hosted is re-hosted on the up node with the fewest queries (ties: lowest index),
resuming from the server's checkpoint of its last completed layer (re-host transfer
charged, :mod:`dmoe.runtime.ledger`); if the node died after the schedule was sent, the
layer round is re-planned with its expert ineligible (Remark 2's fallback takes the best
remaining experts). No query is lost while one node is up; when none is,
:class:`~dmoe.runtime.faults.NoLiveNodeError`. Failed nodes rejoin at the start of the
next round (``node_rejoin``), or by :meth:`DMoERuntime.join_node`.

Channel realisations come from ``numpy.random.default_rng([seed, round, layer])``, so every
policy run with the same seed meets exactly the same channels. By default a new i.i.d.
Rayleigh draw is made for every layer round (``channel_redraw="layer"``): one round moves
8 kB hidden states at the paper's rates (about 0.1 Mbit/s per subcarrier, so about half a
second per transfer), far longer than the coherence time of an edge link, so consecutive
rounds see independent block fading. ``"round"`` keeps one draw for all layers of a query
round, ``"fixed"`` one draw for the whole run. The policy's randomness comes from
``[seed, round, layer, 1]`` (a re-planned attempt a > 0 appends a), failures from
``[seed, round, layer, 2]``.

The channel comes from a :class:`~dmoe.channels.ChannelProcess` built from ``channel``
(:class:`~dmoe.channels.ChannelConfig`: fading model, mobility, imperfect CSI; issue 10).
The policy schedules on the *estimated* rates; :func:`~dmoe.runtime.transfer.transmit`
plays the schedule over the *true* rates (failed packets are retransmitted at the true
rate, tokens on a dead link are dropped), the experts process what was delivered, the
energy ledger charges what was spent and the latency ledger the round's completion time
(:mod:`dmoe.latency`), which in turn tells the channel how much time passed (mobility).
A re-planned attempt (node loss) meets the same layer round's channel; its energy and
its air time add to the layer round's. A dense layer draws no channel from the process
(nothing is scheduled); a query re-hosted there is charged on an i.i.d. Rayleigh draw
keyed ``[seed, round, layer]`` (or ``rates_fn``), as before issue 10, on the layout's
large-scale gains when the channel has one (:meth:`~dmoe.channels.ChannelProcess.iid_rates`). Re-host transfers
are charged on the true rates.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..channels.rates import draw_rates
from ..channels import CHANNEL_REDRAW, ChannelConfig, ChannelProcess, LayerChannel
from ..data.packing import PackedQuery
from ..latency import round_timing
from ..policies.check import run_policy
from ..system import SystemConfig
from .engine import Engine, Failure
from .engines import make_engine
from .faults import FaultLog, FaultModel, NodeKill, NoLiveNodeError, least_loaded
from .ledger import EnergyLedger, LatencyLedger
from .node import HostedQuery, as_tensor
from .transfer import transmit


@dataclass
class RoundOutput:
    """What one round returns.

    Attributes
    ----------
    logits : list of Tensor [num_scored, vocab_size]
        Per query, next-token logits at ``query.score_rows``.
    selections : list of ndarray [num_layers, seq_len, num_experts] bool, or None
        Per query, the experts that processed each token at each layer (when recorded).
    """

    logits: list[torch.Tensor]
    selections: list[np.ndarray] | None = None


@dataclass
class DMoERuntime:
    """Edge server running a policy over K expert nodes of a MoE model.

    Parameters
    ----------
    model : dmoe.model.ExpertModel
        ``model.num_experts`` (K routed experts per layer) must equal
        ``system.num_nodes`` (one expert per node) unless a ``placement`` is given.
    policy : dmoe.policies.Policy
        Decides selection and subcarriers for each layer round.
    system : SystemConfig
    seed : int
        Seeds the channel draws, the policy's randomness and the fault model.
    channel_redraw : {"layer", "round", "fixed"}
        How often the channel is redrawn (module docstring).
    rates_fn : callable(rng) -> ndarray [K, K, M], optional
        Custom channel (true rates, known perfectly); replaces ``channel``.
    channel : ChannelConfig, optional
        Fading model, mobility and CSI; default i.i.d. Rayleigh with perfect CSI, which is
        :func:`dmoe.channels.rates.draw_rates` (eq 1) on the keys above.
    record_selection : bool
        Keep every token's selection per layer (for tests and selection-pattern plots).
    placement : ndarray [num_experts] or [num_layers, num_experts], int, optional
        Node of each expert when experts outnumber nodes (issue 12, :mod:`dmoe.placement`);
        ``system.num_nodes`` is then the number of nodes N and a round serves up to N
        queries. Node n holds the FFNs of its experts; the policy schedules node pairs and
        the ledger charges one transmission per (token, remote node). None = one expert
        per node (N = E). The engine runs one worker per node (N workers; worker n holds
        the experts placed on node n and hosts node n's queries, and a hidden state goes
        once to each node whose experts it selected). A failed node takes all of its
        experts with it: the re-plan sees them unavailable.
    engine : {"local", "ray"} or Engine
        Where the nodes run (:mod:`dmoe.runtime.engine`). An Engine instance is shared
        (not shut down by :meth:`close`); a name makes one owned by this runtime.
    ray_address : str, optional
        Ray cluster to join (``engine="ray"``); None starts Ray embedded.
    node_failure_rate : float
        p in [0, 1): each up node fails in each layer round with probability p
        (:class:`~dmoe.runtime.faults.FaultModel`).
    node_kills : sequence of NodeKill
        Scheduled kills (test hook).
    node_rejoin : bool
        Restart failed nodes at the start of the next round (default True).

    Raises
    ------
    ValueError
        On a mismatch between the model's and the system's number of experts, an
        unknown ``channel_redraw`` or ``engine``, a bad ``seed`` or ``node_failure_rate``,
        or both ``rates_fn`` and ``channel``.
    ConnectionError
        ``ray_address`` unreachable.
    """

    model: object
    policy: object
    system: SystemConfig
    seed: int = 0
    channel_redraw: str = "layer"
    rates_fn: Callable[[np.random.Generator], np.ndarray] | None = None
    record_selection: bool = False
    placement: object = None
    engine: str | Engine = "local"
    ray_address: str | None = None
    node_failure_rate: float = 0.0
    node_kills: Sequence[NodeKill] = ()
    node_rejoin: bool = True
    channel: ChannelConfig | None = None
    ledger: EnergyLedger = field(init=False)
    latency: LatencyLedger = field(init=False)
    process: ChannelProcess | None = field(init=False, default=None)
    faults: FaultLog = field(init=False)
    up: np.ndarray = field(init=False)
    rounds: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        K = int(self.model.num_experts)
        if self.placement is not None:
            from ..placement import check_placement

            self.placement = check_placement(
                self.placement, self.system.num_nodes, num_experts=K, num_layers=int(self.model.num_layers)
            )
        elif K != self.system.num_nodes:
            raise ValueError(
                f"`system.num_nodes` ({self.system.num_nodes}) must equal the model's "
                f"number of experts per layer ({K}): one expert per node (or give a `placement`)"
            )
        if self.channel_redraw not in CHANNEL_REDRAW:
            raise ValueError(
                f"`channel_redraw` must be one of {CHANNEL_REDRAW}, got {self.channel_redraw!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed!r}")
        if self.rates_fn is not None and self.channel is not None:
            raise ValueError("give either `rates_fn` or `channel`, not both")
        self.fault_model = FaultModel(self.node_failure_rate, int(self.seed), tuple(self.node_kills))
        self.ledger = EnergyLedger(int(self.model.num_layers), self.system, self.placement)
        self.latency = LatencyLedger(int(self.model.num_layers))
        if self.rates_fn is None:
            self.process = ChannelProcess(
                self.channel or ChannelConfig(), self.system, seed=int(self.seed), channel_redraw=self.channel_redraw
            )
        self.faults = FaultLog()
        # N nodes (N = K without a placement)
        N = int(self.system.num_nodes)
        L = int(self.model.num_layers)
        # [L, K] node of every expert at every layer
        self._expert_node = (
            np.broadcast_to(np.arange(K, dtype=np.int64), (L, K))
            if self.placement is None
            else np.broadcast_to(np.asarray(self.placement, dtype=np.int64), (L, K))
        )
        # [N][L][E_n] the experts each node holds (eq 6, per placement)
        from ..placement import experts_by_node

        node_experts = experts_by_node(self.placement, N, L)
        self._owns_engine = not isinstance(self.engine, Engine)
        self._engine = make_engine(self.engine, self.model, num_nodes=N, address=self.ray_address,
                                   node_experts=node_experts)
        if self._engine.num_nodes != N:
            raise ValueError(f"`engine` runs {self._engine.num_nodes} nodes but the system has N = {N} nodes")
        # a shared engine may hold nodes that died in an earlier run: start them again
        self._engine.join_many(sorted(self._engine.probe(range(N))))
        self._engine.configure(combine=getattr(self.model, "combine", "sum"), node_experts=node_experts)
        # [N] the server's view of which nodes are up
        self.up = np.ones(N, dtype=bool)

    @property
    def num_nodes(self) -> int:
        return int(self.up.shape[0])

    @property
    def engine_name(self) -> str:
        return self._engine.name

    @property
    def engine_object(self) -> Engine:
        """The engine running the nodes (shareable with another runtime)."""
        return self._engine

    def close(self) -> None:
        """Shut the engine down if this runtime made it."""
        if self._owns_engine:
            self._engine.shutdown()

    # ------------------------------------------------------------- membership
    def join_node(self, node) -> None:
        """Start node ``node`` (or each of a list of nodes) again between rounds (a rejoin,
        or a new node taking its place): it downloads its blocks (eq 6) and its expert is
        available again."""
        nodes = [node] if np.ndim(node) == 0 else list(node)
        for j in nodes:
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= int(j) < self.num_nodes:
                raise ValueError(f"`node` must be an integer in [0, {self.num_nodes}), got {j!r}")
        nodes = [int(j) for j in nodes]
        self._engine.join_many(nodes)
        combine = getattr(self.model, "combine", "sum")
        self._engine.get([h for j in nodes for h in self._engine.submit(j, "set_combine", combine)])
        for j in nodes:
            self.up[j] = True
            self.faults.joins += 1
            self.faults.record(self.rounds, None, j, "join")

    def _mark_dead(self, nodes, r: int, layer: int | None, st) -> None:
        for j in sorted(nodes):
            if not self.up[j]:
                continue
            self.up[j] = False
            self.faults.failures += 1
            self.faults.record(r, layer, j, "failed")
            for q in np.flatnonzero(st.host == j):
                st.host[q] = -1
                st.moved[q] = j
                st.scores.pop(int(q), None)
                if st.hosted[q].cached:
                    # a decoding query's KV cache died with its host: out of this round, rebuilt by the caller
                    st.lost.add(int(q))

    def _failed(self, nodes, vals, r, layer, st) -> None:
        """Attribute failed calls to dead nodes; re-raise errors of live nodes (bugs)."""
        bad = [v for v in vals if isinstance(v, Failure)]
        if not bad:
            return
        dead = self._engine.probe(sorted(set(nodes)))
        if not dead:
            err = next((v.error for v in bad if v.error is not None), None)
            raise RuntimeError(f"a node call failed but every node is up: {err}") from err
        self._mark_dead(dead, r, layer, st)

    # ------------------------------------------------------------------ channels
    def _channel(self, round_index: int, layer: int) -> LayerChannel:
        if self.process is not None:
            return self.process.layer_channel(round_index, layer)
        rates = self._rates(round_index, layer)
        return LayerChannel(rates, rates)

    def _rates(self, round_index: int, layer: int) -> np.ndarray:
        if self.channel_redraw == "layer":
            key = [self.seed, round_index, layer]
        elif self.channel_redraw == "round":
            key = [self.seed, round_index]
        else:
            key = [self.seed]
        rng = np.random.default_rng(key)
        if self.rates_fn is not None:
            return np.asarray(self.rates_fn(rng), dtype=np.float64)
        if self.process is not None:
            return self.process.iid_rates(rng)  # draw_rates, on the layout's large-scale gains if any
        return draw_rates(self.system, rng)

    # -------------------------------------------------------------- placement
    def _hosted_groups(self, qids, r: int, layer: int, rates: np.ndarray | None, st) -> dict[int, list]:
        """Host the queries of ``qids`` that have no host (:meth:`_place`), then group
        ``qids`` by host: ``{host: [qid, ...]}`` in increasing host order."""
        self._place([q for q in qids if st.host[q] < 0], r, layer, rates, st)
        return _by_host(qids, st.host)

    def _place(self, qids, r: int, layer: int, rates: np.ndarray | None, st) -> None:
        """Host queries ``qids`` (host -1: on the least-loaded up node), resuming from
        their checkpoints; charge re-host transfers (``rates`` of this layer round)."""
        eng = self._engine
        qids = [int(q) for q in qids]
        while qids:
            load = np.bincount(st.host[st.host >= 0], minlength=self.num_nodes)
            for q in qids:
                if st.host[q] < 0:
                    j = least_loaded(self.up, load)
                    if j is None:
                        raise NoLiveNodeError(
                            f"all {self.num_nodes} nodes have failed (round {r}, layer {layer + 1}): "
                            f"no expert can serve and no node can host query {q}",
                            round=r,
                            layer=layer,
                        )
                    st.host[q] = j
                    load[j] += 1
            groups = _by_host(qids, st.host)
            hosts = list(groups)
            handles = [
                eng.submit(h, "host", [st.hosted[q] for q in groups[h]], *[st.ckpt[q] for q in groups[h]])[0]
                for h in hosts
            ]
            vals = eng.get(handles)
            retry = []
            for h, v in zip(hosts, vals):
                if isinstance(v, Failure):
                    retry += groups[h]
                    continue
                for q in groups[h]:
                    st.lost.discard(q)
                    if st.moved[q] >= 0:
                        self.faults.rehosted += 1
                        self.faults.record(r, layer, h, f"rehost:{q}:{st.moved[q]}->{h}")
                        if st.ckpt[q] is not None and rates is not None:
                            others = np.arange(self.num_nodes) != h
                            self.ledger.charge_rehost(layer, st.tokens[q], float(rates[others, h, :].max()))
                        st.moved[q] = -1
            self._failed(hosts, vals, r, layer, st)
            qids = retry

    # --------------------------------------------------------------------- round
    @torch.no_grad()
    def run_round(self, queries: Sequence[PackedQuery]) -> RoundOutput:
        """Serve up to N queries, query q on node q (protocol steps 1-6).

        Parameters
        ----------
        queries : sequence of PackedQuery, length 1..N (N = ``system.num_nodes`` nodes)

        Returns
        -------
        RoundOutput

        Raises
        ------
        ValueError
            If there are more queries than nodes or none.
        NoLiveNodeError
            If every node has failed (then no expert can serve).
        """
        # K experts per layer on N = system.num_nodes nodes (N = K without a placement)
        K = int(self.model.num_experts)
        N = self.num_nodes
        if not 1 <= len(queries) <= N:
            raise ValueError(f"`queries` must hold 1..{N} queries (one per node), got {len(queries)}")
        L = int(self.model.num_layers)
        eng = self._engine
        r = self.start_round()
        n = len(queries)
        st = RoundState.new(
            [HostedQuery(q, x.input_ids, x.positions, x.attention_mask, x.score_rows) for q, x in enumerate(queries)],
            self.up,
        )
        record = (
            [np.zeros((L, x.num_tokens, K), dtype=bool) for x in queries] if self.record_selection else None
        )
        self._place(range(n), r, 0, None, st)
        logits = self.serve(r, st, record)
        for h in sorted(set(st.host.tolist())):
            if h >= 0 and self.up[h]:
                eng.submit(h, "release", list(range(n)))
        return RoundOutput(logits=[logits[q] for q in range(n)], selections=record)

    def start_round(self) -> int:
        """Open a query round: its index (keys of its channels, policy and faults), after
        failed nodes rejoin (``node_rejoin``)."""
        r = self.rounds
        self.rounds += 1
        if self.node_rejoin and not self.up.all():
            self.join_node(np.flatnonzero(~self.up).tolist())
        return r

    def place(self, r: int, st: RoundState, qids: Sequence[int]) -> None:
        """Step 1 for queries ``qids`` of round ``r``: host each on ``st.host[q]``, or on the
        least-loaded up node when that is -1, from its tokens or its checkpoint.

        Raises
        ------
        NoLiveNodeError
            Every node has failed.
        """
        self._place(list(qids), r, 0, None, st)

    def extend(self, r: int, st: RoundState, qids: Sequence[int]) -> None:
        """A decode step (issue 17): send each hosted decoding query of ``qids`` its next
        tokens (``st.hosted[q]``, :meth:`ExpertNode.extend`). A query whose host has died
        joins ``st.lost`` (its KV cache is gone)."""
        eng = self._engine
        groups = _by_host(qids, st.host)
        hosts = list(groups)
        vals = eng.get([eng.submit(h, "extend", [st.hosted[q] for q in groups[h]])[0] for h in hosts])
        self._failed(hosts, vals, r, 0, st)

    def release(self, st: RoundState, qids: Sequence[int]) -> None:
        """The hosts of ``qids`` forget them (finished queries); they leave ``st.active``."""
        eng = self._engine
        for h, qs in _by_host(qids, st.host).items():
            if h >= 0 and self.up[h]:
                eng.submit(h, "release", qs)
        gone = {int(q) for q in qids}
        st.active = [q for q in st.active if q not in gone]
        for q in gone:
            st.host[q] = -1

    @torch.no_grad()
    def serve(self, r: int, st: RoundState, record: list | None = None) -> dict[int, torch.Tensor]:
        """Layers 1..L (steps 2-5) and the next-token logits of the hosted queries ``st.active``
        of round ``r`` (:meth:`start_round`).

        A decoding query (``HostedQuery.cached``, issue 17) whose host dies loses its KV
        cache: it is not re-hosted from a checkpoint but dropped from the round into
        ``st.lost`` (its spent energy charged as lost), for the caller to rebuild
        (:mod:`dmoe.runtime.generate`). Every other query is re-hosted as in the module
        docstring.

        Parameters
        ----------
        r : int
        st : RoundState
            The round's queries; each active query hosted (``st.host``) or to be hosted
            from its checkpoint.
        record : list of ndarray [num_layers, seq_len, num_experts] bool, optional
            Filled with every active query's selection per layer (indexed by qid).

        Returns
        -------
        dict {qid: Tensor [num_scored, vocab_size]}
            The logits at each served query's ``score_rows`` (no entry for a lost query).

        Raises
        ------
        NoLiveNodeError
            Every node has failed.
        """
        L = int(self.model.num_layers)
        eng = self._engine
        st.ahead = {}
        n = len(st.active)
        rates = None
        model = self.model
        for layer in range(L):
            kills = self.fault_model.draw(r, layer, self.up)
            for j in kills["attention"]:
                eng.kill(j)
            if not model.is_moe_layer(layer):
                # nothing to schedule: the whole layer runs at each host (always-on FFN)
                rates = self._rates(r, layer)
                for j in kills["experts"]:
                    eng.kill(j)
                self._dense_layer(layer, r, rates, st)
                continue
            chan = self._channel(r, layer)
            # [K, K, M] what transfers (re-hosts included) meet in this layer round
            rates = chan.true_rates
            pending = set(st.active) - st.lost
            # the scores (and source batches) the hosts sent ahead, right behind the previous
            # layer's combine
            kept = {q: a for q, a in st.ahead.items()
                    if a[0] == layer and q in pending and st.host[q] == a[1] and self.up[a[1]]}
            st.scores = {q: a[2] for q, a in kept.items()}
            st.src = {q: a[3:] for q, a in kept.items()}
            st.ahead = {}
            attempt = 0
            while pending:
                need = sorted(q for q in pending if q not in st.scores)
                if need:
                    groups = self._hosted_groups(need, r, layer, rates, st)
                    hosts = list(groups)
                    calls = [eng.submit(h, "attend_gate", layer, groups[h], num_returns=2) for h in hosts]
                    vals = eng.get([c[0] for c in calls])
                    for h, c, v in zip(hosts, calls, vals):
                        if not isinstance(v, Failure):
                            st.scores.update(v)
                            st.src.update(_source_rows(groups[h], c[1], st.tokens))
                    if any(isinstance(v, Failure) for v in vals):
                        self._failed(hosts, vals, r, layer, st)
                        pending -= st.lost
                        continue
                order = sorted(pending)
                lengths = [st.tokens[q] for q in order]
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                # [T] host node of every pending token; [T, K] gating scores
                source = np.repeat(st.host[order], lengths)
                scores = np.concatenate([st.scores[q] for q in order]).astype(np.float64)
                # [K] experts whose node is up
                kwargs = {} if self.up.all() else {"available": self.up[self._expert_node[layer]]}
                key = [self.seed, r, layer, 1] if attempt == 0 else [self.seed, r, layer, 1, attempt]
                place_kw = {}
                if self.placement is not None:
                    from ..placement import layer_placement

                    place_kw["placement"] = layer_placement(self.placement, layer)
                # C1-C3 and the Schedule contract, on what the policy was given (a policy's bug
                # stops the run here, naming the policy, the layer and the constraint or exception)
                sched = run_policy(
                    self.policy,
                    scores,
                    source,
                    chan.estimated_rates,
                    layer + 1,
                    system=self.system,
                    rng=np.random.default_rng(key),
                    **kwargs,
                    **place_kw,
                )
                # the schedule meets the true channel; the experts that received a token process it
                sent = transmit(
                    sched.selection,
                    source,
                    sched.subcarrier,
                    chan.estimated_rates,
                    chan.true_rates,
                    self.system,
                    rb_share=getattr(sched, "rb_share", None),
                    **place_kw,
                )
                selection = sent.selection
                if attempt == 0:
                    for j in kills["experts"]:
                        eng.kill(j)
                # the next layer's attention can start right behind this combine when no node
                # can fail before it (its attention-phase kills would be drawn from these nodes)
                ahead = bool(layer + 1 < L and model.is_moe_layer(layer + 1)
                             and not self.fault_model.draw(r, layer + 1, self.up)["attention"])
                done = self._experts(layer, order, offsets, selection, r, st, ahead=ahead)
                completed = np.repeat(np.array([q in done for q in order], dtype=bool), lengths)
                self.ledger.charge_outcome(layer, sent, sched.feasible, completed=completed, source=source)
                timing = round_timing(
                    sent.tokens_delivered, sent.forward_s, sent.backward_s, self.system, load=sent.node_load
                )
                # each link sends at min(estimated, true) rate (dmoe.runtime.transfer)
                self.latency.charge(r, layer, timing, n, link_rate=np.minimum(sent.scheduled_rate, sent.true_rate),
                                    link_tokens=sent.tokens_delivered)
                if self.process is not None:
                    self.process.advance(timing.latency_s)
                size = float(model.always_on_size(layer))
                if size > 0 and completed.any():
                    # shared experts: at each completed token's host, no transmission
                    self.ledger.charge_always_on(layer, source[completed], size)
                for i, q in enumerate(order):
                    if q in done:
                        st.ckpt[q] = done[q]
                        pending.discard(q)
                        if record is not None:
                            record[q][layer] = selection[offsets[i] : offsets[i + 1]]
                pending -= st.lost
                if pending:
                    self.faults.replans += 1
                    self.faults.record(r, layer, -1, "replan")
                attempt += 1
        # the logits each host needs; a host lost here is replaced from the layer-L checkpoint
        logits: dict[int, torch.Tensor] = {}
        while True:
            need = [q for q in st.active if q not in logits and q not in st.lost]
            if not need:
                break
            groups = self._hosted_groups(need, r, L - 1, rates, st)
            hosts = list(groups)
            vals = eng.get([eng.submit(h, "logits", groups[h])[0] for h in hosts])
            for v in vals:
                if not isinstance(v, Failure):
                    logits.update({q: as_tensor(x) for q, x in v.items()})
            self._failed(hosts, vals, r, L - 1, st)
        return logits

    def _dense_layer(self, layer: int, r: int, rates: np.ndarray, st) -> None:
        """A layer without routed experts, at every query's host (re-hosting as needed)."""
        eng = self._engine
        pending = [q for q in st.active if q not in st.lost]
        while pending:
            groups = self._hosted_groups(pending, r, layer, rates, st)
            hosts = list(groups)
            calls = {h: eng.submit(h, "dense_layer", layer, groups[h], num_returns=1 + len(groups[h])) for h in hosts}
            vals = eng.get([calls[h][0] for h in hosts])
            for h, v in zip(hosts, vals):
                if not isinstance(v, Failure):
                    for q, ref in zip(groups[h], calls[h][1:]):
                        st.ckpt[q] = ref
                        pending.remove(q)
                    # the whole FFN is the always-on part, run at the host: charged c^(l) a_h per token
                    source = np.full(sum(st.tokens[q] for q in groups[h]), h, dtype=np.int64)
                    self.ledger.charge_always_on(layer, source, float(self.model.always_on_size(layer)),
                                                 dense_layer=True)
            self._failed(hosts, vals, r, layer, st)
            pending = [q for q in pending if q not in st.lost]

    def _experts(self, layer, order, offsets, selection, r, st, ahead: bool = False) -> dict:
        """Steps 4-5 for the pending queries; returns {qid: checkpoint handle} of the
        queries whose layer round completed (all, unless a node died). With ``ahead``,
        each host also runs step 2 of the next layer right behind its combine, and the
        scores and source batches wait in ``st.ahead``.

        Each expert node takes, from the source batch of every host that sent it tokens
        (``st.src``: the FFN inputs of the host's tokens, :meth:`ExpertNode.attend_gate`),
        the rows of the tokens that selected its experts, runs each selected expert on them
        (``ffn``, one call per node with a plan per source) and returns one object holding
        an output batch per source; each host's ``combine`` takes its batches from those
        objects and adds the outputs in increasing expert order. A layer round is therefore
        two calls per node (``ffn``, ``combine``), besides the server's scheduling."""
        eng = self._engine
        K = selection.shape[1]
        # [K] node of each expert at this layer
        place = self._expert_node[layer]
        # the source batches of the pending queries, ordered by (host, first query): handle,
        # host, its number of rows, and its pending queries with their first row
        by_handle: dict[int, dict] = {}
        for i, q in enumerate(order):
            handle, row0, size = st.src[q]
            src = by_handle.setdefault(id(handle), {"handle": handle, "host": int(st.host[q]), "size": size, "qs": []})
            src["qs"].append((q, row0, i))
        sources = sorted(by_handle.values(), key=lambda x: (x["host"], x["qs"][0][0]))
        # [rows of source s, K] alpha of the source's rows (rows of queries not pending: none)
        for src in sources:
            sel_s = np.zeros((src["size"], K), dtype=bool)
            for q, row0, i in src["qs"]:
                sel_s[row0 : row0 + offsets[i + 1] - offsets[i]] = selection[offsets[i] : offsets[i + 1]]
            src["sel"] = sel_s
            # [K] expert j has a row of this source
            src["any"] = sel_s.any(axis=0)
        # one ffn call per node: its experts with a row, and the rows each source sent it;
        # {node: (experts, the sources it read, the handle of its outputs)}
        calls = {}
        for n in range(self.num_nodes):
            on_n = place == n
            used = [s for s, src in enumerate(sources) if (src["any"] & on_n).any()]
            if not used:
                continue
            cols = np.flatnonzero(on_n & np.logical_or.reduce([sources[s]["any"] for s in used]))
            # [sum of the used sources' rows, E] row r selected experts[k]
            mask = np.concatenate([sources[s]["sel"][:, cols] for s in used])
            experts = tuple(cols.tolist())
            calls[n] = (experts, used, eng.submit(n, "ffn", layer, experts, mask, *[sources[s]["handle"] for s in used])[0])
        # no barrier after the experts: a host's combine runs once its outputs are back and
        # fails (without touching its state) if one of its experts or itself died
        hosts = sorted({src["host"] for src in sources})
        pos = {q: i for i, q in enumerate(order)}
        outs, status, nexts = {}, [], []
        for h in hosts:
            qs = sorted(q for src in sources if src["host"] == h for q, _, _ in src["qs"])
            # [sum S_q, K] alpha of the host's pending queries, in qid order
            sel_h = np.concatenate([selection[offsets[pos[q]] : offsets[pos[q] + 1]] for q in qs])
            dests = [n for n in sorted(calls) if any(sources[s]["host"] == h for s in calls[n][1])]
            recv = [[(slot, calls[n][0], tuple(q for q, _, _ in sources[s]["qs"]))
                     for slot, s in enumerate(calls[n][1]) if sources[s]["host"] == h] for n in dests]
            hs = eng.submit(h, "combine", layer, tuple(qs), sel_h, recv, ahead, *[calls[n][2] for n in dests],
                            num_returns=2 + len(qs))
            status.append(hs[0])
            nexts.append(hs[1])
            # {qid: checkpoint handle}, in the qid order of the combine (and of its next source batch)
            outs[h] = dict(zip(qs, hs[2:]))
        vals = eng.get(status)
        done = {}
        for h, v, nxt in zip(hosts, vals, nexts):
            if isinstance(v, Failure):
                continue
            done.update(outs[h])
            if ahead:
                st.ahead.update({q: (layer + 1, h, v[q], *where)
                                 for q, where in _source_rows(list(outs[h]), nxt, st.tokens).items()})
        self._failed(sorted(set(hosts) | set(calls)), vals, r, layer, st)
        return done


def _source_rows(qids, handle, tokens) -> dict[int, tuple]:
    """``{qid: (handle, first row, rows of the batch)}``: where each of ``qids`` (stacked in
    this order in the source batch ``handle``, :meth:`ExpertNode.attend_gate`) starts in it."""
    size = sum(int(tokens[q]) for q in qids)
    out, row = {}, 0
    for q in qids:
        out[q] = (handle, row, size)
        row += int(tokens[q])
    return out


def _by_host(qids, host: np.ndarray) -> dict[int, list]:
    """``{host: [qid, ...]}`` of ``qids`` by ``host[q]``, in increasing host order."""
    groups = defaultdict(list)
    for q in qids:
        groups[int(host[q])].append(q)
    return {h: groups[h] for h in sorted(groups)}


@dataclass
class RoundState:
    """The server's view of a round's queries (qid = index in these lists).

    A decoding batch (:mod:`dmoe.runtime.generate`) keeps one state over its steps: the
    queries stay hosted with their KV caches, ``active`` lists those still generating.
    """

    hosted: list  # [n] HostedQuery
    tokens: list  # [n] S per query
    host: np.ndarray  # [n] int, node hosting each query (-1: none)
    moved: np.ndarray  # [n] int, node a query lost (-1: not moving)
    ckpt: list  # [n] checkpoint handle of the last completed layer (None: the embedding)
    scores: dict  # {qid: [S, K] float32} gating scores of this layer round
    active: list = field(default_factory=list)  # qids served in this round
    lost: set = field(default_factory=set)  # cached qids whose host died this round (KV cache lost)
    ahead: dict = field(default_factory=dict)  # {qid: (layer, host, scores, source, first row, rows)} step 2 run ahead
    src: dict = field(default_factory=dict)  # {qid: (source batch handle, first row, its rows)} of this layer round

    @classmethod
    def new(cls, hosted: Sequence[HostedQuery], up: np.ndarray) -> "RoundState":
        """A round of ``hosted`` queries, query q to be hosted on node q (or the least-loaded
        up node when node q is down), every query active, none hosted yet."""
        n = len(hosted)
        return cls(
            hosted=list(hosted),
            tokens=[int(h.input_ids.numel()) for h in hosted],
            host=np.array([q if up[q] else -1 for q in range(n)], dtype=np.int64),
            moved=np.full(n, -1, dtype=np.int64),
            ckpt=[None] * n,
            scores={},
            active=list(range(n)),
        )
