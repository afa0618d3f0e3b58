"""The DMoE runtime: expert nodes, the edge server's protocol loop, engines, transfers on
air, the energy and latency ledgers, evaluation and quality measures against the full model,
and text generation (prefill and decode rounds with KV caches at the hosts)."""

from .engine import Engine, Failure, LocalEngine
from .engines import ENGINES, make_engine
from .evaluate import PolicyResult, evaluate_perplexity, evaluate_policy
from .faults import FAULT_PHASES, FaultLog, FaultModel, NodeKill, NoLiveNodeError
from .ledger import EnergyLedger, LatencyLedger, LayerTotals
from .node import ExpertNode, HostedQuery
from .quality import FullReference, full_reference, full_text_nll, perplexity, token_kl
from .server import CHANNEL_REDRAW, DMoERuntime, RoundOutput, RoundState
from .generate import GenerationConfig, GenerationOutput, GenerationResult, PhaseCost, generate
from .sampling import SamplingParams, TokenSampler
from .transfer import TransferOutcome, transmit

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
    "GenerationConfig",
    "GenerationOutput",
    "GenerationResult",
    "PhaseCost",
    "RoundState",
    "SamplingParams",
    "TokenSampler",
    "generate",
    "LatencyLedger",
    "LayerTotals",
    "LocalEngine",
    "NoLiveNodeError",
    "NodeKill",
    "PolicyResult",
    "RoundOutput",
    "TransferOutcome",
    "evaluate_perplexity",
    "evaluate_policy",
    "make_engine",
    "full_reference",
    "full_text_nll",
    "perplexity",
    "token_kl",
    "transmit",
]
