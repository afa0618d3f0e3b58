"""dmoe.deployment: the one resolver of model + placement + radio system for `dmoe run`,
`dmoe generate` / `chat` and the harness. The plan reads configs only (no weight loads), its
system, geometry and s0 are `dmoe run`'s, and a runtime cannot move the deployment's nodes."""

from __future__ import annotations

import numpy as np
import pytest

from dmoe.channels import ChannelConfig
from dmoe.deployment import check_radio_arguments, deploy, plan_deployment
from dmoe.system import SystemConfig, dbm_to_w, system_preset

NR30 = "nr-fr1-30khz-100mhz"


@pytest.fixture
def no_weights(monkeypatch):
    """Any weight load fails the test: the plan must not load the model."""
    import dmoe.model

    def refuse(*a, **k):
        raise AssertionError("a weight was loaded")

    monkeypatch.setattr(dmoe.model, "load_expert_model", refuse)


def test_plan_of_the_default_model_reads_no_weights(no_weights):
    plan = plan_deployment()
    assert (plan.num_experts, plan.num_nodes, plan.placement_kind, plan.carved) == (32, 8, "coactivation", True)
    assert plan.system == system_preset("paper", num_nodes=8) and plan.preset == "paper"
    assert plan.large_scale is None
    plan = plan_deployment(num_experts=8)  # -K alone: one expert per node
    assert (plan.num_nodes, plan.placement_kind) == (8, None)
    plan = plan_deployment(num_experts=8, num_nodes=4, placement="round-robin")
    assert (plan.num_nodes, plan.placement_kind) == (4, "round-robin")


def test_plan_with_an_nr_preset_a_layout_and_overrides(no_weights):
    channel = ChannelConfig(layout="disk:50", pathloss="inh-office")
    plan = plan_deployment(preset=NR30, noise_figure_db=9.0, tx_power_dbm=20.0, channel=channel, seed=7)
    assert plan.preset == NR30
    assert plan.system == system_preset(NR30, num_nodes=8, noise_figure_db=9.0, node_power_budget_w=dbm_to_w(20.0))
    ref = channel.large_scale(8, 7)
    np.testing.assert_array_equal(plan.large_scale.positions_m, ref.positions_m)
    np.testing.assert_array_equal(plan.large_scale.gain, ref.gain)
    explicit = SystemConfig(num_nodes=4, num_subcarriers=16, hidden_state_bytes=999)
    plan = plan_deployment(system=explicit, num_experts=4)
    assert plan.system is explicit and plan.preset is None and plan.system_bytes == 999 and plan.num_nodes == 4


