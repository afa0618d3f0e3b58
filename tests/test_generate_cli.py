"""``dmoe generate`` and ``dmoe chat`` on a tiny random carved model (K = 4 experts, 4 nodes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dmoe.cli import main


def _strict(path: Path) -> dict:
    def no_nan(x):
        raise AssertionError(f"non-strict JSON constant {x}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def _base(build, root):
    return ["--model", str(build), "-K", "4", "--cache-dir", str(root / "cache"), "--quiet"]


def test_generate_streams_text_and_prints_the_costs(tiny_carved_build, tmp_path):
    from dmoe.deployment import deploy
    from dmoe.runtime.generate import GenerationConfig, generate

    build, root = tiny_carved_build
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


def test_generate_with_two_policies_and_sampling(tiny_carved_build, tmp_path):
    build, root = tiny_carved_build
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
def test_bad_input_needing_the_model(tiny_carved_build, tmp_path, args, needle):
    build, root = tiny_carved_build
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, ["generate", "Answer:", "--json", str(out)] + args + _base(build, root))
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_chat_without_a_template_uses_the_transcript(tiny_carved_build, tmp_path):
    build, root = tiny_carved_build
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, ["chat", "Hello", "--max-new-tokens", "6", "--policy", "Top-2", "--json", str(out)]
                             + _base(build, root)[:-1])
    assert res.exit_code == 0, res.output
    assert "no chat template" in res.output
    payload = _strict(out)
    assert payload["config"]["chat_template"] is False
    assert payload["turns"][0]["prompt"] == "User: Hello\nAssistant:"
    assert payload["messages"][-1]["role"] == "assistant"


def test_chat_uses_the_tokenizers_template_and_reads_stdin(tiny_carved_build, tmp_path):
    build, root = tiny_carved_build
    templated = tmp_path / "templated"
    shutil.copytree(build, templated)
    (templated / "chat_template.jinja").write_text(
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, ["chat", "--system-prompt", "Be brief.", "--max-new-tokens", "4", "--policy",
                                    "dense",
                                    "--json", str(out), "--model", str(templated), "-K", "4", "--cache-dir",
                                    str(root / "cache"), "--quiet"], input="Hi\nAnd?\n\n")
    assert res.exit_code == 0, res.output
    payload = _strict(out)
    assert payload["config"]["chat_template"] is True and len(payload["turns"]) == 2
    assert payload["turns"][0]["prompt"] == "<system>Be brief.\n<user>Hi\n<assistant>"
    second = payload["turns"][1]["prompt"]
    assert second.startswith("<system>Be brief.\n<user>Hi\n<assistant>") and second.endswith("<user>And?\n<assistant>")
    assert [m["role"] for m in payload["messages"]] == ["system", "user", "assistant", "user", "assistant"]


def test_generate_with_node_failures_reports_the_rebuilds(tiny_carved_build, tmp_path):
    build, root = tiny_carved_build
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, ["generate", "Answer:", "--policy", "Top-2", "--node-failure-rate", "0.05",
                                    "--max-new-tokens", "12", "--json", str(out)] + _base(build, root))
    assert res.exit_code == 0, res.output
    costs = _strict(out)["costs"]
    rb = costs["rebuild"]
    assert rb["rounds"] >= 1 and rb["rehosted_queries"] == rb["rounds"] and rb["energy_j"] > 0
    assert "rebuild" in res.output and "re-hosts" in res.output
    assert costs["prefill"]["rounds"] + costs["decode"]["rounds"] == 1 + 11 + rb["rounds"]


# ------------------------------------------------------------------ the radio options of dmoe run
NR30 = "nr-fr1-30khz-100mhz"


def test_generate_with_an_nr_preset_and_a_layout_records_the_system(tiny_carved_build, tmp_path):
    """`--system` / `--layout` reach the runtime: the costs equal a runtime built by hand from
    the preset, the layout's ChannelConfig and s0 = hidden size x 2 B (fp16)."""
    from dmoe.channels import ChannelConfig
    from dmoe.model import load_expert_model
    from dmoe.policies import TopK
    from dmoe.runtime import DMoERuntime
    from dmoe.runtime.generate import GenerationConfig, generate
    from dmoe.system import system_preset

    build, root = tiny_carved_build
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, ["generate", "Answer:", "--system", NR30, "--layout", "disk:50", "--policy",
                                    "Top-2", "--max-new-tokens", "4", "--seed", "5", "--json", str(out)]
                             + _base(build, root))
    assert res.exit_code == 0, res.output
    payload = _strict(out)
    cfg = payload["config"]
    model = load_expert_model(str(build), num_experts=4, cache_dir=str(root / "cache"), progress=False)
    s0 = 2 * model.hidden_size
    system = system_preset(NR30, num_nodes=4).replace(hidden_state_bytes=s0)
    assert cfg["system_preset"] == NR30 and cfg["system"] == system.to_dict()
    assert cfg["system"]["num_subcarriers"] == 273 and cfg["hidden_state_bytes"] == s0 and cfg["wire_dtype"] == "fp16"
    assert cfg["channel"]["layout"] == "disk:50" and cfg["channel"]["pathloss"] == "umi-street-canyon"
    channel = ChannelConfig(layout="disk:50")
    positions = channel.large_scale(4, 5).positions_m
    assert cfg["deployment"]["positions_m"] == positions.tolist()
    assert all(x * x + y * y <= 50.0 ** 2 for x, y in positions)
    runtime = DMoERuntime(model, TopK(2), system=system, seed=5, channel=channel)
    ref = generate(runtime, ["Answer:"], GenerationConfig(max_new_tokens=4))
    assert payload["token_ids"] == ref.outputs[0].token_ids
    costs = payload["costs"]
    assert costs["prefill"]["energy_j"] == pytest.approx(ref.prefill.energy_j, rel=1e-12)
    assert costs["decode"]["energy_j"] == pytest.approx(ref.decode.energy_j, rel=1e-12)
    assert costs["ttft_s"] == pytest.approx(ref.outputs[0].ttft_s, rel=1e-12)


