"""Decode attention over a fixed-size KV buffer whose filled length lives in a device tensor (CUDA-graph safe).

One query token per sequence attends to keys ``0 .. pos`` of a buffer ``[B, L, Hkv, D]`` allocated for the whole
request; ``pos`` is a 0-d int64 device tensor, so shapes and addresses never change from one token to the next and
the step can be captured once in a ``torch.cuda.CUDAGraph`` and replayed.

    decode_attention        the seam: the Triton split-KV kernel on CUDA (when triton imports and the kernel passed
                            its one-time check against the reference), else ``decode_attention_reference``
    decode_attention_reference   plain PyTorch, fp32: scores over the first ``limit`` rows, keys after ``pos`` masked
    masked_group_attention  fp32 GQA attention of one token under an explicit key mask (shared by the sparse and
                            sliding static paths)

Shapes: q [B, 1, H, D]; k, v [B, L, Hkv, D]; H % Hkv == 0 (query head h reads kv head h // (H // Hkv)).

The kernel is flash-decoding (split-KV): program (b·Hkv + kv head, split) reads one slice of the key range, all G
query heads of the group at once (one MMA of [G, D] × [D, BLOCK_N]), and writes an unnormalised partial output with
its running max and sum; the splits are merged in fp32 by their log-sum-exps. Splits that start past ``pos`` return
at once, so a token reads only the filled part of the buffer however large it is.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from torch import Tensor

from ..ops.attention.naive import masked_softmax

_state = {"checked": {}, "failed": None}


def masked_group_attention(q: Tensor, k: Tensor, v: Tensor, visible: Tensor, scale: float) -> Tensor:
    """fp32 attention of one query token per sequence, query heads grouped by kv head.

    Args:
        q: ``[B, 1, H, D]``.
        k: ``[B, Hkv, N, D]`` keys per kv head (any float dtype).
        v: ``[B, Hkv, N, Dv]``.
        visible: bool broadcastable to ``[B, Hkv, N]``.
        scale: logit scale.

    Returns:
        ``[B, 1, H, Dv]`` fp32.
    """
    B, _, H, D = q.shape
    Hkv = k.shape[1]
    qg = q.float().reshape(B, Hkv, H // Hkv, D)  # [B, Hkv, G, D]
    scores = (qg @ k.float().transpose(-1, -2)) * scale  # [B, Hkv, G, N]
    p = masked_softmax(scores, visible.unsqueeze(-2))
    o = p @ v.float()  # [B, Hkv, G, Dv]
    return o.reshape(B, 1, H, v.shape[-1])


def decode_attention_reference(q: Tensor, k: Tensor, v: Tensor, pos: Tensor, *, limit: int | None = None,
                               scale: float | None = None) -> Tensor:
    """Attention of q (the token at position ``pos``) over keys ``0 .. pos`` of the buffers; fp32 [B, 1, H, Dv].

    ``limit`` (a Python int) bounds the rows read: the caller promises ``pos < limit``."""
    limit = k.shape[1] if limit is None else limit
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    kk = k[:, :limit].transpose(1, 2)  # [B, Hkv, N, D], a view
    vv = v[:, :limit].transpose(1, 2)
    visible = torch.arange(limit, device=q.device) <= pos
    return masked_group_attention(q, kk, vv, visible, scale)


try:  # optional: the `gpu` extra
    import triton as _triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU installs
    _triton = None

if _triton is not None:
    @_triton.jit
    def _block(q, K, V, offs_n, end, b, h, m_i, l_i, acc, offs_d, offs_dv, stride_kb, stride_kn, stride_kh,
               stride_vb, stride_vn, stride_vh, scale, D: tl.constexpr, DV: tl.constexpr, PREC: tl.constexpr):
        """One BLOCK_N slice of keys into the running (max, sum, output) of the online softmax."""
        mask_n = offs_n < end
        k = tl.load(K + b * stride_kb + offs_n[None, :] * stride_kn + h * stride_kh + offs_d[:, None],
                    mask=mask_n[None, :] & (offs_d[:, None] < D), other=0.0)  # [BLOCK_D, BLOCK_N]
        s = tl.dot(q, k, input_precision=PREC) * scale  # fp32 accumulation; PREC "ieee" keeps fp32 out of TF32
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key yet: exp(-inf - 0) = 0, not NaN
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        vblk = tl.load(V + b * stride_vb + offs_n[:, None] * stride_vn + h * stride_vh + offs_dv[None, :],
                       mask=mask_n[:, None] & (offs_dv[None, :] < DV), other=0.0)  # [BLOCK_N, BLOCK_DV]
        acc = acc * alpha[:, None] + tl.dot(p.to(vblk.dtype), vblk, input_precision=PREC)
        return m_new, l_i, acc

    # Lengths vary per request: no integer specialisation, so one compiled kernel serves every buffer length.
    @_triton.jit(do_not_specialize=["limit", "split_len"])
    def _decode_split_kv(
        Q, K, V, POS, O_PART, M_PART, L_PART,
        stride_qb, stride_qh,
        stride_kb, stride_kn, stride_kh,
        stride_vb, stride_vn, stride_vh,
        limit, split_len, scale,
        HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
        BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        INTERPRET_ITERS: tl.constexpr, PREC: tl.constexpr,
    ):
        bh = tl.program_id(0)
        split = tl.program_id(1)
        nsplit = tl.num_programs(1)
        b = (bh // HKV).to(tl.int64)  # b * stride_kb passes 2^31 for a batch of 1M-token buffers
        h = bh % HKV
        n_keys = tl.minimum(tl.load(POS).to(tl.int32) + 1, limit)
        start = split * split_len
        end = tl.minimum(start + split_len, n_keys)
        offs_g = tl.arange(0, BLOCK_G)
        offs_d = tl.arange(0, BLOCK_D)
        offs_dv = tl.arange(0, BLOCK_DV)
        mask_g = offs_g < G
        q_ptrs = Q + b * stride_qb + (h * G + offs_g[:, None]) * stride_qh + offs_d[None, :]
        q = tl.load(q_ptrs, mask=mask_g[:, None] & (offs_d[None, :] < D), other=0.0)
        m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_DV], dtype=tl.float32)
        if INTERPRET_ITERS > 0:
            # The interpreter wants a compile-time trip count; the slices past ``end`` are fully masked.
            for i in range(0, INTERPRET_ITERS):
                offs_n = start + i * BLOCK_N + tl.arange(0, BLOCK_N)
                m_i, l_i, acc = _block(q, K, V, offs_n, end, b, h, m_i, l_i, acc, offs_d, offs_dv, stride_kb,
                                       stride_kn, stride_kh, stride_vb, stride_vn, stride_vh, scale, D, DV, PREC)
        else:
            # Compiled: only the filled part of this split is visited (a split past ``pos`` does nothing).
            for n0 in range(start, end, BLOCK_N):
                offs_n = n0 + tl.arange(0, BLOCK_N)
                m_i, l_i, acc = _block(q, K, V, offs_n, end, b, h, m_i, l_i, acc, offs_d, offs_dv, stride_kb,
                                       stride_kn, stride_kh, stride_vb, stride_vn, stride_vh, scale, D, DV, PREC)
        row = (bh * nsplit + split) * G + offs_g
        tl.store(M_PART + row, m_i, mask=mask_g)
        tl.store(L_PART + row, l_i, mask=mask_g)
        tl.store(O_PART + row[:, None] * DV + offs_dv[None, :], acc, mask=mask_g[:, None] & (offs_dv[None, :] < DV))




def _num_splits(limit: int, bh: int, block_n: int) -> int:
    # ~4 programs per SM of an H200 (132 SMs) in all, but no split shorter than 4 key blocks.
    target = max(1, (4 * 132) // max(1, bh))
    return max(1, min(target, math.ceil(limit / (4 * block_n))))


def decode_attention_triton(q: Tensor, k: Tensor, v: Tensor, pos: Tensor, *, limit: int | None = None,
                            scale: float | None = None, block_n: int = 64) -> Tensor:
    """``decode_attention_reference`` as a Triton split-KV kernel (fp32 result [B, 1, H, Dv])."""
    if _triton is None:
        raise RuntimeError("triton is not installed (the `gpu` extra)")
    B, _, H, D = q.shape
    L, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    limit = L if limit is None else limit
    scale = D**-0.5 if scale is None else scale
    G = H // Hkv
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("decode_attention_triton needs unit stride in the head dimension")
    q = q.to(k.dtype)
    nsplit = _num_splits(limit, B * Hkv, block_n)
    split_len = math.ceil(math.ceil(limit / nsplit) / block_n) * block_n
    nsplit = math.ceil(limit / split_len)
    o_part = torch.empty(B * Hkv * nsplit * G, Dv, device=q.device, dtype=torch.float32)
    m_part = torch.empty(B * Hkv * nsplit * G, device=q.device, dtype=torch.float32)
    l_part = torch.empty_like(m_part)
    _decode_split_kv[(B * Hkv, nsplit)](
        q, k, v, pos, o_part, m_part, l_part,
        q.stride(0), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        limit, split_len, scale,
        HKV=Hkv, G=G, D=D, DV=Dv,
        BLOCK_G=max(16, _triton.next_power_of_2(G)), BLOCK_N=block_n,
        BLOCK_D=max(16, _triton.next_power_of_2(D)), BLOCK_DV=max(16, _triton.next_power_of_2(Dv)),
        INTERPRET_ITERS=split_len // block_n if os.environ.get("TRITON_INTERPRET") == "1" else 0,
        PREC="ieee" if k.dtype == torch.float32 else "tf32",
        num_warps=4, num_stages=2,
    )
    # Merge the splits by their log-sum-exps (an empty split has m = -inf, l = 0 and weighs 0).
    m = m_part.view(B, Hkv, nsplit, G)
    m_max = m.amax(dim=2, keepdim=True)
    w = torch.exp(m - m_max)  # [B, Hkv, S, G]
    w = torch.where(torch.isfinite(m), w, torch.zeros_like(w))
    denom = (w * l_part.view(B, Hkv, nsplit, G)).sum(dim=2)  # [B, Hkv, G]
    o = (w.unsqueeze(-1) * o_part.view(B, Hkv, nsplit, G, Dv)).sum(dim=2) / denom.unsqueeze(-1)
    return o.reshape(B, 1, H, Dv)


def _use_triton(q: Tensor, k: Tensor, v: Tensor, pos: Tensor, limit: int, scale: float) -> bool:
    """True once the Triton kernel ran on this device/dtype/head shape and matched the reference (checked once, on
    the first real call, outside any graph capture; a failure or mismatch warns once and keeps the reference)."""
    if q.device.type != "cuda" or _state["failed"] is not None:
        return False
    key = (q.device, k.dtype, q.shape[2], k.shape[2], q.shape[3], v.shape[3])
    ok = _state["checked"].get(key)
    if ok is not None:
        return ok
    if torch.cuda.is_current_stream_capturing():
        return False  # never first-check inside a capture; the warm-up steps ran the check already
    try:
        fast = decode_attention_triton(q, k, v, pos, limit=limit, scale=scale)
        ref = decode_attention_reference(q, k, v, pos, limit=limit, scale=scale)
        tol = 1e-4 if k.dtype == torch.float32 else 2e-2
        err = ((fast - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
        ok = err <= tol
        if not ok:
            _state["failed"] = f"max relative difference {err:.2e} > {tol}"
    except Exception as e:  # noqa: BLE001 — any failure of the optional kernel means: use the reference
        ok = False
        _state["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not ok:
        warnings.warn(f"static decode attention: the Triton kernel is not used ({_state['failed']}); "
                      "falling back to the PyTorch reference", stacklevel=3)
    _state["checked"][key] = ok
    return ok


def decode_attention(q: Tensor, k: Tensor, v: Tensor, pos: Tensor, *, limit: int | None = None,
                     scale: float | None = None) -> Tensor:
    """The seam: q [B, 1, H, D] over keys 0..pos of k, v [B, L, Hkv, D]; returns [B, 1, H, Dv] in q's dtype."""
    limit = k.shape[1] if limit is None else limit
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if _use_triton(q, k, v, pos, limit, scale):
        o = decode_attention_triton(q, k, v, pos, limit=limit, scale=scale)
    else:
        o = decode_attention_reference(q, k, v, pos, limit=limit, scale=scale)
    return o.to(q.dtype)


__all__ = ["decode_attention", "decode_attention_reference", "decode_attention_triton", "masked_group_attention"]
