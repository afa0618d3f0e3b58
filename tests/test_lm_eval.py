"""The lm-evaluation-harness backend ``dmoe`` on a tiny random carved model (K = 4).

The shipped local-file MMLU task (YAML + JSONL, no hub) through ``lm_eval.simple_evaluate``
gives the same per-question log-likelihoods, the same ``acc`` and the same energy as
``dmoe run`` on the same questions, policy, seed and system; ``loglikelihood_rolling``
equals a direct sum over the centralised pass; ``generate_until`` equals
:func:`dmoe.runtime.generate.generate`; the command line runs offline end to end and bad
model arguments and tasks fail with a message naming them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


lm_eval = pytest.importorskip("lm_eval")

LIMIT = 6
SEED = 3


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    from dmoe.integrations import write_lm_eval_tasks

    d = tmp_path_factory.mktemp("tasks")
    assert write_lm_eval_tasks(d, "anatomy") == ["dmoe_mmlu_anatomy", "dmoe_mmlu"]
    return d


#: the radio of a run: (dmoe run's keywords, the same as --model_args)
PAPER = ({}, {})
NR_LAYOUT = ({"preset": "nr-fr1-30khz-100mhz", "channel": "disk:40", "wire_dtype": "int8"},
             {"system": "nr-fr1-30khz-100mhz", "layout": "disk:40", "wire_dtype": "int8"})


def _dmoe_run(build, root, policy, radio, limit=LIMIT):
    from dmoe.channels import ChannelConfig
    from dmoe.main_job import run_main_job

    kw = dict(radio)
    if "channel" in kw:
        kw["channel"] = ChannelConfig(layout=kw["channel"])
    config, results = run_main_job(subjects="anatomy", limit=limit, policies=[policy], model_source=str(build),
                                   num_experts=4, seed=SEED, cache_dir=str(root / "cache"), output=None, ppl_texts=0,
                                   progress=False, log=lambda m: None, **kw)
    return config, results[0]


def _harness(build, root, task_dir, policy, tmp_path, model_args):
    import dmoe.integrations.lm_eval  # noqa: F401 - registers the model
    from lm_eval.tasks import TaskManager

    energy = tmp_path / f"energy-{policy}.json"
    out = lm_eval.simple_evaluate(
        model="dmoe",
        model_args={"model": str(build), "K": 4, "policy": policy, "seed": SEED, "cache_dir": str(root / "cache"),
                    "progress": False, "energy_json": str(energy), **model_args},
        tasks=["dmoe_mmlu_anatomy"], task_manager=TaskManager(include_path=str(task_dir)), limit=LIMIT,
        log_samples=True,
    )
    return out, json.loads(energy.read_text())


@pytest.mark.parametrize("policy, radio", [("JESA(0.9,2)", PAPER), ("Top-1", PAPER), ("JESA(0.9,2)", NR_LAYOUT)],
                         ids=["jesa", "top1", "jesa-nr-layout-int8"])
def test_harness_accuracy_and_energy_equal_dmoe_run(tiny_carved_build, task_dir, policy, radio, tmp_path):
    build, root = tiny_carved_build
    config, ref = _dmoe_run(build, root, policy, radio[0])
    out, energy = _harness(build, root, task_dir, policy, tmp_path, radio[1])
    res = out["results"]["dmoe_mmlu_anatomy"]
    assert res["acc,none"] == pytest.approx(ref.accuracy, abs=0)
    # the same log-likelihood of every option of every question, bit for bit
    samples = sorted(out["samples"]["dmoe_mmlu_anatomy"], key=lambda s: s["doc_id"])
    got = np.array([[r[0][0] for r in s["resps"]] for s in samples])
    np.testing.assert_array_equal(got, ref.logliks)
    assert [s["target"] for s in samples] == ref.answers.tolist()
    # the energy ledger beside the metrics: the same rounds, the same energy as dmoe run
    ll = energy["requests"]["loglikelihood"]
    assert ll["requests"] == 4 * LIMIT and ll["rounds"] == ref.rounds == -(-LIMIT // 4)
    assert ll["energy_j"] == pytest.approx(ref.energy_j, rel=1e-12)
    assert ll["energy_comm_j"] == pytest.approx(ref.energy_comm_j, rel=1e-12)
    assert ll["tokens"] == ref.num_tokens
    assert energy["config"]["policies"]["loglikelihood"] == policy and energy["config"]["num_nodes"] == 4
    # the same deployment: system, preset, node geometry and s0
    for key in ("system", "system_preset", "deployment", "hidden_state_bytes", "wire_dtype", "channel"):
        assert energy["config"][key] == config[key], key


def _instances(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def dense_lm(tiny_carved_build):
    from dmoe.integrations.lm_eval import DMoELM

    build, root = tiny_carved_build
    return DMoELM.create_from_arg_string(
        f"model={build},K=4,policy=dense,seed=1,cache_dir={root / 'cache'},progress=false,max_length=16,"
        "prefix_token_id=0"
    )


def test_loglikelihood_rolling_equals_the_centralised_sum(dense_lm, tiny_tokenizer):
    """Dense + sum is the full model: rolling windows of 16 tokens scored through the
    runtime equal a direct computation on ``forward_masked`` of the same windows."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    texts = ["The following is a question about anatomy. Question: Which bone is the longest in the body?",
             "Answer: the femur"]
    got = dense_lm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]))
    model = dense_lm.deployment.model
    eot = 0  # the tiny tokenizer has no end-of-text token: prefix_token_id=0
    assert dense_lm.prefix_token_id == 0
    for text, value in zip(texts, got):
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        total, windows = 0.0, 0
        for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(ids, eot, 16, 1)):
            seq = torch.tensor(ctx + cont)
            logp = torch.log_softmax(model.forward_masked(seq).double(), -1)
            rows = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont))
            total += float(logp[rows, torch.tensor(cont)].sum())
            windows += 1
        assert value == pytest.approx(total, abs=1e-4)
        assert windows > (1 if len(ids) > 16 else 0)
    rep = dense_lm.energy_report()["requests"]["loglikelihood_rolling"]
    assert rep["requests"] == 2 and rep["energy_j"] > 0 and rep["rounds"] >= 1


