"""The DMoE runtime: expert nodes, the edge server's protocol loop, transfers on air, the
energy and latency ledgers, evaluation and quality measures against the full model."""

from .evaluate import PolicyResult, evaluate_perplexity, evaluate_policy
from .ledger import EnergyLedger, LatencyLedger, LayerTotals
from .node import ExpertNode
from .quality import FullReference, full_reference, full_text_nll, perplexity, token_kl
from .server import CHANNEL_REDRAW, DMoERuntime, RoundOutput
from .transfer import TransferOutcome, transmit

__all__ = [
    "CHANNEL_REDRAW",
    "DMoERuntime",
    "EnergyLedger",
    "ExpertNode",
    "FullReference",
    "LatencyLedger",
    "LayerTotals",
    "PolicyResult",
    "RoundOutput",
    "TransferOutcome",
    "evaluate_perplexity",
    "evaluate_policy",
    "full_reference",
    "full_text_nll",
    "perplexity",
    "token_kl",
    "transmit",
]
