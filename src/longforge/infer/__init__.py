"""Inference: chunked-prefill generation with planned memory (`InferenceEngine`), pre-allocated hybrid caches."""

from .cache import StaticKVLayerCache, StaticSparseLayerCache, preallocated_cache
from .engine import DEFAULT_CHUNK_SIZE, GenerationResult, InferenceEngine, sample_next
from .memory import InferenceMemoryError, MemoryPlan, plan_memory

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GenerationResult",
    "InferenceEngine",
    "InferenceMemoryError",
    "MemoryPlan",
    "StaticKVLayerCache",
    "StaticSparseLayerCache",
    "plan_memory",
    "preallocated_cache",
    "sample_next",
]
