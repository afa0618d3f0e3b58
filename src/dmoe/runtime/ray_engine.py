"""The Ray engine: every expert node is a Ray actor in its own process.

Start-up: each actor receives only its node's share of the model (eq 6,
:mod:`dmoe.runtime.shard`): the model without the routed experts' weights
(:func:`~dmoe.runtime.shard.shared_model`: attention blocks, norms, routers, embedding, LM
head, always-on parts) is put into Ray's object store once, its parameters as numpy arrays
(:func:`~dmoe.runtime.shard.pack_shared_blocks`), and every actor maps them from there
without a copy: on one machine the actors read one physical copy of the shared blocks, as
the in-process nodes do; the parameters of the node's own experts
(:func:`~dmoe.runtime.shard.expert_share`, contiguous copies taken on the driver) go with
the actor's creation, and with :meth:`RayEngine.configure` only those of experts the actor
does not hold yet. Each actor sets torch to one thread and runs an
:class:`~dmoe.runtime.node.ExpertNode`, the in-process node's class. A node's call is an actor
task; its handles are ``ObjectRef`` s, and a handle passed to another node's call travels
from actor to actor: a batch above Ray's inline limit (256 KiB in an embedded Ray,
:data:`EMBEDDED_SYSTEM_CONFIG`) through the shared-memory object store, a smaller one with
the tasks that return and receive it (through the driver's process). The driver (the edge
server) reads only gating scores and the final logits. The server's checkpoint of each
query's last completed layer is the ``ObjectRef`` of that layer's output (owned by the
driver, so it survives the death of the actor that produced it).

Ray starts embedded (``ray.init`` with this machine's CPUs, no dashboard, warnings only)
unless it is already initialised or an ``address`` of an existing cluster is given.
Actors ask for 0 CPUs so that K nodes fit on any machine; each is its own process. On a
remote cluster the workers must be able to import ``dmoe`` (install it there, or pass a
``runtime_env`` through ``ray_init_kwargs``).

Failures: a dead actor's task raises :class:`ray.exceptions.ActorDiedError` (a
:class:`~ray.exceptions.RayActorError`); :meth:`RayEngine.get` turns every Ray error into
a :class:`~dmoe.runtime.engine.Failure` and :meth:`RayEngine.probe` pings actors to tell
which died. :meth:`RayEngine.kill` is ``ray.kill``; a real process kill (``os.kill`` of
the pid from :meth:`RayEngine.pid`) is detected the same way.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Sequence

import numpy as np

from .engine import Engine, Failure
from .node import ExpertNode
from .shard import SharedBlocks, expert_share, pack_shared_blocks

__all__ = ["RayEngine", "connect_ray"]

#: Seconds to wait for a TCP connection to a cluster address before giving up.
CONNECT_TIMEOUT_S = 5.0

#: Ray settings of an embedded Ray (``ray.init(_system_config=...)``): objects up to 256 KiB
#: (a query's hidden states up to about 110 tokens at H = 576, fp32) travel with the task
#: that returns or receives them instead of through the shared-memory store, where every
#: read costs a round trip to the raylet (Ray's default limit is 100 KiB). On the default
#: deployment this takes a Ray round from 1.97x to 1.82x an in-process round
#: (``benchmarks/bench_ray_engine.py``). A cluster joined by address keeps its own settings.
EMBEDDED_SYSTEM_CONFIG = {"max_direct_call_object_size": 256 * 1024}


def _check_reachable(address: str, timeout: float) -> None:
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"`ray_address` (--ray-address) must be 'auto', 'host:port' or 'ray://host:port', got {address!r}"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(
            f"`ray_address` (--ray-address) {address!r}: no Ray cluster reachable at {host}:{port} "
            f"within {timeout:g} s ({exc})"
        ) from exc


def connect_ray(address: str | None = None, *, num_cpus: int | None = None, timeout: float = CONNECT_TIMEOUT_S,
                **init_kwargs: Any) -> bool:
    """Make sure Ray is initialised; returns True when this call started it.

    Args:
        address: None: use the running Ray, or start one embedded with ``num_cpus``
            (default: this machine's CPUs), no dashboard, warnings-only logging and
            :data:`EMBEDDED_SYSTEM_CONFIG` (``init_kwargs["_system_config"]`` overrides it). Else the
            address of an existing cluster (``"auto"``, ``"host:port"``, ``"ray://host:port"``).
        num_cpus: CPUs of an embedded Ray (ignored when joining a cluster).
        timeout: seconds to reach ``address`` before failing.

    Raises:
        ConnectionError: ``address`` unreachable (within ``timeout``) or not a Ray cluster.
        ValueError: malformed ``address``.
        TypeError: ``_system_config`` given and not a dict (None: the embedded defaults).
    """
    import ray

    system_config = init_kwargs.get("_system_config")
    if system_config is not None and not isinstance(system_config, dict):
        raise TypeError(f"`_system_config` must be a dict of Ray settings, got {system_config!r}")
    if ray.is_initialized():
        return False
    opts = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    opts.update(init_kwargs)
    if address is None:
        opts["_system_config"] = {**EMBEDDED_SYSTEM_CONFIG, **(system_config or {})}
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **opts)
        return True
    _check_reachable(address, timeout)
    try:
        ray.init(address=address, **opts)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConnectionError(f"`ray_address` (--ray-address) {address!r}: cannot join a Ray cluster ({exc})") from exc
    return True


class _ActorNode(ExpertNode):
    """The actor's class: an :class:`ExpertNode` with torch on one thread, whose hidden
    states leave it as numpy arrays (:attr:`~dmoe.runtime.node.ExpertNode.wire`)."""

    wire = "numpy"

    def __init__(self, index: int, model, experts=None, parameters=None) -> None:
        import torch

        torch.set_num_threads(1)
        if isinstance(model, SharedBlocks):
            model = model.restore()
        super().__init__(index, model, experts, parameters)
        _release_free_memory()

    def set_experts(self, experts, parameters=None) -> None:
        super().set_experts(experts, parameters)
        _release_free_memory()


def _release_free_memory() -> None:
    """Give the heap memory freed after unpickling the model back to the system (glibc's
    ``malloc_trim``; about 80 MiB per actor on the default model); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RayEngine(Engine):
    """K expert nodes as Ray actors (module docstring).

    Args:
        model: the expert model; its shared blocks are put into the object store once,
            each actor receives its own experts' parameters (module docstring).
        num_nodes: N (default K = ``model.num_experts``, one expert per node).
        node_experts: ``[num_nodes][num_layers][E_n]`` the experts each node holds from
            the start (None: node n holds expert n at every layer).
        address: cluster address, or None (embedded / already running Ray).
        num_cpus: CPUs of an embedded Ray (default: all of this machine's).
        ray_init_kwargs: extra ``ray.init`` arguments (e.g. ``runtime_env``).
        timeout_s: how long to wait for a node to answer a liveness probe or to die after
            ``ray.kill``.
        start_timeout_s: how long to wait for the nodes to start (each loads the model).

    Raises:
        ConnectionError / ValueError: from :func:`connect_ray`.
        ValueError: ``node_experts`` does not have one entry per node.
    """

    name = "ray"

    def __init__(self, model, num_nodes: int | None = None, *, node_experts=None, address: str | None = None,
                 num_cpus: int | None = None, ray_init_kwargs: dict | None = None, timeout_s: float = 60.0,
                 start_timeout_s: float = 900.0) -> None:
        import ray

        self._ray = ray
        self.num_nodes = int(num_nodes if num_nodes is not None else model.num_experts)
        if node_experts is not None:
            self.node_experts = self._check_node_experts(node_experts)
        # node deaths are expected and handled by the server; the driver drops the refs of
        # calls that depended on a dead node, which Ray would otherwise print as "unhandled"
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
        self.timeout_s = float(timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self._model = model
        self._started_ray = connect_ray(address, num_cpus=num_cpus, **(ray_init_kwargs or {}))
        self._actor_cls = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(_ActorNode)
        # the blocks every node holds enter the object store once; every actor fetches them from there
        self._model_ref = ray.put(pack_shared_blocks(model))
        # [num_nodes] the experts ([num_layers][E_n]) each actor holds, as the driver sent them
        self._held: list[list | None] = [None] * self.num_nodes
        self._actors: list[Any] = [None] * self.num_nodes
        for j in range(self.num_nodes):
            self._actors[j] = self._start(j)
        ray.get([a.ping.remote() for a in self._actors], timeout=self.start_timeout_s)

    def _start(self, node: int):
        """A new actor for ``node`` holding its experts (``node_experts``, else expert ``node``)."""
        experts = self._experts_of(node) or [(node,)] * int(self._model.num_layers)
        actor = self._actor_cls.remote(node, self._model_ref, experts, expert_share(self._model, experts))
        self._held[node] = experts
        return actor

    def _set_experts(self, node: int, experts) -> list:
        """Send ``node`` its new experts' ids and the parameters of those it does not hold yet."""
        params = expert_share(self._model, experts, held=self._held[node])
        self._held[node] = experts
        return self.submit(node, "set_experts", experts, params)

    # ------------------------------------------------------------------ calls
    def submit(self, node: int, method: str, *args, num_returns: int = 1) -> list:
        actor = self._actors[node]
        if actor is None:
            return [Failure()] * num_returns
        call = getattr(actor, method)
        if num_returns != 1:
            call = call.options(num_returns=num_returns)
        out = call.remote(*args)
        return [out] if num_returns == 1 else list(out)

    def get(self, handles: Sequence) -> list:
        ray = self._ray
        if all(isinstance(h, ray.ObjectRef) for h in handles):
            try:
                return ray.get(list(handles))
            except ray.exceptions.RayError:
                pass  # some call failed: sort them out one by one
        refs = [h for h in handles if isinstance(h, ray.ObjectRef)]
        if refs:
            ray.wait(refs, num_returns=len(refs), fetch_local=False)
        out = []
        for h in handles:
            if not isinstance(h, ray.ObjectRef):
                out.append(h)
                continue
            try:
                out.append(ray.get(h))
            except ray.exceptions.RayError as exc:
                out.append(Failure(exc))
        return out

    def probe(self, nodes: Sequence[int]) -> set[int]:
        ray = self._ray
        dead = set()
        pings = {}
        for j in nodes:
            if self._actors[j] is None:
                dead.add(int(j))
            else:
                pings[int(j)] = self._actors[j].ping.remote()
        for j, ref in pings.items():
            try:
                ray.get(ref, timeout=self.timeout_s)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                dead.add(j)
                self._actors[j] = None
        return dead

    # ------------------------------------------------------------ membership
    def kill(self, node: int) -> None:
        ray = self._ray
        actor = self._actors[node]
        if actor is None:
            return
        ray.kill(actor, no_restart=True)
        # wait until the death is visible, so the next call to the node fails
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(actor.ping.remote(), timeout=self.timeout_s)
            except ray.exceptions.RayActorError:
                return
            time.sleep(0.01)
        raise RuntimeError(f"node {node}: actor still alive {self.timeout_s:g} s after ray.kill")

    def join(self, node: int) -> None:
        actor = self._start(node)
        self._ray.get(actor.ping.remote(), timeout=self.start_timeout_s)
        self._actors[node] = actor

    def join_many(self, nodes: Sequence[int]) -> None:
        actors = {int(j): self._start(int(j)) for j in nodes}
        self._ray.get([a.ping.remote() for a in actors.values()], timeout=self.start_timeout_s)
        for j, actor in actors.items():
            self._actors[j] = actor

    def pid(self, node: int) -> int:
        """Process id of node ``node``'s actor (for real kills in tests)."""
        return int(self._ray.get(self._actors[node].pid.remote(), timeout=self.timeout_s))

    def alive(self) -> np.ndarray:
        """``[K]`` bool: nodes the engine has not seen die."""
        return np.array([a is not None for a in self._actors])

    def shutdown(self) -> None:
        ray = self._ray
        for j, actor in enumerate(self._actors):
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self._actors[j] = None
        self._model_ref = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False
