"""The DMoE runtime: expert nodes, the edge server's protocol loop, engines, the energy
ledger, evaluation and quality measures against the full model."""

from .engine import ENGINES, Engine, Failure, LocalEngine, make_engine
from .evaluate import PolicyResult, evaluate_perplexity, evaluate_policy
from .faults import FAULT_PHASES, FaultLog, FaultModel, NodeKill, NoLiveNodeError
from .ledger import EnergyLedger, LayerTotals
from .node import ExpertNode, HostedQuery
from .quality import FullReference, full_reference, full_text_nll, perplexity, token_kl
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
    "FullReference",
    "LayerTotals",
    "LocalEngine",
    "NoLiveNodeError",
    "NodeKill",
    "PolicyResult",
    "RoundOutput",
    "evaluate_perplexity",
    "evaluate_policy",
    "make_engine",
    "full_reference",
    "full_text_nll",
    "perplexity",
    "token_kl",
]
