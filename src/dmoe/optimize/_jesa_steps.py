"""JESA's expert-selection step on validated inputs, solved only where costs changed (issue 18).

In Algorithm 2 a token at node i sees the link rates of row i only (links i -> j, or
i -> n with a placement): its per-token costs are a function of that row, and its
canonical selection (:mod:`dmoe.optimize._ties`) a function of its scores, threshold,
availability and those costs, independent of the other tokens of the batch. So
:class:`SelectionStep` keeps, per source node, the outcome of every cost row it has seen
(selection rows, feasibility, the node's demand row and expert load) and, at each
iteration, solves only the tokens of the nodes whose cost row is new, in one batch
(:func:`dmoe.optimize.selection._solve`, without the per-call validation: the caller
validated once at its edge). The assembled outcome is the one
:func:`~dmoe.optimize.selection.select_experts` gives on the whole batch, bit for bit
(checked against :mod:`dmoe.optimize._jesa_reference` in tests/test_jesa_fast.py).
"""

from __future__ import annotations

import numpy as np

from dmoe.energy import computation_energy, expert_comp_energy, token_costs, transmission_costs
from dmoe.optimize.selection import _solve

__all__ = ["SelectionStep"]


class SelectionStep:
    """One JESA call's selection steps (validated inputs, see :func:`dmoe.optimize.jesa.jesa`).

    Args:
        scores: ``[T, E] float64``; source: ``[T] int64`` in [0, N); thr: ``[T] float64``;
        d: D >= 1; system: N = ``system.num_nodes`` nodes; method: a selection method;
        placement: ``[E] int64`` or None (E = N); avail: ``[T, E] bool`` or None.

    Calling it with ``link_rate`` ``[N, N] float64`` [bit/s] returns
    ``(selection [T, E] bool, feasible [T] bool, demand [N, N] int64, comp [N] float64)``:
    P1(a) on the costs of those rates, the link demand s_ij (tokens from i needing node
    j) and the computation energy per node (eq 4), as
    :func:`dmoe.optimize.jesa._select` computes them.
    """

    def __init__(self, scores, source, thr, d, system, method, placement, avail):
        k = system.num_nodes
        self.k = k
        self.d = min(int(d), scores.shape[1])
        self.system = system
        self.method = method
        self.placement = placement
        self.num_tokens = scores.shape[0]
        # tokens sorted by source node (stable): node i's tokens are rows bounds[i]:bounds[i + 1]
        self.order = np.argsort(source, kind="stable")
        counts = np.bincount(source, minlength=k)
        self.bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.scores = np.ascontiguousarray(scores[self.order])
        self.thr = thr[self.order]
        self.avail = None if avail is None else avail[self.order]
        self.seen = [{} for _ in range(k)]
        if placement is not None:
            # [E] a_j = a_n(j) N / E; [T, E] with unavailable experts at +inf
            self.a_exp = expert_comp_energy(system, placement)
            self.acost = np.ascontiguousarray(np.broadcast_to(self.a_exp, self.scores.shape))
            if avail is not None:
                self.acost = np.where(self.avail, self.acost, np.inf)
            # [E, N] expert j is on node n
            self.onehot = np.zeros((scores.shape[1], k))
            self.onehot[np.arange(scores.shape[1]), placement] = 1.0

    def __call__(self, link_rate):
        k, b = self.k, self.bounds
        # [N, N] the cost row every token of node i sees
        rows = (token_costs(link_rate, self.system) if self.placement is None
                else transmission_costs(link_rate, self.system))
        keys = [rows[i].tobytes() for i in range(k)]
        todo = [i for i in range(k) if b[i + 1] > b[i] and keys[i] not in self.seen[i]]
        if todo:
            self._solve(todo, rows, keys)
        e = self.scores.shape[1]
        sel_sorted = np.empty((self.num_tokens, e), dtype=bool)
        feas_sorted = np.empty(self.num_tokens, dtype=bool)
        demand = np.zeros((k, k), dtype=np.int64)
        load = np.zeros(e, dtype=np.int64)
        for i in range(k):
            if b[i + 1] == b[i]:
                continue
            sel, feas, dem, ld = self.seen[i][keys[i]]
            sel_sorted[b[i]:b[i + 1]] = sel
            feas_sorted[b[i]:b[i + 1]] = feas
            demand[i] = dem
            load += ld
        # back to the caller's token order
        selection = np.empty_like(sel_sorted)
        selection[self.order] = sel_sorted
        feasible = np.empty_like(feas_sorted)
        feasible[self.order] = feas_sorted
        if self.placement is None:
            return selection, feasible, demand, computation_energy(demand, self.system)
        return selection, feasible, demand, self._node_comp(load)

    def _solve(self, todo, rows, keys):
        """Solve the tokens of the nodes ``todo`` in one batch and remember each node's outcome."""
        b = self.bounds
        if len(todo) == sum(1 for i in range(self.k) if b[i + 1] > b[i]):
            take = slice(0, self.num_tokens)  # every node: the whole batch, no copy
        else:
            take = np.concatenate([np.arange(b[i], b[i + 1]) for i in todo])
        counts = [b[i + 1] - b[i] for i in todo]
        src = np.repeat(np.asarray(todo, dtype=np.int64), counts)
        scores, thr = self.scores[take], self.thr[take]
        if self.placement is None:
            costs = rows[src]
            if self.avail is not None:
                costs = np.where(self.avail[take], costs, np.inf)
            res = _solve(scores, costs, thr, self.d, self.method)
            per_node = res.selection
        else:
            res = _solve(scores, self.acost[take], thr, self.d, self.method, placement=self.placement,
                         node_costs=rows[src])
            # [W, N] the token needs node n (one transmission per token and node)
            per_node = (res.selection @ self.onehot) > 0
        start = 0
        for i, c in zip(todo, counts):
            part = slice(start, start + c)
            sel = res.selection[part]
            self.seen[i][keys[i]] = (sel, res.feasible[part], per_node[part].sum(axis=0),
                                     sel.sum(axis=0, dtype=np.int64))
            start += c

    def _node_comp(self, load):
        """:func:`dmoe.energy.node_computation_energy` from the expert loads ``[E]``."""
        p, n = self.placement, self.k
        load = load.astype(np.float64)
        comp = np.bincount(p, weights=load * self.a_exp, minlength=n)
        active = np.bincount(p, weights=load, minlength=n) > 0
        return comp + self.system.comp_energy_static_j * active
