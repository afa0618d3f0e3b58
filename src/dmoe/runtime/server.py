"""The DMoE protocol (Section III-C), run in one process.

:class:`DMoERuntime` plays the edge server and the K expert nodes. A *round* serves up to
K queries, one per node (step 1). For each layer l = 1..L it runs

2. attention and gating at each query's source node;
3. the policy's schedule for all tokens of the round (expert selection alpha and
   subcarrier allocation beta) on this layer round's channel realisation;
4. forward transmission of each hidden state to its selected experts and the FFN of each
   selected expert on everything it received;
5. backward transmission and aggregation at the source node with the model's combination
   weights (sum of slices or eq (8) for the carved model, the family's own weights for a
   real MoE), plus the model's always-on part (shared experts) computed at the source node;

and charges the :class:`~dmoe.runtime.ledger.EnergyLedger` with what was sent and
computed. A dense layer (e.g. DeepSeek-V3's first layers) is not scheduled: its whole FFN
is the always-on part, run at the source node. Finally each source node computes the
next-token logits it needs.

The model is any :class:`~dmoe.model.interface.ExpertModel`; the runtime runs on the
model's device (CPU, or CUDA when the model was moved there), the schedule on the CPU.

Channel realisations come from ``numpy.random.default_rng([seed, round, layer])``, so every
policy run with the same seed meets exactly the same channels. By default a new i.i.d.
Rayleigh draw is made for every layer round (``channel_redraw="layer"``): one round moves
8 kB hidden states at the paper's rates (about 0.1 Mbit/s per subcarrier, so about half a
second per transfer), far longer than the coherence time of an edge link, so consecutive
rounds see independent block fading. ``"round"`` keeps one draw for all layers of a query
round, ``"fixed"`` one draw for the whole run.

The channel comes from a :class:`~dmoe.channels.ChannelProcess` built from ``channel``
(:class:`~dmoe.channels.ChannelConfig`: fading model, mobility, imperfect CSI). The policy
schedules on the *estimated* rates; :func:`~dmoe.runtime.transfer.transmit` plays the
schedule over the *true* rates (failed packets are retransmitted at the true rate, tokens
on a dead link are dropped), the energy ledger charges what was spent and the latency
ledger the round's completion time (:mod:`dmoe.latency`), which in turn tells the channel
how much time passed (mobility).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..channels import CHANNEL_REDRAW, ChannelConfig, ChannelProcess, LayerChannel
from ..data.packing import PackedQuery
from ..latency import round_timing
from ..system import SystemConfig
from .ledger import EnergyLedger, LatencyLedger
from .node import ExpertNode
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
    """Edge server plus K expert nodes running a policy over a MoE model.

    Parameters
    ----------
    model : dmoe.model.ExpertModel
        ``model.num_experts`` (K routed experts per layer) must equal
        ``system.num_experts`` (one expert per node) unless a ``placement`` is given.
    policy : dmoe.optimize.policies.Policy
        Decides selection and subcarriers for each layer round.
    system : SystemConfig
    seed : int
        Seeds the channel draws and any randomness of the policy.
    channel_redraw : {"layer", "round", "fixed"}
        How often the channel is redrawn (module docstring).
    rates_fn : callable(rng) -> ndarray [K, K, M], optional
        Custom channel (true rates, known perfectly); replaces ``channel``.
    channel : ChannelConfig, optional
        Fading model, mobility and CSI; default i.i.d. Rayleigh with perfect CSI, which is
        :func:`dmoe.channel.draw_rates` (eq 1) on the keys above.
    record_selection : bool
        Keep every token's selection per layer (for tests and selection-pattern plots).
    placement : ndarray [num_experts] or [num_layers, num_experts], int, optional
        Node of each expert when experts outnumber nodes (issue 12, :mod:`dmoe.placement`);
        ``system.num_experts`` is then the number of nodes N and a round serves up to N
        queries. Node n holds the FFNs of its experts; the policy schedules node pairs and
        the ledger charges one transmission per (token, remote node). None = one expert
        per node (N = E).

    Raises
    ------
    ValueError
        On a mismatch between the model's and the system's number of experts, or an
        unknown ``channel_redraw``.
    """

    model: object
    policy: object
    system: SystemConfig
    seed: int = 0
    channel_redraw: str = "layer"
    rates_fn: Callable[[np.random.Generator], np.ndarray] | None = None
    record_selection: bool = False
    placement: object = None
    channel: ChannelConfig | None = None
    ledger: EnergyLedger = field(init=False)
    latency: LatencyLedger = field(init=False)
    process: ChannelProcess | None = field(init=False, default=None)
    nodes: list[ExpertNode] = field(init=False)
    rounds: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        K = int(self.model.num_experts)
        if self.placement is not None:
            from ..placement import check_placement

            self.placement = check_placement(
                self.placement, self.system.num_experts, num_experts=K, num_layers=int(self.model.num_layers)
            )
        elif K != self.system.num_experts:
            raise ValueError(
                f"`system.num_experts` ({self.system.num_experts}) must equal the model's "
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
        self.ledger = EnergyLedger(int(self.model.num_layers), self.system, self.placement)
        self.latency = LatencyLedger(int(self.model.num_layers))
        if self.rates_fn is None:
            self.process = ChannelProcess(
                self.channel or ChannelConfig(), self.system, seed=int(self.seed), channel_redraw=self.channel_redraw
            )
        # one holder per expert: with a placement, node n hosts the holders of its experts
        self.nodes = [ExpertNode(j, self.model) for j in range(K)]

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
        return np.asarray(self.rates_fn(np.random.default_rng(key)), dtype=np.float64)

    # --------------------------------------------------------------------- round
    @torch.no_grad()
    def run_round(self, queries: Sequence[PackedQuery]) -> RoundOutput:
        """Serve up to N queries, query q on node q (protocol steps 1-6).

        Parameters
        ----------
        queries : sequence of PackedQuery, length 1..N (N = ``system.num_experts`` nodes)

        Returns
        -------
        RoundOutput

        Raises
        ------
        ValueError
            If there are more queries than nodes or none.
        """
        K = len(self.nodes)
        N = self.system.num_experts
        if not 1 <= len(queries) <= N:
            raise ValueError(f"`queries` must hold 1..{N} queries (one per node), got {len(queries)}")
        model = self.model
        r = self.rounds
        self.rounds += 1
        n_active = len(queries)
        lengths = [q.num_tokens for q in queries]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        # [T] source node of every token of the round
        source = np.repeat(np.arange(n_active), lengths)
        T = int(offsets[-1])
        hidden = [model.embed(q.input_ids) for q in queries]
        pos_emb = [model.position_embeddings(q.positions) for q in queries]
        masks = [q.attention_mask for q in queries]
        record = (
            [np.zeros((model.num_layers, q.num_tokens, K), dtype=bool) for q in queries]
            if self.record_selection
            else None
        )
        for layer in range(model.num_layers):
            us = []
            for i in range(n_active):
                node = self.nodes[i]
                hidden[i] = node.attention(layer, hidden[i], pos_emb[i], masks[i])
                us.append(node.ffn_input(layer, hidden[i]))
            # [T, H] FFN inputs of all tokens of the round
            u_all = torch.cat(us)
            agg = None
            if model.is_moe_layer(layer):
                # [T, K] gating scores (eq 7), computed at each token's source node
                g_all = torch.cat([self.nodes[i].gate_scores(layer, us[i]) for i in range(n_active)])
                scores = g_all.double().cpu().numpy()
                chan = self._channel(r, layer)
                place_kw = {}
                if self.placement is not None:
                    from ..placement import layer_placement

                    place_kw["placement"] = layer_placement(self.placement, layer)
                sched = self.policy.schedule(
                    scores,
                    source,
                    chan.estimated_rates,
                    layer + 1,
                    system=self.system,
                    rng=np.random.default_rng([self.seed, r, layer, 1]),
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
                    **place_kw,
                )
                self.ledger.charge_outcome(layer, sent, sched.feasible)
                timing = round_timing(
                    sent.tokens_delivered, sent.forward_s, sent.backward_s, self.system, load=sent.node_load
                )
                self.latency.charge(r, layer, timing, n_active)
                if self.process is not None:
                    self.process.advance(timing.latency_s)
                selection = sent.selection
                sel_t = torch.from_numpy(selection).to(u_all.device)
                # [T, K] the model's combination weights for this selection (eq 8 or the family's)
                weights = model.combine_weights(sel_t, g_all)
                # [T, H] aggregated FFN output, accumulated expert by expert at the source nodes
                agg = torch.zeros(T, u_all.shape[1], dtype=torch.float32, device=u_all.device)
                for j in range(K):
                    idx = torch.nonzero(sel_t[:, j], as_tuple=True)[0]
                    if idx.numel():
                        # forward transmission to node j, FFN_j, backward transmission
                        y = self.nodes[j].ffn(layer, u_all[idx])
                        agg.index_add_(0, idx, y.float() * weights[idx, j, None])
                if record is not None:
                    for i in range(n_active):
                        record[i][layer] = selection[offsets[i] : offsets[i + 1]]
            size = float(model.always_on_size(layer))
            if size > 0 or not model.is_moe_layer(layer):
                # shared experts / dense FFN: at the source node, no transmission
                self.ledger.charge_always_on(layer, source, size, dense_layer=not model.is_moe_layer(layer))
            for i in range(n_active):
                if agg is not None:
                    hidden[i] = hidden[i] + agg[offsets[i] : offsets[i + 1]]
                extra = self.nodes[i].always_on(layer, us[i])
                if extra is not None:
                    hidden[i] = hidden[i] + extra
        # next-token logits at the source nodes, returned on the CPU
        logits = [model.logits(hidden[i][q.score_rows]).cpu() for i, q in enumerate(queries)]
        return RoundOutput(logits=logits, selections=record)
