"""Real Mixture-of-Experts checkpoints (transformers >= 5) behind the ExpertModel interface.

* ``families.py`` — the supported families and how each one's g and weights are derived;
* ``model.py`` — :class:`HFMoEModel`, one generic adapter driven by the family spec;
* ``load.py`` — :func:`load_hf_moe_model` (local directory or hub id).
"""

from .families import FAMILIES, SUPPORTED_MODEL_TYPES, FamilySpec, family_of, supported_families_text
from .load import load_hf_moe_model
from .model import HFMoEModel

__all__ = [
    "FAMILIES",
    "SUPPORTED_MODEL_TYPES",
    "FamilySpec",
    "HFMoEModel",
    "family_of",
    "load_hf_moe_model",
    "supported_families_text",
]
