"""Expert placement: which of the N edge nodes holds each of the E experts of a layer.

The paper puts one expert on each node (E = N). Real MoE models have far more experts
than an edge deployment has nodes, so a *placement* maps experts to nodes:

* ``placement``: ``[num_experts], int64`` node id of every expert of a layer (the same for
  every layer), or ``[num_layers, num_experts], int64`` one mapping per layer. Node ids lie
  in ``[0, num_nodes)`` and every node holds at least one expert of every layer.
* one expert per node is ``placement = arange(E)`` with N = E (today's model).

When several selected experts of a token sit on the same node, one transmission of the
hidden state serves all of them (see :func:`dmoe.select_experts` with ``placement``).

Built-in placements (all balanced: node sizes differ by at most one, E/N each when N
divides E):

* :func:`contiguous_placement` -- experts ``[n E/N, (n+1) E/N)`` on node n;
* :func:`round_robin_placement` -- expert j on node ``j mod N``;
* :func:`coactivation_placement` -- experts that the router often selects together for the
  same token share a node: a balanced partition maximising the co-activation mass kept
  inside nodes (:func:`coactivation_matrix` from calibration routing statistics). The
  same balanced-assignment step as MoEfication's neuron clustering
  (:func:`dmoe.model.moefy.balanced_kmeans`: a linear assignment of items to node slots,
  ``scipy.optimize.linear_sum_assignment``), followed by exact pairwise-swap local search
  (Kernighan and Lin, 1970), best of a few seeded restarts.

numpy/scipy only (no torch), like :mod:`dmoe.optimize`.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "PLACEMENTS",
    "check_placement",
    "node_sizes",
    "contiguous_placement",
    "round_robin_placement",
    "coactivation_matrix",
    "coactivation_placement",
    "coactivation_kept",
    "make_placement",
    "layer_placement",
    "node_selection",
]

#: names of the built-in placements (``dmoe run --placement``)
PLACEMENTS = ("contiguous", "round-robin", "coactivation")


def _count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}")
    return int(value)


def _check_counts(num_experts, num_nodes) -> tuple[int, int]:
    e = _count("num_experts", num_experts)
    n = _count("num_nodes", num_nodes)
    if n > e:
        raise ValueError(
            f"`num_nodes` N = {n} must not exceed the number of experts E = {e} "
            "(a node without an expert has nothing to serve)"
        )
    return e, n


def node_sizes(num_experts: int, num_nodes: int) -> np.ndarray:
    """Balanced node sizes: ``[num_nodes], int64``, E // N each, the first E mod N nodes one more.

    Raises:
        ValueError / TypeError: non-integer or < 1 counts, ``num_nodes`` > ``num_experts``.
    """
    e, n = _check_counts(num_experts, num_nodes)
    sizes = np.full(n, e // n, dtype=np.int64)
    sizes[: e % n] += 1
    return sizes


def check_placement(
    placement,
    num_nodes: int,
    *,
    num_experts: int | None = None,
    num_layers: int | None = None,
    name: str = "placement",
) -> np.ndarray:
    """Validate a placement (run at the edge, before any solver).

    Args:
        placement: ``[num_experts]`` or ``[num_layers, num_experts]`` integer node ids.
        num_nodes: N, the number of nodes (>= 1).
        num_experts: E the placement must cover (the model's experts per layer), or None.
        num_layers: L a per-layer placement must have, or None.
        name: the argument name used in error messages.

    Returns:
        ``int64`` copy with the same shape.

    Raises:
        ValueError / TypeError naming ``name``: not 1-D/2-D, non-integer entries, shape not
        matching ``num_experts`` / ``num_layers``, an expert unplaced (negative id) or on a
        node >= N, a node left empty, more nodes than experts.
    """
    num_nodes = _count("num_nodes", num_nodes)
    try:
        arr = np.asarray(placement)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"`{name}` must be a rectangular array of node ids: {exc}") from None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"`{name}` must hold integer node ids, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise TypeError(f"`{name}` must hold integer node ids, got non-integer values")
        if arr.size and (arr.min() < -1 or arr.max() >= 2**31):
            raise ValueError(f"`{name}`: node ids must lie in [0, {num_nodes}), got values up to {arr.max():g}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"`{name}` must be [num_experts] or [num_layers, num_experts], got shape {arr.shape}")
    arr = arr.astype(np.int64)
    e = arr.shape[-1]
    if e < 1:
        raise ValueError(f"`{name}` must place at least one expert, got shape {arr.shape}")
    if num_experts is not None and e != num_experts:
        raise ValueError(
            f"`{name}` places {e} experts per layer but the model has {num_experts} (shape {arr.shape})"
        )
    if arr.ndim == 2 and num_layers is not None and arr.shape[0] != num_layers:
        raise ValueError(f"`{name}` has {arr.shape[0]} layers but the model has {num_layers}")
    if num_nodes > e:
        raise ValueError(
            f"`{name}`: N = {num_nodes} nodes is more than the E = {e} experts per layer "
            "(every node must hold an expert)"
        )
    rows = arr.reshape(-1, e)
    for layer, row in enumerate(rows):
        where = "" if arr.ndim == 1 else f" at layer {layer}"
        bad = np.flatnonzero(row < 0)
        if bad.size:
            raise ValueError(f"`{name}`: expert {bad[0]} is unplaced (node {row[bad[0]]}){where}")
        bad = np.flatnonzero(row >= num_nodes)
        if bad.size:
            raise ValueError(
                f"`{name}`: expert {bad[0]} is on node {row[bad[0]]}, outside [0, {num_nodes}){where}"
            )
        empty = np.flatnonzero(np.bincount(row, minlength=num_nodes) == 0)
        if empty.size:
            raise ValueError(f"`{name}`: node {empty[0]} holds no expert{where} (every node needs one)")
    return arr


def experts_by_node(placement, num_nodes: int, num_layers: int) -> list[list[tuple[int, ...]]]:
    """The experts each node holds at each layer (eq 6 with a placement).

    Args:
        placement: ``[num_experts]`` or ``[num_layers, num_experts]`` int node of each
            expert (checked by :func:`check_placement`), or None: expert n on node n
            (one expert per node, the paper).
        num_nodes: N.
        num_layers: L.

    Returns:
        ``[num_nodes][num_layers]`` tuples of expert ids (increasing), what the engines'
        ``node_experts`` take.

    Raises:
        ValueError: (numpy's) a ``placement`` whose layers cannot broadcast to
            ``[num_layers, num_experts]``; check a user's placement with
            :func:`check_placement` first, as the runtime does.
    """
    # [L, K] node of every expert at every layer
    node = np.broadcast_to(
        np.arange(int(num_nodes), dtype=np.int64) if placement is None else np.asarray(placement, dtype=np.int64),
        (int(num_layers), np.shape(placement)[-1] if placement is not None else int(num_nodes)),
    )
    return [[tuple(np.flatnonzero(node[layer] == n).tolist()) for layer in range(int(num_layers))]
            for n in range(int(num_nodes))]


def layer_placement(placement: np.ndarray, layer: int) -> np.ndarray:
    """The ``[num_experts]`` mapping of 0-based ``layer`` from a 1-D or 2-D placement."""
    placement = np.asarray(placement)
    return placement if placement.ndim == 1 else placement[int(layer)]


def contiguous_placement(num_experts: int, num_nodes: int) -> np.ndarray:
    """Contiguous blocks: node n holds the n-th block of experts (balanced sizes).

    Returns ``[num_experts], int64``. Raises ValueError when ``num_nodes`` > ``num_experts``.
    """
    sizes = node_sizes(num_experts, num_nodes)
    return np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)


def round_robin_placement(num_experts: int, num_nodes: int) -> np.ndarray:
    """Round robin: expert j on node ``j mod N``. Returns ``[num_experts], int64``."""
    e, n = _check_counts(num_experts, num_nodes)
    return np.arange(e, dtype=np.int64) % n


def coactivation_matrix(selections) -> np.ndarray:
    """Co-activation counts from routing decisions.

    Args:
        selections: bool ``[num_tokens, num_experts]`` (one layer) or
            ``[num_layers, num_tokens, num_experts]``: the experts the router selected for
            each calibration token (e.g. its Top-k).

    Returns:
        ``[E, E]`` (or ``[L, E, E]``), float64: entry (j, k) = number of tokens that selected
        both j and k; zero diagonal.

    Raises:
        ValueError naming ``selections`` when it is not 2-D/3-D.
    """
    sel = np.asarray(selections)
    if sel.ndim not in (2, 3):
        raise ValueError(
            f"`selections` must be [num_tokens, num_experts] or [num_layers, num_tokens, num_experts], got {sel.shape}"
        )
    s = (sel != 0).astype(np.float64)
    c = np.swapaxes(s, -1, -2) @ s
    e = c.shape[-1]
    c[..., np.arange(e), np.arange(e)] = 0.0
    return c


def _check_coactivation(coactivation) -> np.ndarray:
    c = np.asarray(coactivation, dtype=np.float64)
    if c.ndim not in (2, 3) or c.shape[-1] != c.shape[-2]:
        raise ValueError(f"`coactivation` must be [E, E] or [L, E, E], got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("`coactivation` must be finite and >= 0 (co-selection counts)")
    return c


def coactivation_kept(placement, coactivation) -> float:
    """Fraction of the co-activation mass kept inside nodes (1 = every co-selected pair shares a node).

    Args:
        placement: ``[E]`` or ``[L, E]``; coactivation: ``[E, E]`` or ``[L, E, E]``.
    """
    p = np.asarray(placement)
    c = _check_coactivation(coactivation)
    if p.ndim == 1 and c.ndim == 3:
        p = np.broadcast_to(p, c.shape[:2])
    if c.ndim == 2 and p.ndim == 2:
        c = np.broadcast_to(c, (p.shape[0],) + c.shape)
    same = p[..., :, None] == p[..., None, :]
    total = c.sum()
    return float((c * same).sum() / total) if total > 0 else 1.0


def _intra(labels: np.ndarray, c: np.ndarray) -> float:
    return float((c * (labels[:, None] == labels[None, :])).sum())


def _swap_search(labels: np.ndarray, c: np.ndarray, num_nodes: int, max_swaps: int) -> np.ndarray:
    """Best-improvement pairwise swaps (sizes unchanged) until no swap gains > 1e-12 relative."""
    e = labels.size
    onehot = np.zeros((e, num_nodes))
    onehot[np.arange(e), labels] = 1.0
    # [E, N] co-activation of expert j with the experts of node n
    aff = c @ onehot
    tol = 1e-12 * max(float(c.sum()), 1.0)
    for _ in range(max_swaps):
        own = aff[np.arange(e), labels]  # [E]
        # gain of moving j to k's node and k to j's node:
        # (aff[j, n_k] - own_j) + (aff[k, n_j] - own_k) - 2 c[j, k]
        to_other = aff[:, labels]  # [E, E] aff[j, node of k]
        gain = (to_other - own[:, None]) + (to_other.T - own[None, :]) - 2.0 * c
        gain[labels[:, None] == labels[None, :]] = -np.inf
        flat = int(np.argmax(gain))
        j, k = divmod(flat, e)
        if not gain[j, k] > tol:
            break
        nj, nk = labels[j], labels[k]
        labels[j], labels[k] = nk, nj
        aff[:, nj] += c[:, k] - c[:, j]
        aff[:, nk] += c[:, j] - c[:, k]
    return labels


def _partition(c: np.ndarray, num_nodes: int, sizes: np.ndarray, restarts: int, iterations: int, rng) -> np.ndarray:
    e = c.shape[0]
    slot_node = np.repeat(np.arange(num_nodes), sizes)  # [E] node of each slot
    best, best_val = None, -np.inf
    for _ in range(restarts):
        labels = slot_node[rng.permutation(e)]
        for _ in range(iterations):
            onehot = np.zeros((e, num_nodes))
            onehot[np.arange(e), labels] = 1.0
            # [E, N] affinity of each expert to each node's current members (self excluded)
            aff = c @ onehot
            rows, cols = linear_sum_assignment(-aff[:, slot_node])
            new = np.empty(e, dtype=np.int64)
            new[rows] = slot_node[cols]
            if np.array_equal(new, labels) or _intra(new, c) <= _intra(labels, c):
                break
            labels = new
        labels = _swap_search(labels, c, num_nodes, max_swaps=4 * e)
        val = _intra(labels, c)
        if val > best_val + 1e-12 * max(abs(val), 1.0):
            best, best_val = labels.copy(), val
    # canonical node numbering: nodes ordered by their smallest expert index
    first = np.array([np.flatnonzero(best == n).min() for n in range(num_nodes)])
    rename = np.empty(num_nodes, dtype=np.int64)
    rename[np.argsort(first, kind="stable")] = np.arange(num_nodes)
    return rename[best]


def coactivation_placement(coactivation, num_nodes: int, *, restarts: int = 4, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """Balanced placement that keeps co-selected experts on the same node.

    Maximises the co-activation mass inside nodes, sum over nodes of sum over expert pairs
    (j, k) on the node of ``coactivation[j, k]``, subject to balanced node sizes
    (:func:`node_sizes`). Heuristic (the problem is balanced graph partitioning, NP-hard):
    per restart a seeded random balanced start, then assignment steps (each expert to a
    node slot by ``linear_sum_assignment`` on its affinity to the node's members, kept
    while the objective improves), then best-improvement pairwise swaps until no swap
    helps; the best restart wins. Deterministic for a given ``seed``.

    Args:
        coactivation: ``[E, E]`` or ``[L, E, E]`` symmetric co-selection counts
            (:func:`coactivation_matrix`), >= 0.
        num_nodes: N (1 <= N <= E).
        restarts, iterations: search effort; seed: restarts' random starts.

    Returns:
        ``[E], int64`` (or ``[L, E]``, one partition per layer); nodes are numbered by their
        smallest expert index.

    Raises:
        ValueError naming ``coactivation`` or ``num_nodes`` for bad shapes/values.
    """
    c = _check_coactivation(coactivation)
    e = c.shape[-1]
    _, n = _check_counts(e, num_nodes)
    restarts = _count("restarts", restarts)
    iterations = _count("iterations", iterations)
    sizes = node_sizes(e, n)
    rng = np.random.default_rng(seed)
    if c.ndim == 3:
        return np.stack([_partition(0.5 * (m + m.T), n, sizes, restarts, iterations, rng) for m in c])
    return _partition(0.5 * (c + c.T), n, sizes, restarts, iterations, rng)


def make_placement(kind: str, num_experts: int, num_nodes: int, *, coactivation=None, seed: int = 0) -> np.ndarray:
    """Build a named placement (``dmoe run --placement``).

    Args:
        kind: one of :data:`PLACEMENTS`.
        num_experts, num_nodes: E and N (N <= E).
        coactivation: ``[E, E]`` or ``[L, E, E]``, required for ``"coactivation"``.
        seed: seed of the co-activation search.

    Returns:
        ``[E]`` (or ``[L, E]`` for a per-layer co-activation matrix), int64.

    Raises:
        ValueError naming ``kind`` (unknown) or ``coactivation`` (missing / wrong E).
    """
    if kind not in PLACEMENTS:
        raise ValueError(f"`placement` must be one of {', '.join(PLACEMENTS)}; got {kind!r}")
    e, n = _check_counts(num_experts, num_nodes)
    if kind == "contiguous":
        return contiguous_placement(e, n)
    if kind == "round-robin":
        return round_robin_placement(e, n)
    if coactivation is None:
        raise ValueError("`coactivation` (routing statistics) is required for the 'coactivation' placement")
    c = _check_coactivation(coactivation)
    if c.shape[-1] != e:
        raise ValueError(f"`coactivation` describes {c.shape[-1]} experts, expected {e}")
    return coactivation_placement(c, n, seed=seed)


def node_selection(selection, placement, num_nodes: int) -> np.ndarray:
    """Nodes a selection needs: ``[num_tokens, num_nodes], bool``, True where the token selected
    at least one expert held by that node.

    Args:
        selection: ``[num_tokens, num_experts], bool``; placement: ``[num_experts]`` node ids;
        num_nodes: N.
    """
    sel = np.asarray(selection, dtype=bool)
    p = np.asarray(placement, dtype=np.int64)
    out = np.zeros((sel.shape[0], int(num_nodes)), dtype=bool)
    if sel.size:
        # scatter-or each expert column into its node's column
        counts = np.zeros((sel.shape[0], int(num_nodes)), dtype=np.int64)
        np.add.at(counts.T, p, sel.T.astype(np.int64))
        out = counts > 0
    return out
