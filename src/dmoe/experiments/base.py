"""What every experiment provides, and the pieces of its report section.

An :class:`Experiment` is a name plus five functions:

* ``config(options) -> dict`` -- the JSON-ready configuration (sizes, sweeps, seed) for the
  given :class:`Options` (quick or full, overrides);
* ``run(config, ctx) -> dict`` -- computes the numbers (JSON-ready), using ``ctx`` for the
  model, MMLU questions and cached policy evaluations;
* ``plot(result, path)`` -- writes the PNG;
* ``write_table(result, path)`` -- writes the CSV of the plotted numbers;
* ``report(result) -> Section`` -- the paper's claims beside ours, key numbers, notes.

``result`` is the stored JSON record: ``{"name", "config", "data", "elapsed_s", ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Options", "Claim", "Section", "Experiment", "AGREES", "PARTLY", "DIFFERS", "NOT_TESTABLE"]

AGREES = "agrees"
PARTLY = "partly"
DIFFERS = "differs"
NOT_TESTABLE = "not testable"


@dataclass(frozen=True)
class Options:
    """User-facing knobs shared by all experiments.

    Attributes:
        quick: small subset (few questions, few sweep points, few channel draws).
        seed: seed of channels, policies and synthetic data.
        limit: questions per MMLU subject (overrides the mode's default).
        subjects: MMLU subjects (overrides anatomy for the figures and the medical
            subjects of Table I).
        draws: Monte Carlo draws per point (theorem1) / tokens per layer (fig6) override.
    """

    quick: bool = False
    seed: int = 0
    limit: int | None = None
    subjects: tuple[str, ...] | None = None
    draws: int | None = None


@dataclass
class Claim:
    """One statement of the paper checked against our numbers."""

    claim: str
    paper: str
    ours: str
    verdict: str
    why: str = ""


@dataclass
class Section:
    """The report section of one experiment."""

    summary: str
    claims: list[Claim] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    statistics: str = ""


@dataclass(frozen=True)
class Experiment:
    """A registered experiment (see module docstring)."""

    name: str
    title: str
    paper_ref: str
    needs_model: bool
    config: Callable[[Options], dict]
    run: Callable[[dict, object], dict]
    plot: Callable[[dict, object], None]
    write_table: Callable[[dict, object], None]
    report: Callable[[dict], Section]
