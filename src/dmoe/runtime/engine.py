"""Engines: where the expert nodes' operations run.

The DMoE protocol loop (:class:`~dmoe.runtime.server.DMoERuntime`) is one piece of code
for every engine. It calls node operations (the methods of
:class:`~dmoe.runtime.node.ExpertNode`) through an :class:`Engine`, which decides only
*where* they run and how their results travel:

* :class:`LocalEngine` (``"local"``, the embedded default): K node objects in this
  process; a call runs at once and its handle is the value itself.
* :class:`~dmoe.runtime.ray_engine.RayEngine` (``"ray"``): each node is a Ray actor in its
  own process; a call is an actor task and its handle an ``ObjectRef``. Handles passed as
  arguments of another call go from actor to actor through the object store, not through
  the driver.

A call to a node that has died yields a :class:`Failure` instead of a value (and so does
any call that received a failed handle as an argument); :meth:`Engine.probe` tells which
nodes are dead. Both engines can be told to kill a node (fault injection) and to start a
new node in a dead node's place (rejoin).

The factory that makes an engine from its name, :func:`dmoe.runtime.engines.make_engine`,
lives in its own module, which imports this one and the Ray engine's (never the reverse).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .node import ExpertNode

__all__ = ["Engine", "Failure", "LocalEngine"]


def __getattr__(name: str):
    # ``make_engine`` and ``ENGINES`` live in :mod:`dmoe.runtime.engines` (the factory, which
    # imports this module); the old import path keeps working, imported on first use
    if name in ("make_engine", "ENGINES"):
        import warnings

        from . import engines

        warnings.warn(f"`dmoe.runtime.engine.{name}` moved to `dmoe.runtime.engines.{name}` "
                      "(also `dmoe.runtime.{name}`)", DeprecationWarning, stacklevel=2)
        return getattr(engines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Failure:
    """The outcome of a node call that did not complete (its node died)."""

    error: BaseException | None = None


class Engine(abc.ABC):
    """Runs node operations for the protocol loop (module docstring).

    Attributes:
        name: ``"local"`` or ``"ray"``.
        num_nodes: K.
    """

    name: str
    num_nodes: int
    #: ``[num_nodes][num_layers][E_n]`` experts each node holds (None: node n holds expert n)
    node_experts: list | None = None

    @abc.abstractmethod
    def submit(self, node: int, method: str, *args, num_returns: int = 1) -> list:
        """Call ``ExpertNode.<method>(*args)`` on ``node``; ``num_returns`` handles."""

    @abc.abstractmethod
    def get(self, handles: Sequence) -> list:
        """Bring the handles' values to the driver; a :class:`Failure` where a call failed."""

    @abc.abstractmethod
    def probe(self, nodes: Sequence[int]) -> set[int]:
        """The nodes among ``nodes`` that are dead."""

    @abc.abstractmethod
    def kill(self, node: int) -> None:
        """Fault injection: make ``node`` die now (its state is lost)."""

    @abc.abstractmethod
    def join(self, node: int) -> None:
        """Start a fresh node in place of ``node`` (a rejoin or a new node): it downloads
        its blocks (eq 6) and holds no query."""

    def join_many(self, nodes: Sequence[int]) -> None:
        """:meth:`join` several nodes (engines may start them in parallel)."""
        for j in nodes:
            self.join(j)

    def configure(self, *, combine: str, node_experts: list | None = None) -> None:
        """Tell every live node the combination rule of step 5 (``model.combine``) and,
        with ``node_experts`` (``[num_nodes][num_layers][E_n]`` expert ids, issue 12), the
        experts it holds; a node started later (:meth:`join`) holds the same experts.

        Raises:
            ValueError: ``node_experts`` does not have one entry per node.
        """
        if node_experts is not None:
            self.node_experts = self._check_node_experts(node_experts)
            handles = [h for n in range(self.num_nodes) for h in self._set_experts(n, self.node_experts[n])]
            self.get(handles)
        handles = [h for j in range(self.num_nodes) for h in self.submit(j, "set_combine", combine)]
        self.get(handles)

    def _check_node_experts(self, node_experts) -> list:
        """``node_experts`` as lists of int tuples, one entry per node (ValueError otherwise)."""
        if len(node_experts) != self.num_nodes:
            raise ValueError(
                f"`node_experts` must have one entry per node ({self.num_nodes}), got {len(node_experts)}"
            )
        return [[tuple(int(j) for j in layer) for layer in node] for node in node_experts]

    def _set_experts(self, node: int, experts) -> list:
        """Tell ``node`` to hold ``experts`` (``[num_layers][E_n]``); the call's handles."""
        return self.submit(node, "set_experts", experts)

    def _experts_of(self, node: int):
        """The experts a (re)started ``node`` holds (None: the paper's expert ``node``)."""
        return None if self.node_experts is None else self.node_experts[node]

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources (processes, memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


class LocalEngine(Engine):
    """All nodes in this process (the embedded default).

    Args:
        model: the expert model (shared read-only by the nodes).
        num_nodes: N (default K = ``model.num_experts``, one expert per node).
        node_experts: ``[num_nodes][num_layers][E_n]`` the experts each node holds (None:
            node n holds expert n at every layer).

    Raises:
        ValueError: ``node_experts`` does not have one entry per node.
    """

    name = "local"

    def __init__(self, model, num_nodes: int | None = None, *, node_experts=None) -> None:
        self._model = model
        self.num_nodes = int(num_nodes if num_nodes is not None else model.num_experts)
        if node_experts is not None:
            self.node_experts = self._check_node_experts(node_experts)
        self._nodes: list[ExpertNode | None] = [
            ExpertNode(j, model, self._experts_of(j)) for j in range(self.num_nodes)
        ]

    def submit(self, node: int, method: str, *args, num_returns: int = 1) -> list:
        target = self._nodes[node]
        if target is None or any(isinstance(a, Failure) for a in args):
            return [Failure()] * num_returns
        out = getattr(target, method)(*args)
        return [out] if num_returns == 1 else list(out)

    def get(self, handles: Sequence) -> list:
        return list(handles)

    def probe(self, nodes: Sequence[int]) -> set[int]:
        return {int(j) for j in nodes if self._nodes[j] is None}

    def kill(self, node: int) -> None:
        self._nodes[node] = None

    def join(self, node: int) -> None:
        self._nodes[node] = ExpertNode(node, self._model, self._experts_of(node))

    def alive(self) -> np.ndarray:
        """``[K]`` bool: nodes that are running."""
        return np.array([n is not None for n in self._nodes])
