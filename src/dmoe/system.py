"""System parameters of a DMoE deployment (paper Section II and Section VII-A) and named presets.

:class:`SystemConfig` collects every physical constant the solvers need: the number of
nodes N (``num_nodes``; N = K with one expert per node, the paper's setting), the OFDMA grid (M subcarriers of spacing B0), the transmit power P0,
the noise power N0 (from the SNR P0/N0, or from k T0 B0 and a noise figure), the Rayleigh
path loss, the hidden-state size s0 and the computation energy coefficients a_j, b_j of
eq (4).

Presets (:data:`SYSTEM_PRESETS`, :func:`system_preset`) name whole radio numerologies: the
paper's setting (``"paper"``, the default) and 5G NR FR1 carriers whose allocation unit is a
resource block (RB) of 12 subcarriers, so that M = the number of RBs of the carrier and
B0 = the RB bandwidth (12 x the subcarrier spacing). The number of nodes N is not part of a
preset: it comes from the run.

``num_nodes`` was called ``num_experts`` before issue 19 (it is the number of nodes, not the
model's K). The old name keeps working for one release: ``SystemConfig(num_experts=8)``,
``system.num_experts``, ``SystemConfig.from_dict({"num_experts": 8})`` and
``system_preset(name, num_experts=8)`` give a :class:`DeprecationWarning` naming ``num_nodes``.

Units (decided in DESIGN.md): energies are charged per token,
``e_ij = a_j + P0 * 8*s0 / R_ij`` [J/token] for i != j and ``e_jj = a_j``; a_j is in
[J/token] and b_j in [J] (charged once per layer round for an active expert, see
:mod:`dmoe.energy`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = [
    "BOLTZMANN_J_PER_K",
    "NOISE_TEMPERATURE_K",
    "SYSTEM_PRESETS",
    "SystemConfig",
    "SystemPreset",
    "dbm_to_w",
    "default_num_subcarriers",
    "system_preset",
    "thermal_noise_w",
    "w_to_dbm",
]

#: Boltzmann constant k [J/K] (SI, exact; the value of :data:`scipy.constants.k`).
BOLTZMANN_J_PER_K = 1.380649e-23
#: Reference noise temperature T0 [K] of the noise figure (ITU-T / IEEE definition):
#: k T0 = 4.00e-21 W/Hz = -173.98 dBm/Hz, the usual "-174 dBm/Hz".
NOISE_TEMPERATURE_K = 290.0


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or int(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def _positive_real(name: str, value: Any) -> float:
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0.0:
        raise ValueError(f"`{name}` must be a finite positive number, got {value!r}")
    return float(value)


def _coefficients(name: str, value: Any, num_nodes: int, *, strictly_positive: bool) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"`{name}` must be None or a sequence of {num_nodes} numbers, got {value!r}")
    items = tuple(value)
    if len(items) != num_nodes:
        raise ValueError(
            f"`{name}` must have one entry per node (num_nodes={num_nodes}), got {len(items)}"
        )
    out = []
    for k, item in enumerate(items):
        if not _is_real(item) or not math.isfinite(float(item)):
            raise ValueError(f"`{name}`[{k}] must be a finite number, got {item!r}")
        item = float(item)
        if strictly_positive and item <= 0.0:
            raise ValueError(f"`{name}`[{k}] must be > 0 [J/token], got {item!r}")
        if not strictly_positive and item < 0.0:
            raise ValueError(f"`{name}`[{k}] must be >= 0 [J], got {item!r}")
        out.append(item)
    return tuple(out)


def _throughput(value: Any, num_nodes: int) -> float | tuple:
    name = "comp_throughput_tokens_per_s"
    if _is_real(value):
        if not math.isfinite(float(value)) or float(value) <= 0.0:
            raise ValueError(f"`{name}` must be > 0 [token/s] and finite, got {value!r}")
        return float(value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"`{name}` must be a positive number or one per node [token/s], got {value!r}")
    items = tuple(value)
    if len(items) != num_nodes:
        raise ValueError(f"`{name}` must have one entry per node (num_nodes={num_nodes}), got {len(items)}")
    for k, item in enumerate(items):
        if not _is_real(item) or not math.isfinite(float(item)) or float(item) <= 0.0:
            raise ValueError(f"`{name}`[{k}] must be > 0 [token/s] and finite, got {item!r}")
    return tuple(float(x) for x in items)


def _warn_old_name(what: str, *, stacklevel: int) -> None:
    warnings.warn(f"{what} is deprecated (it is the number of nodes N, not the model's K): use `num_nodes`; "
                  "the old name will be removed in the next release", DeprecationWarning, stacklevel=stacklevel)


def _noise_figure(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_real(value) or not math.isfinite(float(value)) or not 0.0 <= float(value) <= MAX_NOISE_FIGURE_DB:
        raise ValueError(
            f"`noise_figure_db` must be None or a finite number in [0, {MAX_NOISE_FIGURE_DB:g}] [dB] (receivers have "
            f"2-10 dB), got {value!r}")
    return float(value)


def dbm_to_w(power_dbm: float) -> float:
    """P [W] = 10**((P [dBm] - 30) / 10); e.g. 23 dBm -> 0.1995 W.

    Raises:
        ValueError: ``power_dbm`` is not a finite number.
    """
    if not _is_real(power_dbm) or not math.isfinite(float(power_dbm)) or not (
            MIN_POWER_DBM <= float(power_dbm) <= MAX_POWER_DBM):
        raise ValueError(
            f"`power_dbm` must be a finite number in [{MIN_POWER_DBM:g}, {MAX_POWER_DBM:g}] [dBm] (1e-13 W to 1 kW; "
            f"an NR UE transmits 23 dBm, a macro cell 46 dBm), got {power_dbm!r}")
    return 10.0 ** ((float(power_dbm) - 30.0) / 10.0)


def w_to_dbm(power_w: float) -> float:
    """P [dBm] = 10 log10(P [W]) + 30.

    Raises:
        ValueError: ``power_w`` is not a finite positive number.
    """
    return 10.0 * math.log10(_positive_real("power_w", power_w)) + 30.0


def thermal_noise_w(bandwidth_hz: float, noise_figure_db: float) -> float:
    """Receiver noise power N = k T0 B NF [W] over a bandwidth B.

    k T0 = 1.380649e-23 J/K x 290 K = -173.98 dBm/Hz (the thermal noise density at the
    reference temperature T0 = 290 K); NF = 10**(noise_figure_db / 10) is the receiver's
    noise figure. E.g. one 360 kHz resource block with NF = 7 dB: -111.5 dBm.

    Args:
        bandwidth_hz: B [Hz] > 0 (a subcarrier's or resource block's bandwidth B0).
        noise_figure_db: NF [dB] >= 0.

    Returns:
        N [W], float.

    Raises:
        ValueError: non-positive or non-finite ``bandwidth_hz``; negative or non-finite
            ``noise_figure_db``.

    Source: the definition of the noise figure (Friis 1944; IEEE Std 161), T0 = 290 K.
    """
    b = _positive_real("bandwidth_hz", bandwidth_hz)
    nf = _noise_figure(noise_figure_db)
    if nf is None:
        raise ValueError("`noise_figure_db` must be a finite number >= 0 [dB], got None")
    return BOLTZMANN_J_PER_K * NOISE_TEMPERATURE_K * b * 10.0 ** (nf / 10.0)


#: Accepted noise figures [dB] and transmit powers [dBm]: physically meaningful ranges, far
#: outside them the numbers are typos (and 10^(x/10) overflows float64 for x ~ 3,000).
MAX_NOISE_FIGURE_DB = 50.0
MIN_POWER_DBM = -100.0
MAX_POWER_DBM = 60.0

#: Largest |P0/N0| accepted [dB]: 10^(300/10) = 1e30 still leaves room for gains and rates in
#: float64; 1e300 dB overflowed deep inside the run (issue 20).
MAX_ABS_SNR_DB = 300.0


def default_num_subcarriers(num_nodes: int) -> int:
    """M for N nodes: the smallest power of two >= N(N-1) (DESIGN.md; 64 for N = K = 8).

    Every one of the K(K-1) directed links can then hold its own subcarrier (C3), so
    every policy, dense included, is feasible. K = 64 (OLMoE) gives 4096.

    Raises:
        ValueError: ``num_nodes`` is not a positive integer.
    """
    k = _positive_int("num_nodes", num_nodes)
    links = k * (k - 1)
    return 1 if links <= 1 else 1 << (links - 1).bit_length()


@dataclass(frozen=True)
class SystemConfig:
    """Physical parameters of the DMoE system; defaults are the paper's (Section VII-A).

    Attributes:
        num_nodes: N, number of nodes (one expert per node in the paper, N = K; with a
            placement the K experts of a layer are spread over N nodes). Its old name
            ``num_experts`` still works for one release, with a :class:`DeprecationWarning`:
            ``SystemConfig(num_experts=8)`` and ``system.num_experts`` (giving both names
            with different values is a TypeError, so ``dataclasses.replace`` needs
            ``num_nodes``; :meth:`replace` takes either).
        num_subcarriers: M, OFDMA subcarriers shared by the N(N-1) directed links.
            Default 64 = smallest power of two >= K(K-1) = 56 (DESIGN.md).
        subcarrier_spacing_hz: B0 [Hz] (eq 1). Default 1 MHz.
        tx_power_w: P0 [W], transmit power per subcarrier (eq 1, 3). Default 10 mW.
        snr_db: P0/N0 [dB] (eq 1). Default 10 dB. Not used when ``noise_figure_db`` is set.
        noise_figure_db: receiver noise figure NF [dB] >= 0, or ``None`` (default, the
            paper: N0 = P0 / 10**(snr_db/10)). With a number, N0 = k T0 B0 NF
            (:func:`thermal_noise_w`, T0 = 290 K, -174 dBm/Hz) and ``snr_db`` is ignored;
            :attr:`noise_power_w` and :attr:`snr_linear` follow from it. In the NR presets
            B0 is a resource block's bandwidth, so N0 is the noise over one RB.
        path_loss: average channel power gain E[H] of the Rayleigh links [linear]. Default 1e-2.
        hidden_state_bytes: s0 [byte] per token. Default 8192 (4096 dims in FP16).
        comp_energy_per_token: a_j [J/token], j = 1..K, each > 0; ``None`` means the
            paper's a_j = j * 1e-3 for every K (Section VII-A; for K = 64 experts a_j runs
            from 1 mJ to 64 mJ per token).
        comp_energy_static: b_j [J], each >= 0; ``None`` means b_j = 0.
        comp_throughput_tokens_per_s: c_j [token/s], the rate at which node j runs its
            expert FFN (our latency model, not in the paper): one number for every node
            or one per node, each > 0. Default 1e4 token/s: a ~10 W edge accelerator at
            the paper's a_1 = 1 mJ/token (10 W / 1 mJ = 1e4 token/s), about what a
            Jetson-class GPU sustains on a Mixtral-size expert (~0.35 GFLOP/token).
        node_power_budget_w: P_max [W], the total transmit power of one node, or ``None``
            (default, the paper: no budget). Each subcarrier / resource block a node transmits
            on takes P0 = ``tx_power_w``, so a node transmits on at most
            ``floor(P_max / P0)`` of them at once (:attr:`max_rbs_per_node`); a budget below
            P0 cannot carry one and is refused.

    Raises:
        ValueError: naming the offending field in backticks when a value is invalid.
    """

    num_nodes: int = 8
    num_subcarriers: int = 64
    subcarrier_spacing_hz: float = 1e6
    tx_power_w: float = 1e-2
    snr_db: float = 10.0
    path_loss: float = 1e-2
    hidden_state_bytes: int = 8192
    comp_energy_per_token: tuple | None = None
    comp_energy_static: tuple | None = None
    comp_throughput_tokens_per_s: float | tuple = 1e4
    node_power_budget_w: float | None = None
    noise_figure_db: float | None = None

    def __post_init__(self) -> None:
        k = _positive_int("num_nodes", self.num_nodes)
        object.__setattr__(self, "num_nodes", k)
        object.__setattr__(self, "num_subcarriers", _positive_int("num_subcarriers", self.num_subcarriers))
        object.__setattr__(
            self, "subcarrier_spacing_hz", _positive_real("subcarrier_spacing_hz", self.subcarrier_spacing_hz)
        )
        object.__setattr__(self, "tx_power_w", _positive_real("tx_power_w", self.tx_power_w))
        if not _is_real(self.snr_db) or not math.isfinite(float(self.snr_db)) or abs(float(self.snr_db)) > MAX_ABS_SNR_DB:
            raise ValueError(
                f"`snr_db` must be a finite number in [-{MAX_ABS_SNR_DB:g}, {MAX_ABS_SNR_DB:g}] [dB] (beyond it "
                f"P0/N0 = 10^(snr/10) leaves float64), got {self.snr_db!r}"
            )
        object.__setattr__(self, "snr_db", float(self.snr_db))
        object.__setattr__(self, "path_loss", _positive_real("path_loss", self.path_loss))
        object.__setattr__(self, "hidden_state_bytes", _positive_int("hidden_state_bytes", self.hidden_state_bytes))
        object.__setattr__(
            self,
            "comp_energy_per_token",
            _coefficients("comp_energy_per_token", self.comp_energy_per_token, k, strictly_positive=True),
        )
        object.__setattr__(
            self,
            "comp_energy_static",
            _coefficients("comp_energy_static", self.comp_energy_static, k, strictly_positive=False),
        )
        object.__setattr__(self, "comp_throughput_tokens_per_s", _throughput(self.comp_throughput_tokens_per_s, k))
        if self.node_power_budget_w is not None:
            budget = _positive_real("node_power_budget_w", self.node_power_budget_w)
            if budget < self.tx_power_w * (1.0 - 1e-12):
                raise ValueError(
                    f"`node_power_budget_w` = {budget:g} W cannot carry one resource block at "
                    f"`tx_power_w` = {self.tx_power_w:g} W (it must be >= tx_power_w)"
                )
            object.__setattr__(self, "node_power_budget_w", budget)
        object.__setattr__(self, "noise_figure_db", _noise_figure(self.noise_figure_db))

    # ------------------------------------------------------------------ derived
    @property
    def noise_power_w(self) -> float:
        """N0 [W] (eq 1): P0 / 10**(snr_db/10), or k T0 B0 NF when ``noise_figure_db`` is set."""
        if self.noise_figure_db is not None:
            return thermal_noise_w(self.subcarrier_spacing_hz, self.noise_figure_db)
        return self.tx_power_w / 10.0 ** (self.snr_db / 10.0)

    @property
    def snr_linear(self) -> float:
        """P0/N0 as a linear ratio (before the channel gain): 10**(snr_db/10), or
        P0 / (k T0 B0 NF) when ``noise_figure_db`` is set."""
        if self.noise_figure_db is not None:
            return self.tx_power_w / self.noise_power_w
        return 10.0 ** (self.snr_db / 10.0)

    @property
    def max_rbs_per_node(self) -> int | None:
        """floor(P_max / P0): subcarriers / RBs one node may transmit on at once (``None``: no budget)."""
        if self.node_power_budget_w is None:
            return None
        return max(1, int(math.floor(self.node_power_budget_w / self.tx_power_w * (1.0 + 1e-12))))

    @property
    def bits_per_token(self) -> int:
        """8 * s0 [bit]: payload of one hidden state (Section II-B)."""
        return 8 * self.hidden_state_bytes

    @property
    def num_links(self) -> int:
        """N(N-1): number of directed inter-node links."""
        return self.num_nodes * (self.num_nodes - 1)

    @property
    def comp_energy_per_token_j(self) -> np.ndarray:
        """a_j [J/token], ``[num_nodes], float64`` (eq 4); paper default j * 1e-3."""
        if self.comp_energy_per_token is None:
            return np.arange(1, self.num_nodes + 1, dtype=np.float64) * 1e-3
        return np.asarray(self.comp_energy_per_token, dtype=np.float64)

    @property
    def comp_energy_static_j(self) -> np.ndarray:
        """b_j [J], ``[num_nodes], float64`` (eq 4); paper default 0."""
        if self.comp_energy_static is None:
            return np.zeros(self.num_nodes, dtype=np.float64)
        return np.asarray(self.comp_energy_static, dtype=np.float64)

    @property
    def comp_throughput_j(self) -> np.ndarray:
        """c_j [token/s], ``[num_nodes], float64``: FFN throughput of each node (latency model)."""
        c = self.comp_throughput_tokens_per_s
        if isinstance(c, tuple):
            return np.asarray(c, dtype=np.float64)
        return np.full(self.num_nodes, float(c))

    # ------------------------------------------------------------------ old name
    @property
    def num_experts(self) -> int:
        """Deprecated name of :attr:`num_nodes` (the number of nodes N, not the model's K);
        gives a :class:`DeprecationWarning`. Removed in the next release."""
        _warn_old_name("`SystemConfig.num_experts`", stacklevel=3)
        return self.num_nodes

    def __setstate__(self, state: dict) -> None:
        # unpickling: a SystemConfig pickled before the rename holds `num_experts`
        state = dict(state)
        if "num_experts" in state:
            state.setdefault("num_nodes", state.pop("num_experts"))
        self.__dict__.update(state)

    # ------------------------------------------------------------------ I/O
    def replace(self, **changes: Any) -> "SystemConfig":
        """A copy with some fields changed (validated again); the deprecated ``num_experts``
        is taken for ``num_nodes`` (with a :class:`DeprecationWarning`)."""
        if "num_experts" in changes:
            _warn_old_name("`num_experts`", stacklevel=3)
            if "num_nodes" in changes and changes["num_nodes"] != changes["num_experts"]:
                raise TypeError("give `num_nodes` only (`num_experts` is its deprecated name), got both with "
                                f"different values ({changes['num_nodes']!r}, {changes['num_experts']!r})")
            changes["num_nodes"] = changes.pop("num_experts")
        return dataclasses.replace(self, **changes)

    def cache_dict(self) -> dict:
        """:meth:`to_dict` with ``num_nodes`` under its name before issue 19, ``num_experts``:
        the dict that cache keys (calibrated profiles, experiment evaluations) hash, so that
        the rename leaves every cached result valid."""
        out = self.to_dict()
        out["num_experts"] = out.pop("num_nodes")
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields (tuples become lists, ``None`` stays ``None``)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SystemConfig":
        """Inverse of :meth:`to_dict`. Missing keys take the defaults. A dict written before
        issue 19 (``num_experts`` for ``num_nodes``) loads with a :class:`DeprecationWarning`.

        Raises:
            ValueError: for an unknown key (named in backticks), both ``num_nodes`` and
                ``num_experts``, or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"`data` must be a mapping, got {type(data).__name__}")
        data = dict(data)
        if "num_experts" in data:
            if "num_nodes" in data:
                raise ValueError("`num_experts` is the deprecated name of `num_nodes`; give `num_nodes` only")
            _warn_old_name("`num_experts` in a SystemConfig dict", stacklevel=3)
            data["num_nodes"] = data.pop("num_experts")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"`{unknown[0]}` is not a SystemConfig field; known fields: {', '.join(sorted(names))}"
            )
        kwargs = {}
        for key, value in data.items():
            if isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)


