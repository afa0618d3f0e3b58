"""The `dmoe run` configuration file (issue 16, item 5): TOML <-> the run's configuration.

Model-free: the parameters click resolves for `dmoe run` are read from a parsed context, and
failing runs stop before any model work. The end-to-end record and re-run are in
tests/test_run_outputs.py.
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

from dmoe.cli import main, run
from dmoe.config import (
    DEFAULT_SECTION,
    SECTIONS,
    ConfigError,
    default_values,
    defaults_toml,
    dump_toml,
    flatten,
    parse_config,
    read_config,
    sectioned,
)


def _params(args):
    """What `dmoe run ARGS` would run with (click's resolved parameters; nothing runs)."""
    return run.make_context("run", list(args)).params


def _write(tmp_path, text, name="deploy.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------ defaults round trip
def test_defaults_print_load_back_to_the_identical_configuration(tmp_path):
    res = CliRunner().invoke(main, ["config", "--defaults"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert text == defaults_toml(run)
    # every table of the mapping is there, every set default once
    data = tomllib.loads(text)
    assert set(data) == set(SECTIONS.values()) | {DEFAULT_SECTION}
    defaults = default_values(run)
    assert flatten(data) == {k: v for k, v in defaults.items() if v is not None}
    assert parse_config(data, run) == {k: v for k, v in defaults.items() if v is not None}
    # the run configured by the printed file is the run with no flags at all
    path = _write(tmp_path, text)
    assert _params(["--config", str(path)]) == _params([])
    # unset options appear as commented-out lines, every option's flags as a comment
    assert "# limit =" in text and "# --snr-db: P0/N0 [dB] of the paper preset" in text and "[geometry]" in text


def test_dump_toml_round_trips_through_tomllib():
    rng = np.random.default_rng(0)
    alphabet = list("abc XYZ_-.,:;()[]{}#=\"'\\/\t\n\r\x00\x01\x1f\x7f") + ["é", "漢", "😀", "\u2028"]
    for _ in range(500):
        sections = {}
        for t in range(rng.integers(1, 4)):
            body = {}
            for k in range(rng.integers(1, 6)):
                kind = rng.integers(0, 6)
                if kind == 0:
                    v = bool(rng.integers(0, 2))
                elif kind == 1:
                    v = int(rng.integers(-2**62, 2**62))
                elif kind == 2:
                    v = float(rng.choice([0.0, -0.0, 1e-300, 1e300, 5e-324, 1e16, 0.1, -2.5])) * float(rng.random())
                elif kind == 3:
                    v = float(10.0 ** rng.uniform(-320, 308)) * (1 if rng.random() < 0.5 else -1)
                elif kind == 4:
                    v = "".join(rng.choice(alphabet, rng.integers(0, 12)))
                else:
                    v = ["".join(rng.choice(alphabet, rng.integers(0, 5))) for _ in range(rng.integers(0, 4))]
                body[f"k{k}_x-y"] = v
            sections[f"t{t}"] = body
        back = tomllib.loads(dump_toml(sections, header="h"))
        assert back == sections
        for t, body in sections.items():  # ints stay ints, floats stay floats
            assert all(type(back[t][k]) is type(v) for k, v in body.items())


@pytest.mark.parametrize("bad, exc", [(math.nan, ValueError), (math.inf, ValueError), (None, TypeError),
                                      ({"a": 1}, TypeError), ("\ud800", ValueError)])
def test_dump_toml_refuses_what_toml_cannot_hold(bad, exc):
    with pytest.raises(exc):
        dump_toml({"run": {"x": bad}})


def test_sectioned_groups_by_the_mapping_and_drops_unset():
    s = sectioned({"snr_db": 3.0, "limit": None, "policies": ("Top-2",), "seed": 4, "some_new_option": 1})
    assert s == {"system": {"snr_db": 3.0}, "policies": {"policies": ["Top-2"]},
                 "run": {"seed": 4, "some_new_option": 1}}
    assert flatten(s) == {"snr_db": 3.0, "policies": ["Top-2"], "seed": 4, "some_new_option": 1}


# ------------------------------------------------------------------ precedence and spelling
def test_the_file_sets_options_and_flags_override_it(tmp_path):
    path = _write(tmp_path, """
[system]
snr_db = 3            # an integer is fine for a float option
wire_dtype = "int8"
[channel]
channel = "tdl-a"     # the flag spelling
speed-kmh = 30.0      # dashes work too
[policies]
policies = ["Top-8", "JESA(0.9,8)"]
[data]
subjects = "virology"  # one string for a repeatable option
limit = 3
[run]
seed = 5
""")
    p = _params(["--config", str(path), "--seed", "7", "--policy", "Top-2", "--snr-db", "1.5"])
    assert p["seed"] == 7 and p["policies"] == ("Top-2",) and p["snr_db"] == 1.5  # flags win
    assert p["wire_dtype"] == "int8" and p["channel_model"] == "tdl-a" and p["speed_kmh"] == 30.0
    assert p["subjects"] == ("virology",) and p["limit"] == 3
    q = _params(["--config", str(path)])
    assert q["seed"] == 5 and q["policies"] == ("Top-8", "JESA(0.9,8)") and q["snr_db"] == 3.0
    assert isinstance(q["snr_db"], float)
    assert _params([])["seed"] == 0  # nothing leaks into a run without the file


def test_merged_file_is_printed_by_dmoe_config(tmp_path):
    path = _write(tmp_path, "[run]\nseed = 9\n[system]\nhidden_state_bytes = 1000\n")
    res = CliRunner().invoke(main, ["config", str(path)])
    assert res.exit_code == 0, res.output
    data = tomllib.loads(res.output)
    assert data["run"]["seed"] == 9 and data["system"]["hidden_state_bytes"] == 1000
    assert data["system"]["preset"] == "paper" and "snr_db" not in data["system"]  # the defaults around it (snr_db: unset = 10 dB of the paper preset)
    res = CliRunner().invoke(main, ["config"])
    assert res.exit_code != 0 and "--defaults" in res.output


# ------------------------------------------------------------------ errors name the key and the file
@pytest.mark.parametrize(
    "text, needles",
    [
        ("[system]\nsnr_dbb = 3\n", ["unknown key `snr_dbb`", "[system]", "snr_db"]),
        ("[channel]\nsnr_db = 3\n", ["`snr_db` in [channel]", "belongs in the [system] table"]),
        ("[run]\npolicy = ['Top-2']\n", ["`policy` in [run]", "belongs in the [policies] table"]),
        ("[sys]\nx = 1\n", ["unknown table [sys]", "[system]"]),
        ("snr_db = 3\n", ["`snr_db` at the top", "[system] table"]),
        ("hello = 3\n", ["unknown key `hello` at the top"]),
        ("[system]\nsnr_db = \"high\"\n", ["`snr_db` in [system]", "must be a number", "str"]),
        ("[system]\nnum_experts = 8.0\n", ["`num_experts` in [system]", "must be an integer"]),
        ("[run]\nseed = true\n", ["`seed` in [run]", "must be an integer"]),
        ("[engine]\nnode_rejoin = 1\n", ["`node_rejoin` in [engine]", "must be a boolean"]),
        ("[policies]\npolicies = [1, 2]\n", ["`policies` in [policies]", "list of strings"]),
        ("[system]\nsnr_db = nan\n", ["`snr_db` in [system]", "finite"]),
        ("[system]\nsnr_db = [3]\n", ["`snr_db` in [system]", "must be a number"]),
        ("[data]\nlimit = 0\n", ["`limit` in [data]", "range"]),
        ("[system]\nwire_dtype = \"fp4\"\n", ["`wire_dtype` in [system]", "fp16", "int8"]),
        ("[system]\nhidden_state_bytes = 0\n", ["`hidden_state_bytes` in [system]", "range"]),
        ("[channel]\nchannel = 'tdl-a'\nchannel_model = 'tdl-b'\n", ["`channel_model`", "again", "`channel`"]),
        ("[system\nsnr_db = 3\n", ["not valid TOML"]),
    ],
)
def test_bad_files_name_the_key_and_the_file_and_nothing_is_written(tmp_path, text, needles):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_config(path, run)
    msg = str(info.value)
    assert str(path) in msg and all(n in msg for n in needles), msg
    out, cache = tmp_path / "out", tmp_path / "cache"
    res = CliRunner().invoke(main, ["run", "--config", str(path), "-o", str(out), "--cache-dir", str(cache)])
    assert res.exit_code != 0 and str(path) in res.output and "Traceback" not in res.output
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize(
    "text, flag",
    [("[csi]\ncsi_error = 1.5\n", "--csi-error"), ("[engine]\nnode_failure_rate = 1.0\n", "--node-failure-rate"),
     ("[channel]\ncarrier_ghz = 0\n", "--carrier-ghz")],
)
def test_checks_after_parsing_name_the_file_too(tmp_path, text, flag):
    path = _write(tmp_path, text)
    out, cache = tmp_path / "out", tmp_path / "cache"
    res = CliRunner().invoke(main, ["run", "--config", str(path), "-o", str(out), "--cache-dir", str(cache)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert str(path) in res.output and flag in res.output
    assert not out.exists() and not cache.exists()


def test_a_missing_file_is_a_clean_error(tmp_path):
    res = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and "nope.toml" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text, needle", [
    ('[policies]\npolicies = ["Top-0"]\n', "`policies` in"),
    ('[geometry]\nlayout = "disk:-1"\n', "`layout` in"),
    ('[geometry]\npathloss = "inh-office"\n', "`pathloss` in"),
    ('[channel]\nspeed_kmh = 1e6\n', "`channel` in"),
])
def test_dmoe_config_file_checks_what_run_checks_before_the_model(tmp_path, text, needle):
    """Review of issue 20: `dmoe config FILE` printed `policies = ["Top-0"]` and `layout = "disk:-1"` back."""
    path = _write(tmp_path, text)
    res = CliRunner().invoke(main, ["config", str(path)])
    assert res.exit_code != 0 and needle in res.output and str(path) in res.output, res.output
    assert "Traceback" not in res.output
