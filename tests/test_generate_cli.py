"""``dmoe generate`` and ``dmoe chat`` on a tiny random carved model (K = 4 experts, 4 nodes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_llama_config
from dmoe.cli import main


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory, tiny_tokenizer):
    from transformers import LlamaForCausalLM

    from dmoe.model import build_moe_model

    root = tmp_path_factory.mktemp("gencli")
    dense_dir = root / "tiny-llama"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(tiny_tokenizer))).eval().save_pretrained(dense_dir)
    tiny_tokenizer.save_pretrained(dense_dir)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, len(tiny_tokenizer), (24,), generator=g) for _ in range(6)]
    model = build_moe_model(dense_dir, num_experts=4, cache_dir=root / "cache", calibration_ids=calib,
                            progress=False)
    return Path(model.metadata["cache_path"]), root


def _strict(path: Path) -> dict:
    def no_nan(x):
        raise AssertionError(f"non-strict JSON constant {x}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def _base(build, root):
    return ["--model", str(build), "-K", "4", "--cache-dir", str(root / "cache"), "--quiet"]


def test_generate_streams_text_and_prints_the_costs(tiny_build, tmp_path):
    from dmoe.deployment import deploy
    from dmoe.runtime.generate import GenerationConfig, generate

    build, root = tiny_build
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, ["generate", "Answer:", "--policy", "JESA(0.9,2)", "--max-new-tokens", "7",
                                    "--seed", "2", "--json", str(out)] + _base(build, root))
    assert res.exit_code == 0, res.output
    dep = deploy(model_source=str(build), num_experts=4, cache_dir=str(root / "cache"), progress=False)
    ref = generate(dep.runtime(dep.policy("JESA(0.9,2)"), seed=2), ["Answer:"], GenerationConfig(max_new_tokens=7))
    text = ref.outputs[0].text
    assert res.output.startswith(text + "\n")
    assert "prefill" in res.output and "decode" in res.output and "time to first token" in res.output
    payload = _strict(out)
    assert payload["text"] == text and payload["token_ids"] == ref.outputs[0].token_ids
    costs = payload["costs"]
    assert costs["prefill"]["rounds"] == 1 and costs["decode"]["rounds"] == len(ref.outputs[0].token_ids) - 1
    assert costs["energy_j"] == pytest.approx(ref.prefill.energy_j + ref.decode.energy_j, rel=1e-12)
    assert costs["ttft_s"] == pytest.approx(ref.outputs[0].ttft_s)
    cfg = payload["config"]
    assert cfg["policies"]["prefill"]["name"] == "JESA(0.9,2)" and cfg["num_nodes"] == 4 and cfg["seed"] == 2
    assert cfg["sampling"] == {"temperature": 0.0, "top_p": 1.0, "seed": 2}


def test_generate_with_two_policies_and_sampling(tiny_build, tmp_path):
    build, root = tiny_build
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, ["generate", "The", "--prefill-policy", "dense", "--decode-policy", "Top-1",
                                    "--max-new-tokens", "5", "--temperature", "0.8", "--top-p", "0.9",
                                    "--sampling-seed", "4", "--json", str(out)] + _base(build, root))
    assert res.exit_code == 0, res.output
    cfg = _strict(out)["config"]
    assert cfg["policies"]["prefill"]["name"] == "dense" and cfg["policies"]["decode"]["name"] == "Top-1"
    assert cfg["sampling"] == {"temperature": 0.8, "top_p": 0.9, "seed": 4}


@pytest.mark.parametrize("args, needle", [
    (["generate", "   "], "PROMPT"),
    (["generate", "x", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["generate", "x", "--temperature", "-1"], "--temperature"),
    (["generate", "x", "--top-p", "0"], "--top-p"),
    (["generate", "x", "--top-p", "1.5"], "--top-p"),
    (["generate", "x", "--policy", "JESA(0.9)"], "accepted forms"),
    (["generate", "x", "--decode-policy", "Top-x"], "--decode-policy"),
    (["generate", "x", "--node-failure-rate", "1"], "--node-failure-rate"),
    (["generate", "x", "--json", "/nonexistent/dir/out.json"], "--json"),
    (["chat", " "], "MESSAGE"),
])
def test_bad_input_fails_before_any_work(args, needle, tmp_path):
    res = CliRunner().invoke(main, args + ["--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args, needle", [
    (["--max-new-tokens", "600"], "context of 512 tokens"),
    (["--policy", "Top-5"], "`k` must not exceed K = 4"),
    (["-N", "5"], "--nodes"),
])
def test_bad_input_needing_the_model(tiny_build, tmp_path, args, needle):
    build, root = tiny_build
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, ["generate", "Answer:", "--json", str(out)] + args + _base(build, root))
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_chat_without_a_template_uses_the_transcript(tiny_build, tmp_path):
    build, root = tiny_build
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, ["chat", "Hello", "--max-new-tokens", "6", "--policy", "Top-2", "--json", str(out)]
                             + _base(build, root)[:-1])
    assert res.exit_code == 0, res.output
    assert "no chat template" in res.output
    payload = _strict(out)
    assert payload["config"]["chat_template"] is False
    assert payload["turns"][0]["prompt"] == "User: Hello\nAssistant:"
    assert payload["messages"][-1]["role"] == "assistant"


def test_chat_uses_the_tokenizers_template_and_reads_stdin(tiny_build, tmp_path):
    build, root = tiny_build
    templated = tmp_path / "templated"
    shutil.copytree(build, templated)
    (templated / "chat_template.jinja").write_text(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, ["chat", "--system", "Be brief.", "--max-new-tokens", "4", "--policy", "dense",
                                    "--json", str(out), "--model", str(templated), "-K", "4", "--cache-dir",
                                    str(root / "cache"), "--quiet"], input="Hi\nAnd?\n\n")
    assert res.exit_code == 0, res.output
    payload = _strict(out)
    assert payload["config"]["chat_template"] is True and len(payload["turns"]) == 2
    assert payload["turns"][0]["prompt"] == "<system>Be brief.\n<user>Hi\n<assistant>"
    second = payload["turns"][1]["prompt"]
    assert second.startswith("<system>Be brief.\n<user>Hi\n<assistant>") and second.endswith("<user>And?\n<assistant>")
    assert [m["role"] for m in payload["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_generate_with_node_failures_reports_the_rebuilds(tiny_build, tmp_path):
    build, root = tiny_build
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, ["generate", "Answer:", "--policy", "Top-2", "--node-failure-rate", "0.05",
                                    "--max-new-tokens", "12", "--json", str(out)] + _base(build, root))
    assert res.exit_code == 0, res.output
    costs = _strict(out)["costs"]
    rb = costs["rebuild"]
    assert rb["rounds"] >= 1 and rb["rehosted_queries"] == rb["rounds"] and rb["energy_j"] > 0
    assert "rebuild" in res.output and "re-hosts" in res.output
    assert costs["prefill"]["rounds"] + costs["decode"]["rounds"] == 1 + 11 + rb["rounds"]