def test_chat_takes_the_wire_format_noise_figure_and_power(tiny_carved_build, tmp_path):
    build, root = tiny_carved_build
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, ["chat", "Hi", "--wire-dtype", "int8", "--noise-figure", "5", "--tx-power-dbm",
                                    "20", "--max-new-tokens", "2", "--policy", "Top-1", "--json", str(out)]
                             + _base(build, root))
    assert res.exit_code == 0, res.output
    cfg = _strict(out)["config"]
    assert cfg["system_preset"] == "paper" and cfg["deployment"] is None
    assert cfg["wire_dtype"] == "int8" and cfg["hidden_state_bytes"] == 32 + 4  # H = 32 dims + an fp32 scale
    assert cfg["system"]["noise_figure_db"] == 5.0 and cfg["system"]["node_power_budget_w"] == pytest.approx(0.1)
    res = CliRunner().invoke(main, ["generate", "Hi", "--hidden-state-bytes", "100", "--max-new-tokens", "1",
                                    "--json", str(out)] + _base(build, root))
    assert res.exit_code == 0, res.output
    cfg = _strict(out)["config"]
    assert cfg["hidden_state_bytes"] == 100 and cfg["wire_dtype"] is None and "explicitly" in cfg["hidden_state_source"]


@pytest.mark.parametrize("args, needle", [
    (["generate", "x", "--system", "lte"], "--system"),
    (["chat", "x", "--system", "nr-fr2"], "--system"),
    (["generate", "x", "--pathloss", "inh-office"], "--pathloss"),
    (["generate", "x", "--layout", "disk:50", "--pathloss", "uma"], "--pathloss"),
    (["generate", "x", "--layout", "disk:-5"], "`layout`"),
    (["chat", "x", "--layout", "missing.csv"], "neither"),
    (["generate", "x", "--noise-figure", "-1"], "--noise-figure"),
    (["generate", "x", "--tx-power-dbm", "nan"], "--tx-power-dbm"),
    (["generate", "x", "--tx-power-dbm", "5"], "cannot carry one resource block"),
    (["generate", "x", "--system", NR30, "--snr-db", "10"], "--snr-db"),
    (["generate", "x", "--wire-dtype", "fp4"], "--wire-dtype"),
    (["chat", "x", "--hidden-state-bytes", "0"], "--hidden-state-bytes"),
    (["generate", "x", "--device", "nowhere"], "--device"),
])
def test_bad_radio_options_fail_before_any_work(args, needle, tmp_path):
    out = tmp_path / "g.json"
    res = CliRunner().invoke(main, args + ["--cache-dir", str(tmp_path / "c"), "--json", str(out)])
    assert res.exit_code != 0 and needle in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "c").exists() and not out.exists()


def test_generate_shares_the_option_definitions_of_dmoe_run():
    from dmoe.cli import run
    from dmoe.generate_cli import chat, generate

    def options(cmd):
        return {p.name: (p.opts, p.default, getattr(p.type, "name", None), p.help) for p in cmd.params
                if isinstance(p, click.Option)}

    shared = ("num_experts", "num_nodes", "placement", "num_subcarriers", "snr_db", "preset", "noise_figure",
              "tx_power_dbm", "layout", "pathloss", "wire_dtype", "hidden_state_bytes", "channel_redraw",
              "channel_model", "delay_spread", "speed_kmh", "carrier_ghz", "csi_error", "csi_delay",
              "comp_throughput", "combine", "model_source", "device", "cache_dir", "profile", "engine",
              "ray_address", "node_failure_rate", "node_rejoin")
    ref = options(run)
    for cmd in (generate, chat):
        got = options(cmd)
        assert {n: got[n] for n in shared} == {n: ref[n] for n in shared}
