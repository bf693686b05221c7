"""InfLLM-V2 trainable sparse attention (arXiv 2509.24663): dense/sparse switchable, no extra parameters.

``sparse_attention`` is the seam: the Triton fast path on CUDA, ``sdpa_sparse_attention`` (the reference's selection,
SDPA over the selected blocks) elsewhere; ``LONGFORGE_BACKEND_SPARSE_ATTENTION=naive`` forces the fp32 reference
``naive_sparse_attention``, ``=fast`` the Triton path. ``compress_keys`` (incremental with ``start=``),
``select_blocks`` and ``selected_blocks`` expose the selection for caches, tests and analysis.
"""

from __future__ import annotations

from torch import Tensor

from .._backend import resolve
from .fast import fast_sparse_attention
from .naive import compress_keys, naive_sparse_attention, num_compressed, select_blocks, selected_blocks
from .sdpa import sdpa_sparse_attention

# Fast implementation with naive_sparse_attention's signature (GPU selection + Triton kernel, see fast.py;
# triton is imported lazily, at the first sparse call on CUDA).
_FAST = fast_sparse_attention


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    compressed_k: Tensor | None = None,
    block_size: int = 64,
    kernel_size: int = 32,
    kernel_stride: int = 16,
    topk: int = 64,
    init_blocks: int = 1,
    window_size: int = 2048,
    dense_len: int = 8192,
    scale: float | None = None,
) -> Tensor:
    """InfLLM-V2 sparse attention through the backend seam.

    Args:
        q: ``[B, Tq, H, D]``; query i sits at position ``Tk - Tq + i``.
        k: ``[B, Tk, Hkv, D]`` (no padding inside; call per sequence).
        v: ``[B, Tk, Hkv, Dv]``.
        compressed_k: ``[B, Nc, Hkv, D]`` precomputed ``compress_keys(k, kernel_size, kernel_stride)`` or ``None``.
        block_size, kernel_size, kernel_stride, topk, init_blocks, window_size, dense_len, scale: see
            ``naive_sparse_attention`` and README.md (defaults are MiniCPM-SALA's deployed config).

    Returns:
        ``o [B, Tq, H, Dv]`` in q's dtype.
    """
    device = q.device if isinstance(q, Tensor) else "cpu"
    impl = resolve("sparse_attention", _FAST, naive_sparse_attention, device, cpu_impl=sdpa_sparse_attention)
    return impl(
        q, k, v, compressed_k=compressed_k, block_size=block_size, kernel_size=kernel_size,
        kernel_stride=kernel_stride, topk=topk, init_blocks=init_blocks, window_size=window_size,
        dense_len=dense_len, scale=scale,
    )


__all__ = [
    "compress_keys",
    "naive_sparse_attention",
    "sdpa_sparse_attention",
    "num_compressed",
    "select_blocks",
    "selected_blocks",
    "sparse_attention",
]
