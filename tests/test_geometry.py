"""Node layouts (disk, grid, CSV) and pairwise distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dmoe.channels.geometry import (
    disk_positions,
    grid_positions,
    node_positions,
    pairwise_distances,
    parse_layout,
    read_positions_csv,
)


def test_disk_is_inside_and_uniform_over_the_area():
    r_max = 50.0
    pos = disk_positions(20000, r_max, np.random.default_rng(0))
    assert pos.shape == (20000, 2) and pos.dtype == np.float64
    r = np.hypot(pos[:, 0], pos[:, 1])
    assert np.all(r <= r_max)
    # uniform over the area: P(r <= x) = (x / R)^2, so (r / R)^2 ~ U(0, 1); the angle ~ U(0, 2 pi)
    assert stats.kstest((r / r_max) ** 2, "uniform").pvalue > 1e-3
    theta = np.mod(np.arctan2(pos[:, 1], pos[:, 0]), 2 * np.pi) / (2 * np.pi)
    assert stats.kstest(theta, "uniform").pvalue > 1e-3
    # a radial density uniform in r (the usual mistake) would put half the nodes inside R/2; the area rule puts 1/4
    assert np.mean(r <= r_max / 2) == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / 20000))


def test_disk_is_seeded():
    a = node_positions("disk:30", 8, rng=np.random.default_rng(7))
    b = node_positions("disk:30", 8, rng=np.random.default_rng(7))
    c = node_positions("disk:30", 8, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("n, cols", [(1, 1), (2, 2), (4, 2), (5, 3), (9, 3), (10, 4), (17, 5)])
def test_grid_has_ceil_sqrt_columns_and_the_spacing(n, cols):
    d = 7.5
    pos = grid_positions(n, d)
    assert pos.shape == (n, 2)
    assert len(np.unique(pos[:, 0])) == min(n, cols)
    np.testing.assert_array_equal(pos[:, 0], (np.arange(n) % cols) * d)
    np.testing.assert_array_equal(pos[:, 1], (np.arange(n) // cols) * d)
    if n > 1:
        dist = pairwise_distances(pos)
        nearest = np.min(dist + np.diag(np.full(n, np.inf)), axis=1)
        np.testing.assert_allclose(nearest, d)
    np.testing.assert_array_equal(node_positions(f"grid:{d}", n), pos)


def test_pairwise_distances_by_hand():
    pos = np.array([[0.0, 0.0], [3.0, 4.0], [-6.0, -8.0]])
    expected = np.array([[0, 5, 10], [5, 0, 15], [10, 15, 0]], dtype=float)
    np.testing.assert_allclose(pairwise_distances(pos), expected, rtol=0, atol=1e-12)
    d = pairwise_distances(np.random.default_rng(0).normal(size=(9, 2)) * 100)
    np.testing.assert_array_equal(d, d.T)
    assert np.all(np.diag(d) == 0)


def test_csv_with_and_without_header(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("x,y\n0,0\n-10.5, 3\n\n# a comment\n20,1e1\n")
    np.testing.assert_array_equal(read_positions_csv(a, 3), [[0, 0], [-10.5, 3], [20, 10]])
    b = tmp_path / "b.csv"
    b.write_text("1,2\n3,4\n")
    np.testing.assert_array_equal(node_positions(str(b), 2), [[1, 2], [3, 4]])
    # coincident nodes are allowed (distance 0; the path-loss model clamps it)
    c = tmp_path / "c.csv"
    c.write_text("5,5\n5,5\n")
    assert pairwise_distances(read_positions_csv(c, 2))[0, 1] == 0.0


@pytest.mark.parametrize(
    "text, n, needle",
    [
        ("x,y\n0,0\n1,1\n", 3, "has 2 rows of coordinates but the run has N = 3"),
        ("0,0\n1,1\n2,2\n", 2, "has 3 rows"),
        ("0,0,0\n1,1,1\n", 2, "3 columns, expected 2"),
        ("x,y,z\n0,0,0\n", 1, "3 columns, expected 2"),
        ("0\n1\n", 2, "1 columns, expected 2"),
        ("0,0\n1,nan\n", 2, "finite"),
        ("0,0\ninf,1\n", 2, "finite"),
        ("0,0\na,b\n", 2, "not two numbers"),
        ("", 2, "has 0 rows"),
    ],
)
def test_csv_errors_name_the_file_and_the_rule(tmp_path, text, n, needle):
    p = tmp_path / "pos.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match="`layout`") as exc:
        node_positions(str(p), n)
    assert needle in str(exc.value) and "pos.csv" in str(exc.value)


def test_missing_csv(tmp_path):
    with pytest.raises(ValueError, match="`layout`.*neither"):
        node_positions(str(tmp_path / "nope.csv"), 2)


@pytest.mark.parametrize(
    "layout",
    ["disk:-5", "disk:0", "disk:nan", "disk:inf", "disk:", "disk:abc", "grid:-1", "grid:0", "grid:NaN", "", "  ", None, 3],
)
def test_bad_layout_strings(layout):
    with pytest.raises(ValueError, match="`layout`"):
        parse_layout(layout)


def test_parse_layout_kinds():
    assert parse_layout("disk:50") == ("disk", 50.0)
    assert parse_layout(" Grid: 2.5 ") == ("grid", 2.5)
    kind, path = parse_layout("nodes.csv")
    assert kind == "csv" and str(path) == "nodes.csv"


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: disk_positions(0, 5.0, np.random.default_rng(0)), "num_nodes"),
        (lambda: disk_positions(3, -5.0, np.random.default_rng(0)), "radius_m"),
        (lambda: grid_positions(3, float("inf")), "spacing_m"),
        (lambda: grid_positions(2.5, 1.0), "num_nodes"),
        (lambda: pairwise_distances(np.zeros((3, 3))), "positions"),
        (lambda: pairwise_distances([[0.0, np.inf]]), "positions"),
    ],
)
def test_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        call()
    with pytest.raises(TypeError, match="`rng`"):
        disk_positions(3, 5.0, 0)
