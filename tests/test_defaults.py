"""dmoe.defaults: the library's default K (and N, placement) is the CLI's (issue 19, item 4)."""

from __future__ import annotations

import inspect

import pytest

from dmoe.defaults import DEFAULT_NUM_EXPERTS, DEFAULT_NUM_NODES, DEFAULT_PLACEMENT


def test_one_constant_everywhere():
    import dmoe.main_job as mj
    from dmoe.model.carved import build
    from dmoe.model import dispatch

    assert (DEFAULT_NUM_EXPERTS, DEFAULT_NUM_NODES, DEFAULT_PLACEMENT) == (32, 8, "coactivation")
    assert (mj.DEFAULT_RUN_EXPERTS, mj.DEFAULT_RUN_NODES, mj.DEFAULT_RUN_PLACEMENT) == (
        DEFAULT_NUM_EXPERTS, DEFAULT_NUM_NODES, DEFAULT_PLACEMENT)
    assert dispatch.DEFAULT_CARVED_EXPERTS == DEFAULT_NUM_EXPERTS
    for fn in (build.build_moe_model, build.load_moe_model):
        assert inspect.signature(fn).parameters["num_experts"].default == DEFAULT_NUM_EXPERTS


def _captured_k(monkeypatch, call):
    """K that ``call`` would build the carved model with (the build itself is not run)."""
    from dmoe.model.carved import build

    seen = {}

    def fake(source, *, num_experts, **kw):
        seen["k"] = num_experts
        raise RuntimeError("stop")

    monkeypatch.setattr(build, "load_moe_model", fake)
    with pytest.raises(RuntimeError, match="stop"):
        call()
    return seen["k"]


def test_library_default_k_is_the_cli_default_k(monkeypatch):
    """`load_moe_model()` builds the K that `dmoe run`, `dmoe build-model` and `dmoe calibrate`
    use when -K is not given (their click default is None: the resolved K is the constant)."""
    import dmoe
    from click.testing import CliRunner

    from dmoe.cli import main
    from dmoe.deployment import plan_deployment

    def click_default(command, name):
        return next(p for p in main.commands[command].params if p.name == name).default

    for command in ("run", "build-model", "calibrate"):
        assert click_default(command, "num_experts") is None  # resolved by the library
    assert click_default("run", "num_nodes") is None
    library_k = _captured_k(monkeypatch, lambda: dmoe.load_moe_model())
    assert library_k == DEFAULT_NUM_EXPERTS
    assert plan_deployment().num_experts == DEFAULT_NUM_EXPERTS  # dmoe run / run_main_job
    for args in (["build-model"], ["calibrate", "--quiet"]):
        seen = _captured_k(monkeypatch, lambda: _raise_from(CliRunner().invoke(main, args)))
        assert seen == library_k, args
    # the paper's K = 8 stays available explicitly
    assert _captured_k(monkeypatch, lambda: dmoe.load_moe_model(num_experts=8)) == 8


def _raise_from(result):
    if result.exception is not None:
        raise result.exception
    raise AssertionError(f"the command did not reach the model build: {result.output}")


def test_cli_help_names_the_constant():
    from click.testing import CliRunner

    from dmoe.cli import main

    out = CliRunner().invoke(main, ["calibrate", "--help"]).output
    assert f"default {DEFAULT_NUM_EXPERTS}" in out
    out = CliRunner().invoke(main, ["run", "--help"]).output
    assert f"{DEFAULT_NUM_EXPERTS} fine-grained experts" in " ".join(out.split())
