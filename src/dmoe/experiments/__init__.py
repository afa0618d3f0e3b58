"""Reproduction of the paper's experiments on the real model (``dmoe reproduce``).

One module per experiment -- :mod:`~dmoe.experiments.fig5` (Section IV-A), ``fig6``,
``fig7``, ``fig89`` (Fig. 8 and 9), ``fig10``, ``table1`` (Section VII) and ``theorem1``
(Section VI-B) -- registered in :data:`EXPERIMENTS`. :func:`run_experiments` runs them,
caching each experiment's numbers as ``DIR/<name>.json`` (and each policy evaluation under
``DIR/cache``) so that reruns skip finished work, writes ``DIR/<name>.png`` and
``DIR/<name>.csv``, and ``DIR/report.md`` with the paper's claims beside ours.

Plotting lives here and nowhere in the core library.
"""

from dmoe.experiments.base import Claim, Experiment, Options, Section
from dmoe.experiments.registry import EXPERIMENTS, resolve_names
from dmoe.experiments.runner import run_experiments

__all__ = ["Claim", "EXPERIMENTS", "Experiment", "Options", "Section", "resolve_names", "run_experiments"]
