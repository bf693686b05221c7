"""Helpers with no model knowledge: checkpoint checks, atomic writes."""

from .io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    check_checkpoint_dir,
    check_safetensors_file,
)

__all__ = [
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_checkpoint_dir",
    "check_safetensors_file",
]
