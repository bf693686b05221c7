"""Triton block-sparse attention with per-token KV-block selection (InfLLM-V2 stage 2), forward and backward.

Each query token has its own list of selected KV blocks, shared by the G query heads of its GQA group. One
program handles one token and one kv head: its tile is the group's G heads (padded to >= 16 rows for the
tensor cores) against ``BLOCK_N`` keys of one selected block at a time, with an online softmax (FlashAttention
style). Within a block, keys after the query position (its own block) and past ``Tk`` are masked.

Inputs of the kernels (built by ``fast.py``):
    q ``[B, Tq, H, D]``, k ``[B, Tk, Hkv, D]``, v ``[B, Tk, Hkv, Dv]`` contiguous; query i sits at ``Tk - Tq + i``;
    idx ``[B, Hkv, Tq, S]`` int32 selected block ids (the first ``cnt`` are valid); cnt ``[B, Hkv, Tq]`` int32.
Forward returns o ``[B, Tq, H, Dv]`` and lse ``[B, H, Tq]`` fp32 (+inf for a query that sees no key, whose output is
zero). Backward recomputes the probabilities from lse; dq is written per token, dk/dv are accumulated with fp32
atomics into ``[B, Tk, Hkv, *]`` buffers (several tokens select the same block).

fp32 inputs use IEEE fp32 dot products (no TF32) so the fast path matches the fp32 reference closely.
This module imports triton at import time: import it only where triton is available (``fast.py`` does so lazily).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _sparse_fwd_kernel(
    Q, K, V, O, LSE, IDX, CNT,
    scale,
    s_qb, s_qt, s_qh,
    s_kb, s_kt, s_kh,
    s_vb, s_vt, s_vh,
    s_ob, s_ot, s_oh,
    s_lb, s_lh,
    s_ib, s_ih, s_it,
    s_cb, s_ch,
    Tq, Tk, HKV, G, D, DV, S: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, IEEE: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)  # int64 offsets: t * stride overflows int32 beyond ~512K tokens
    bh = tl.program_id(1).to(tl.int64)
    b = bh // HKV
    hk = bh % HKV
    pos = Tk - Tq + t
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_N)
    hmask = offs_h < G
    dmask = offs_d < D
    dvmask = offs_dv < DV
    heads = hk * G + offs_h
    q = tl.load(Q + b * s_qb + t * s_qt + heads[:, None] * s_qh + offs_d[None, :],
                mask=hmask[:, None] & dmask[None, :], other=0.0)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_DV], tl.float32)
    cnt = tl.load(CNT + b * s_cb + hk * s_ch + t)
    for s in range(0, S):
        # Entries past cnt are -1 padding: fully masked (a runtime loop bound of cnt would also do on GPU, but
        # the Triton interpreter used by the CPU test needs a plain int bound).
        blk = tl.load(IDX + b * s_ib + hk * s_ih + t * s_it + s).to(tl.int64)
        blk_ok = (s < cnt) & (blk >= 0)
        for n0 in range(0, BLOCK_SIZE, BLOCK_N):
            in_blk = (n0 + offs_n) < BLOCK_SIZE
            keys = blk * BLOCK_SIZE + n0 + offs_n
            kmask = in_blk & (keys <= pos) & (keys < Tk) & blk_ok
            k = tl.load(K + b * s_kb + keys[:, None] * s_kt + hk * s_kh + offs_d[None, :],
                        mask=kmask[:, None] & dmask[None, :], other=0.0)
            if IEEE:
                sc = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                sc = tl.dot(q, tl.trans(k))
            sc = tl.where(kmask[None, :], sc * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(sc, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(sc - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vv = tl.load(V + b * s_vb + keys[:, None] * s_vt + hk * s_vh + offs_dv[None, :],
                         mask=kmask[:, None] & dvmask[None, :], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, vv, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(vv.dtype), vv)
            m_i = m_new
    has = l_i > 0
    o = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("inf"))
    tl.store(O + b * s_ob + t * s_ot + heads[:, None] * s_oh + offs_dv[None, :], o.to(O.dtype.element_ty),
             mask=hmask[:, None] & dvmask[None, :])
    tl.store(LSE + b * s_lb + heads * s_lh + t, lse, mask=hmask)


@triton.jit
def _sparse_bwd_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, DK, DV_, IDX, CNT,
    scale,
    s_qb, s_qt, s_qh,
    s_kb, s_kt, s_kh,
    s_vb, s_vt, s_vh,
    s_ob, s_ot, s_oh,
    s_lb, s_lh,
    s_ib, s_ih, s_it,
    s_cb, s_ch,
    s_dkb, s_dkt, s_dkh,
    s_dvb, s_dvt, s_dvh,
    Tq, Tk, HKV, G, D, DV, S: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, IEEE: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)  # int64 offsets: t * stride overflows int32 beyond ~512K tokens
    bh = tl.program_id(1).to(tl.int64)
    b = bh // HKV
    hk = bh % HKV
    pos = Tk - Tq + t
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_N)
    hmask = offs_h < G
    dmask = offs_d < D
    dvmask = offs_dv < DV
    heads = hk * G + offs_h
    q = tl.load(Q + b * s_qb + t * s_qt + heads[:, None] * s_qh + offs_d[None, :],
                mask=hmask[:, None] & dmask[None, :], other=0.0)
    do = tl.load(DO + b * s_ob + t * s_ot + heads[:, None] * s_oh + offs_dv[None, :],
                 mask=hmask[:, None] & dvmask[None, :], other=0.0)
    lse = tl.load(LSE + b * s_lb + heads * s_lh + t, mask=hmask, other=float("inf"))
    delta = tl.load(DELTA + b * s_lb + heads * s_lh + t, mask=hmask, other=0.0)
    dq = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    cnt = tl.load(CNT + b * s_cb + hk * s_ch + t)
    for s in range(0, S):
        # Entries past cnt are -1 padding: fully masked (a runtime loop bound of cnt would also do on GPU, but
        # the Triton interpreter used by the CPU test needs a plain int bound).
        blk = tl.load(IDX + b * s_ib + hk * s_ih + t * s_it + s).to(tl.int64)
        blk_ok = (s < cnt) & (blk >= 0)
        for n0 in range(0, BLOCK_SIZE, BLOCK_N):
            in_blk = (n0 + offs_n) < BLOCK_SIZE
            keys = blk * BLOCK_SIZE + n0 + offs_n
            kmask = in_blk & (keys <= pos) & (keys < Tk) & blk_ok
            k = tl.load(K + b * s_kb + keys[:, None] * s_kt + hk * s_kh + offs_d[None, :],
                        mask=kmask[:, None] & dmask[None, :], other=0.0)
            vv = tl.load(V + b * s_vb + keys[:, None] * s_vt + hk * s_vh + offs_dv[None, :],
                         mask=kmask[:, None] & dvmask[None, :], other=0.0)
            if IEEE:
                sc = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                sc = tl.dot(q, tl.trans(k))
            p = tl.exp(sc * scale - lse[:, None])
            p = tl.where(kmask[None, :] & hmask[:, None], p, 0.0)
            if IEEE:
                dp = tl.dot(do, tl.trans(vv), input_precision="ieee")
            else:
                dp = tl.dot(do, tl.trans(vv))
            ds = p * (dp - delta[:, None])
            if IEEE:
                dq += tl.dot(ds, k, input_precision="ieee")
                dk = tl.dot(tl.trans(ds), q, input_precision="ieee") * scale
                dv = tl.dot(tl.trans(p), do, input_precision="ieee")
            else:
                dq += tl.dot(ds.to(k.dtype), k)
                dk = tl.dot(tl.trans(ds.to(q.dtype)), q) * scale
                dv = tl.dot(tl.trans(p.to(do.dtype)), do)
            tl.atomic_add(DK + b * s_dkb + keys[:, None] * s_dkt + hk * s_dkh + offs_d[None, :], dk,
                          mask=kmask[:, None] & dmask[None, :])
            tl.atomic_add(DV_ + b * s_dvb + keys[:, None] * s_dvt + hk * s_dvh + offs_dv[None, :], dv,
                          mask=kmask[:, None] & dvmask[None, :])
    tl.store(DQ + b * s_qb + t * s_qt + heads[:, None] * s_qh + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=hmask[:, None] & dmask[None, :])


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(int(n)))


def _meta(q: Tensor, k: Tensor, v: Tensor, block_size: int) -> dict:
    G = q.shape[2] // k.shape[2]
    bd, bdv = _pow2(q.shape[3]), _pow2(v.shape[3])
    bn = min(64, _pow2(block_size))
    if max(bd, bdv) > 128:
        bn = min(bn, 32)
    return dict(BLOCK_SIZE=block_size, BLOCK_H=_pow2(G), BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv,
                IEEE=q.dtype == torch.float32)


def sparse_fwd(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, cnt: Tensor, scale: float, block_size: int,
               **launch):
    """Forward kernel; ``launch`` optionally sets Triton's ``num_warps`` / ``num_stages`` (benchmarks compare them;
    the default path uses neither)."""
    B, Tq, H, D = q.shape
    Tk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    o = torch.empty(B, Tq, H, Dv, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, Tq, dtype=torch.float32, device=q.device)
    if Tq == 0:
        return o, lse
    _sparse_fwd_kernel[(Tq, B * Hkv)](
        q, k, v, o, lse, idx, cnt, scale,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        lse.stride(0), lse.stride(1),
        idx.stride(0), idx.stride(1), idx.stride(2),
        cnt.stride(0), cnt.stride(1),
        Tq, Tk, Hkv, H // Hkv, D, Dv, idx.shape[-1],
        **_meta(q, k, v, block_size), **launch,
    )
    return o, lse


def sparse_bwd(q, k, v, o, lse, do, idx, cnt, scale: float, block_size: int):
    B, Tq, H, D = q.shape
    Tk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    do = do.contiguous()
    delta = (o.float() * do.float()).sum(-1).transpose(1, 2).contiguous()  # [B, H, Tq]
    dq = torch.empty_like(q)
    dk = torch.zeros(B, Tk, Hkv, D, dtype=torch.float32, device=q.device)
    dv = torch.zeros(B, Tk, Hkv, Dv, dtype=torch.float32, device=q.device)
    if Tq > 0:
        _sparse_bwd_kernel[(Tq, B * Hkv)](
            q, k, v, do, lse, delta, dq, dk, dv, idx, cnt, scale,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            do.stride(0), do.stride(1), do.stride(2),
            lse.stride(0), lse.stride(1),
            idx.stride(0), idx.stride(1), idx.stride(2),
            cnt.stride(0), cnt.stride(1),
            dk.stride(0), dk.stride(1), dk.stride(2),
            dv.stride(0), dv.stride(1), dv.stride(2),
            Tq, Tk, Hkv, H // Hkv, D, Dv, idx.shape[-1],
            **_meta(q, k, v, block_size),
        )
    return dq, dk.to(k.dtype), dv.to(v.dtype)


class SparseAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: gradients reach q, k, v; the selection (idx, cnt) is discrete and gets none."""

    @staticmethod
    def forward(ctx, q, k, v, idx, cnt, scale, block_size):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = sparse_fwd(q, k, v, idx, cnt, scale, block_size)
        ctx.save_for_backward(q, k, v, o, lse, idx, cnt)
        ctx.scale, ctx.block_size = scale, block_size
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, idx, cnt = ctx.saved_tensors
        dq, dk, dv = sparse_bwd(q, k, v, o, lse, do, idx, cnt, ctx.scale, ctx.block_size)
        return dq, dk, dv, None, None, None, None


def triton_sparse_attention(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, cnt: Tensor, scale: float,
                            block_size: int) -> Tensor:
    """Attention of each query over its selected blocks: ``o [B, Tq, H, Dv]`` in q's dtype (see module doc)."""
    return SparseAttentionFunction.apply(q, k, v, idx, cnt, scale, block_size)
