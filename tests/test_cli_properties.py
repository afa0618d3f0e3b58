"""Property-based tests of `dmoe run` over random CLI-level configurations (issue 20).

Every drawn configuration must end in one of two ways:

* a clear error before any output: non-zero exit, an ``Error:`` line, no traceback, and the
  output directory not created; or
* a complete run whose files are strict (summary.json parses with a parser that refuses
  NaN / Infinity, per_layer.csv and summary.csv hold no ``nan`` / ``inf``) and whose numbers
  are finite (``null`` only where the summary documents a missing value).

The model is a tiny random Qwen2-MoE checkpoint (6 experts, 2 layers) saved to a temporary
directory, one question, so that each example takes about a second.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.test_hf_moe import save_tiny_moe  # noqa: E402

def _mostly(valid, invalid):
    """Valid values nine times as often as invalid ones: with several options drawn at once,
    about half the configurations run and half are refused."""
    return st.sampled_from(list(valid) * 9 + list(invalid))


_POLICIES = _mostly(
    ["dense", "Top-1", "Top-2", "H(0.5,2)", "JESA(0.9,2)", "LB(0.9,2)", "JESA(0.9,2)[T=1s]", "Top-2[T=1e-9s]"],
    ["Top-0", "Top-7", "JESA(1.5,2)", "Top-2[T=0s]", "Top-2[T=-1s]", "H(0.5,0)", "nonsense", "JESA(0.9,2)[T=abc]"],
)
_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--snr-db": _mostly([-10.0, 0.0, 10.0, 30.0], [float("nan"), float("inf"), -300.0, 1e300, -1e300]),
        "--num-subcarriers": _mostly([4, 8, 30, 64], [0, 1]),
        "--channel": _mostly(["rayleigh", "tdl-a", "tdl-d", "TDL-C"], ["tdl-z"]),
        "--delay-spread": _mostly([0.0, 30.0, 100.0], [300.0, 1e9, -1.0, float("nan")]),
        "--speed-kmh": _mostly([0.0, 3.0, 120.0], [1e12, -5.0]),
        "--csi-error": _mostly([0.0, 0.1, 1.0], [1.5, float("nan")]),
        "--csi-delay": _mostly([0, 1, 2], [-1]),
        "--comp-throughput": _mostly([1e4, 1.0], [0.0, -1.0, float("inf")]),
        "--seed": st.integers(min_value=0, max_value=3),
        "--system": _mostly(["paper", "nr-fr1-15khz-20mhz", "nr-fr1-30khz-100mhz"], ["lte"]),
        "--layout": _mostly(["disk:50", "grid:10"], ["disk:-3", "disk:nan", "ring:5", "disk:0"]),
        "--wire-dtype": _mostly(["fp16", "int8"], ["fp4"]),
        "--hidden-state-bytes": _mostly([1, 576, 8192], [0, -1]),
        "--node-failure-rate": _mostly([0.0, 0.2], [1.0, float("nan")]),
        "--noise-figure": _mostly([0.0, 7.0], [-1.0, 1e300]),
        "--tx-power-dbm": _mostly([23.0, 10.0], [1e300, -400.0]),
    },
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("qwen")
    save_tiny_moe("qwen2_moe", d, tokenizer=tiny_tokenizer)
    return d


def _refuse(token):
    raise ValueError(f"non-standard JSON constant {token}")


def _finite_numbers(value, where="summary"):
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{where}[{i}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where} = {value}"


@settings(max_examples=40)
@given(options=_OPTIONS, policies=st.lists(_POLICIES, min_size=1, max_size=3))
def test_a_random_configuration_errors_cleanly_or_runs_strictly(checkpoint, tmp_path_factory, options, policies):
    from click.testing import CliRunner

    from dmoe.cli import main

    out = tmp_path_factory.mktemp("run") / "out"
    args = ["run", "--model", str(checkpoint), "--limit", "1", "--quiet", "--ppl-texts", "0", "-o", str(out)]
    for flag, value in options.items():
        args += [flag, str(value)]
    for p in policies:
        args += ["--policy", p]
    res = CliRunner().invoke(main, args)
    event("refused" if res.exit_code != 0 else "ran")
    if res.exit_code != 0 and "have failed" not in res.output:
        assert "Traceback" not in res.output, res.output
        assert "Error:" in res.output, (args, res.output, res.exception)
        assert not out.exists(), f"a rejected configuration wrote {sorted(p.name for p in out.iterdir())}"
        return
    # a complete run, or one where every node failed (its results so far are written first)
    assert "Traceback" not in res.output, res.output
    summary = json.loads((out / "summary.json").read_text(), parse_constant=_refuse)
    _finite_numbers(summary)
    assert summary["results"], "a complete run has one result per policy"
    for name in ("per_layer.csv", "summary.csv"):
        with (out / name).open() as fh:
            for row in csv.DictReader(fh):
                for key, cell in row.items():
                    assert cell.strip().lower() not in ("nan", "inf", "-inf", "infinity"), (name, key, cell)
