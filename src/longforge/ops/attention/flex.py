"""FlexAttention for causal-with-offset, sliding-window and key-padded attention (used by ``sdpa.fast_attention``).

The ``BlockMask`` is built from per-query-block KV-block ranges with ``BlockMask.from_kv_blocks`` (the visible
keys of a query block form one contiguous range of key blocks; the interior ones are "full" when there is no
padding), so its size is ``[ceil(Tq/128), ceil(Tk/128)]`` and no dense ``[Tq, Tk]`` table is ever built. The
``mask_mod`` refines partial blocks per token. Offsets and windows enter as tensors, so new lengths do not
recompile. A query with no visible key (all its keys padded) is given its own key in the mask (no NaN) and its
output is zeroed afterwards, as the reference defines.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BLOCK = 128
_compiled = None


def _flex_fn(device_type: str):
    """Compiled flex_attention on CUDA (uncompiled it materialises scores), eager elsewhere."""
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    if device_type != "cuda":
        return flex_attention
    if _compiled is None:
        _compiled = torch.compile(flex_attention)
    return _compiled


def _mask_to_blocks(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``[nq, nk]`` bool -> (counts ``[1, 1, nq]`` int32, indices ``[1, 1, nq, nk]`` int32, True ones first)."""
    counts = mask.sum(-1, dtype=torch.int32)
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return counts[None, None].contiguous(), order[None, None].contiguous()


def build_block_mask(Tq: int, Tk: int, *, causal: bool, window: int | None, padded: bool, device,
                     mask_mod=None):
    """BlockMask of the positional pattern (query i at ``Tk - Tq + i``) from per-query-block KV-block ranges."""
    from torch.nn.attention.flex_attention import BlockMask

    off = Tk - Tq
    nq, nk = math.ceil(Tq / BLOCK), math.ceil(Tk / BLOCK)
    qb = torch.arange(nq, device=device)
    p0 = off + qb * BLOCK
    p1 = off + torch.clamp((qb + 1) * BLOCK, max=Tq) - 1
    kb = torch.arange(nk, device=device)
    k0 = kb * BLOCK
    k1 = torch.clamp((kb + 1) * BLOCK, max=Tk) - 1
    if causal:
        lo = (p0 - window + 1).clamp(min=0) if window is not None else torch.zeros_like(p0)
        any_vis = (k0[None, :] <= p1[:, None]) & (k1[None, :] >= lo[:, None])
        full = k1[None, :] <= p0[:, None]
        if window is not None:
            full = full & (p1[:, None] - k0[None, :] < window)
    else:
        any_vis = torch.ones(nq, nk, dtype=torch.bool, device=device)
        full = any_vis.clone()
    # Only whole blocks can be full (the ragged last blocks go through mask_mod); padding makes every block partial.
    full = full & ((k1 - k0) == BLOCK - 1)[None, :] & ((p1 - p0) == BLOCK - 1)[:, None]
    if padded:
        full = torch.zeros_like(full)
    partial = any_vis & ~full
    kv_num, kv_idx = _mask_to_blocks(partial)
    full_num, full_idx = _mask_to_blocks(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=BLOCK, mask_mod=mask_mod,
                                    seq_lengths=(Tq, Tk))


def flex_attention_masked(q: Tensor, k: Tensor, v: Tensor, *, scale: float, causal: bool, window: int | None,
                          key_padding_mask: Tensor | None, compiled: bool | None = None) -> Tensor:
    """Exact ``naive_attention`` (validated args) via FlexAttention. ``compiled=None``: compile on CUDA only."""
    B, Tq, H, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    dev = q.device
    off_t = torch.tensor(Tk - Tq, device=dev)
    win_t = torch.tensor(window if window is not None else Tk + 1, device=dev)
    padded = key_padding_mask is not None
    if padded:
        pad = key_padding_mask.to(dev)
        # Queries with no visible key: count real keys in [lo_t, t] with a prefix sum.
        t = torch.arange(Tq, device=dev) + (Tk - Tq)
        cs = torch.nn.functional.pad(pad.long().cumsum(-1), (1, 0))  # [B, Tk + 1]
        hi = (t + 1) if causal else torch.full_like(t, Tk)
        lo = (t - window + 1).clamp(min=0) if (causal and window is not None) else torch.zeros_like(t)
        novis = (cs[:, hi] - cs[:, lo]) == 0  # [B, Tq]
    else:
        pad = novis = None

    def mask_mod(b, h, q_idx, kv_idx):
        tq = q_idx + off_t
        vis = (kv_idx <= tq) & (tq - kv_idx < win_t) if causal else (kv_idx >= 0)
        if padded:
            vis = (vis & pad[b, kv_idx]) | (novis[b, q_idx] & (kv_idx == tq))
        return vis

    block_mask = build_block_mask(Tq, Tk, causal=causal, window=window, padded=padded, device=dev,
                                  mask_mod=mask_mod)
    fn = _flex_fn(dev.type) if compiled is None else (_flex_fn("cuda") if compiled else _flex_fn("cpu"))
    o = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask, scale=scale,
           enable_gqa=H != Hkv)
    o = o.transpose(1, 2)
    if padded and bool(novis.any()):
        o = torch.where(novis[:, :, None, None], torch.zeros((), dtype=o.dtype, device=dev), o)
    return o


__all__ = ["build_block_mask", "flex_attention_masked"]