def test_generate_until_equals_dmoe_generate(dense_lm, tiny_tokenizer):
    from dmoe.runtime.generate import GenerationConfig, generate

    prompt = "Answer:"
    assert len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 16 - 6  # not truncated
    free = generate(dense_lm.deployment.runtime(dense_lm.policy, seed=1), [prompt],
                    GenerationConfig(max_new_tokens=6)).outputs[0].text
    assert len(free) > 2
    until = free[1:3]
    got = dense_lm.generate_until(_instances("generate_until", [(prompt, {"until": [until], "max_gen_toks": 6}),
                                                                (prompt, {"max_gen_toks": 6})]))
    assert got == [free[:free.find(until)], free]
    rep = dense_lm.energy_report()["requests"]["generate_until"]
    assert rep["requests"] == 2 and rep["prefill"]["rounds"] == 2 and rep["decode"]["rounds"] >= 1
    assert rep["energy_j"] == pytest.approx(rep["prefill"]["energy_j"] + rep["decode"]["energy_j"], rel=1e-12)


def test_model_args_parsing_keeps_brackets():
    from dmoe.integrations.lm_eval import parse_model_args

    assert parse_model_args("policy=JESA(0.9,8),K=32,snr_db=7.5,node_rejoin=false,model=a/b") == {
        "policy": "JESA(0.9,8)", "K": 32, "snr_db": 7.5, "node_rejoin": False, "model": "a/b"}
    with pytest.raises(ValueError, match="key=value"):
        parse_model_args("policy")


@pytest.mark.parametrize("args, needle", [
    (dict(bogus=1), "`bogus`"),
    (dict(policy="JESA(0.9)"), "accepted forms"),
    (dict(policy="Top-9"), "`k`"),
    (dict(engine="spark"), "`engine`"),
    (dict(node_failure_rate=1.0), "node_failure_rate"),
    (dict(max_gen_toks=0), "`max_gen_toks`"),
    (dict(placement="nowhere"), "`placement`"),
])
def test_bad_model_args(tiny_carved_build, args, needle):
    from dmoe.integrations.lm_eval import DMoELM

    build, root = tiny_carved_build
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        DMoELM(model=str(build), K=4, cache_dir=str(root / "cache"), progress=False, **args)


@pytest.mark.parametrize("args, needle", [
    (dict(system="lte"), "known: paper"),
    (dict(system="nr-fr1-30khz-100mhz", snr_db=10), "`snr_db`"),
    (dict(layout="disk:-5"), "`layout`"),
    (dict(pathloss="inh-office"), "`pathloss`"),
    (dict(layout="disk:5", pathloss="uma"), "known: inh-office"),
    (dict(noise_figure="loud"), "`noise_figure_db`"),
    (dict(tx_power_dbm=float("nan")), "`tx_power_dbm`"),
    (dict(tx_power_dbm=5), "cannot carry one resource block"),
    (dict(wire_dtype="fp4"), "`wire_dtype`"),
    (dict(hidden_state_bytes=0), "`hidden_state_bytes`"),
])
def test_bad_radio_model_args_fail_before_the_model_loads(args, needle, tmp_path):
    from dmoe.integrations.lm_eval import DMoELM

    with pytest.raises(ValueError, match=needle):
        DMoELM(cache_dir=str(tmp_path / "c"), progress=False, **args)
    assert not (tmp_path / "c").exists()


