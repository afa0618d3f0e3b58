"""dmoe: expert selection and subcarrier allocation for distributed Mixture-of-Experts.

Implements "Optimal Expert Selection for Distributed Mixture-of-Experts at the Wireless
Edge" (Qin, Wu, Du, Huang): the system model (Section II), exact expert selection DES
(Algorithm 1), optimal subcarrier allocation (Appendix B), JESA (Algorithm 2), the
paper's baselines, and the DMoE protocol (Section III-C) over a real language model.

The solver names import without torch; the model and runtime names import torch lazily.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SystemConfig": "dmoe.system",
    "channel_gain": "dmoe.channels.rates",
    "subcarrier_rates": "dmoe.channels.rates",
    "draw_rates": "dmoe.channels.rates",
    "ChannelConfig": "dmoe.channels",
    "ChannelProcess": "dmoe.channels",
    "token_costs": "dmoe.energy",
    "select_experts": "dmoe.optimize.selection",
    "SelectionResult": "dmoe.optimize.selection",
    "allocate_subcarriers": "dmoe.optimize.subcarrier",
    "SubcarrierResult": "dmoe.optimize.subcarrier",
    "allocate_resource_blocks": "dmoe.optimize.resource_blocks",
    "ResourceBlockResult": "dmoe.optimize.resource_blocks",
    "jesa": "dmoe.optimize.jesa",
    "lower_bound": "dmoe.optimize.jesa",
    "JESAResult": "dmoe.optimize.jesa",
    "Policy": "dmoe.policies",
    "Schedule": "dmoe.policies",
    "TopK": "dmoe.policies",
    "Homogeneous": "dmoe.policies",
    "JESAPolicy": "dmoe.policies",
    "LowerBound": "dmoe.policies",
    "Dense": "dmoe.policies",
    "policy_from_name": "dmoe.policies",
    "node_demand": "dmoe.policies",
    "allocate_links": "dmoe.policies",
    "check_policy_schedule": "dmoe.policies",
    "Deadline": "dmoe.policies",
    "ImportanceProfile": "dmoe.optimize.qos_allocation",
    "allocate_qos": "dmoe.optimize.qos_allocation",
    "CalibratedJESA": "dmoe.policies.calibrated",
    "CalibratedDES": "dmoe.policies.calibrated",
    "CalibratedLB": "dmoe.policies.calibrated",
    "calibrated_policy": "dmoe.policies.calibrated",
    "calibrate_importance": "dmoe.importance",
    "calibrate_cached": "dmoe.importance",
    "MoEModel": "dmoe.model",
    "ExpertModel": "dmoe.model",
    "HFMoEModel": "dmoe.model",
    "load_moe_model": "dmoe.model",
    "load_expert_model": "dmoe.model",
    "load_mmlu": "dmoe.data",
    "DMoERuntime": "dmoe.runtime",
    "EnergyLedger": "dmoe.runtime",
    "LatencyLedger": "dmoe.runtime",
    "evaluate_policy": "dmoe.runtime",
    "make_engine": "dmoe.runtime",
    "NodeKill": "dmoe.runtime",
    "NoLiveNodeError": "dmoe.runtime",
    "generate": "dmoe.runtime",
    "GenerationConfig": "dmoe.runtime",
    "SamplingParams": "dmoe.runtime",
    "deploy": "dmoe.deployment",
    "plan_deployment": "dmoe.deployment",
    "Deployment": "dmoe.deployment",
    "run_main_job": "dmoe.main_job",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dmoe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
