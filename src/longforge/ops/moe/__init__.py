"""DECO sparse-MoE expert compute (arXiv 2605.10933): dense-masked reference and sparse inference.

``deco_experts`` is the seam: ``mode="dense"`` (training; the reference) computes every expert and masks by the
router; ``mode="sparse"`` (inference) reads only the union of the chunk's active experts' slices of W_up and
W_down. ``LONGFORGE_BACKEND_MOE=naive|fast`` picks the implementation of the sparse path: on CUDA the fused Triton
kernel (``triton.py``: router, active experts, NormSiLU, down-projection and the shared expert in ONE launch, for
chunks of ≤ 64 tokens), elsewhere the torch gather path. ``graph.py`` replays a decode step from a CUDA graph.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .._backend import resolve
from .naive import deco_experts_dense, deco_experts_sparse, relu_router

# triton is in the `gpu` extra, not a hard dependency; it is imported on first use, not with longforge
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _deco_experts_fused(*args, **kwargs):
    from .triton import deco_experts_fused

    return deco_experts_fused(*args, **kwargs)


def deco_ffn_fused(*args, **kwargs):
    """The whole DECO FFN in one Triton launch (CUDA, ≤ 64 tokens); see ``triton.deco_ffn_fused``."""
    from .triton import deco_ffn_fused as impl

    return impl(*args, **kwargs)


_FAST = _deco_experts_fused if _HAS_TRITON else None  # deco_experts_sparse's signature


def fused_available(device) -> bool:
    """True when the fused Triton decode kernel can run on ``device`` (CUDA + triton, backend not forced naive)."""
    import os

    from .._backend import env_var

    if os.environ.get(env_var("moe"), "").strip().lower() == "naive":
        return False
    return _HAS_TRITON and torch.device(device).type == "cuda"


def deco_experts(
    x: Tensor,
    gates: Tensor,
    up_weight: Tensor,
    down_weight: Tensor,
    norm_weight: Tensor | None,
    *,
    eps: float = 1e-6,
    up_row_mean: Tensor | None = None,
    mode: str = "dense",
) -> Tensor:
    """Routed experts of DECO. See ``naive.deco_experts_dense`` for shapes."""
    if mode == "dense":
        return deco_experts_dense(x, gates, up_weight, down_weight, norm_weight, eps=eps)
    if mode != "sparse":
        raise ValueError(f"mode must be 'dense' or 'sparse', got {mode!r}")
    impl = resolve("moe", _FAST, deco_experts_sparse, x.device)
    return impl(x, gates, up_weight, down_weight, norm_weight, eps=eps, up_row_mean=up_row_mean)


__all__ = [
    "deco_experts",
    "deco_experts_dense",
    "deco_experts_sparse",
    "deco_ffn_fused",
    "fused_available",
    "relu_router",
]
