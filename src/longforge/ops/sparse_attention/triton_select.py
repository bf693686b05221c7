"""Triton kernels for InfLLM-V2 block scoring (stage 1): group-summed compressed-attention probabilities.

For query chunk positions ``pos0 + i`` and compressed keys ``kc [B, Nc, Hkv, D]`` (key j visible iff
``j * s + l - 1 <= t``), computes ``shared [B, Hkv, C, Nc]`` = sum over the G heads of a group of
``softmax_j(scale * q_h . kc_j)`` over the visible j (0 elsewhere) -- the same quantity as the reference's
``masked_softmax(...).sum(dim=2)`` -- without materialising the per-head ``[G, C, Nc]`` logits:

1. ``_lse_partial_kernel``, grid (query tiles, compressed-key tiles, B * Hkv): per row (token, head) the max and
   sum of exp over one key tile; PyTorch combines the tiles into the log-sum-exp (rows with no visible key: +inf);
2. ``_group_prob_kernel``, same grid: ``exp(s - lse)`` summed over the group's heads, stored per key tile.

No loop has a runtime bound (every tile is its own program), so the kernels also run under ``TRITON_INTERPRET=1``.
Tiles no query of the tile can see are skipped. Dots use ``tf32x3`` (fp32-level accuracy on tensor cores) on
the GPU; the result equals the fp32 reference up to rounding (summation order), which can only flip blocks whose
scores tie to ~1e-6 relative. Opt-in ``low_precision`` (``LONGFORGE_SPARSE_SCORES=triton-lowp``) runs the dots in
q's bf16/fp16 (as InfLLM-V2's own stage-1 kernel does): about 3x cheaper, but the compressed keys are rounded to
16 bits, so blocks whose fp32 scores are within ~1e-3 of each other can be ranked differently from the
reference.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def gqa_rows(mt, C, G, BLOCK_M: tl.constexpr, BLOCK_G: tl.constexpr):
    """The rows of a program's tile: row r = (token ``mt * BLOCK_M + r // BLOCK_G``, head ``g = r % BLOCK_G`` of the
    GQA group); returns (tok, g, row_ok) with row_ok false for tokens past ``C`` and heads past ``G``."""
    r = tl.arange(0, BLOCK_M * BLOCK_G)
    tok = mt * BLOCK_M + r // BLOCK_G
    g = r % BLOCK_G
    return tok, g, (tok < C) & (g < G)


@triton.jit
def _lse_partial_kernel(
    Q, KC, PM, PS,
    scale, pos0,
    s_qb, s_qt, s_qh,
    s_cb, s_cn, s_ch,
    C, Nc, HKV, G, D, n_ct,
    KSIZE: tl.constexpr, KSTRIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, LOWP: tl.constexpr,
):
    mt = tl.program_id(0).to(tl.int64)
    ct = tl.program_id(1).to(tl.int64)
    bh = tl.program_id(2).to(tl.int64)
    b = bh // HKV
    hk = bh % HKV
    R: tl.constexpr = BLOCK_M * BLOCK_G
    tok, g, row_ok = gqa_rows(mt, C, G, BLOCK_M, BLOCK_G)
    pos = pos0 + tok
    j = ct * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    m = tl.full([R], float("-inf"), tl.float32)
    ssum = tl.zeros([R], tl.float32)
    last_pos = pos0 + tl.minimum(mt * BLOCK_M + BLOCK_M, C) - 1
    if ct * BLOCK_C * KSTRIDE + KSIZE - 1 <= last_pos:
        q = tl.load(Q + b * s_qb + tok[:, None] * s_qt + (hk * G + g)[:, None] * s_qh + offs_d[None, :],
                    mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0)
        kc = tl.load(KC + b * s_cb + j[:, None] * s_cn + hk * s_ch + offs_d[None, :],
                     mask=(j < Nc)[:, None] & (offs_d < D)[None, :], other=0.0)
        if LOWP:  # q's 16-bit dtype on the tensor cores, fp32 accumulation (opt-in, see module doc)
            q = q.to(Q.dtype.element_ty)
            kc = kc.to(Q.dtype.element_ty)
        else:
            q = q.to(tl.float32)
            kc = kc.to(tl.float32)
        if LOWP:
            sc = tl.dot(q, tl.trans(kc)) * scale
        else:
            sc = tl.dot(q, tl.trans(kc), input_precision=PRECISION) * scale
        vis = row_ok[:, None] & (j < Nc)[None, :] & (j * KSTRIDE + KSIZE - 1 <= pos[:, None])
        sc = tl.where(vis, sc, float("-inf"))
        m = tl.max(sc, 1)
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        ssum = tl.sum(tl.exp(sc - m_safe[:, None]), 1)
    out = ((bh * n_ct + ct) * C + tok) * G + g
    tl.store(PM + out, m, mask=row_ok)
    tl.store(PS + out, ssum, mask=row_ok)


@triton.jit
def _group_prob_kernel(
    Q, KC, LSE, SH,
    scale, pos0,
    s_qb, s_qt, s_qh,
    s_cb, s_cn, s_ch,
    C, Nc, HKV, G, D,
    KSIZE: tl.constexpr, KSTRIDE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, LOWP: tl.constexpr,
):
    mt = tl.program_id(0).to(tl.int64)
    ct = tl.program_id(1).to(tl.int64)
    bh = tl.program_id(2).to(tl.int64)
    b = bh // HKV
    hk = bh % HKV
    tok, g, row_ok = gqa_rows(mt, C, G, BLOCK_M, BLOCK_G)
    pos = pos0 + tok
    j = ct * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_d = tl.arange(0, BLOCK_D)
    last_pos = pos0 + tl.minimum(mt * BLOCK_M + BLOCK_M, C) - 1
    if ct * BLOCK_C * KSTRIDE + KSIZE - 1 <= last_pos:
        q = tl.load(Q + b * s_qb + tok[:, None] * s_qt + (hk * G + g)[:, None] * s_qh + offs_d[None, :],
                    mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0)
        kc = tl.load(KC + b * s_cb + j[:, None] * s_cn + hk * s_ch + offs_d[None, :],
                     mask=(j < Nc)[:, None] & (offs_d < D)[None, :], other=0.0)
        if LOWP:  # q's 16-bit dtype on the tensor cores, fp32 accumulation (opt-in, see module doc)
            q = q.to(Q.dtype.element_ty)
            kc = kc.to(Q.dtype.element_ty)
        else:
            q = q.to(tl.float32)
            kc = kc.to(tl.float32)
        lse = tl.load(LSE + (bh * C + tok) * G + g, mask=row_ok, other=float("inf"))
        if LOWP:
            sc = tl.dot(q, tl.trans(kc)) * scale
        else:
            sc = tl.dot(q, tl.trans(kc), input_precision=PRECISION) * scale
        vis = row_ok[:, None] & (j < Nc)[None, :] & (j * KSTRIDE + KSIZE - 1 <= pos[:, None])
        p = tl.where(vis, tl.exp(sc - lse[:, None]), 0.0)
        shared = tl.sum(tl.reshape(p, [BLOCK_M, BLOCK_G, BLOCK_C]), 1)  # [BLOCK_M, BLOCK_C]
        tm = mt * BLOCK_M + tl.arange(0, BLOCK_M)
        tl.store(SH + (bh * C + tm[:, None]) * Nc + j[None, :], shared,
                 mask=(tm < C)[:, None] & (j < Nc)[None, :])


def group_probabilities(q: Tensor, kc: Tensor, pos0: int, *, kernel_size: int, kernel_stride: int,
                        scale: float, low_precision: bool = False) -> Tensor:
    """``shared [B, Hkv, C, Nc]`` fp32 for queries ``q [B, C, H, D]`` at positions ``pos0 .. pos0 + C - 1``.

    ``low_precision`` (only for bf16/fp16 q): dots in q's dtype (kc rounded to it) instead of fp32-accurate tf32x3.
    """
    B, C, H, D = q.shape
    Nc, Hkv = kc.shape[1], kc.shape[2]
    G = H // Hkv
    q = q.contiguous()
    kc = kc.float().contiguous()
    BLOCK_G = max(1, triton.next_power_of_2(G))
    BLOCK_M = max(1, 64 // BLOCK_G)  # 64 rows (tokens x heads) per tile, >= 16 for the tensor cores
    BLOCK_C = 64
    BLOCK_D = max(16, triton.next_power_of_2(D))
    n_mt, n_ct = triton.cdiv(C, BLOCK_M), triton.cdiv(Nc, BLOCK_C)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    meta = dict(KSIZE=kernel_size, KSTRIDE=kernel_stride, BLOCK_M=BLOCK_M, BLOCK_G=BLOCK_G, BLOCK_C=BLOCK_C,
                BLOCK_D=BLOCK_D, PRECISION="ieee" if interpret else "tf32x3",
                LOWP=bool(low_precision) and q.dtype in (torch.bfloat16, torch.float16))
    strides = (q.stride(0), q.stride(1), q.stride(2), kc.stride(0), kc.stride(1), kc.stride(2))
    pm = torch.empty(B * Hkv, n_ct, C, G, dtype=torch.float32, device=q.device)
    ps = torch.empty_like(pm)
    grid = (n_mt, n_ct, B * Hkv)
    _lse_partial_kernel[grid](q, kc, pm, ps, scale, pos0, *strides, C, Nc, Hkv, G, D, n_ct, **meta)
    mx = pm.amax(dim=1)  # [B*Hkv, C, G]
    mx_safe = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    total = (ps * torch.exp(pm - mx_safe[:, None])).sum(dim=1)
    del pm, ps
    lse = torch.where(total > 0, mx_safe + torch.log(total.clamp(min=1e-38)), torch.full_like(total, float("inf")))
    shared = torch.zeros(B * Hkv, C, Nc, dtype=torch.float32, device=q.device)
    _group_prob_kernel[grid](q, kc, lse.contiguous(), shared, scale, pos0, *strides, C, Nc, Hkv, G, D, **meta)
    return shared.view(B, Hkv, C, Nc)


__all__ = ["group_probabilities"]
