"""The DMoE runtime: expert nodes, the edge server's protocol loop, transfers on air, the
energy and latency ledgers."""

from .evaluate import PolicyResult, evaluate_policy
from .ledger import EnergyLedger, LatencyLedger, LayerTotals
from .node import ExpertNode
from .server import CHANNEL_REDRAW, DMoERuntime, RoundOutput
from .transfer import TransferOutcome, transmit

__all__ = [
    "CHANNEL_REDRAW",
    "DMoERuntime",
    "EnergyLedger",
    "ExpertNode",
    "LatencyLedger",
    "LayerTotals",
    "PolicyResult",
    "RoundOutput",
    "TransferOutcome",
    "evaluate_policy",
    "transmit",
]
