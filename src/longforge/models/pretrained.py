"""`longforge.pretrained(name_or_path)`: a built-in model name or a local directory → (model, tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..assets import BUILTIN_MODELS, asset_path


def resolve_model_path(name_or_path: str) -> Path:
    """A built-in model name (``tiny-teacher``) or a local model directory → its directory."""
    if name_or_path in BUILTIN_MODELS:
        return asset_path(name_or_path)
    path = Path(name_or_path)
    if not path.is_dir():
        raise ValueError(
            f"{name_or_path!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a local model directory"
        )
    return path


def pretrained(name_or_path: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
    """Load (model, tokenizer) from a built-in name or a local HF directory (longforge hybrid or transformers
    Qwen3 / Llama). Offline: local files only, no remote code. ``dtype`` defaults to fp32 on CPU and the checkpoint's
    dtype on GPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..utils.io import check_checkpoint_dir

    path = resolve_model_path(name_or_path)
    check_checkpoint_dir(path)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if dtype is None and device.type == "cpu":
        dtype = torch.float32
    kwargs = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer
