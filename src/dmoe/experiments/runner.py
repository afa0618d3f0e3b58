"""Run experiments with per-experiment caching, then write the report.

For each requested experiment: if ``DIR/<name>.json`` holds a complete result for the same
configuration it is reused (``force=True`` recomputes), otherwise the experiment runs and
its result -- configuration, seed, elapsed time, model and library versions beside the
numbers -- is written atomically. Policy evaluations are cached separately
(:class:`~dmoe.experiments.context.Context`), so an interrupted experiment resumes where it
stopped. The PNG, the CSV and ``report.md`` are always rewritten from the stored results;
the report covers every experiment whose result is in ``DIR``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from dmoe.experiments.base import Options
from dmoe.experiments.context import Context, read_json, to_jsonable, write_json
from dmoe.experiments.registry import EXPERIMENTS, resolve_names

__all__ = ["RESULT_FORMAT", "run_experiments", "environment"]

RESULT_FORMAT = 2  # 2: results carry agreement and KL with the full model


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Versions and machine (recorded beside every result)."""
    import numpy
    import scipy

    import dmoe

    env = {
        "dmoe": dmoe.__version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": _git_commit(),
    }
    if "torch" in sys.modules:
        env["torch"] = sys.modules["torch"].__version__
    return env


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _reusable(stored, cfg: dict, force: bool):
    """The stored result if it holds a complete result for ``cfg`` (and not ``force``)."""
    if (
        not force
        and stored is not None
        and stored.get("format") == RESULT_FORMAT
        and stored.get("config") == cfg
        and "data" in stored
    ):
        return stored
    return None


def run_experiments(
    names=None,
    output="results/reproduce",
    *,
    options: Options | None = None,
    force: bool = False,
    model_source=None,
    cache_dir=None,
    progress: bool = True,
    log=print,
    command: str | None = None,
    context: Context | None = None,
    engine: str = "local",
    ray_address: str | None = None,
) -> dict:
    """Run (or reuse) experiments and write ``DIR/report.md``.

    Args:
        names: experiment names, or None / ["all"] for every one.
        output: the folder DIR.
        options: :class:`Options` (quick mode, seed, overrides).
        force: recompute even when a stored result matches.
        model_source, cache_dir: passed to the model loader.
        progress: progress bars for policy evaluations.
        log: callable for progress lines.
        command: the command line, recorded in the report.
        context: a ready :class:`Context` for ``output`` (tests inject one that fakes the
            model); by default one is made from the arguments above.
        engine: ``"local"`` (policy evaluations one after another in this process) or
            ``"ray"`` (the evaluations every selected experiment needs run first as
            parallel Ray tasks, into the same cache; :meth:`Context.prefetch`).
        ray_address: Ray cluster to join (``engine="ray"``); None: embedded Ray, all CPUs.

    Returns:
        ``{name: result}`` for the requested experiments.
    """
    from dmoe.experiments.report import write_report

    options = options or Options()
    selected = resolve_names(names)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if engine not in ("local", "ray"):
        raise ValueError(f"`engine` (--engine) must be 'local' or 'ray', got {engine!r}")
    if ray_address is not None and engine != "ray":
        raise ValueError("`ray_address` (--ray-address) needs `engine`='ray' (--engine ray)")
    ctx = context or Context(out, model_source=model_source, cache_dir=cache_dir, progress=progress, log=log,
                             engine=engine, ray_address=ray_address)
    started = _now()
    if engine == "ray":
        # plan: which evaluations do the experiments still to compute need? run them in parallel
        requests = []
        for name in selected:
            exp = EXPERIMENTS[name]
            cfg = to_jsonable(exp.config(options))
            if exp.needs_model and _reusable(read_json(out / f"{name}.json"), cfg, force) is None:
                requests += ctx.plan(lambda exp=exp, cfg=cfg: exp.run(cfg, ctx))
        ctx.engine = "ray"
        ctx.ray_address = ray_address
        ctx.prefetch(requests)
    t0 = time.perf_counter()
    results = {}
    ran, reused = [], []
    for i, name in enumerate(selected, start=1):
        exp = EXPERIMENTS[name]
        cfg = to_jsonable(exp.config(options))
        path = out / f"{name}.json"
        stored = _reusable(read_json(path), cfg, force)
        if stored is not None:
            log(f"[{i}/{len(selected)}] {name}: reusing {path} (computed {stored.get('created')}; --force recomputes)")
            result = stored
            reused.append(name)
        else:
            log(f"[{i}/{len(selected)}] {name}: {exp.paper_ref} ...")
            start = time.perf_counter()
            reused_before = ctx.reused_seconds
            data = exp.run(cfg, ctx)
            elapsed = time.perf_counter() - start
            reused_s = ctx.reused_seconds - reused_before
            result = {
                "format": RESULT_FORMAT,
                "name": name,
                "title": exp.title,
                "paper_ref": exp.paper_ref,
                "quick": options.quick,
                "seed": options.seed,
                "config": cfg,
                "data": to_jsonable(data),
                "elapsed_s": round(elapsed, 2),
                # from-scratch estimate: this run plus the cached pieces it reused
                "compute_s": round(elapsed + reused_s, 2),
                "created": _now(),
                "command": command,
                "model": ctx.model_info() if exp.needs_model else None,
                "environment": environment(),
            }
            log(f"[{i}/{len(selected)}] {name}: done in {elapsed:.1f} s")
            ran.append(name)
        exp.plot(result, out / f"{name}.png")
        exp.write_table(result, out / f"{name}.csv")
        section = exp.report(result)
        result["claims"] = [dataclasses.asdict(c) for c in section.claims]
        write_json(path, result)
        results[name] = result
    wall = time.perf_counter() - t0
    run_info = {
        "command": command,
        "started": started,
        "finished": _now(),
        "wall_s": round(wall, 1),
        "requested": selected,
        "ran": ran,
        "reused": reused,
        "quick": options.quick,
        "seed": options.seed,
        "options": dataclasses.asdict(options),
        "engine": engine,
        "evaluations_run": ctx.evaluations_run,
        "evaluations_cached": ctx.evaluations_cached,
        "model_load_s": round(ctx.model_load_seconds, 1),
        "environment": environment(),
    }
    write_json(out / "run.json", run_info)
    report = write_report(out, run_info)
    log(f"wrote {report} ({wall:.1f} s wall)")
    return results