def _accept_old_name(init):
    """Wrap the dataclass ``__init__`` so that ``SystemConfig(num_experts=8)`` still works
    (with a DeprecationWarning) for one release; the field itself is ``num_nodes``."""

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "num_experts" in kwargs:
            old = kwargs.pop("num_experts")
            _warn_old_name("`SystemConfig(num_experts=...)`", stacklevel=3)
            if ("num_nodes" in kwargs and kwargs["num_nodes"] != old) or args:
                raise TypeError("give `num_nodes` only (`num_experts` is its deprecated name), got both")
            kwargs["num_nodes"] = old
        init(self, *args, **kwargs)

    return __init__


SystemConfig.__init__ = _accept_old_name(SystemConfig.__init__)


# ---------------------------------------------------------------------- presets
@dataclass(frozen=True)
class SystemPreset:
    """A named radio numerology (see :data:`SYSTEM_PRESETS`, :func:`system_preset`).

    Attributes:
        name: the preset's name (``--system``).
        description: one line for tables and logs.
        subcarrier_spacing_hz: OFDM subcarrier spacing [Hz] (the paper: B0 itself).
        subcarriers_per_unit: subcarriers in one allocation unit: 12 (an NR resource block)
            or 1 (the paper's subcarrier). B0 = ``subcarrier_spacing_hz * subcarriers_per_unit``.
        num_units: M, allocation units of the carrier (NR: resource blocks), or ``None``
            (the paper: M = :func:`default_num_subcarriers` of the run's K).
        channel_bandwidth_hz: carrier bandwidth [Hz] (``None``: not stated by the paper).
        carrier_ghz: carrier frequency f_c [GHz] the preset assumes (``None``: not stated;
            the run's ``ChannelConfig.carrier_ghz`` is what path loss and Doppler use, and
            its default 3.5 GHz is the NR presets' n78).
        node_power_dbm: P_max, the total transmit power of a node [dBm], or ``None`` (the
            paper: no budget).
        tx_power_w: P0 per allocation unit [W], or ``None``: P_max / ``num_units`` (a
            constant power spectral density that reaches P_max over the whole carrier).
        noise_figure_db: NF [dB] (N0 = k T0 B0 NF), or ``None`` (N0 from ``snr_db``).
        snr_db: P0/N0 [dB] when ``noise_figure_db`` is ``None``.
        source: where the numbers come from.
    """

    name: str
    description: str
    subcarrier_spacing_hz: float
    subcarriers_per_unit: int
    num_units: int | None
    channel_bandwidth_hz: float | None
    carrier_ghz: float | None
    node_power_dbm: float | None
    tx_power_w: float | None
    noise_figure_db: float | None
    snr_db: float | None
    source: str

    @property
    def unit_bandwidth_hz(self) -> float:
        """B0 [Hz]: the bandwidth of one allocation unit (an RB in the NR presets)."""
        return self.subcarrier_spacing_hz * self.subcarriers_per_unit

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields plus ``unit_bandwidth_hz``."""
        out = dataclasses.asdict(self)
        out["unit_bandwidth_hz"] = self.unit_bandwidth_hz
        return out


_NR_SOURCE = (
    "3GPP TS 38.101-1 Table 5.3.2-1 (maximum transmission bandwidth N_RB), Table 6.2.1-1 (power class 3: "
    "23 dBm); TS 38.211 Section 4.4.4.1 (12 subcarriers per RB); band n78 (3.3-3.8 GHz, TS 38.101-1 "
    "Table 5.2-1); UE noise figure 7 dB as in ITU-R M.2412-0's evaluation configurations below 6 GHz"
)

#: The named presets of ``--system``, in display order. ``paper`` is the default.
SYSTEM_PRESETS: dict[str, SystemPreset] = {
    "paper": SystemPreset(
        name="paper",
        description="the paper's setting: 1 MHz subcarriers, P0 = 10 mW, P0/N0 = 10 dB, path loss 1e-2",
        subcarrier_spacing_hz=1e6,
        subcarriers_per_unit=1,
        num_units=None,
        channel_bandwidth_hz=None,
        carrier_ghz=None,
        node_power_dbm=None,
        tx_power_w=1e-2,
        noise_figure_db=None,
        snr_db=10.0,
        source="paper Section VII-A (M: the smallest power of two >= K(K-1), DESIGN.md)",
    ),
    "nr-fr1-15khz-20mhz": SystemPreset(
        name="nr-fr1-15khz-20mhz",
        description="5G NR FR1, 15 kHz SCS, 20 MHz: 106 RBs of 180 kHz, 23 dBm, NF 7 dB, 3.5 GHz",
        subcarrier_spacing_hz=15e3,
        subcarriers_per_unit=12,
        num_units=106,
        channel_bandwidth_hz=20e6,
        carrier_ghz=3.5,
        node_power_dbm=23.0,
        tx_power_w=None,
        noise_figure_db=7.0,
        snr_db=None,
        source=_NR_SOURCE,
    ),
    "nr-fr1-30khz-100mhz": SystemPreset(
        name="nr-fr1-30khz-100mhz",
        description="5G NR FR1, 30 kHz SCS, 100 MHz: 273 RBs of 360 kHz, 23 dBm, NF 7 dB, 3.5 GHz",
        subcarrier_spacing_hz=30e3,
        subcarriers_per_unit=12,
        num_units=273,
        channel_bandwidth_hz=100e6,
        carrier_ghz=3.5,
        node_power_dbm=23.0,
        tx_power_w=None,
        noise_figure_db=7.0,
        snr_db=None,
        source=_NR_SOURCE,
    ),
}


def system_preset(name: str, *, num_nodes: int = 8, **overrides: Any) -> SystemConfig:
    """The :class:`SystemConfig` of preset ``name`` for ``num_nodes`` nodes.

    ``"paper"``: today's defaults (:class:`SystemConfig`), M = :func:`default_num_subcarriers`.
    NR presets: the allocation unit is a resource block (12 subcarriers): M =
    ``num_subcarriers`` = the carrier's N_RB (106 or 273), B0 = ``subcarrier_spacing_hz`` =
    the RB bandwidth (180 or 360 kHz), P_max = ``node_power_budget_w`` = 23 dBm per node,
    P0 = ``tx_power_w`` = P_max / N_RB per RB (a constant power spectral density that
    reaches P_max when a node transmits on the whole carrier; +2.75 dBm per 180 kHz RB,
    -1.36 dBm per 360 kHz RB), N0 = k T0 B0 NF with NF = 7 dB (-114.4 and -111.4 dBm per
    RB). ``snr_db`` keeps its default and is not used.

    Overrides replace preset values. Changing ``node_power_budget_w`` without ``tx_power_w``
    keeps P0 = P_max / N_RB (of the carrier, whatever ``num_subcarriers`` says: the
    spectral density does not change when fewer RBs are scheduled); in the paper preset
    P0 stays 10 mW.

    Args:
        name: a key of :data:`SYSTEM_PRESETS` (case-insensitive).
        num_nodes: N, the number of nodes (from the run, not from the preset); its old
            name ``num_experts`` still works, with a :class:`DeprecationWarning`.
        **overrides: :class:`SystemConfig` fields.

    Returns:
        :class:`SystemConfig`.

    Raises:
        ValueError: unknown ``name`` (listing the known ones), an override that is not a
            :class:`SystemConfig` field (named), or an invalid value (e.g. a power budget
            below one RB's P0).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in SYSTEM_PRESETS:
        raise ValueError(f"unknown system `preset` {name!r}; known: {', '.join(SYSTEM_PRESETS)}")
    if "num_experts" in overrides:
        _warn_old_name("`system_preset(num_experts=...)`", stacklevel=3)
        num_nodes = overrides.pop("num_experts")
    names = {f.name for f in dataclasses.fields(SystemConfig)} - {"num_nodes"}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"`{unknown[0]}` is not a SystemConfig field; known fields: {', '.join(sorted(names))}")
    p = SYSTEM_PRESETS[key]
    k = _positive_int("num_nodes", num_nodes)
    fields: dict[str, Any] = {"num_nodes": k}
    if p.num_units is None:
        fields["num_subcarriers"] = default_num_subcarriers(k)
        fields["subcarrier_spacing_hz"] = p.unit_bandwidth_hz
        fields["tx_power_w"] = p.tx_power_w
        fields["snr_db"] = p.snr_db
    else:
        budget = overrides.get("node_power_budget_w", dbm_to_w(p.node_power_dbm))
        per_unit = dbm_to_w(p.node_power_dbm) if budget is None else _positive_real("node_power_budget_w", budget)
        fields.update(
            num_subcarriers=p.num_units,
            subcarrier_spacing_hz=p.unit_bandwidth_hz,
            tx_power_w=per_unit / p.num_units,
            node_power_budget_w=budget,
            noise_figure_db=p.noise_figure_db,
        )
    fields.update(overrides)
    return SystemConfig(**fields)
