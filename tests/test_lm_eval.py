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
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_llama_config

lm_eval = pytest.importorskip("lm_eval")

LIMIT = 6
SEED = 3


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory, tiny_tokenizer):
    from transformers import LlamaForCausalLM

    from dmoe.model import build_moe_model

    root = tmp_path_factory.mktemp("lmeval")
    dense_dir = root / "tiny-llama"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(tiny_tokenizer))).eval().save_pretrained(dense_dir)
    tiny_tokenizer.save_pretrained(dense_dir)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, len(tiny_tokenizer), (24,), generator=g) for _ in range(6)]
    model = build_moe_model(dense_dir, num_experts=4, cache_dir=root / "cache", calibration_ids=calib,
                            progress=False)
    return Path(model.metadata["cache_path"]), root


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    from dmoe.integrations import write_lm_eval_tasks

    d = tmp_path_factory.mktemp("tasks")
    assert write_lm_eval_tasks(d, "anatomy") == ["dmoe_mmlu_anatomy", "dmoe_mmlu"]
    return d


def _dmoe_run(build, root, policy):
    from dmoe.main_job import run_main_job

    _, results = run_main_job(subjects="anatomy", limit=LIMIT, policies=[policy], model_source=str(build),
                              num_experts=4, seed=SEED, cache_dir=str(root / "cache"), output=None, ppl_texts=0,
                              progress=False, log=lambda m: None)
    return results[0]


def _harness(build, root, task_dir, policy, tmp_path):
    import dmoe.integrations.lm_eval  # noqa: F401 - registers the model
    from lm_eval.tasks import TaskManager

    energy = tmp_path / f"energy-{policy}.json"
    out = lm_eval.simple_evaluate(
        model="dmoe",
        model_args={"model": str(build), "K": 4, "policy": policy, "seed": SEED, "cache_dir": str(root / "cache"),
                    "progress": False, "energy_json": str(energy)},
        tasks=["dmoe_mmlu_anatomy"], task_manager=TaskManager(include_path=str(task_dir)), limit=LIMIT,
        log_samples=True,
    )
    return out, json.loads(energy.read_text())


@pytest.mark.parametrize("policy", ["JESA(0.9,2)", "Top-1"])
def test_harness_accuracy_and_energy_equal_dmoe_run(tiny_build, task_dir, policy, tmp_path):
    build, root = tiny_build
    ref = _dmoe_run(build, root, policy)
    out, energy = _harness(build, root, task_dir, policy, tmp_path)
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


def _instances(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def dense_lm(tiny_build):
    from dmoe.integrations.lm_eval import DMoELM

    build, root = tiny_build
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
def test_bad_model_args(tiny_build, args, needle):
    from dmoe.integrations.lm_eval import DMoELM

    build, root = tiny_build
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        DMoELM(model=str(build), K=4, cache_dir=str(root / "cache"), progress=False, **args)


def test_dmoe_lm_eval_command_runs_offline(tiny_build, task_dir, tmp_path):
    """The command line end to end in a fresh process (offline: no hub access)."""
    build, root = tiny_build
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
def test_dmoe_lm_eval_bad_input(tiny_build, task_dir, extra_args, task, needle):
    from click.testing import CliRunner

    from dmoe.cli import main

    build, root = tiny_build
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
