"""InfLLM-V2 block selection, step 5, in one Triton kernel per query row: forced blocks + exact top-k -> id list.

Replaces PyTorch's int64 sort keys, ``topk``, concatenation and the final ascending sort of ``fast.py`` (several
passes over ``[B, Hkv, C, NB]`` int64 and a sort per token) by one program per (token, kv head) that holds the
row's ``NB`` block scores in registers:

    score[m]  = gmax[m]  (or max(gmax[m], edge[m - 1]) straight from ``triton_blockscore``'s two outputs)
    forced    = m <= b  and  (m < init_blocks  or  m > b - n_local)          (b = t // block_size)
    candidate = m <= b  and not forced;  k = min(topk, #candidates)
    tau       = the k-th largest candidate score, found exactly by a binary search over the float bits
                (for scores >= 0 the int32 bit pattern is monotonic): 31 counting passes over the row
    selected  = forced  or  score > tau  or  (score == tau and among the first k - #(score > tau) such blocks)

which is the reference's rule exactly, ties included (a stable descending sort puts equal scores' lower block
first). The selected ids are written in ascending order (prefix sum of the selection), then -1 up to ``S``.
Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (the CPU test).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_BLOCKS = 32768  # one program holds a row of block scores in registers (2M tokens at 64-token blocks)


@triton.jit
def _select_topk_kernel(
    SCORE, EDGE, IDX, CNT,
    pos0, C, NB, S,
    BLOCK_SIZE: tl.constexpr, N_LOCAL: tl.constexpr, INIT: tl.constexpr, TOPK: tl.constexpr,
    BLOCK: tl.constexpr, HAS_EDGE: tl.constexpr,
):
    c = tl.program_id(0).to(tl.int64)
    bh = tl.program_id(1).to(tl.int64)
    row = bh * C + c
    m = tl.arange(0, BLOCK)
    in_row = m < NB
    sc = tl.load(SCORE + row * NB + m, mask=in_row, other=0.0)
    if HAS_EDGE:  # block m's pooling window also holds the last compressed key of stride group m - 1
        e = tl.load(EDGE + row * NB + m - 1, mask=in_row & (m >= 1), other=0.0)
        sc = tl.maximum(sc, e)
    bits = sc.to(tl.int32, bitcast=True)
    bits = tl.where(bits < 0, 0, bits)  # -0.0 ranks as +0.0 (scores are >= 0)
    b_t = (pos0 + c) // BLOCK_SIZE
    past = in_row & (m <= b_t)
    forced = past & ((m < INIT) | (m > b_t - N_LOCAL))
    cand = past & (~forced)
    key = tl.where(cand, bits, -1)
    k = tl.minimum(tl.sum(cand.to(tl.int32), 0), TOPK)
    # tau = largest x with #(key >= x) >= k (k >= 1): bit by bit from the top (the sign bit is never set)
    x = tl.zeros([], tl.int32)
    for i in tl.static_range(0, 31):
        trial = x | (1 << (30 - i))
        n = tl.sum((key >= trial).to(tl.int32), 0)
        x = tl.where(n >= k, trial, x)
    gt = key > x
    need = k - tl.sum(gt.to(tl.int32), 0)
    eq = key == x
    rank = tl.cumsum(eq.to(tl.int32), 0)  # 1-based rank among the equal scores, lower block first
    top = (gt | (eq & (rank <= need))) & (k > 0)
    sel = forced | top
    slot = tl.cumsum(sel.to(tl.int32), 0) - 1
    n_sel = tl.sum(sel.to(tl.int32), 0)
    tl.store(IDX + row * S + slot, m.to(tl.int32), mask=sel)
    tl.store(IDX + row * S + m, tl.full([BLOCK], -1, tl.int32), mask=(m >= n_sel) & (m < S))
    tl.store(CNT + row, n_sel)


def select_topk(scores: Tensor, pos0: int, *, block_size: int, n_local: int, init_blocks: int, topk: int,
                width: int, edge: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Selected block ids of the query rows ``pos0 + c`` from their block scores.

    Args:
        scores: ``[B, Hkv, C, NB]`` fp32 block scores (>= 0), contiguous; with ``edge``, the stride-group maxima
            ``gmax`` of ``triton_blockscore`` (the score is then ``max(gmax[m], edge[m - 1])``).
        pos0: position of the first query row.
        block_size, init_blocks, topk: the selection's settings; ``n_local = ceil(window_size / block_size)``.
        width: ``S``, the id list width (>= the largest possible count, ``min(NB, init + n_local + topk)``).
        edge: ``[B, Hkv, C, NB]`` fp32 or ``None``.

    Returns:
        ``idx [B, Hkv, C, S]`` int32 (valid ids first, ascending, then -1) and ``cnt [B, Hkv, C]`` int32.
    """
    B, Hkv, C, NB = scores.shape
    if NB > MAX_BLOCKS:
        raise ValueError(f"select_topk holds a row of block scores in registers: NB={NB} > {MAX_BLOCKS}")
    if width < min(NB, init_blocks + n_local + topk) or width > max(NB, 1):
        raise ValueError(f"width must be in [min(NB, init + n_local + topk), NB], got {width} (NB={NB})")
    scores = scores.contiguous()
    idx = torch.empty(B, Hkv, C, width, dtype=torch.int32, device=scores.device)
    cnt = torch.empty(B, Hkv, C, dtype=torch.int32, device=scores.device)
    if B * Hkv * C == 0:
        return idx, cnt
    block = max(16, triton.next_power_of_2(NB))
    warps = 4 if block <= 2048 else (8 if block <= 8192 else 16)
    _select_topk_kernel[(C, B * Hkv)](
        scores, edge.contiguous() if edge is not None else scores, idx, cnt,
        pos0, C, NB, width,
        BLOCK_SIZE=block_size, N_LOCAL=n_local, INIT=init_blocks, TOPK=topk, BLOCK=block,
        HAS_EDGE=edge is not None, num_warps=warps,
    )
    return idx, cnt


__all__ = ["MAX_BLOCKS", "select_topk"]
