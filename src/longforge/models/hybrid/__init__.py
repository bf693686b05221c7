from .cache import HybridCache
from .configuration_hybrid import LAYER_TYPES, HybridConfig
from .modeling_hybrid import HybridForCausalLM, HybridModel, HybridPreTrainedModel

__all__ = ["HybridCache", "HybridConfig", "HybridForCausalLM", "HybridModel", "HybridPreTrainedModel", "LAYER_TYPES"]
