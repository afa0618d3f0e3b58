"""Independent policy evaluations as Ray tasks (``dmoe reproduce --engine ray``).

Each evaluation is one task running :func:`dmoe.runtime.evaluate_policy` (in-process
engine, torch on one thread) in a worker process; the model and each question set enter
the object store once. A task asks for one CPU, so on one machine as many evaluations
run at once as it has CPUs; on a cluster, as many as the cluster has.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

__all__ = ["evaluate_on_ray", "evaluate_chunks_on_ray"]


def _evaluate(model, queries, policy, kwargs):
    import torch

    from dmoe.runtime import evaluate_policy

    torch.set_num_threads(1)
    return evaluate_policy(model, queries, policy, progress=False, **kwargs)


def _evaluate_chunk(model, queries, policies, kwargs):
    import torch

    from dmoe.runtime import evaluate_policy

    torch.set_num_threads(1)
    return [evaluate_policy(model, queries, p, progress=False, **kwargs) for p in policies]


def evaluate_on_ray(model, tasks: Sequence[tuple[Hashable, Sequence, object, dict]], *, address: str | None = None,
                    on_done: Callable[[Hashable, object], None]) -> None:
    """Run ``evaluate_policy(model, queries, policy, **kwargs)`` for every task in parallel.

    Args:
        model: the expert model (put into the object store once).
        tasks: ``(key, queries, policy, kwargs)`` tuples.
        address: Ray cluster to join; None: the running Ray or an embedded one with all CPUs.
        on_done: called in the driver as ``on_done(key, PolicyResult)`` when a task finishes
            (in completion order).

    Raises:
        ConnectionError: ``address`` unreachable. Errors of a task are re-raised (the
        results of finished tasks were handed to ``on_done`` before).
    """
    import ray

    from dmoe.runtime.ray_engine import connect_ray

    started = connect_ray(address)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_evaluate)
        model_ref = ray.put(model)
        query_refs: dict[int, object] = {}
        refs = {}
        for key, queries, policy, kwargs in tasks:
            if id(queries) not in query_refs:
                query_refs[id(queries)] = ray.put(list(queries))
            qref = query_refs[id(queries)]
            refs[task.remote(model_ref, qref, policy, kwargs)] = key
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                on_done(refs.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()


def evaluate_chunks_on_ray(model, queries: Sequence, chunks: Sequence[tuple[Hashable, Sequence]], kwargs: dict, *,
                           address: str | None = None, num_cpus: int | None = None,
                           on_done: Callable[[Hashable, list], None]) -> None:
    """Evaluate chunks of policies on the same questions, one Ray task per chunk (``dmoe sweep
    --engine ray``): each task runs ``evaluate_policy(model, queries, policy, **kwargs)`` for
    the policies of its chunk in order, in-process, torch on one thread.

    Args:
        model: the expert model (put into the object store once).
        queries: the packed questions, the same for every chunk (put once).
        chunks: ``(key, policies)`` pairs.
        kwargs: keyword arguments of every evaluation (system, seed, channel, reference, ...),
            put once.
        address: Ray cluster to join; None: the running Ray, or an embedded one with
            ``num_cpus`` CPUs (default all).
        num_cpus: CPUs of an embedded Ray.
        on_done: called in the driver as ``on_done(key, [PolicyResult, ...])`` as each chunk
            finishes (in completion order).

    Raises:
        ConnectionError: ``address`` unreachable. A task's error is re-raised (chunks that
        finished before were handed to ``on_done``); the tasks still running are cancelled.
    """
    import ray

    from dmoe.runtime.ray_engine import connect_ray

    started = connect_ray(address, num_cpus=num_cpus)
    refs: dict = {}
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_evaluate_chunk)
        model_ref, query_ref, kwargs_ref = ray.put(model), ray.put(list(queries)), ray.put(dict(kwargs))
        for key, policies in chunks:
            refs[task.remote(model_ref, query_ref, list(policies), kwargs_ref)] = key
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                on_done(refs.pop(ref), ray.get(ref))
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
