"""Policy sweeps (``dmoe sweep``): a policy template over a parameter grid, every point on the
same questions, channels and seed, with 95% bootstrap intervals, Pareto fronts of energy
against answer NLL, KL and agreement, a resumable output directory, and Ray tasks.

* :mod:`~dmoe.experiments.sweep.grid` -- ``--grid`` parsing and template expansion;
* :mod:`~dmoe.experiments.sweep.record` -- a point's numbers and the Pareto flags;
* :mod:`~dmoe.experiments.sweep.store` -- the output directory (fingerprint, journal);
* :mod:`~dmoe.experiments.sweep.plot` -- ``pareto.png``;
* :mod:`~dmoe.experiments.sweep.run` -- :func:`run_sweep`;
* :mod:`~dmoe.experiments.sweep.cli` -- the ``dmoe sweep`` command.
"""

from dmoe.experiments.sweep.grid import DEFAULT_MAX_POINTS, GridAxis, SweepPoint, expand_points, parse_axis, parse_grid
from dmoe.experiments.sweep.record import pareto_flags, point_record
from dmoe.experiments.sweep.run import prepare_points, run_sweep

__all__ = ["DEFAULT_MAX_POINTS", "GridAxis", "SweepPoint", "expand_points", "parse_axis", "parse_grid",
           "pareto_flags", "point_record", "prepare_points", "run_sweep"]
