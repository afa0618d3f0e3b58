"""SystemConfig: paper defaults, derived quantities, validation, JSON round trip."""

import dataclasses
import json

import numpy as np
import pytest

from dmoe.system import SystemConfig


def test_paper_defaults():
    s = SystemConfig()
    assert s.num_experts == 8
    assert s.num_subcarriers == 64
    assert s.subcarrier_spacing_hz == 1e6
    assert s.tx_power_w == 1e-2
    assert s.snr_db == 10.0
    assert s.path_loss == 1e-2
    assert s.hidden_state_bytes == 8192
    assert s.noise_power_w == pytest.approx(1e-3)
    assert s.snr_linear == pytest.approx(10.0)
    assert s.bits_per_token == 65536
    assert s.num_links == 56
    np.testing.assert_allclose(s.comp_energy_per_token_j, np.arange(1, 9) * 1e-3)
    np.testing.assert_array_equal(s.comp_energy_static_j, np.zeros(8))
    assert s.comp_energy_per_token_j.dtype == np.float64


def test_custom_coefficients_and_list_input():
    s = SystemConfig(num_experts=3, comp_energy_per_token=[1e-3, 2e-3, 5e-3], comp_energy_static=[0, 1e-4, 0])
    assert s.comp_energy_per_token == (1e-3, 2e-3, 5e-3)
    np.testing.assert_allclose(s.comp_energy_static_j, [0, 1e-4, 0])
    hash(s)  # frozen and hashable with tuple fields


def test_frozen():
    s = SystemConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num_experts = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_experts", 0),
        ("num_experts", 2.5),
        ("num_experts", True),
        ("num_subcarriers", 0),
        ("num_subcarriers", -3),
        ("subcarrier_spacing_hz", 0.0),
        ("subcarrier_spacing_hz", float("inf")),
        ("tx_power_w", -1e-2),
        ("tx_power_w", float("nan")),
        ("snr_db", float("nan")),
        ("snr_db", "10"),
        ("path_loss", 0.0),
        ("hidden_state_bytes", 0),
        ("hidden_state_bytes", 8.5),
        ("comp_energy_per_token", (1e-3,) * 7),
        ("comp_energy_per_token", (0.0,) + (1e-3,) * 7),
        ("comp_energy_per_token", (float("nan"),) + (1e-3,) * 7),
        ("comp_energy_per_token", 1e-3),
        ("comp_energy_static", (-1.0,) + (0.0,) * 7),
        ("comp_energy_static", (0.0,) * 9),
        ("comp_energy_static", (float("inf"),) + (0.0,) * 7),
    ],
)
def test_validation_names_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SystemConfig(**{field: value})


def test_error_message_format():
    with pytest.raises(ValueError, match=r"`num_subcarriers` must be a positive integer, got 0"):
        SystemConfig(num_subcarriers=0)


def test_dict_round_trip_is_json():
    s = SystemConfig(num_experts=4, num_subcarriers=2048, snr_db=5.0, comp_energy_per_token=(1e-3, 1e-3, 2e-3, 3e-3))
    d = s.to_dict()
    text = json.dumps(d)
    back = SystemConfig.from_dict(json.loads(text))
    assert back == s
    assert SystemConfig.from_dict(SystemConfig().to_dict()) == SystemConfig()
    assert SystemConfig.from_dict({}) == SystemConfig()


def test_from_dict_unknown_key():
    with pytest.raises(ValueError, match="`bandwidth`"):
        SystemConfig.from_dict({"bandwidth": 1.0})


def test_replace_validates():
    s = SystemConfig().replace(num_subcarriers=2048)
    assert s.num_subcarriers == 2048
    assert SystemConfig().replace(num_experts=4).comp_energy_per_token_j.shape == (4,)  # default follows K
    with pytest.raises(ValueError, match="`comp_energy_per_token`"):
        SystemConfig(comp_energy_per_token=(1e-3,) * 8).replace(num_experts=4)
