"""InfLLM-V2 block scores on the tensor cores in q's 16-bit dtype: a flash-style two-pass Triton scorer.

InfLLM-V2's own stage-1 kernel scores blocks in bf16 (the scores only rank blocks). For query positions
``pos0 + i`` of a chunk and compressed keys ``kc [B, Nc, Hkv, D]`` (key j visible iff ``j * s + l - 1 <= t``), one
program owns ``BLOCK_M`` consecutive tokens x the ``G`` heads of one GQA group (``BLOCK_M * G`` rows) and loops
over the visible compressed-key tiles only (a causal bound per tile of tokens):

1. ``_lse_kernel``: online row max / sum of ``exp`` (base 2) -> the row's log-sum-exp ``[B * Hkv, C, G]``;
2. ``_blockscore_kernel``: ``p = exp(s - lse)`` summed over the group's heads -> ``[BLOCK_M, BLOCK_C]``, reduced
   in registers to the stride groups of the block max-pool: per block m, ``gmax[m] = max_{j in [r m, r m + r)}``
   and ``edge[m] = p_{r m + r - 1}`` (``r = block_size / kernel_stride``). Only ``[B * Hkv, C, NB]`` is written.

The block score of ``_block_scores`` (window ``j in [r m - 1, r m + r - 1]``) is then
``max(gmax[m], edge[m - 1])`` -- one elementwise op in PyTorch. Dots are bf16/fp16 with fp32 accumulation, so
blocks whose fp32 scores nearly tie can rank differently from the fp32 reference (``LONGFORGE_SPARSE_SCORES=torch``
keeps the exact scorer). Loops have runtime (causal) bounds on the GPU; under ``TRITON_INTERPRET=1`` they sweep
every tile instead.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_select import gqa_rows

_LOG2E = 1.4426950408889634


@triton.jit
def _lse_kernel(
    Q, KC, LSE,
    qk_scale, pos0,
    s_qb, s_qt, s_qh,
    s_cb, s_cn, s_ch,
    C, Nc, HKV, G, D,
    KSIZE: tl.constexpr, KSTRIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
    FULL_LOOP: tl.constexpr,  # 0 on the GPU; under the interpreter Nc rounded up to BLOCK_C
):
    mt = tl.program_id(0).to(tl.int64)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // HKV
    hk = bh % HKV
    R: tl.constexpr = BLOCK_M * BLOCK_G
    tok, g, row_ok = gqa_rows(mt, C, G, BLOCK_M, BLOCK_G)
    pos = pos0 + tok
    offs_d = tl.arange(0, BLOCK_D)
    q = tl.load(Q + b * s_qb + tok[:, None] * s_qt + (hk * G + g)[:, None] * s_qh + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0)
    last_pos = pos0 + tl.minimum(mt * BLOCK_M + BLOCK_M, C) - 1
    n_vis = tl.minimum((last_pos - KSIZE + 1) // KSTRIDE + 1, Nc)  # visible keys of the tile's last token
    n_vis = tl.maximum(n_vis, 0)
    m = tl.full([R], float("-inf"), tl.float32)
    ssum = tl.zeros([R], tl.float32)
    # the interpreter cannot take a tensor loop bound: it sweeps every tile (the masks give the same result)
    for c0 in range(0, FULL_LOOP if FULL_LOOP else n_vis, BLOCK_C):
        j = c0 + tl.arange(0, BLOCK_C)
        kc = tl.load(KC + b * s_cb + j[:, None] * s_cn + hk * s_ch + offs_d[None, :],
                     mask=(j < Nc)[:, None] & (offs_d < D)[None, :], other=0.0)
        sc = tl.dot(q, tl.trans(kc)) * qk_scale
        vis = row_ok[:, None] & (j < Nc)[None, :] & (j * KSTRIDE + KSIZE - 1 <= pos[:, None])
        sc = tl.where(vis, sc, float("-inf"))
        m_new = tl.maximum(m, tl.max(sc, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        ssum = ssum * tl.exp2(m - m_safe) + tl.sum(tl.exp2(sc - m_safe[:, None]), 1)
        m = m_new
    lse = tl.where(ssum > 0, m + tl.log2(ssum), float("inf"))  # base 2; no visible key: +inf (p = 0)
    tl.store(LSE + (bh * C + tok) * G + g, lse, mask=row_ok)


@triton.jit
def _blockscore_kernel(
    Q, KC, LSE, GMAX, EDGE,
    qk_scale, pos0,
    s_qb, s_qt, s_qh,
    s_cb, s_cn, s_ch,
    C, Nc, NB, HKV, G, D,
    KSIZE: tl.constexpr, KSTRIDE: tl.constexpr, RATIO: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
    FULL_LOOP: tl.constexpr,  # 0 on the GPU; under the interpreter Nc rounded up to BLOCK_C
):
    mt = tl.program_id(0).to(tl.int64)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // HKV
    hk = bh % HKV
    NBT: tl.constexpr = BLOCK_C // RATIO
    tok, g, row_ok = gqa_rows(mt, C, G, BLOCK_M, BLOCK_G)
    pos = pos0 + tok
    offs_d = tl.arange(0, BLOCK_D)
    q = tl.load(Q + b * s_qb + tok[:, None] * s_qt + (hk * G + g)[:, None] * s_qh + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0)
    lse = tl.load(LSE + (bh * C + tok) * G + g, mask=row_ok, other=float("inf"))
    last_pos = pos0 + tl.minimum(mt * BLOCK_M + BLOCK_M, C) - 1
    n_vis = tl.minimum((last_pos - KSIZE + 1) // KSTRIDE + 1, Nc)
    n_vis = tl.maximum(n_vis, 0)
    tm = mt * BLOCK_M + tl.arange(0, BLOCK_M)
    lane = tl.arange(0, RATIO)
    # the interpreter cannot take a tensor loop bound: it sweeps every tile (the masks give the same result)
    for c0 in range(0, FULL_LOOP if FULL_LOOP else n_vis, BLOCK_C):
        j = c0 + tl.arange(0, BLOCK_C)
        kc = tl.load(KC + b * s_cb + j[:, None] * s_cn + hk * s_ch + offs_d[None, :],
                     mask=(j < Nc)[:, None] & (offs_d < D)[None, :], other=0.0)
        sc = tl.dot(q, tl.trans(kc)) * qk_scale
        vis = row_ok[:, None] & (j < Nc)[None, :] & (j * KSTRIDE + KSIZE - 1 <= pos[:, None])
        p = tl.where(vis, tl.exp2(sc - lse[:, None]), 0.0)
        shared = tl.sum(tl.reshape(p, [BLOCK_M, BLOCK_G, BLOCK_C]), 1)  # [BLOCK_M, BLOCK_C]
        grp = tl.reshape(shared, [BLOCK_M, NBT, RATIO])
        gmax = tl.max(grp, 2)
        edge = tl.sum(tl.where((lane == RATIO - 1)[None, None, :], grp, 0.0), 2)
        blk = c0 // RATIO + tl.arange(0, NBT)
        out = (bh * C + tm[:, None]) * NB + blk[None, :]
        ok = (tm < C)[:, None] & (blk < NB)[None, :]
        tl.store(GMAX + out, gmax, mask=ok)
        tl.store(EDGE + out, edge, mask=ok)


def supported(block_size: int, kernel_stride: int, head_dim: int) -> bool:
    """The kernel needs ``block_size / kernel_stride`` a power of two <= 64 and a head dim <= 256."""
    ratio = block_size // kernel_stride
    return block_size % kernel_stride == 0 and ratio >= 1 and (ratio & (ratio - 1)) == 0 and ratio <= 64 \
        and head_dim <= 256


def block_scores_lowp(q: Tensor, kc: Tensor, pos0: int, num_blocks: int, *, block_size: int, kernel_size: int,
                      kernel_stride: int, scale: float, raw: bool = False, rows: int = 128,
                      block_c: int | None = None, num_warps: int | None = None,
                      num_stages: int = 2) -> Tensor | tuple[Tensor, Tensor]:
    """Block scores ``[B, Hkv, C, NB]`` fp32 (``_block_scores`` of the group-summed probabilities) for queries
    ``q [B, C, H, D]`` at positions ``pos0 ..``; dots in q's 16-bit dtype (fp32 q: bf16).

    ``raw=True`` returns the kernel's two outputs ``(gmax, edge)`` instead, both ``[B, Hkv, C, NB]``: the block
    score is ``max(gmax[m], edge[m - 1])`` (``triton_topk.select_topk`` combines them in registers).
    ``rows`` (tokens x heads per program), ``block_c`` (compressed keys per tile, a multiple of the pooling ratio),
    ``num_warps`` and ``num_stages`` are launch settings (benchmarks sweep them; the result does not change)."""
    B, C, H, D = q.shape
    Nc, Hkv = kc.shape[1], kc.shape[2]
    G = H // Hkv
    ratio = block_size // kernel_stride
    lowp = q.dtype if q.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if interpret:  # the CPU interpreter's 16-bit dots are not faithful: check the kernel's logic in fp32
        lowp = torch.float32
    q = q.to(lowp).contiguous()
    kc = kc.to(lowp).contiguous()
    BLOCK_G = max(1, triton.next_power_of_2(G))
    BLOCK_M = max(1, rows // BLOCK_G)  # 128 rows (tokens x heads) per program by default
    BLOCK_C = max(block_c or 64, ratio)
    if BLOCK_C % ratio or BLOCK_C & (BLOCK_C - 1):
        raise ValueError(f"block_c must be a power of two and a multiple of block_size / kernel_stride, got {BLOCK_C}")
    BLOCK_D = max(16, triton.next_power_of_2(D))
    meta = dict(KSIZE=kernel_size, KSTRIDE=kernel_stride, BLOCK_M=BLOCK_M, BLOCK_G=BLOCK_G, BLOCK_C=BLOCK_C,
                BLOCK_D=BLOCK_D, FULL_LOOP=triton.cdiv(Nc, BLOCK_C) * BLOCK_C if interpret else 0)
    warps = num_warps or (8 if BLOCK_M * BLOCK_G >= 128 else 4)
    strides = (q.stride(0), q.stride(1), q.stride(2), kc.stride(0), kc.stride(1), kc.stride(2))
    qk_scale = float(scale) * _LOG2E
    grid = (triton.cdiv(C, BLOCK_M), B * Hkv)
    lse = torch.empty(B * Hkv, C, G, dtype=torch.float32, device=q.device)
    gmax = torch.zeros(B * Hkv, C, num_blocks, dtype=torch.float32, device=q.device)
    edge = torch.zeros_like(gmax)
    if C == 0 or Nc == 0:
        gmax = gmax.view(B, Hkv, C, num_blocks)
        return (gmax, edge.view(B, Hkv, C, num_blocks)) if raw else gmax
    _lse_kernel[grid](q, kc, lse, qk_scale, pos0, *strides, C, Nc, Hkv, G, D, num_warps=warps, num_stages=num_stages,
                      **meta)
    _blockscore_kernel[grid](q, kc, lse, gmax, edge, qk_scale, pos0, *strides, C, Nc, num_blocks, Hkv, G, D,
                             RATIO=ratio, num_warps=warps, num_stages=num_stages, **meta)
    if raw:
        return gmax.view(B, Hkv, C, num_blocks), edge.view(B, Hkv, C, num_blocks)
    # Block m's pooling window is compressed keys [r m - 1, r m + r - 1]: its own stride group plus the last
    # key of the previous group.
    gmax[..., 1:] = torch.maximum(gmax[..., 1:], edge[..., :-1])
    del edge
    return gmax.view(B, Hkv, C, num_blocks)


__all__ = ["block_scores_lowp", "supported"]
