"""The `dmoe` command line: bad input gives a clear one-line error, never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dmoe.cli import main


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "--subject", "anatomyy"], "`subjects`"),
        (["run", "--policy", "JESA(0.9)"], "accepted forms"),
        (["run", "--limit", "0"], "--limit"),
        (["run", "--max-experts", "0"], "--max-experts"),
        (["run", "--num-subcarriers", "0"], "--num-subcarriers"),
        (["run", "--policy", "JESA(1.5,2)"], "gamma0"),
        (["run", "--channel-redraw", "never"], "--channel-redraw"),
        (["run", "--qos", "nan"], "--qos"),
        (["run", "--gamma0", "0"], "--gamma0"),
        (["run", "--subject", "anatomy,nope"], "'nope'"),
        (["run", "--num-subcarriers", "32"], "--num-subcarriers"),
        (["run", "--policy", "Top-33"], "`k`"),
        (["run", "-K", "8", "--policy", "Top-9"], "`k`"),
        (["run", "--node-failure-rate", "1"], "--node-failure-rate"),
        (["run", "--node-failure-rate", "-0.1"], "--node-failure-rate"),
        (["run", "--engine", "spark"], "--engine"),
        (["run", "--ray-address", "127.0.0.1:1"], "--engine ray"),
        (["run", "--engine", "ray", "--ray-address", "127.0.0.1:1"], "no Ray cluster reachable"),
        (["run", "--channel", "tdl-x"], "--channel"),
        (["run", "--delay-spread", "-1"], "--delay-spread"),
        (["run", "--speed-kmh", "-3"], "--speed-kmh"),
        (["run", "--carrier-ghz", "0"], "--carrier-ghz"),
        (["run", "--csi-error", "1.5"], "--csi-error"),
        (["run", "--csi-error", "nan"], "--csi-error"),
        (["run", "--csi-delay", "-1"], "--csi-delay"),
        (["run", "--comp-throughput", "0"], "--comp-throughput"),
        (["run", "--speed-kmh", "3", "--channel-redraw", "round"], "--channel-redraw"),
        (["run", "--policy", "dense[T=1s]"], "dense"),
        (["run", "--policy", "JESA(0.9,2)[T=0s]"], "`deadline_s`"),
        (["run", "--ppl-texts", "-1"], "--ppl-texts"),
    ],
)
def test_bad_run_arguments_fail_cleanly(args, needle, tmp_path):
    res = CliRunner().invoke(main, args + ["--output", str(tmp_path), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "c").exists()  # failed before any model work


def test_subjects_lists_all_57():
    res = CliRunner().invoke(main, ["subjects"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 57
    assert any(line.startswith("anatomy") and "135" in line and "medical" in line for line in lines)


def test_help():
    res = CliRunner().invoke(main, ["run", "--help"])
    assert res.exit_code == 0 and "--subject" in res.output and "--seed" in res.output


def test_output_must_be_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = CliRunner().invoke(main, ["run", "--policy", "Top-2", "--output", str(f), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "`output`" in res.output and "Traceback" not in res.output


def test_comma_separated_subjects_are_split():
    from dmoe.data import resolve_subjects

    assert resolve_subjects(("anatomy,virology", "nutrition")) == ["anatomy", "virology", "nutrition"]
    with pytest.raises(TypeError, match="`subjects`"):
        resolve_subjects(3)


def test_default_policies_keep_a_quarter_of_a_carved_ffn():
    from dmoe.main_job import DEFAULT_POLICIES, default_policies

    assert default_policies(8) == list(DEFAULT_POLICIES)  # the paper's, D = 2 of K = 8
    assert default_policies(32) == ["dense", "Top-4", "Top-8", "H(0.5,8)", "JESA(0.9,8)", "LB(0.9,8)"]
    assert default_policies(64, carved=False) == ["dense", "Top-1", "Top-2", "H(0.5,2)", "JESA(0.9,2)", "LB(0.9,2)"]
    assert default_policies(32, max_experts=1, gamma0=0.8, qos=0.6) == [
        "dense", "Top-1", "H(0.6,1)", "JESA(0.8,1)", "LB(0.8,1)"]
    with pytest.raises(ValueError, match="--max-experts"):
        default_policies(8, max_experts=9)


def test_run_refuses_an_unresolvable_delay_spread_and_an_absurd_speed_before_work(tmp_path):
    """Issue 20: a 1e9 ns delay spread aliased to flat fading; 1e12 km/h was accepted."""
    from click.testing import CliRunner

    from dmoe.cli import main

    for extra, needle in ((["--channel", "tdl-a", "--delay-spread", "1e9"], "must be < 1000 ns"),
                          (["--speed-kmh", "1e12"], "[0, 500] [km/h]")):
        out = tmp_path / "o"
        res = CliRunner().invoke(main, ["run", "--quiet", "-o", str(out), *extra])
        assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output, res.output
        assert not out.exists()
