"""Models: the hybrid causal LM, its cache, built-in shapes and weight adapters."""

from .adapters import from_transformers
from .hybrid import HybridCache, HybridConfig, HybridForCausalLM, HybridModel
from .shapes import BUILTIN_SHAPES, load_config

__all__ = [
    "HybridCache",
    "HybridConfig",
    "HybridForCausalLM",
    "HybridModel",
    "from_transformers",
    "BUILTIN_SHAPES",
    "load_config",
]
