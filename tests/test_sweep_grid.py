"""Sweep grids and templates (dmoe.experiments.sweep.grid): exact decimal ranges against
fractions, many seeded cases and hypothesis, expansion order, and every rule of bad input."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmoe.experiments.sweep.grid import (
    count_points,
    expand_points,
    format_value,
    parse_axis,
    parse_grid,
    template_fields,
)


def test_the_issue_grid_is_exactly_twenty_points_without_drift():
    axis = parse_axis("g=0.80:0.99:0.01")
    assert axis.name == "g" and len(axis.values) == 20
    assert axis.labels() == [f"0.{80 + i}".rstrip("0") for i in range(20)]
    assert axis.labels()[0] == "0.8" and axis.labels()[-1] == "0.99"
    # float accumulation would drift (0.9600000000000002, ...) and stop at 19 points
    x, floats = 0.8, []
    while x <= 0.99:
        floats.append(x)
        x += 0.01
    assert len(floats) == 19 and floats[-1] != 0.98
    assert [Fraction(str(v)) for v in axis.values] == [Fraction(80 + i, 100) for i in range(20)]


def _oracle(start: Fraction, stop: Fraction, step: Fraction) -> list[Fraction]:
    out, x = [], start
    while x <= stop:
        out.append(x)
        x += step
    return out


def test_ranges_match_exact_fractions_on_many_seeded_cases():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        scale = int(rng.choice([1, 10, 100, 1000]))
        start = Fraction(int(rng.integers(-500, 500)), scale)
        step = Fraction(int(rng.integers(1, 60)), scale)
        stop = start + Fraction(int(rng.integers(0, 400)), scale)
        spec = f"x={float(start)!r}:{float(stop)!r}:{float(step)!r}"
        axis = parse_axis(spec)
        want = _oracle(Fraction(str(float(start))), Fraction(str(float(stop))), Fraction(str(float(step))))
        assert [Fraction(str(v)) for v in axis.values] == want, spec
        assert axis.values[-1] <= Decimal(str(float(stop)))


@given(st.integers(-10_000, 10_000), st.integers(0, 3000), st.integers(1, 500), st.integers(0, 4))
def test_range_property(a, span, step, exp):
    spec = f"g={Decimal(a).scaleb(-exp)}:{Decimal(a + span).scaleb(-exp)}:{Decimal(step).scaleb(-exp)}"
    axis = parse_axis(spec)
    assert len(axis.values) == span // step + 1
    assert all(b - a_ == Decimal(step).scaleb(-exp) for a_, b in zip(axis.values, axis.values[1:]))
    assert axis.values[0] == Decimal(a).scaleb(-exp)
    # labels read back to the same values and carry no exponent or trailing zero
    for v, text in zip(axis.values, axis.labels()):
        assert Decimal(text) == v and "E" not in text and (not ("." in text) or not text.endswith("0"))


def test_lists_keep_their_order_and_formatting():
    assert parse_axis(" d = 8, 2 ,4").labels() == ["8", "2", "4"]
    assert parse_axis("g=1e-1,0.50,10").labels() == ["0.1", "0.5", "10"]
    assert parse_axis("g=0.5:0.5:0.1").labels() == ["0.5"]  # start == stop: one point
    assert parse_axis("g=0:1:0.3").labels() == ["0", "0.3", "0.6", "0.9"]  # stop not on the grid
    assert format_value(Decimal("-0.0")) == "0" and format_value(Decimal("1E+2")) == "100"


@pytest.mark.parametrize("spec, needle", [
    ("g", "no '='"),
    ("=1,2", "identifier"),
    ("1g=1,2", "identifier"),
    ("g=", "empty"),
    ("g= ", "empty"),
    ("g=1,,2", "empty entry"),
    ("g=1,", "empty entry"),
    ("g=a,b", "finite decimal number"),
    ("g=nan", "finite decimal number"),
    ("g=inf,1", "finite decimal number"),
    ("g=1:2", "three numbers"),
    ("g=1:2:3:4", "three numbers"),
    ("g=1::0.1", "stop must be a finite"),
    ("g=0.9:0.5:0.1", "reversed"),
    ("g=0.5:0.9:0", "step must be > 0"),
    ("g=0.5:0.9:-0.1", "step must be > 0"),
    ("g=1,2,1", "given twice"),
    ("g=1.0,1", "given twice"),
])
def test_bad_axes_name_the_argument_and_the_rule(spec, needle):
    with pytest.raises(ValueError, match="`--grid`") as err:
        parse_axis(spec)
    assert needle in str(err.value)


def test_a_huge_range_is_refused_before_it_is_listed():
    with pytest.raises(ValueError, match="1,000,000,001 values, more than `--max-points` 200"):
        parse_axis("g=0:1:0.000000001", max_points=200)


def test_duplicate_grid_names():
    with pytest.raises(ValueError, match="`--grid`: the name 'g' is given 2 times"):
        parse_grid(["g=1", "d=2", "g=3"])


def test_template_fields_and_escapes():
    assert template_fields("LB({g},{d})") == ("g", "d")
    assert template_fields("JESA({g},{g})") == ("g",)
    assert template_fields("dense") == ()
    assert template_fields("x{{lit}}") == ()
    for bad, needle in (("JESA({},2)", "must be a grid name"), ("JESA({0},2)", "must be a grid name"),
                        ("JESA({g.x},2)", "must be a grid name"), ("JESA({g",
                                                                     "literal brace")):
        with pytest.raises(ValueError, match="`--policy` template") as err:
            template_fields(bad)
        assert needle in str(err.value)


def test_expansion_is_the_product_of_the_axes_each_template_names():
    axes = parse_grid(["g=0.8,0.9", "d=1:3:1"])
    pts = expand_points(["LB({g},{d})", "JESA({g},4)", "Top-{d}"], axes, ["dense"])
    assert [p.policy for p in pts] == [
        *(f"LB({g},{d})" for g, d in itertools.product(["0.8", "0.9"], ["1", "2", "3"])),
        "JESA(0.8,4)", "JESA(0.9,4)", "Top-1", "Top-2", "Top-3", "dense"]
    assert [p.index for p in pts] == list(range(len(pts)))
    assert pts[0].values == {"g": "0.8", "d": "1"} and pts[0].kind == "grid"
    assert pts[-1].template is None and pts[-1].values == {} and pts[-1].kind == "added"
    assert count_points(["LB({g},{d})", "JESA({g},4)", "Top-{d}"], axes, ["dense"]) == len(pts)
    # the order of the axes as given decides the nesting, not the order in the template
    pts = expand_points(["LB({g},{d})"], parse_grid(["d=1,2", "g=0.8,0.9"]))
    assert [p.policy for p in pts] == ["LB(0.8,1)", "LB(0.9,1)", "LB(0.8,2)", "LB(0.9,2)"]


def test_expansion_rules():
    axes = parse_grid(["g=0.8,0.9"])
    with pytest.raises(ValueError, match=r"placeholder \{d\} has no grid"):
        expand_points(["LB({g},{d})"], axes)
    with pytest.raises(ValueError, match="`--grid` 'h' is used by no --policy template"):
        expand_points(["JESA({g},2)"], parse_grid(["g=1", "h=2"]))
    with pytest.raises(ValueError, match="at least one policy template"):
        expand_points([], [])
    with pytest.raises(ValueError, match="`--add` 'Top-{k}' has a placeholder"):
        expand_points([], [], ["Top-{k}"])
    with pytest.raises(ValueError, match="the sweep has 401 points, more than `--max-points` 400"):
        expand_points(["LB({g},{d})"], parse_grid(["g=1:20:1", "d=1:20:1"]), ["dense"], max_points=400)
    assert len(expand_points(["LB({g},{d})"], parse_grid(["g=1:20:1", "d=1:20:1"]), max_points=None)) == 400
    assert [p.policy for p in expand_points(["dense"], [], ["Top-1"])] == ["dense", "Top-1"]


def test_points_go_through_the_dmoe_run_parser_and_duplicates_run_once():
    from dmoe.experiments.sweep import prepare_points

    notes = []
    axes, points, parsed = prepare_points(["JESA({g},2)[T={t}s]", "Top-{k}"], ["g=0.9", "t=0.5,1", "k=1,2"],
                                          ["top-2", "dense"], log=notes.append)
    assert [p.policy for p in points] == ["JESA(0.9,2)[T=0.5s]", "JESA(0.9,2)[T=1s]", "Top-1", "Top-2", "dense"]
    assert [p.index for p in points] == list(range(5))
    assert parsed[0].deadline_s == 0.5 and parsed[-1].name == "dense"
    assert len(notes) == 1 and "`--add` 'top-2'" in notes[0] and "runs once" in notes[0]
    with pytest.raises(ValueError, match=r"`--policy` template 'JESA\(\{g\},2\)\[T=\{t\}s\]' at g=0.9, t=-1 "
                                         r"\(expands to 'JESA\(0.9,2\)\[T=-1s\]'\) is not a valid policy"):
        prepare_points(["JESA({g},2)[T={t}s]"], ["g=0.9", "t=1,-1"])
    with pytest.raises(ValueError, match="`--add` 'Nope' is not a valid policy"):
        prepare_points([], [], ["Nope"])
    with pytest.raises(ValueError, match="the name 'policy' is taken by a sweep.csv column"):
        prepare_points(["Top-{policy}"], ["policy=1"])


@pytest.mark.parametrize("spec, needle", [
    ("g=0:1:1e-300", "about 1.0e+300 values"),  # Decimal's 28 digits cannot count it (was InvalidOperation)
    ("g=0:1:1e-30", "about 1.0e+30 values"),
    ("g=0:1:1e-999999", "more than 1e+15 values"),
    ("g=0:1e999999:1", "more than 1e+15 values"),
])
def test_a_step_too_small_to_count_is_refused_with_the_rule(spec, needle):
    for cap in (200, None):
        with pytest.raises(ValueError, match="`--grid`") as err:
            parse_axis(spec, max_points=cap)
        assert needle in str(err.value) and "step is too small" in str(err.value)


def test_ranges_beyond_28_digits_stay_exact():
    axis = parse_axis("g=10000000000:10000000000.00000000000000000002:1e-20")
    assert axis.labels() == ["10000000000", "10000000000.00000000000000000001", "10000000000.00000000000000000002"]
    assert [Fraction(str(v)) for v in axis.values] == [10**10 + Fraction(i, 10**20) for i in range(3)]
    assert parse_axis("g=1.00000000000000000000000000001,1").labels() == ["1.00000000000000000000000000001", "1"]


@pytest.mark.parametrize("template, written", [
    ("JESA({g:.2f},8)", "{g:.2f} has a format spec"),
    ("JESA({g!r},8)", "{g!r} has a conversion"),
    ("JESA({g:{w}},8)", "{g:{w}} has a format spec"),
])
def test_placeholders_with_a_format_spec_or_conversion_are_refused(template, written):
    with pytest.raises(ValueError, match="`--policy` template") as err:
        template_fields(template)
    assert written in str(err.value) and "write {g}" in str(err.value)
    with pytest.raises(ValueError, match="format spec|conversion"):
        expand_points([template], parse_grid(["g=0.9"]))


def test_a_fixed_policy_with_a_bad_brace_names_add():
    with pytest.raises(ValueError, match=r"^`--add` 'Foo\}': Single '\}'"):
        expand_points([], [], ["Foo}"])
