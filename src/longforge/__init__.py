"""longforge: efficient long-context language models.

``import longforge`` registers the hybrid model with transformers' Auto classes, so
``AutoModelForCausalLM.from_pretrained(dir)`` loads a longforge checkpoint without ``trust_remote_code``.
"""

__version__ = "0.1.0"

try:  # `longforge.ops` must stay importable without transformers; everything else needs it.
    import transformers as _transformers  # noqa: F401
except ImportError:  # pragma: no cover - exercised only in a torch-only environment
    _HAS_TRANSFORMERS = False
else:
    _HAS_TRANSFORMERS = True

if _HAS_TRANSFORMERS:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .models import HybridCache, HybridConfig, HybridForCausalLM, HybridModel, from_transformers, load_config
    from .models.pretrained import pretrained

    AutoConfig.register(HybridConfig.model_type, HybridConfig, exist_ok=True)
    AutoModel.register(HybridConfig, HybridModel, exist_ok=True)
    AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM, exist_ok=True)

    __all__ = [
        "HybridCache",
        "HybridConfig",
        "HybridForCausalLM",
        "HybridModel",
        "from_transformers",
        "load_config",
        "pretrained",
    ]
