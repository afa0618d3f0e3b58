"""The engine factory: an :class:`~dmoe.runtime.engine.Engine` from its name.

One home for choosing where the expert nodes run (DESIGN: "engines behind one factory
that neither engine module imports back"): this module imports both engine modules (the
Ray one only when ``"ray"`` is asked for, so ``import dmoe`` never imports Ray), and
neither :mod:`dmoe.runtime.engine` nor :mod:`dmoe.runtime.ray_engine` imports it.
"""

from __future__ import annotations

from typing import Any, Sequence

from .engine import Engine, LocalEngine

__all__ = ["ENGINES", "make_engine"]

#: Engine names accepted by ``engine=`` and ``--engine``.
ENGINES = ("local", "ray")


def make_engine(engine: str | Engine, model, *, num_nodes: int | None = None, address: str | None = None,
                node_experts: Sequence | None = None, **ray_options: Any) -> Engine:
    """An :class:`~dmoe.runtime.engine.Engine` from its name (``"local"`` or ``"ray"``); an Engine passes through.

    Args:
        engine: ``"local"``, ``"ray"`` or an :class:`~dmoe.runtime.engine.Engine`.
        model: the expert model the nodes run.
        num_nodes: N (default K = ``model.num_experts``, one expert per node).
        address: Ray only: address of an existing cluster (``"auto"``, ``"ray://host:port"``,
            ``"host:port"``); None starts Ray embedded with this machine's CPUs.
        node_experts: ``[num_nodes][num_layers][E_n]`` expert ids each node holds from the
            start (issue 12, eq 6); None: node n holds expert n at every layer. Ignored
            for an Engine passed through (:meth:`~dmoe.runtime.engine.Engine.configure` sets it).
        **ray_options: further :class:`~dmoe.runtime.ray_engine.RayEngine` arguments
            (``num_cpus``, ``ray_init_kwargs``, ``timeout_s``, ``start_timeout_s``).

    Raises:
        ValueError: unknown ``engine``; ``address`` given for the local engine;
            ``node_experts`` without one entry per node.
        ConnectionError: Ray cluster unreachable (see :class:`~dmoe.runtime.ray_engine.RayEngine`).
    """
    if isinstance(engine, Engine):
        return engine
    if engine == "local":
        if address is not None:
            raise ValueError("`ray_address` (--ray-address) needs `engine`='ray' (--engine ray)")
        return LocalEngine(model, num_nodes, node_experts=node_experts)
    if engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(model, num_nodes, address=address, node_experts=node_experts, **ray_options)
    raise ValueError(f"`engine` must be one of {', '.join(repr(e) for e in ENGINES)} or an Engine, got {engine!r}")
