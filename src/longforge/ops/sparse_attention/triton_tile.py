"""InfLLM-V2 sparse attention forward with a multi-token query tile: the union of a tile's selected blocks.

The per-token kernel (``triton_kernel._sparse_fwd_kernel``) gives one program one token x the G heads of a GQA
group (M = 16 rows for SALA's 32 / 2 heads) and loads every selected key block once per token: at 128K it is bound
by the bytes it pulls from L2, not by the tensor cores. Consecutive tokens share most of their blocks (the same
init block, the same or an overlapping local window, and -- in a trained model -- similar top-k blocks), so here
one program owns ``BLOCK_T`` consecutive query tokens x the G heads of one kv head (``M = BLOCK_T * G`` rows) and
walks the **union** of the tile's selected blocks, each key block loaded once per tile:

    rows r = (token i, head g), i < BLOCK_T;  U = sorted union over the tile's tokens of their blocks
    for u in U:  s = scale * q_r . k_j  for the keys j of block u,
                 visible iff token i selected u (bit i of ubits[u]) and j <= t_i   (else -inf),
                 online softmax (base 2, fp32) and acc += p v.

Each union entry carries a ``BLOCK_T``-bit mask of the tokens that selected it, so every row still sees exactly
its own blocks: the result equals the per-token kernel's (and the reference's) up to summation order.

The union lists come from ``tile_unions`` (PyTorch: one sort of the tile's ids as ``block * 32 + token``, then a
segmented OR by ``scatter_add`` -- the token bits are distinct powers of two, so the sum is the OR). The tile
kernel does ``|U|`` block visits with M = BLOCK_T * G rows where the per-token kernel does ``sum cnt`` visits
with M = G rows: it wins when the union is small against the tokens' total (``union_ratio = sum |U| / sum cnt``
well below 1). On random inputs top-k blocks are independent from token to token and the union is large;
``fast.py`` then keeps the per-token kernel (see ``TILE_MAX_UNION_RATIO`` there).

Forward only: the autograd path recomputes through the per-token backward kernel from the same ``lse``.
This module imports triton at import time (``fast.py`` imports it lazily). Shapes as ``triton_kernel``.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
MAX_BLOCK_T = 32  # the token mask of a union entry is one int32


@triton.jit
def _sparse_fwd_tile_kernel(
    Q, K, V, O, LSE, UIDX, UBITS, UCNT,
    qk_scale,
    s_qb, s_qt, s_qh,
    s_kb, s_kt, s_kh,
    s_vb, s_vt, s_vh,
    s_ob, s_ot, s_oh,
    s_lb, s_lh,
    s_ub, s_uh, s_ut,
    s_cb, s_ch,
    Tq, Tk, HKV, G, D, DV,
    BLOCK_SIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, IEEE: tl.constexpr,
    FULL_LOOP: tl.constexpr,  # 0 on the GPU (loop to the tile's union count); the interpreter: the list width
):
    tile = tl.program_id(0).to(tl.int64)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // HKV
    hk = bh % HKV
    R: tl.constexpr = BLOCK_T * BLOCK_G
    r = tl.arange(0, R)
    tok_r = r // BLOCK_G  # token of the row within the tile
    g = r % BLOCK_G
    tok = tile * BLOCK_T + tok_r
    row_ok = (tok < Tq) & (g < G)
    pos = Tk - Tq + tok
    heads = hk * G + g
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_N)
    dmask = offs_d < D
    dvmask = offs_dv < DV
    q = tl.load(Q + b * s_qb + tok[:, None] * s_qt + heads[:, None] * s_qh + offs_d[None, :],
                mask=row_ok[:, None] & dmask[None, :], other=0.0)
    m_i = tl.full([R], float("-inf"), tl.float32)
    l_i = tl.zeros([R], tl.float32)
    acc = tl.zeros([R, BLOCK_DV], tl.float32)
    ucnt = tl.load(UCNT + b * s_cb + hk * s_ch + tile)
    ubase = b * s_ub + hk * s_uh + tile * s_ut
    # the interpreter cannot take a tensor loop bound: it sweeps the whole list (padding entries select no row)
    for s in range(0, FULL_LOOP if FULL_LOOP else ucnt):
        blk = tl.load(UIDX + ubase + s).to(tl.int64)
        bits = tl.load(UBITS + ubase + s)
        row_sel = row_ok & (((bits >> tok_r) & 1) != 0) & (s < ucnt)
        for n0 in tl.static_range(0, BLOCK_SIZE, BLOCK_N):
            keys = blk * BLOCK_SIZE + n0 + offs_n
            kin = ((n0 + offs_n) < BLOCK_SIZE) & (keys < Tk)
            k = tl.load(K + b * s_kb + keys[:, None] * s_kt + hk * s_kh + offs_d[None, :],
                        mask=kin[:, None] & dmask[None, :], other=0.0)
            if IEEE:
                sc = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                sc = tl.dot(q, tl.trans(k))
            vis = row_sel[:, None] & kin[None, :] & (keys[None, :] <= pos[:, None])
            sc = tl.where(vis, sc * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(sc, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(sc - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vv = tl.load(V + b * s_vb + keys[:, None] * s_vt + hk * s_vh + offs_dv[None, :],
                         mask=kin[:, None] & dvmask[None, :], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, vv, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(vv.dtype), vv)
            m_i = m_new
    has = l_i > 0
    o = acc / tl.where(has, l_i, 1.0)[:, None]
    # natural-log lse, as the per-token kernel writes it (its backward reads it)
    lse = tl.where(has, (m_i + tl.log2(tl.where(has, l_i, 1.0))) * 0.6931471805599453, float("inf"))
    tl.store(O + b * s_ob + tok[:, None] * s_ot + heads[:, None] * s_oh + offs_dv[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None] & dvmask[None, :])
    tl.store(LSE + b * s_lb + heads * s_lh + tok, lse, mask=row_ok)


def default_block_t(num_groups: int, dtype: torch.dtype, head_dim: int = 128) -> int:
    """Tokens per tile: ``M = BLOCK_T * G`` = 64 rows. Measured on the H200 (bf16, G = 16, D = 128, 128K / 256K):
    4-token tiles beat 8- and 16-token ones although their unions are larger (correlated queries at 128K: 48.6 /
    58.7 / 70.8 ms; random: 103 / 164 / 245 ms; benchmarks/results/sparsekernel_h200_20261128.md)."""
    rows = 64
    bg = triton.next_power_of_2(max(1, num_groups))
    return max(1, min(16, rows // bg))


def tile_unions(idx: Tensor, cnt: Tensor, block_t: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per tile of ``block_t`` consecutive query tokens: the sorted union of their selected blocks and, per union
    entry, the bit mask of the tile's tokens that selected it.

    Args:
        idx: ``[B, Hkv, Tq, S]`` int32 block ids per token (the first ``cnt`` valid, then -1), from
            ``select_block_indices``.
        cnt: ``[B, Hkv, Tq]`` int32 (unused beyond validating ``idx``: entries < 0 are padding).
        block_t: tokens per tile, 1..32.

    Returns:
        ``uidx [B, Hkv, nT, U]`` int32 ascending block ids (padding: 0), ``ubits [B, Hkv, nT, U]`` int32 (bit i =
        token ``tile * block_t + i`` selected the block; padding: 0), ``ucnt [B, Hkv, nT]`` int32, where
        ``nT = ceil(Tq / block_t)`` and ``U = max(1, max ucnt)``.
    """
    if not 1 <= block_t <= MAX_BLOCK_T:
        raise ValueError(f"block_t must be in 1..{MAX_BLOCK_T} (one int32 token mask per union entry), got {block_t}")
    B, Hkv, Tq, S = idx.shape
    n_tiles = triton.cdiv(Tq, block_t)
    pad = n_tiles * block_t - Tq
    ids = idx if not pad else torch.nn.functional.pad(idx, (0, 0, 0, pad), value=-1)
    ids = ids.view(B, Hkv, n_tiles, block_t, S)
    # bounded temporaries (a few int64 copies of [B, Hkv, tiles, block_t * S]): chunks of tiles
    step = max(1, _UNION_ELEMENTS // max(1, B * Hkv * block_t * S))
    parts = [_tile_unions(ids[:, :, i : i + step]) for i in range(0, n_tiles, step)]
    if not parts:
        z = torch.zeros(B, Hkv, 0, 1, dtype=torch.int32, device=idx.device)
        return z, z.clone(), torch.zeros(B, Hkv, 0, dtype=torch.int32, device=idx.device)
    U = max(1, max(int(p[2].max()) if p[2].numel() else 0 for p in parts))
    uidx = torch.cat([torch.nn.functional.pad(p[0][..., :U], (0, max(0, U - p[0].shape[-1]))) for p in parts], 2)
    ubits = torch.cat([torch.nn.functional.pad(p[1][..., :U], (0, max(0, U - p[1].shape[-1]))) for p in parts], 2)
    return uidx.contiguous(), ubits.contiguous(), torch.cat([p[2] for p in parts], dim=2).contiguous()


_UNION_ELEMENTS = 2**25


def _tile_unions(ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``tile_unions`` of ids ``[B, Hkv, n, block_t, S]``: (uidx, ubits) ``[B, Hkv, n, block_t * S]`` int32 and ucnt."""
    B, Hkv, n_tiles, block_t, S = ids.shape
    ids = ids.long()
    tok = torch.arange(block_t, device=ids.device).view(1, 1, 1, block_t, 1)
    big = torch.iinfo(torch.int64).max
    key = torch.where(ids >= 0, ids * MAX_BLOCK_T + tok, big).flatten(-2)  # [B, Hkv, nT, block_t * S]
    key = key.sort(dim=-1).values
    valid = key != big
    blk = torch.where(valid, key // MAX_BLOCK_T, -1)
    first = valid.clone()
    first[..., 1:] &= blk[..., 1:] != blk[..., :-1]
    slot = first.long().cumsum(-1) - 1  # union position of every entry (its block's first occurrence)
    ucnt = first.sum(-1, dtype=torch.int32)
    width = key.shape[-1]
    dump = torch.full_like(slot, width)  # invalid entries land in a dropped column
    slot = torch.where(valid, slot, dump)
    uidx = torch.zeros(B, Hkv, n_tiles, width + 1, dtype=torch.int64, device=ids.device)
    uidx.scatter_(-1, slot, torch.where(valid, blk, 0))  # every entry of a segment writes the same id
    bit = torch.where(valid, torch.ones_like(key) << (key % MAX_BLOCK_T), 0)
    ubits = torch.zeros_like(uidx)
    ubits.scatter_add_(-1, slot, bit)  # distinct bits per segment: the sum is the OR
    uidx = uidx[..., :width].to(torch.int32)
    # bit 31 (token 31) kept as int32's sign bit (two's complement); the kernel only shifts and masks the bits
    ubits = ubits[..., :width]
    ubits = (ubits - ((ubits >> 31) << 32)).to(torch.int32)
    return uidx, ubits, ucnt


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(int(n)))


def sparse_fwd_tile(q: Tensor, k: Tensor, v: Tensor, uidx: Tensor, ubits: Tensor, ucnt: Tensor, scale: float,
                    block_size: int, block_t: int, **launch) -> tuple[Tensor, Tensor]:
    """Tile forward: ``o [B, Tq, H, Dv]`` in q's dtype and ``lse [B, H, Tq]`` fp32 (natural log, +inf = no key),
    the same outputs as ``triton_kernel.sparse_fwd`` over the same selection. ``launch`` optionally sets Triton's
    ``num_warps`` / ``num_stages`` / ``BLOCK_N``."""
    B, Tq, H, D = q.shape
    Tk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[3]
    G = H // Hkv
    o = torch.empty(B, Tq, H, Dv, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, Tq, dtype=torch.float32, device=q.device)
    if Tq == 0:
        return o, lse
    n_tiles = triton.cdiv(Tq, block_t)
    assert uidx.shape[:3] == (B, Hkv, n_tiles) and ubits.shape == uidx.shape and ucnt.shape == (B, Hkv, n_tiles), \
        (uidx.shape, ubits.shape, ucnt.shape, n_tiles)
    assert uidx.stride(-1) == 1 and ubits.stride() == uidx.stride()
    bd, bdv = _pow2(D), _pow2(Dv)
    block_g = triton.next_power_of_2(G)
    rows = block_t * block_g
    if rows < 16:  # tl.dot needs M >= 16
        raise ValueError(f"block_t * next_pow2(G) must be >= 16 for the tensor-core dots, got {block_t} * {block_g}")
    bn = launch.pop("BLOCK_N", min(64, _pow2(block_size)))
    if max(bd, bdv) > 128:
        bn = min(bn, 32)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    launch.setdefault("num_warps", 8 if rows >= 128 else 4)
    launch.setdefault("num_stages", 2)
    _sparse_fwd_tile_kernel[(n_tiles, B * Hkv)](
        q, k, v, o, lse, uidx, ubits, ucnt, float(scale) * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        lse.stride(0), lse.stride(1),
        uidx.stride(0), uidx.stride(1), uidx.stride(2),
        ucnt.stride(0), ucnt.stride(1),
        Tq, Tk, Hkv, G, D, Dv,
        BLOCK_SIZE=block_size, BLOCK_T=block_t, BLOCK_G=block_g, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv,
        IEEE=q.dtype == torch.float32, FULL_LOOP=uidx.shape[-1] if interpret else 0, **launch,
    )
    return o, lse


def split_unions(idx: Tensor, cnt: Tensor, block_t: int, min_share: int | None = None):
    """Split each tile's union in two: the blocks at least ``min_share`` of the tile's tokens selected (for the tile
    kernel: in practice the init + local band, shared by every token of a tile) and, per token, the rest of its own
    blocks (for the per-token kernel). Every (token, block) pair lands in exactly one of the two.

    Returns ``(uidx, ubits, ucnt)`` as ``tile_unions`` (shared entries only) and ``(ridx, rcnt)`` as ``idx, cnt``
    (the residual blocks, ascending, -1 padded; width ``max(1, max rcnt)``). ``min_share`` defaults to
    ``max(2, ceil(block_t / 2))``.
    """
    share = max(2, (block_t + 1) // 2) if min_share is None else min_share
    uidx, ubits, ucnt = tile_unions(idx, cnt, block_t)
    B, Hkv, n_tiles, U = uidx.shape
    slot = torch.arange(U, device=idx.device)
    valid = slot < ucnt[..., None]
    pop = torch.zeros_like(ubits)
    for i in range(block_t):
        pop += (ubits >> i) & 1
    shared = valid & (pop >= share)
    order = torch.sort((~shared).to(torch.int8), dim=-1, stable=True).indices  # shared entries first, in order
    s_cnt = shared.sum(-1, dtype=torch.int32)
    keep = slot < s_cnt[..., None]
    s_uidx = torch.where(keep, uidx.gather(-1, order), 0).contiguous()
    s_bits = torch.where(keep, ubits.gather(-1, order), 0).contiguous()
    # which (token, block) entries of idx fall on a shared block of their tile
    Tq, S = idx.shape[2], idx.shape[3]
    pad = n_tiles * block_t - Tq
    ids = idx if not pad else torch.nn.functional.pad(idx, (0, 0, 0, pad), value=-1)
    ids = ids.reshape(B, Hkv, n_tiles, block_t * S)
    big = torch.iinfo(torch.int32).max
    sorted_u = torch.where(valid, uidx, big).contiguous()  # ascending
    at = torch.searchsorted(sorted_u, ids.clamp(min=0).contiguous()).clamp(max=U - 1)
    on_shared = shared.gather(-1, at) & (sorted_u.gather(-1, at) == ids)
    residual = (ids >= 0) & ~on_shared
    r = torch.where(residual, ids, big).reshape(B, Hkv, n_tiles * block_t, S)[:, :, :Tq]
    r = r.sort(dim=-1).values
    rcnt = (r != big).sum(-1, dtype=torch.int32)
    width = max(1, int(rcnt.max())) if rcnt.numel() else 1
    ridx = torch.where(r == big, -1, r)[..., :width].to(torch.int32).contiguous()
    return (s_uidx, s_bits, s_cnt.contiguous()), (ridx, rcnt.contiguous())


def merge_partials(o1: Tensor, lse1: Tensor, o2: Tensor, lse2: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax attention over two disjoint key sets, from each one's output and log-sum-exp (+inf = no key, the
    kernels' convention): ``o [B, Tq, H, Dv]`` in o1's dtype and ``lse [B, H, Tq]`` fp32 (+inf where neither
    saw a key)."""
    a = torch.where(lse1 == float("inf"), float("-inf"), lse1)
    b = torch.where(lse2 == float("inf"), float("-inf"), lse2)
    m = torch.maximum(a, b)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    w1, w2 = torch.exp(a - m), torch.exp(b - m)
    total = w1 + w2
    has = total > 0
    inv = torch.where(has, 1.0 / torch.where(has, total, 1.0), 0.0)
    w1, w2 = (w1 * inv).transpose(1, 2)[..., None], (w2 * inv).transpose(1, 2)[..., None]
    o = (o1.float() * w1 + o2.float() * w2).to(o1.dtype)
    lse = torch.where(has, m + torch.log(torch.where(has, total, 1.0)), float("inf"))
    return o, lse


def _per_token_backward(ctx, do) -> tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv of the tile / split forwards: the per-token kernel's backward from the saved ``o`` and ``lse``."""
    from .triton_kernel import sparse_bwd

    q, k, v, o, lse, idx, cnt = ctx.saved_tensors
    return sparse_bwd(q, k, v, o, lse, do, idx, cnt, ctx.scale, ctx.block_size)


class SplitSparseAttentionFunction(torch.autograd.Function):
    """Forward: the tile kernel over each tile's shared blocks + the per-token kernel over every token's other
    blocks, merged by log-sum-exp; backward: the per-token kernel over the full selection from the merged lse."""

    @staticmethod
    def forward(ctx, q, k, v, idx, cnt, scale, block_size, block_t):
        from .triton_kernel import sparse_fwd

        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        (s_uidx, s_bits, s_cnt), (ridx, rcnt) = split_unions(idx, cnt, block_t)
        o1, lse1 = sparse_fwd_tile(q, k, v, s_uidx, s_bits, s_cnt, scale, block_size, block_t)
        o2, lse2 = sparse_fwd(q, k, v, ridx, rcnt, scale, block_size)
        o, lse = merge_partials(o1, lse1, o2, lse2)
        ctx.save_for_backward(q, k, v, o, lse, idx, cnt)
        ctx.scale, ctx.block_size = scale, block_size
        return o

    @staticmethod
    def backward(ctx, do):
        return (*_per_token_backward(ctx, do), None, None, None, None, None)


def triton_sparse_attention_split(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, cnt: Tensor, scale: float,
                                  block_size: int, block_t: int) -> Tensor:
    """``triton_sparse_attention_tile``'s result with each tile's union split (``split_unions``): shared blocks
    by the tile kernel, the rest per token. Returns ``o [B, Tq, H, Dv]`` in q's dtype."""
    return SplitSparseAttentionFunction.apply(q, k, v, idx, cnt, scale, block_size, block_t)


class TileSparseAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: the tile forward, the per-token backward (``triton_kernel.sparse_bwd``) from the same
    ``lse``; the selection (idx, cnt and the unions built from it) is discrete and gets no gradient."""

    @staticmethod
    def forward(ctx, q, k, v, idx, cnt, uidx, ubits, ucnt, scale, block_size, block_t):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = sparse_fwd_tile(q, k, v, uidx, ubits, ucnt, scale, block_size, block_t)
        ctx.save_for_backward(q, k, v, o, lse, idx, cnt)
        ctx.scale, ctx.block_size = scale, block_size
        return o

    @staticmethod
    def backward(ctx, do):
        return (*_per_token_backward(ctx, do), None, None, None, None, None, None, None, None)


def triton_sparse_attention_tile(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, cnt: Tensor, scale: float,
                                 block_size: int, block_t: int, unions: tuple[Tensor, Tensor, Tensor] | None = None
                                 ) -> Tensor:
    """Attention of each query over its selected blocks (``idx``/``cnt`` as ``triton_kernel``), computed by
    ``block_t``-token tiles over the union of their blocks; ``unions`` = ``tile_unions(idx, cnt, block_t)`` if
    already built. Returns ``o [B, Tq, H, Dv]`` in q's dtype."""
    uidx, ubits, ucnt = unions if unions is not None else tile_unions(idx, cnt, block_t)
    return TileSparseAttentionFunction.apply(q, k, v, idx, cnt, uidx, ubits, ucnt, scale, block_size, block_t)


__all__ = ["MAX_BLOCK_T", "default_block_t", "merge_partials", "sparse_fwd_tile", "split_unions", "tile_unions",
           "triton_sparse_attention_split", "triton_sparse_attention_tile"]
