"""The DMoE runtime: expert nodes, the edge server's protocol loop, the energy ledger."""

from .evaluate import PolicyResult, evaluate_policy
from .ledger import EnergyLedger, LayerTotals
from .node import ExpertNode
from .server import CHANNEL_REDRAW, DMoERuntime, RoundOutput

__all__ = [
    "CHANNEL_REDRAW",
    "DMoERuntime",
    "EnergyLedger",
    "ExpertNode",
    "LayerTotals",
    "PolicyResult",
    "RoundOutput",
    "evaluate_policy",
]
