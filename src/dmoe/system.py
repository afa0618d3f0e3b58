"""System parameters of a DMoE deployment (paper Section II and Section VII-A).

:class:`SystemConfig` collects every physical constant the solvers need: the number of
expert nodes K, the OFDMA grid (M subcarriers of spacing B0), the transmit power P0,
the SNR P0/N0, the Rayleigh path loss, the hidden-state size s0 and the computation
energy coefficients a_j, b_j of eq (4).

Units (decided in DESIGN.md): energies are charged per token,
``e_ij = a_j + P0 * 8*s0 / R_ij`` [J/token] for i != j and ``e_jj = a_j``; a_j is in
[J/token] and b_j in [J] (charged once per layer round for an active expert, see
:mod:`dmoe.energy`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["SystemConfig", "default_num_subcarriers"]


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


def _coefficients(name: str, value: Any, num_experts: int, *, strictly_positive: bool) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"`{name}` must be None or a sequence of {num_experts} numbers, got {value!r}")
    items = tuple(value)
    if len(items) != num_experts:
        raise ValueError(
            f"`{name}` must have one entry per expert (num_experts={num_experts}), got {len(items)}"
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


def _throughput(value: Any, num_experts: int) -> float | tuple:
    name = "comp_throughput_tokens_per_s"
    if _is_real(value):
        if not math.isfinite(float(value)) or float(value) <= 0.0:
            raise ValueError(f"`{name}` must be > 0 [token/s] and finite, got {value!r}")
        return float(value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"`{name}` must be a positive number or one per expert [token/s], got {value!r}")
    items = tuple(value)
    if len(items) != num_experts:
        raise ValueError(f"`{name}` must have one entry per expert (num_experts={num_experts}), got {len(items)}")
    for k, item in enumerate(items):
        if not _is_real(item) or not math.isfinite(float(item)) or float(item) <= 0.0:
            raise ValueError(f"`{name}`[{k}] must be > 0 [token/s] and finite, got {item!r}")
    return tuple(float(x) for x in items)


def default_num_subcarriers(num_experts: int) -> int:
    """M for K experts: the smallest power of two >= K(K-1) (DESIGN.md; 64 for K = 8).

    Every one of the K(K-1) directed links can then hold its own subcarrier (C3), so
    every policy, dense included, is feasible. K = 64 (OLMoE) gives 4096.

    Raises:
        ValueError: ``num_experts`` is not a positive integer.
    """
    k = _positive_int("num_experts", num_experts)
    links = k * (k - 1)
    return 1 if links <= 1 else 1 << (links - 1).bit_length()


@dataclass(frozen=True)
class SystemConfig:
    """Physical parameters of the DMoE system; defaults are the paper's (Section VII-A).

    Attributes:
        num_experts: K, number of expert nodes (one expert per node).
        num_subcarriers: M, OFDMA subcarriers shared by the K(K-1) directed links.
            Default 64 = smallest power of two >= K(K-1) = 56 (DESIGN.md).
        subcarrier_spacing_hz: B0 [Hz] (eq 1). Default 1 MHz.
        tx_power_w: P0 [W], transmit power per subcarrier (eq 1, 3). Default 10 mW.
        snr_db: P0/N0 [dB] (eq 1). Default 10 dB.
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

    num_experts: int = 8
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

    def __post_init__(self) -> None:
        k = _positive_int("num_experts", self.num_experts)
        object.__setattr__(self, "num_experts", k)
        object.__setattr__(self, "num_subcarriers", _positive_int("num_subcarriers", self.num_subcarriers))
        object.__setattr__(
            self, "subcarrier_spacing_hz", _positive_real("subcarrier_spacing_hz", self.subcarrier_spacing_hz)
        )
        object.__setattr__(self, "tx_power_w", _positive_real("tx_power_w", self.tx_power_w))
        if not _is_real(self.snr_db) or not math.isfinite(float(self.snr_db)):
            raise ValueError(f"`snr_db` must be a finite number [dB], got {self.snr_db!r}")
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

    # ------------------------------------------------------------------ derived
    @property
    def noise_power_w(self) -> float:
        """N0 [W] = P0 / 10**(snr_db/10) (eq 1)."""
        return self.tx_power_w / 10.0 ** (self.snr_db / 10.0)

    @property
    def snr_linear(self) -> float:
        """P0/N0 as a linear ratio."""
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
        """K(K-1): number of directed inter-expert links."""
        return self.num_experts * (self.num_experts - 1)

    @property
    def comp_energy_per_token_j(self) -> np.ndarray:
        """a_j [J/token], ``[num_experts], float64`` (eq 4); paper default j * 1e-3."""
        if self.comp_energy_per_token is None:
            return np.arange(1, self.num_experts + 1, dtype=np.float64) * 1e-3
        return np.asarray(self.comp_energy_per_token, dtype=np.float64)

    @property
    def comp_energy_static_j(self) -> np.ndarray:
        """b_j [J], ``[num_experts], float64`` (eq 4); paper default 0."""
        if self.comp_energy_static is None:
            return np.zeros(self.num_experts, dtype=np.float64)
        return np.asarray(self.comp_energy_static, dtype=np.float64)

    @property
    def comp_throughput_j(self) -> np.ndarray:
        """c_j [token/s], ``[num_experts], float64``: FFN throughput of each node (latency model)."""
        c = self.comp_throughput_tokens_per_s
        if isinstance(c, tuple):
            return np.asarray(c, dtype=np.float64)
        return np.full(self.num_experts, float(c))

    # ------------------------------------------------------------------ I/O
    def replace(self, **changes: Any) -> "SystemConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields (tuples become lists, ``None`` stays ``None``)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SystemConfig":
        """Inverse of :meth:`to_dict`. Missing keys take the defaults.

        Raises:
            ValueError: for an unknown key (named in backticks) or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"`data` must be a mapping, got {type(data).__name__}")
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
