"""Sweep grids and policy templates: ``--grid g=0.80:0.99:0.01`` over ``--policy "JESA({g},8)"``.

A grid axis is ``name=start:stop:step`` (every ``start + i*step`` up to ``stop``, ``stop``
included when it lands on the grid; computed in decimal arithmetic, so ``0.80:0.99:0.01``
is exactly the 20 values 0.8, 0.81, ..., 0.99, without float drift) or ``name=v1,v2,...``.
A template names axes by ``{name}`` placeholders (Python's format syntax; a literal brace is
``{{`` or ``}}``) and expands over the product of the axes it names, in the order the axes
were given, the last one varying fastest. Fixed policies (``--add``) are points of their own.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from typing import Sequence

__all__ = ["GridAxis", "SweepPoint", "parse_axis", "parse_grid", "template_fields", "count_points",
           "expand_points", "format_value", "DEFAULT_MAX_POINTS"]

#: ``--max-points`` default: a sweep of more points must say so (each point is a full evaluation).
DEFAULT_MAX_POINTS = 200

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class GridAxis:
    """One grid parameter.

    Attributes:
        name: the placeholder it fills (an identifier).
        values: its values, in order, exact decimals (at least one, no duplicate).
        spec: the text it was parsed from (``"g=0.80:0.99:0.01"``).
    """

    name: str
    values: tuple[Decimal, ...]
    spec: str

    def labels(self) -> list[str]:
        """The values as the template receives them (:func:`format_value`)."""
        return [format_value(v) for v in self.values]


@dataclass(frozen=True)
class SweepPoint:
    """One policy of a sweep.

    Attributes:
        index: its position in the sweep (0-based; the order it runs and is written in).
        policy: the policy string after expansion, e.g. ``"JESA(0.85,8)"``.
        template: the template it came from, or None for a fixed policy (``--add``).
        values: ``{axis name: value as text}`` of the axes its template names (empty for a fixed policy).
    """

    index: int
    policy: str
    template: str | None
    values: dict

    @property
    def kind(self) -> str:
        """``"grid"`` (from a template) or ``"added"`` (a fixed policy)."""
        return "added" if self.template is None else "grid"


def format_value(value: Decimal) -> str:
    """A grid value as plain decimal text without trailing zeros or exponent: 0.80 -> ``"0.8"``,
    1E+1 -> ``"10"``, 8 -> ``"8"``."""
    with localcontext() as ctx:  # normalize() rounds to the context's precision: keep every digit
        ctx.prec = max(ctx.prec, len(value.as_tuple().digits))
        text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _number(text: str, spec: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or not text.strip():
        raise ValueError(f"`--grid` {spec!r}: {what} must be a finite decimal number, got {text.strip()!r}")
    return value


#: a range of more values than this is refused whatever ``max_points`` says (it could not be listed)
_MAX_RANGE = 10**15


def _range_values(start: Decimal, stop: Decimal, step: Decimal, spec: str, max_points: int | None):
    """``start + i*step`` while ``<= stop``, exactly: the arithmetic runs at the precision the
    three numbers need (Decimal's default 28 digits cannot count ``0:1:1e-30``)."""
    span = (float(stop) - float(start)) / float(step) if float(step) > 0 else math.inf  # an estimate first
    if not math.isfinite(span) or span >= _MAX_RANGE:
        many = f"about {span + 1:.1e}" if math.isfinite(span) else f"more than {_MAX_RANGE:.0e}"
        raise ValueError(f"`--grid` {spec!r} has {many} values (the step is too small for the range); a range "
                         f"lists at most {_MAX_RANGE:.0e} values, and `--max-points` ({max_points}) caps the sweep")
    nums = (start, stop, step)
    digits = max(x.adjusted() for x in nums) - min(x.as_tuple().exponent for x in nums)
    with localcontext() as ctx:
        ctx.prec = max(ctx.prec, digits + 20)
        n = int((stop - start) // step) + 1
        if max_points is not None and n > max_points:
            raise ValueError(f"`--grid` {spec!r} has {n:,} values, more than `--max-points` {max_points}; "
                             "raise --max-points to run it")
        return tuple(start + i * step for i in range(n))


def parse_axis(spec: str, *, max_points: int | None = None) -> GridAxis:
    """Parse one ``--grid`` value.

    Args:
        spec: ``"name=start:stop:step"`` (``start <= stop``, ``step > 0``; values
            ``start + i*step`` for ``i = 0, 1, ...`` while ``<= stop``) or
            ``"name=v1,v2,..."`` (distinct numbers, in the order given).
        max_points: refuse a range of more values than this (before listing them).

    Returns:
        :class:`GridAxis` with exact :class:`~decimal.Decimal` values.

    Raises:
        ValueError: naming ``--grid`` and the rule: no ``=``, a name that is not an
            identifier, an empty value list, a value that is not a finite number, a
            duplicate value, a range with ``step <= 0`` or ``start > stop`` (reversed), or
            more than ``max_points`` values.
    """
    if not isinstance(spec, str):
        raise TypeError(f"`--grid` must be a string like 'g=0.8:0.99:0.01', got {type(spec).__name__}")
    name, eq, body = spec.partition("=")
    name = name.strip()
    if not eq:
        raise ValueError(f"`--grid` {spec!r} must read name=start:stop:step or name=v1,v2,... (no '=')")
    if not _NAME.fullmatch(name):
        raise ValueError(f"`--grid` {spec!r}: the name must be an identifier (letters, digits, _), got {name!r}")
    body = body.strip()
    if not body:
        raise ValueError(f"`--grid` {spec!r}: the range of {name!r} is empty (give start:stop:step or v1,v2,...)")
    if ":" in body:
        parts = body.split(":")
        if len(parts) != 3:
            raise ValueError(f"`--grid` {spec!r}: a range must read start:stop:step (three numbers), got {body!r}")
        start, stop, step = (_number(p, spec, w) for p, w in zip(parts, ("start", "stop", "step")))
        if step <= 0:
            raise ValueError(f"`--grid` {spec!r}: the step must be > 0, got {format_value(step)}")
        if start > stop:
            raise ValueError(f"`--grid` {spec!r}: the range is reversed (start {format_value(start)} > stop "
                             f"{format_value(stop)}); ranges run upwards with step > 0")
        values = _range_values(start, stop, step, spec, max_points)
    else:
        items = body.split(",")
        if not any(i.strip() for i in items) or any(not i.strip() for i in items):
            raise ValueError(f"`--grid` {spec!r}: the value list of {name!r} has an empty entry")
        values = tuple(_number(i, spec, "every value") for i in items)
        seen = set()
        for v in values:
            if v in seen:
                raise ValueError(f"`--grid` {spec!r}: the value {format_value(v)} is given twice")
            seen.add(v)
        if max_points is not None and len(values) > max_points:
            raise ValueError(f"`--grid` {spec!r} has {len(values):,} values, more than `--max-points` {max_points}")
    return GridAxis(name, values, spec.strip())


def parse_grid(specs: Sequence[str], *, max_points: int | None = None) -> list[GridAxis]:
    """Parse every ``--grid`` (:func:`parse_axis`).

    Raises:
        ValueError: as :func:`parse_axis`, and naming ``--grid`` when two axes share a name.
    """
    axes = [parse_axis(s, max_points=max_points) for s in specs]
    names = [a.name for a in axes]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"`--grid`: the name {name!r} is given {names.count(name)} times; each grid "
                             "parameter once (list its values with name=v1,v2,...)")
    return axes


def template_fields(template: str, *, what: str = "`--policy` template") -> tuple[str, ...]:
    """The placeholder names of ``template`` in first-use order (``"JESA({g},{d})"`` -> ``("g", "d")``).

    Args:
        template: the policy template.
        what: how error messages name it (``"`--add`"`` for a fixed policy).

    Raises:
        ValueError: naming ``what`` for an unbalanced brace, a placeholder that is not a
            name (``{}``, ``{0}``, ``{g.x}``, ``{g[0]}``), or one with a conversion or format
            spec (``{g!r}``, ``{g:.2f}``: a value goes in as :func:`format_value` writes it).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{what} {template!r}: {exc} (a literal brace is written {{{{ or }}}})") from None
    out: list[str] = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not _NAME.fullmatch(field):
            raise ValueError(f"{what} {template!r}: placeholder {{{field}}} must be a grid name "
                             "(an identifier such as {g})")
        if spec or conversion:
            written = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{what} {template!r}: placeholder {written} has a "
                             f"{'conversion' if conversion else 'format spec'}; a grid value goes in as plain decimal "
                             f"text without trailing zeros (g=0.80 gives 0.8, 1e1 gives 10): write {{{field}}}")
        if field not in out:
            out.append(field)
    return tuple(out)


def _template_axes(templates: Sequence[str], axes: Sequence[GridAxis]) -> list[list[GridAxis]]:
    by_name = {a.name: a for a in axes}
    used: set[str] = set()
    out = []
    for t in templates:
        fields = template_fields(t)
        missing = [f for f in fields if f not in by_name]
        if missing:
            raise ValueError(f"`--policy` template {t!r}: placeholder {{{missing[0]}}} has no grid; give "
                             f"--grid {missing[0]}=start:stop:step or --grid {missing[0]}=v1,v2,...")
        used.update(fields)
        out.append([a for a in axes if a.name in fields])  # the order the axes were given
    unused = [a.name for a in axes if a.name not in used]
    if unused:
        raise ValueError(f"`--grid` {unused[0]!r} is used by no --policy template (no {{{unused[0]}}} placeholder)")
    return out


def count_points(templates: Sequence[str], axes: Sequence[GridAxis], added: Sequence[str] = ()) -> int:
    """Points of the sweep before duplicates are dropped: for each template the product of the
    sizes of the axes it names, plus one per fixed policy.

    Raises:
        ValueError: as :func:`expand_points` for a placeholder without grid or an unused grid.
    """
    return sum(math.prod(len(a.values) for a in ax) for ax in _template_axes(templates, axes)) + len(added)


def expand_points(templates: Sequence[str], axes: Sequence[GridAxis], added: Sequence[str] = (), *,
                  max_points: int | None = DEFAULT_MAX_POINTS) -> list[SweepPoint]:
    """Expand the templates over their grids and append the fixed policies.

    Args:
        templates: policy templates (``--policy``), each with zero or more ``{name}`` placeholders.
        axes: the grid (:func:`parse_grid`).
        added: fixed policies (``--add``), after the template points.
        max_points: refuse more points than this (counted before expansion); None: no cap.

    Returns:
        ``[num_points]`` :class:`SweepPoint`, templates in order, each over the product of
        its axes (the last axis varying fastest), then ``added``. Duplicates are kept here
        (the runner drops the ones that parse to the same policy).

    Raises:
        ValueError: naming the argument: no template and no fixed policy, a placeholder
            without a grid, a grid used by no template, more than ``max_points`` points
            (saying how many).
    """
    templates, added = list(templates), list(added)
    if not templates and not added:
        raise ValueError("`--policy`: give at least one policy template (or a fixed policy with --add)")
    for p in [*templates, *added]:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"`--policy` / `--add` must be non-empty strings, got {p!r}")
    per_template = _template_axes(templates, axes)
    for a in added:
        if template_fields(a, what="`--add`"):
            raise ValueError(f"`--add` {a!r} has a placeholder; fixed policies have none (use --policy for templates)")
    n = count_points(templates, axes, added)
    if max_points is not None and n > max_points:
        raise ValueError(f"the sweep has {n:,} points, more than `--max-points` {max_points}; raise --max-points "
                         "to run it (each point is a full evaluation)")
    import itertools

    points: list[SweepPoint] = []
    for t, ax in zip(templates, per_template):
        for combo in itertools.product(*(a.labels() for a in ax)):
            values = dict(zip((a.name for a in ax), combo))
            points.append(SweepPoint(len(points), t.format(**values), t, values))
    for a in added:
        points.append(SweepPoint(len(points), a.format(), None, {}))
    return points
