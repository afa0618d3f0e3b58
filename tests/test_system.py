"""SystemConfig: paper defaults, derived quantities, validation, JSON round trip."""

import dataclasses
import json

import numpy as np
import pytest

from dmoe.system import SystemConfig


def test_paper_defaults():
    s = SystemConfig()
    assert s.num_nodes == 8
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
    s = SystemConfig(num_nodes=3, comp_energy_per_token=[1e-3, 2e-3, 5e-3], comp_energy_static=[0, 1e-4, 0])
    assert s.comp_energy_per_token == (1e-3, 2e-3, 5e-3)
    np.testing.assert_allclose(s.comp_energy_static_j, [0, 1e-4, 0])
    hash(s)  # frozen and hashable with tuple fields


def test_frozen():
    s = SystemConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num_nodes = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_nodes", 0),
        ("num_nodes", 2.5),
        ("num_nodes", True),
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
    s = SystemConfig(num_nodes=4, num_subcarriers=2048, snr_db=5.0, comp_energy_per_token=(1e-3, 1e-3, 2e-3, 3e-3))
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
    assert SystemConfig().replace(num_nodes=4).comp_energy_per_token_j.shape == (4,)  # default follows N
    with pytest.raises(ValueError, match="`comp_energy_per_token`"):
        SystemConfig(comp_energy_per_token=(1e-3,) * 8).replace(num_nodes=4)


# ------------------------------------------------- num_nodes and its old name (issue 19)
OLD = r"num_experts.*deprecated.*num_nodes"


def test_old_keyword_warns_and_means_num_nodes():
    with pytest.warns(DeprecationWarning, match=OLD) as rec:
        s = SystemConfig(num_experts=4, num_subcarriers=16)
    assert rec[0].filename == __file__  # the warning points at the caller
    assert s == SystemConfig(num_nodes=4, num_subcarriers=16)
    assert hash(s) == hash(SystemConfig(num_nodes=4, num_subcarriers=16))
    assert s.comp_energy_per_token_j.shape == (4,) and s.num_links == 12


def test_old_attribute_warns():
    s = SystemConfig(num_nodes=5)
    with pytest.warns(DeprecationWarning, match=OLD) as rec:
        assert s.num_experts == 5
    assert rec[0].filename == __file__


def test_new_name_gives_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = SystemConfig(num_nodes=3)
        assert s.num_nodes == 3 and s.replace(num_nodes=4).num_nodes == 4
        assert SystemConfig.from_dict(s.to_dict()) == s
        assert dataclasses.replace(s, num_nodes=6) == SystemConfig(num_nodes=6)


def test_both_names_conflict():
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="`num_nodes` only"):
        SystemConfig(num_nodes=4, num_experts=8)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="`num_nodes` only"):
        SystemConfig().replace(num_nodes=4, num_experts=8)
    with pytest.raises(ValueError, match="`num_nodes` only"):
        SystemConfig.from_dict({"num_nodes": 4, "num_experts": 4})
    with pytest.raises(ValueError, match="`num_nodes`"):  # validation names the new field
        with pytest.warns(DeprecationWarning):
            SystemConfig(num_experts=0)


def test_replace_with_either_name():
    s = SystemConfig(num_nodes=4, snr_db=3.0)
    assert dataclasses.replace(s, num_nodes=6) == SystemConfig(num_nodes=6, snr_db=3.0)
    with pytest.warns(DeprecationWarning, match=OLD):
        assert s.replace(num_experts=6) == SystemConfig(num_nodes=6, snr_db=3.0)


def test_from_dict_old_key():
    with pytest.warns(DeprecationWarning, match=OLD):
        s = SystemConfig.from_dict({"num_experts": 4, "num_subcarriers": 16})
    assert s == SystemConfig(num_nodes=4, num_subcarriers=16)
    assert "num_nodes" in s.to_dict() and "num_experts" not in s.to_dict()
    # cache keys keep the old name so that cached results stay valid
    assert s.cache_dict() == {**{k: v for k, v in s.to_dict().items() if k != "num_nodes"}, "num_experts": 4}


def test_pickle_round_trip_and_old_pickles():
    import pickle

    s = SystemConfig(num_nodes=4, comp_energy_per_token=(1e-3, 2e-3, 3e-3, 4e-3))
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(s, protocol=proto))
        assert back == s and hash(back) == hash(s) and back.num_nodes == 4
    cloudpickle = pytest.importorskip("cloudpickle")  # what Ray sends SystemConfig with
    assert cloudpickle.loads(cloudpickle.dumps(s)) == s
    # a state pickled before the rename (field `num_experts`) still loads
    state = dict(s.__dict__)
    state["num_experts"] = state.pop("num_nodes")
    old = object.__new__(SystemConfig)
    old.__setstate__(state)
    assert old == s


def test_preset_old_keyword():
    from dmoe.system import system_preset

    with pytest.warns(DeprecationWarning, match=OLD):
        s = system_preset("nr-fr1-30khz-100mhz", num_experts=4)
    assert s == system_preset("nr-fr1-30khz-100mhz", num_nodes=4)
