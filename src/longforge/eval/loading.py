"""Load a model and its tokenizer for evaluation: a local HF causal-LM directory (longforge's or any transformers
architecture) or a built-in name. Nothing is downloaded: everything loads with ``local_files_only=True``.

Built-in names resolve through ``BUILTIN_MODELS`` (name → function returning the model's local directory).
Register one with ``register_builtin_model("tiny-teacher", locate)``; e.g. the embedded tiny teacher registers
a function returning its folder under ``longforge/assets``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

BUILTIN_MODELS: dict[str, Callable[[], Path]] = {}

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def register_builtin_model(name: str, locate: Callable[[], str | Path]) -> None:
    """Make ``name`` loadable by ``load_model_and_tokenizer``; ``locate()`` returns its local directory."""
    BUILTIN_MODELS[name] = lambda: Path(locate())


def _register_shipped_models() -> None:
    """The models shipped in ``longforge/assets`` (the embedded defaults)."""
    from ..assets import BUILTIN_MODELS as SHIPPED
    from ..assets import asset_path

    for shipped in SHIPPED:
        register_builtin_model(shipped, lambda n=shipped: asset_path(n))


_register_shipped_models()


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A built-in model name or a local model directory → the directory (ValueError if it is neither)."""
    name = str(name_or_path)
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model directory {path} has no config.json: not a Hugging Face model directory")
        return path
    if path.exists():
        raise ValueError(f"model {name!r} is a file; pass a Hugging Face model directory or a built-in name")
    builtins = ", ".join(sorted(BUILTIN_MODELS)) or "none registered yet"
    raise ValueError(f"unknown model {name!r}: not a local directory and not a built-in model name ({builtins})")


def resolve_device(device: str | None = "auto") -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return str(device)


def resolve_dtype(dtype: str | None, device: str):
    """'auto' → bfloat16 on CUDA, float32 elsewhere; or one of float32 / bfloat16 / float16."""
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return getattr(torch, dtype)


def load_tokenizer(name_or_path: str | Path):
    """The tokenizer of a local HF model directory or built-in name. Cheap, so callers can validate their inputs
    with it before loading the weights."""
    import longforge  # noqa: F401  (registers longforge's config, which AutoTokenizer may read)

    from transformers import AutoTokenizer  # isort: skip

    path = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"could not load a tokenizer from {path}: {e}") from e


def load_model(name_or_path: str | Path, device: str = "auto", dtype: str = "auto"):
    """The causal LM of a local HF model directory or built-in name, in eval mode on ``device``."""
    import longforge  # noqa: F401  (registers HybridForCausalLM with the Auto classes)

    from transformers import AutoModelForCausalLM  # isort: skip

    path = resolve_model_path(name_or_path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"could not load a causal LM from {path}: {e}") from e
    return model.to(device).eval()


def load_model_and_tokenizer(name_or_path: str | Path, device: str = "auto", dtype: str = "auto"):
    """``(model, tokenizer)`` for a local HF causal-LM directory or built-in name, in eval mode on ``device``."""
    return load_model(name_or_path, device, dtype), load_tokenizer(name_or_path)
