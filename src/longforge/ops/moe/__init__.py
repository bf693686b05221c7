"""DECO sparse-MoE expert compute (arXiv 2605.10933): dense-masked reference and sparse inference.

``deco_experts`` is the seam: ``mode="dense"`` (training; the reference) computes every expert and masks by the
router; ``mode="sparse"`` (inference) reads only the union of the chunk's active experts' slices of W_up and
W_down. ``LONGFORGE_BACKEND_MOE=naive|fast`` picks the implementation of the sparse path (a Triton kernel on CUDA
comes with the fast-inference work; until then the torch gather path runs everywhere).
"""

from __future__ import annotations

from torch import Tensor

from .._backend import resolve
from .naive import deco_experts_dense, deco_experts_sparse, relu_router

_FAST = None  # a fused CUDA kernel with deco_experts_sparse's signature


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


__all__ = ["deco_experts", "deco_experts_dense", "deco_experts_sparse", "relu_router"]
