"""The DMoE runtime: expert nodes, the edge server's protocol loop, engines, the energy ledger."""

from .engine import ENGINES, Engine, Failure, LocalEngine, make_engine
from .evaluate import PolicyResult, evaluate_policy
from .faults import FAULT_PHASES, FaultLog, FaultModel, NodeKill, NoLiveNodeError
from .ledger import EnergyLedger, LayerTotals
from .node import ExpertNode, HostedQuery
from .server import CHANNEL_REDRAW, DMoERuntime, RoundOutput

__all__ = [
    "CHANNEL_REDRAW",
    "DMoERuntime",
    "ENGINES",
    "EnergyLedger",
    "Engine",
    "ExpertNode",
    "FAULT_PHASES",
    "Failure",
    "FaultLog",
    "FaultModel",
    "HostedQuery",
    "LayerTotals",
    "LocalEngine",
    "NoLiveNodeError",
    "NodeKill",
    "PolicyResult",
    "RoundOutput",
    "evaluate_policy",
    "make_engine",
]
