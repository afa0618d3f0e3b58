"""The experiments in the order of the paper, by name."""

from __future__ import annotations

from dmoe.experiments import (
    deployment,
    fig5,
    fig6,
    fig7,
    fig10,
    granularity,
    importance,
    placement_exp,
    robustness,
    table1,
    theorem1,
)
from dmoe.experiments.base import Experiment
from dmoe.experiments.fig89 import FIG8, FIG9

__all__ = ["EXPERIMENTS", "resolve_names"]

#: name -> Experiment, in report order.
EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        fig5.EXPERIMENT,
        fig6.EXPERIMENT,
        fig7.EXPERIMENT,
        FIG8,
        FIG9,
        fig10.EXPERIMENT,
        table1.EXPERIMENT,
        theorem1.EXPERIMENT,
        importance.EXPERIMENT,
        robustness.EXPERIMENT,
        granularity.EXPERIMENT,
        placement_exp.EXPERIMENT,
        deployment.EXPERIMENT,
    )
}


def resolve_names(names) -> list[str]:
    """Experiment names from user input: none or "all" = every experiment; order of the paper.

    Raises:
        ValueError: for an unknown name (listing the known ones).
    """
    names = [n.strip().lower() for n in (names or []) if n.strip()]
    if not names or "all" in names:
        return list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; known: {', '.join(EXPERIMENTS)} or 'all'")
    return [n for n in EXPERIMENTS if n in names]
