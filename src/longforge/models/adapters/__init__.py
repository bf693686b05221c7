from .hf import from_transformers, hybrid_config_from_transformers, to_transformers_state_dict

__all__ = ["from_transformers", "hybrid_config_from_transformers", "to_transformers_state_dict"]
