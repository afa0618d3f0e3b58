"""The start-up progress bar of ``dmoe run`` (issue 18, item 4): run_main_job's ``on_stage``
hook reports the real stages in order, the bar appears before torch is imported and closes
before the first work bar, and ``--quiet`` shows nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dmoe.startup_progress import IMPORT_STAGES, MAIN_JOB_STAGES, RUN_STAGES, StartupProgress

MAIN_NAMES = [name for name, _ in MAIN_JOB_STAGES]
#: the tiny carved model (tests/conftest.py, K = 4) on 2 nodes: a placement to compute
TINY = ["-K", "4", "--nodes", "2", "-M", "12", "--limit", "1", "--policy", "Top-2"]


# ------------------------------------------------------------------ the bar itself
def test_the_bar_advances_through_its_stages_and_closes_after_the_last(capsys):
    bar = StartupProgress(RUN_STAGES)
    assert bar.is_open and bar.done == 0
    for i, (name, _) in enumerate(RUN_STAGES[:-1]):
        bar.stage(name)
        assert bar.done == i + 1 and bar.is_open
    bar.stage(RUN_STAGES[-1][0])
    assert bar.done == len(RUN_STAGES) and not bar.is_open
    err = capsys.readouterr().err
    # what runs now: each stage's description is drawn once the stage before it has finished
    for i, (_, what) in enumerate(RUN_STAGES):
        assert f"start-up: {what}: {i}/{len(RUN_STAGES)} " in err
    assert err.endswith("\r") or err.rstrip(" ").endswith("\r")  # leave=False: its line is cleared
    bar.close()  # idempotent


def test_stages_may_be_skipped_but_not_repeated_or_unknown():
    bar = StartupProgress(RUN_STAGES, enabled=False)
    assert not bar.is_open
    bar.stage("import transformers")  # "import torch" counts as done
    assert bar.done == 2
    with pytest.raises(ValueError, match="`name`.*'import torch' comes before 'import transformers'"):
        bar.stage("import torch")
    with pytest.raises(ValueError, match="`name`: unknown start-up stage 'model loading'"):
        bar.stage("model loading")
    bar.stage("engine")
    assert bar.done == len(RUN_STAGES)


@pytest.mark.parametrize("stages, exc, needle", [
    ((), ValueError, "at least one"),
    ((("a", "x"), ("a", "y")), ValueError, "repeat"),
    ("abc", TypeError, "`stages`"),
    ((("a",),), TypeError, "pair"),
    ((("a", ""),), TypeError, "non-empty"),
    (None, TypeError, "`stages`"),
])
def test_bad_stages_are_refused(stages, exc, needle):
    with pytest.raises(exc, match=needle):
        StartupProgress(stages, enabled=False)


def test_enabled_must_be_a_bool():
    with pytest.raises(TypeError, match="`enabled`"):
        StartupProgress(RUN_STAGES, enabled="no")


def test_messages_clear_the_bar_while_it_is_open(capsys):
    bar = StartupProgress((("a", "doing a"), ("b", "doing b")))
    echo = bar.log(lambda m: print(m))
    capsys.readouterr()
    echo("hello")
    out, err = capsys.readouterr()
    assert out == "hello\n"
    # cleared before the message (blanks over its line), drawn again after it
    segments = err.split("\r")
    assert segments[0] == "" and segments[1].strip() == "" and len(segments[1]) > 10
    assert segments[-1].startswith("start-up: doing a: 0/2")
    bar.stage("b")
    capsys.readouterr()
    echo("after")
    out, err = capsys.readouterr()
    assert (out, err) == ("after\n", "")


def test_a_warning_clears_the_bar_while_it_is_open_and_the_hook_is_restored(capsys, monkeypatch):
    import sys
    import warnings

    # what Python shows a warning with outside pytest (pytest records them instead)
    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(f"{category.__name__}: {message}\n")

    monkeypatch.setattr(warnings, "showwarning", show)
    before = warnings.showwarning
    bar = StartupProgress((("a", "doing a"), ("b", "doing b")))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning)
    err = capsys.readouterr().err
    line = next(seg for seg in err.split("\r") if "careful" in seg)
    assert "start-up:" not in line.split("careful")[0]  # the warning starts on a cleared line
    assert err.split("\r")[-1].startswith("start-up: doing a: 0/2")  # the bar drawn again after it
    bar.close()
    assert warnings.showwarning is before


def test_import_runtime_imports_torch_and_transformers_as_two_stages():
    bar = StartupProgress(RUN_STAGES, enabled=False)
    bar.import_runtime()
    assert bar.done == 2 and "torch" in sys.modules and "transformers" in sys.modules
    with pytest.raises(ValueError, match="`stages` must include \\['import torch', 'import transformers'\\]"):
        StartupProgress((("x", "y"),), enabled=False).import_runtime()


def test_stage_names_and_echo_are_checked():
    bar = StartupProgress((("a", "x"), ("b", "y")), enabled=False)
    with pytest.raises(TypeError, match="`name` must be a stage name"):
        bar.stage(["a"])
    bar.stage("a")
    with pytest.raises(ValueError, match="`name`: start-up stage 'a' has already finished"):
        bar.stage("a")
    with pytest.raises(TypeError, match="`echo` must be a callable"):
        bar.log(None)


def test_the_run_stages_are_the_imports_then_the_main_jobs():
    assert [n for n, _ in RUN_STAGES] == ["import torch", "import transformers", "import dmoe", *MAIN_NAMES]
    assert RUN_STAGES == IMPORT_STAGES + MAIN_JOB_STAGES


# ------------------------------------------------------------------ run_main_job's hook
@pytest.mark.parametrize("ppl_texts", [0, 1])
def test_run_main_job_reports_its_stages_in_order_when_each_has_finished(tiny_carved_build, monkeypatch, ppl_texts):
    from dmoe import main_job, placement

    build, _ = tiny_carved_build
    events = []

    def spy(module, name):
        f = getattr(module, name)

        def wrapped(*a, **k):
            events.append(f"call {name}")
            return f(*a, **k)

        monkeypatch.setattr(module, name, wrapped)

    for name in ("load_mmlu", "full_reference", "make_engine", "full_text_nll", "evaluate_policy"):
        spy(main_job, name)
    spy(placement, "make_placement")  # imported by DeploymentPlan.load when it runs
    _, results = main_job.run_main_job(
        model_source=str(build), num_experts=4, num_nodes=2, num_subcarriers=12, limit=1, policies=["Top-2"],
        ppl_texts=ppl_texts, progress=False, log=lambda m: None, on_stage=lambda s: events.append(s),
    )
    assert [e for e in events if not e.startswith("call ")] == MAIN_NAMES
    expected = ["plan", "call load_mmlu", "questions", "model", "call make_placement", "placement",
                "call make_engine", "engine", "call full_reference",
                *(["call full_text_nll"] if ppl_texts else []), "call evaluate_policy"]
    assert events == expected
    assert results[0].policy == "Top-2"


def test_run_main_job_refuses_a_hook_that_is_not_callable_before_any_work(monkeypatch):
    from dmoe import main_job

    monkeypatch.setattr(main_job, "load_mmlu", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(TypeError, match="`on_stage` must be a callable"):
        main_job.run_main_job(limit=1, on_stage="model", log=lambda m: None)


def test_a_failing_stage_stops_the_hook_there(tiny_carved_build, monkeypatch):
    from dmoe import main_job

    build, _ = tiny_carved_build
    seen = []

    def broken(*a, **k):
        raise ValueError("no engine")

    monkeypatch.setattr(main_job, "make_engine", broken)
    with pytest.raises(ValueError, match="no engine"):
        main_job.run_main_job(model_source=str(build), num_experts=4, num_subcarriers=12, limit=1,
                              policies=["Top-2"], ppl_texts=0, progress=False, log=lambda m: None,
                              on_stage=seen.append)
    assert seen == MAIN_NAMES[:MAIN_NAMES.index("engine")]


# ------------------------------------------------------------------ the CLI
def test_the_cli_draws_the_start_up_bar_before_the_first_work_bar_and_quiet_draws_nothing(tiny_carved_build,
                                                                                          tmp_path):
    from dmoe.cli import main

    build, _ = tiny_carved_build
    res = CliRunner().invoke(main, ["run", "--model", str(build), "-o", str(tmp_path / "a"), *TINY,
                                    "--ppl-texts", "1"])
    assert res.exit_code == 0, res.output
    err = res.stderr
    first, last = err.index("start-up: importing torch"), err.rindex("start-up: starting the engine")
    assert first < last < err.index("full model:") < err.index("full model ppl") < err.index("Top-2:")
    assert "full model (dense model (every expert))" in res.stdout  # the log is on stdout, unchanged
    quiet = CliRunner().invoke(main, ["run", "--model", str(build), "-o", str(tmp_path / "q"), *TINY,
                                      "--ppl-texts", "1", "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    # the bar changes no output file
    for f in ("summary.csv", "per_layer.csv"):
        assert (tmp_path / "a" / f).read_text() == (tmp_path / "q" / f).read_text()


def test_an_error_after_the_bar_appeared_is_a_clean_message(tiny_carved_build, tmp_path):
    from dmoe.cli import main

    build, _ = tiny_carved_build
    res = CliRunner().invoke(main, ["run", "--model", str(build), "-o", str(tmp_path / "a"), "-K", "4", "-M", "12",
                                    "--policy", "Top-5"])
    assert res.exit_code != 0 and "`k` must not exceed K = 4" in res.stderr
    assert "start-up: importing torch" in res.stderr and "Traceback" not in res.output


#: a child running the CLI that records, for each tqdm bar, whether torch and transformers
#: were imported when it was created, and when each bar closed
_RECORD_BARS = r"""
import json, sys
import tqdm.std
events = []
init, close = tqdm.std.tqdm.__init__, tqdm.std.tqdm.close
def recording_init(self, *a, **k):
    events.append(["create", str(k.get("desc")), "torch" in sys.modules, "transformers" in sys.modules])
    init(self, *a, **k)