def test_dmoe_lm_eval_command_runs_offline(tiny_carved_build, task_dir, tmp_path):
    """The command line end to end in a fresh process (offline: no hub access)."""
    build, root = tiny_carved_build
    energy = tmp_path / "energy.json"
    margs = f"model={build},K=4,policy=JESA(0.9,2),seed={SEED},cache_dir={root / 'cache'},energy_json={energy}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "dmoe", "lm-eval", "--model", "dmoe", "--model_args", margs, "--tasks",
         "dmoe_mmlu_anatomy", "--include_path", str(task_dir), "--limit", "4", "--output_path", str(tmp_path / "out")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dmoe_mmlu_anatomy" in proc.stdout and "acc" in proc.stdout
    rep = json.loads(energy.read_text())
    assert rep["requests"]["loglikelihood"]["requests"] == 16 and rep["total"]["energy_j"] > 0
    assert list((tmp_path / "out").rglob("results_*.json"))


@pytest.mark.parametrize("extra_args, task, needle", [
    (",bogus=1", "dmoe_mmlu_anatomy", "`bogus`"),
    ("", "dmoe_mmlu_anatomyy", "dmoe_mmlu_anatomyy"),
])
def test_dmoe_lm_eval_bad_input(tiny_carved_build, task_dir, extra_args, task, needle):
    from click.testing import CliRunner

    from dmoe.cli import main

    build, root = tiny_carved_build
    margs = f"model={build},K=4,policy=Top-1,cache_dir={root / 'cache'},progress=false" + extra_args
    res = CliRunner().invoke(main, ["lm-eval", "--model", "dmoe", "--model_args", margs, "--tasks", task,
                                    "--include_path", str(task_dir), "--limit", "1"])
    assert res.exit_code != 0 and needle in res.output, res.output
    assert "Traceback" not in res.output


def test_lm_eval_tasks_command(tmp_path):
    from click.testing import CliRunner

    from dmoe.cli import main

    res = CliRunner().invoke(main, ["lm-eval-tasks", str(tmp_path / "t"), "--subject", "medical"])
    assert res.exit_code == 0, res.output
    assert "wrote 6 tasks" in res.output
    rows = [json.loads(line) for line in (tmp_path / "t" / "dmoe_mmlu_clinical_knowledge.jsonl").open()]
    from dmoe.data import format_prompt, load_mmlu

    qs = load_mmlu("clinical knowledge")
    assert len(rows) == len(qs) and rows[0]["prompt"] == format_prompt(qs[0]) and rows[0]["answer"] == qs[0].answer
    assert "dataset_path: json" in (tmp_path / "t" / "dmoe_mmlu_anatomy.yaml").read_text()
    res = CliRunner().invoke(main, ["lm-eval-tasks", str(tmp_path / "u"), "--subject", "anatomyy"])
    assert res.exit_code != 0 and "anatomyy" in res.output and not (tmp_path / "u").exists()


def test_plain_lm_eval_command_line_runs_dmoe(tiny_carved_build, task_dir, tmp_path):
    """``lm_eval --model dmoe ...``, the harness's own command line, in a fresh process,
    offline. With the start-up file installed in this environment (scripts/install.sh, a
    wheel) the ``lm_eval`` script runs as it is; otherwise the same script runs with the
    shipped .pth added as a site directory (what site-packages does at start-up)."""
    import shutil
    import sysconfig

    import dmoe_lm_eval_hook

    build, root = tiny_carved_build
    margs = f"model={build},K=4,policy=Top-2,seed={SEED},cache_dir={root / 'cache'},progress=false"
    args = ["--model", "dmoe", "--model_args", margs, "--tasks", "dmoe_mmlu_anatomy", "--include_path",
            str(task_dir), "--limit", "2"]
    script = shutil.which("lm_eval", path=str(Path(sys.executable).parent)) or shutil.which("lm_eval")
    assert script is not None, "the harness's console script `lm_eval` is missing"
    if (Path(sysconfig.get_paths()["purelib"]) / dmoe_lm_eval_hook.PTH_NAME).is_file():
        cmd = [script, *args]
    else:
        site = tmp_path / "site"
        site.mkdir()
        shutil.copy(Path(dmoe_lm_eval_hook.__file__).with_name(dmoe_lm_eval_hook.PTH_NAME), site)
        cmd = [sys.executable, "-c", f"import runpy, site, sys; site.addsitedir({str(site)!r}); "
               f"sys.argv[0] = {script!r}; runpy.run_path({script!r}, run_name='__main__')", *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the harness's table: |dmoe_mmlu_anatomy| ... |acc |↑ | 0.5000|± | 0.5000|
    row = re.search(r"\|dmoe_mmlu_anatomy\|.*\|acc\s*\|[^|]*\|\s*([0-9.]+)\|", proc.stdout)
    assert row is not None, proc.stdout[-3000:]
    _, ref = _dmoe_run(build, root, "Top-2", {}, limit=2)
    assert float(row.group(1)) == pytest.approx(ref.accuracy, abs=1e-4)
