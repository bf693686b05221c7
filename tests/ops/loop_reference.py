"""Slow, loop-based references written straight from the op definitions, independent of longforge.ops.

They loop over batch rows, heads, queries, time steps and blocks with plain Python control flow, build visible
key sets as Python lists, and only use torch for small dot products / softmaxes (so autograd works through
them for gradient checks). Shapes follow the ops: ``[B, T, H, D]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _softmax_attend(q_heads: Tensor, keys: Tensor, values: Tensor, scale: float) -> Tensor:
    """All heads of one query over one list of keys (kv heads already repeated to query heads):
    q_heads [H, D], keys [n, H, D], values [n, H, Dv] -> [H, Dv] (zeros when n == 0)."""
    if keys.shape[0] == 0:
        return values.new_zeros(values.shape[1], values.shape[2])
    p = torch.softmax(torch.einsum("hd,nhd->hn", q_heads, keys) * scale, dim=-1)
    return torch.einsum("hn,nhd->hd", p, values)


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """[..., Hkv, D] -> [..., H, D]: query head h reads kv head h // (H // Hkv)."""
    return x.repeat_interleave(num_heads // x.shape[-2], dim=-2)


def loop_attention(q, k, v, *, scale=None, causal=True, window=None, key_padding_mask=None) -> Tensor:
    """Softmax attention, one (batch, query) at a time. Returns fp32 [B, Tq, H, Dv]."""
    q, k, v = q.double(), k.double(), v.double()
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    scale = D**-0.5 if scale is None else scale
    k, v = _heads(k, H), _heads(v, H)
    rows = []
    for b in range(B):
        real = [True] * Tk if key_padding_mask is None else key_padding_mask[b].tolist()
        per_query = []
        for i in range(Tq):
            t = Tk - Tq + i
            keys = []
            for j in range(Tk):
                if causal and j > t:
                    continue
                if window is not None and j <= t - window:
                    continue
                if not real[j]:
                    continue
                keys.append(j)
            per_query.append(_softmax_attend(q[b, i], k[b, keys], v[b, keys], scale))
        rows.append(torch.stack(per_query))
    return torch.stack(rows).float()


def loop_lightning(q, k, v, g_gamma, *, scale=None, initial_state=None) -> tuple[Tensor, Tensor]:
    """Lightning recurrence, one (batch, head, step) at a time. Returns (o [B, T, H, V], final state [B, H, K, V])."""
    q, k, v, g_gamma = q.double(), k.double(), v.double(), g_gamma.double()
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    o = [[[None] * H for _ in range(T)] for _ in range(B)]
    finals = []
    for b in range(B):
        per_head = []
        for h in range(H):
            decay = torch.exp(g_gamma[h])  # a tensor, so gradients reach g_gamma too
            S = torch.zeros(K, V, dtype=torch.float64) if initial_state is None else initial_state[b, h].double()
            for t in range(T):
                S = decay * S + torch.outer(k[b, t, h], v[b, t, h])
                o[b][t][h] = scale * (q[b, t, h] @ S)
            per_head.append(S)
        finals.append(torch.stack(per_head))
    out = torch.stack([torch.stack([torch.stack(o[b][t]) for t in range(T)]) for b in range(B)])
    return out.float(), torch.stack(finals).float()


def loop_lightning_parallel(q, k, v, g_gamma, *, scale=None, initial_state=None) -> Tensor:
    """Lightning attention in its unrolled form, one query at a time (no state carried):
    ``o_t = scale * (sum_{s<=t} exp(g (t-s)) (q_t . k_s) v_s + exp(g (t+1)) q_t S_0)``."""
    q, k, v, g_gamma = q.double(), k.double(), v.double(), g_gamma.double()
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    out = torch.zeros(B, T, H, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            g = float(g_gamma[h])
            for t in range(T):
                acc = torch.zeros(v.shape[-1], dtype=torch.float64)
                for s in range(t + 1):
                    acc = acc + math.exp(g * (t - s)) * float(q[b, t, h] @ k[b, s, h]) * v[b, s, h]
                if initial_state is not None:
                    acc = acc + math.exp(g * (t + 1)) * (q[b, t, h] @ initial_state[b, h].double())
                out[b, t, h] = scale * acc
    return out.float()


def loop_compress_keys(k, kernel_size, kernel_stride) -> Tensor:
    """kc[:, j] = mean of k[:, j*s : j*s + l] over every complete window. Returns fp32 [B, Nc, Hkv, D]."""
    B, T, Hkv, D = k.shape
    windows = []
    j = 0
    while j * kernel_stride + kernel_size <= T:
        lo = j * kernel_stride
        total = torch.zeros(B, Hkv, D, dtype=torch.float64)
        for x in range(lo, lo + kernel_size):
            total = total + k[:, x].double()
        windows.append(total / kernel_size)
        j += 1
    if not windows:
        return torch.zeros(B, 0, Hkv, D)
    return torch.stack(windows, dim=1).float()


def loop_select_blocks(
    q, kc, positions, num_blocks, *, block_size, kernel_size, kernel_stride, topk, init_blocks, window_size,
    scale=None,
) -> Tensor:
    """InfLLM-V2 selection rule (steps 2-5), one (batch, kv head, query) at a time.

    Block m's score is the max of the group-summed compressed scores over compressed keys
    j in [m*r - 1, m*r + r - 1] with r = block_size // kernel_stride (pool kernel r + 1, stride r, padding 1),
    with j < 0 skipped and compressed keys that are missing or not yet visible counting as 0.
    Returns bool [B, Hkv, Tq, num_blocks].
    """
    q, kc = q.double(), kc.double()
    B, Tq, H, D = q.shape
    Nc, Hkv = kc.shape[1], kc.shape[2]
    group = H // Hkv
    scale = D**-0.5 if scale is None else scale
    r = block_size // kernel_stride
    n_local = -(-window_size // block_size)
    out = torch.zeros(B, Hkv, Tq, num_blocks, dtype=torch.bool)
    for b in range(B):
        for kvh in range(Hkv):
            for i in range(Tq):
                t = int(positions[i])
                vis = [j for j in range(Nc) if j * kernel_stride + kernel_size - 1 <= t]
                shared = [0.0] * Nc
                if vis:
                    for h in range(kvh * group, (kvh + 1) * group):
                        p = torch.softmax(scale * (kc[b, vis, kvh] @ q[b, i, h]), dim=0).tolist()
                        for j, pj in zip(vis, p):
                            shared[j] += pj
                score = []
                for m in range(num_blocks):
                    best = 0.0
                    for j in range(m * r - 1, m * r + r):
                        if 0 <= j < Nc:
                            best = max(best, shared[j])
                    score.append(best)
                bt = t // block_size
                chosen = set()
                for m in range(bt + 1):
                    if m < init_blocks or m >= bt - n_local + 1:
                        chosen.add(m)
                rest = sorted((m for m in range(bt + 1) if m not in chosen), key=lambda m: (-score[m], m))
                chosen.update(rest[:topk])
                for m in chosen:
                    if m < num_blocks:
                        out[b, kvh, i, m] = True
    return out


def loop_sparse_attention(
    q, k, v, *, block_size, kernel_size, kernel_stride, topk, init_blocks, window_size, dense_len, scale=None,
) -> Tensor:
    """InfLLM-V2 sparse attention from the rule, one (batch, head, query) at a time. Returns fp32 [B, Tq, H, Dv]."""
    B, Tq, H, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    group = H // Hkv
    scale = D**-0.5 if scale is None else scale
    kc = loop_compress_keys(k.detach(), kernel_size, kernel_stride)
    positions = [Tk - Tq + i for i in range(Tq)]
    num_blocks = -(-Tk // block_size)
    blocks = loop_select_blocks(
        q.detach(), kc, positions, num_blocks, block_size=block_size, kernel_size=kernel_size,
        kernel_stride=kernel_stride, topk=topk, init_blocks=init_blocks, window_size=window_size, scale=scale,
    )
    selected = blocks.tolist()  # nested lists: [b][kv head][query][block]
    qd, kd, vd = q.double(), _heads(k.double(), H), _heads(v.double(), H)
    rows = []
    for b in range(B):
        per_query = []
        for i, t in enumerate(positions):
            heads = []
            for h in range(H):
                if dense_len > 0 and t + 1 < dense_len:
                    keys = list(range(t + 1))
                else:
                    keys = [j for j in range(t + 1) if selected[b][h // group][i][j // block_size]]
                one = slice(h, h + 1)
                heads.append(_softmax_attend(qd[b, i, one], kd[b, keys, one], vd[b, keys, one], scale))
            per_query.append(torch.cat(heads))
        rows.append(torch.stack(per_query))
    return torch.stack(rows).float()
