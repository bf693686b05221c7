"""The embedded defaults: small models shipped inside the package (safetensors + tokenizer + model card)."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
BUILTIN_MODELS = ("tiny-teacher", "tiny-hybrid")


def asset_path(name: str) -> Path:
    """Directory of a built-in model; ValueError if the name is unknown or its files are not in this install."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
    path = ASSETS_DIR / name
    if not (path / "config.json").is_file():
        raise ValueError(f"built-in model {name!r} is not shipped in this install (no {path / 'config.json'})")
    return path