def recording_close(self):
    if not getattr(self, "_recorded_close", False):
        self._recorded_close = True
        events.append(["close", str(getattr(self, "desc", ""))])
    close(self)
tqdm.std.tqdm.__init__, tqdm.std.tqdm.close = recording_init, recording_close
from dmoe.cli import main
assert "torch" not in sys.modules, "dmoe.cli imports torch"
try:
    main(sys.argv[1:], prog_name="dmoe")
finally:
    print("EVENTS " + json.dumps(events))
"""


def test_the_start_up_bar_exists_before_torch_is_imported(tiny_carved_build, tmp_path):
    build, _ = tiny_carved_build
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _RECORD_BARS, "run", "--model", str(build), "-o", str(tmp_path / "a"),
                          *TINY, "--ppl-texts", "1"], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in res.stdout.splitlines() if line.startswith("EVENTS ")]
    assert res.returncode == 0 and lines, res.stderr[-3000:]
    events = json.loads(lines[0][len("EVENTS "):])
    kind, desc, torch_loaded, transformers_loaded = events[0]
    assert (kind, desc) == ("create", "start-up: importing torch")
    assert not torch_loaded and not transformers_loaded
    # the start-up bar closes before the first work bar is created
    assert events[1][0] == "close" and events[1][1].startswith("start-up:")
    assert [e[1] for e in events[2:] if e[0] == "create"] == ["full model", "full model ppl", "         Top-2"]


# ------------------------------------------------------------------ dmoe generate
def test_generate_shows_its_start_up_bar_before_the_text_and_quiet_shows_nothing(tiny_carved_build, tmp_path):
    from dmoe.cli import main
    from dmoe.startup_progress import GENERATE_STAGES

    build, root = tiny_carved_build
    args = ["generate", "Answer:", "--model", str(build), "-K", "4", "--nodes", "2", "--cache-dir",
            str(root / "cache"), "--max-new-tokens", "2"]
    res = CliRunner().invoke(main, args)
    quiet = CliRunner().invoke(main, [*args, "--quiet"])
    assert res.exit_code == 0 and quiet.exit_code == 0, res.output + quiet.output
    err = res.stderr
    drawn = [err.index(f"start-up: {what}: {i}/{len(GENERATE_STAGES)}") for i, (_, what) in enumerate(GENERATE_STAGES)]
    assert drawn == sorted(drawn)
    assert err.index("model: carved, K = 4") > drawn[-1]  # the model line comes once the runtime is up
    assert quiet.stderr == ""

    def radio(out):  # the text and the costs on the radio ledger, not the wall-clock rate
        return out.split(" on the radio ledger")[0]

    assert radio(quiet.stdout) == radio(res.stdout) and "time to first token" in radio(res.stdout)


def test_deploy_reports_model_then_placement_and_refuses_a_bad_hook(tiny_carved_build):
    from dmoe.deployment import deploy

    build, root = tiny_carved_build
    seen = []
    dep = deploy(model_source=str(build), num_experts=4, num_nodes=2, cache_dir=str(root / "cache"), progress=False,
                 on_stage=seen.append)
    assert seen == ["model", "placement"] and dep.placement is not None
    with pytest.raises(TypeError, match="`on_stage` must be a callable"):
        deploy(model_source=str(build), num_experts=4, on_stage=1)