@pytest.mark.parametrize("kwargs, needle", [
    (dict(preset="lte"), "known: paper"),
    (dict(system=SystemConfig(), preset=NR30), "`system`"),
    (dict(preset=NR30, snr_db=10.0), "`snr_db`"),
    (dict(noise_figure_db=float("inf")), "`noise_figure_db`"),
    (dict(wire_dtype="fp4"), "`wire_dtype`"),
    (dict(hidden_state_bytes=1.5), "`hidden_state_bytes`"),
    (dict(placement="anywhere"), "`placement`"),
    (dict(num_experts=4, num_nodes=5), "`num_nodes`"),
    (dict(tx_power_dbm=5.0), "cannot carry one resource block"),
    (dict(channel="rayleigh"), "`channel`"),
    (dict(channel=ChannelConfig("tdl-a", delay_spread_ns=5e3)), "`delay_spread_ns`"),
])
def test_plan_rejects_bad_arguments_before_any_weight(no_weights, kwargs, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        plan_deployment(**kwargs)


def test_check_radio_arguments_returns_the_canonical_preset():
    assert check_radio_arguments(" NR-FR1-30kHz-100MHz ", None, None, None, None) == NR30
    assert check_radio_arguments("paper", SystemConfig(), 12.0, None, None) is None


def test_deploy_sets_s0_from_the_model_and_keeps_the_geometry(tiny_carved_build):
    build, root = tiny_carved_build
    common = dict(model_source=str(build), num_experts=4, cache_dir=str(root / "cache"), progress=False)
    dep = deploy(**common)
    h = dep.model.hidden_size
    assert dep.system.hidden_state_bytes == 2 * h and dep.wire_dtype == "fp16" and dep.num_experts == 4
    assert dep.policies()[0].name == "JESA(0.9,1)"  # D = K/4 of a carved model
    assert deploy(**common, wire_dtype="int8").system.hidden_state_bytes == h + 4
    dep = deploy(**common, hidden_state_bytes=77, wire_dtype="int8")
    assert dep.system.hidden_state_bytes == 77 and dep.wire_dtype is None
    given = system_preset("paper", num_nodes=4).replace(hidden_state_bytes=4096)
    dep = deploy(**common, system=given)
    assert dep.system == given and dep.preset is None and "SystemConfig" in dep.hidden_state_source
    dep = deploy(**common, preset=NR30, channel=ChannelConfig(layout="grid:10"), seed=3)
    d = dep.describe()
    assert d["system_preset"] == NR30 and d["deployment"]["positions_m"] == dep.large_scale.positions_m.tolist()
    rt = dep.runtime(dep.policy("Top-1"))
    np.testing.assert_array_equal(rt.process.large_scale.gain, dep.large_scale.gain)
    with pytest.raises(ValueError, match="same seed"):
        dep.runtime(dep.policy("Top-1"), seed=4)
    with pytest.raises(ValueError, match="same seed"):
        dep.runtime(dep.policy("Top-1"), channel=ChannelConfig(layout="grid:20"))
    dep.runtime(dep.policy("Top-1"), channel=ChannelConfig("tdl-a", layout="grid:10"))  # other fading: fine


# ------------------------------------------- K never comes from `system` (issue 19, item 4)
def test_a_system_of_8_nodes_keeps_the_default_model(no_weights):
    """The issue's scenario: `system=SystemConfig(num_experts=8)` used to switch to the
    8-expert model (so Top-8 was dense); now it is 8 nodes under the default K = 32."""
    from dmoe.defaults import DEFAULT_NUM_EXPERTS

    with pytest.warns(DeprecationWarning, match="num_nodes"):
        system = SystemConfig(num_experts=8)
    plan = plan_deployment(system=system)
    assert (plan.num_experts, plan.num_nodes, plan.placement_kind) == (DEFAULT_NUM_EXPERTS, 8, "coactivation")
    assert plan.system is system
    assert plan.num_experts == plan_deployment().num_experts  # the same model as without a system
    # an explicit K with the system's N: K experts on N nodes, not K = N
    plan = plan_deployment(system=SystemConfig(num_nodes=4, num_subcarriers=16), num_experts=8)
    assert (plan.num_experts, plan.num_nodes, plan.placement_kind) == (8, 4, "coactivation")


@pytest.mark.parametrize("kwargs, k", [
    (dict(system=SystemConfig(num_nodes=64, num_subcarriers=64)), 32),  # the default K = 32
    (dict(system=SystemConfig(num_nodes=16, num_subcarriers=64), num_experts=8), 8),
])
def test_a_system_with_more_nodes_than_experts_raises(no_weights, kwargs, k):
    with pytest.raises(ValueError, match=rf"`system.num_nodes` = {kwargs['system'].num_nodes} .* K = {k} experts"):
        plan_deployment(**kwargs)


def test_a_system_with_more_nodes_than_a_real_moe_raises(no_weights, tmp_path):
    from test_hf_moe import _configs

    d = tmp_path / "qwen"
    _configs()["qwen2_moe"].save_pretrained(d)  # the plan reads config.json only: K = 6
    (d / "model.safetensors").write_bytes(b"")  # never read: the plan loads no weight
    plan = plan_deployment(model_source=str(d), system=SystemConfig(num_nodes=3, num_subcarriers=8))
    assert (plan.num_nodes, plan.placement_kind) == (3, "contiguous") and not plan.carved
    with pytest.raises(ValueError, match=r"`system.num_nodes` = 8 .*Qwen2-MoE checkpoint has K = 6 experts"):
        plan_deployment(model_source=str(d), system=SystemConfig(num_nodes=8))


def test_run_main_job_refuses_a_system_above_k_before_any_model_load(no_weights, tmp_path):
    from dmoe.main_job import run_main_job

    with pytest.raises(ValueError, match=r"`system.num_nodes` = 64 .* K = 32"):
        run_main_job(system=SystemConfig(num_nodes=64, num_subcarriers=64), limit=1, output=tmp_path / "out",
                     progress=False)
    assert not (tmp_path / "out").exists()


def test_an_existing_build_gives_its_own_k_before_any_weight(tiny_carved_build, no_weights):
    """A dmoe build directory as the model: K is the build's (as load_expert_model takes it), not
    the default 32, and a contradicting `num_experts` raises before any weight is read (it
    failed after loading the whole build: "num_experts=32 but the build ... has 4 experts")."""
    from dmoe.model import inspect_checkpoint

    build, _ = tiny_carved_build
    assert inspect_checkpoint(str(build)).num_experts == 4
    plan = plan_deployment(model_source=str(build))
    assert (plan.num_experts, plan.num_nodes, plan.carved) == (4, 4, True)
    plan = plan_deployment(model_source=str(build), system=SystemConfig(num_nodes=2, num_subcarriers=4))
    assert (plan.num_experts, plan.num_nodes) == (4, 2)
    assert plan_deployment(model_source=str(build), num_experts=4).num_experts == 4
    with pytest.raises(ValueError, match=r"`num_experts` \(--num-experts/-K\) = 8 contradicts the model: the dmoe "
                                         r"build at .* has K = 4 experts per layer"):
        plan_deployment(model_source=str(build), num_experts=8)
