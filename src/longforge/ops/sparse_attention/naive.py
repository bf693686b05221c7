"""Reference InfLLM-V2 sparse attention (arXiv 2509.24663): token-level queries, block-level KV.

No parameters of its own: the block scores come from mean-pooled ("compressed") keys of the layer's own K.

Shape legend
    B    batch size
    Tq   number of queries; they are the LAST Tq positions of the key sequence: query i is at t = Tk - Tq + i
    Tk   number of keys; key index == absolute position within the sequence (no padding inside)
    H    query heads
    Hkv  key/value heads, H % Hkv == 0; a GQA group of G = H // Hkv query heads shares one block selection
    D    query/key head dim;  Dv value head dim
    l, s kernel_size, kernel_stride of the key compression (32, 16)
    Nc   number of compressed keys = number of complete windows = max(0, (Tk - l) // s + 1)
    Bs   block_size (64); block m holds tokens [m * Bs, (m + 1) * Bs)
    NB   number of blocks, ceil(Tk / Bs)
    C    queries per chunk

Selection for the query at position t (per GQA group), see README.md:
    dense switch (t + 1 < dense_len) -> all blocks <= t // Bs, else
    init blocks  U  local blocks (covering window_size)  U  top-k blocks by max-pooled compressed-attention score.
Selection is discrete: no gradient flows through it (the compressed keys only steer, as in the paper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention.naive import _attend, check_qkv, masked_softmax, query_chunk_size, resolve_scale


def num_compressed(num_keys: int, kernel_size: int = 32, kernel_stride: int = 16) -> int:
    """Number of complete compression windows over ``num_keys`` keys: ``max(0, (T - l) // s + 1)``."""
    return max(0, (num_keys - kernel_size) // kernel_stride + 1)


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_selection_args(block_size, kernel_size, kernel_stride, topk, init_blocks, window_size) -> None:
    _check_positive_int("block_size", block_size)
    _check_positive_int("kernel_size", kernel_size)
    _check_positive_int("kernel_stride", kernel_stride)
    _check_positive_int("topk", topk, 0)
    _check_positive_int("init_blocks", init_blocks, 0)
    _check_positive_int("window_size", window_size, 0)
    if block_size % kernel_stride != 0:
        raise ValueError(
            f"block_size ({block_size}) must be a multiple of kernel_stride ({kernel_stride}): "
            "block scores max-pool whole compression strides"
        )


def compress_keys(k: Tensor, kernel_size: int = 32, kernel_stride: int = 16, *, start: int = 0) -> Tensor:
    """Mean-pooled keys, one per complete window: ``kc[:, j] = mean(k[:, j*s : j*s + l])`` (InfLLM-V2 §3.3).

    Incremental use: ``start`` returns only windows ``j >= start``, so a cache holding ``n`` compressed keys
    appends ``compress_keys(k_all, l, s, start=n)`` as new windows complete;
    ``cat([compress_keys(k, start=0)[:, :n], compress_keys(k, start=n)])`` equals ``compress_keys(k)``.

    Args:
        k: ``[B, T, Hkv, D]``.
        kernel_size: window length l >= 1.
        kernel_stride: window stride s >= 1.
        start: first window index to return, >= 0.

    Returns:
        ``kc [B, Nc - start, Hkv, D]`` fp32 (empty when no window from ``start`` on is complete),
        ``Nc = max(0, (T - l) // s + 1)``.
    """
    if not isinstance(k, Tensor) or k.dim() != 4 or not k.is_floating_point():
        raise ValueError(f"k must be a floating-point tensor [B, T, Hkv, D], got {getattr(k, 'shape', type(k))}")
    _check_positive_int("kernel_size", kernel_size)
    _check_positive_int("kernel_stride", kernel_stride)
    _check_positive_int("start", start, 0)
    B, T, Hkv, D = k.shape
    n = num_compressed(T, kernel_size, kernel_stride) - start
    if n <= 0:
        return k.new_zeros(B, 0, Hkv, D, dtype=torch.float32)
    # Windows j >= start only read keys from start * s on.
    ks = k[:, start * kernel_stride :].float()
    windows = ks.unfold(1, kernel_size, kernel_stride)  # [B, n', Hkv, D, l]
    kc = windows.mean(dim=-1)
    assert kc.shape[1] == n, (kc.shape, n)
    return kc


def _block_scores(shared: Tensor, num_blocks: int, block_size: int, kernel_stride: int) -> Tensor:
    """Max-pool compressed-key scores onto blocks (InfLLM-V2 §3.3, stage 3).

    Pooling kernel ``Bs/s + 1``, stride ``Bs/s``, padding 1: block m takes the max over compressed keys
    ``j in [m*Bs/s - 1, (m+1)*Bs/s - 1]``, i.e. the windows overlapping the block plus the one straddling its
    left edge. Windows that do not exist yet (j >= Nc) count as score 0, like windows not yet visible to
    the query: so a block's score never depends on how many keys follow the query. Scores are >= 0 and every
    block's range holds a real index, so the left zero-padding equals max_pool1d's -inf padding.

    Args:
        shared: ``[..., Nc]`` group-summed compressed attention probabilities (>= 0).
        num_blocks: NB.

    Returns:
        ``[..., NB]`` block scores.
    """
    stride = block_size // kernel_stride
    width = num_blocks * stride  # compressed keys -1 .. width - 1 cover blocks 0 .. NB - 1
    shared = shared[..., :width]
    padded = F.pad(shared, (1, width - shared.shape[-1]))  # [..., width + 1], index 0 is compressed key -1
    scores = padded.unfold(-1, stride + 1, stride).amax(dim=-1)
    assert scores.shape[-1] == num_blocks, (scores.shape, num_blocks)
    return scores


def select_blocks(
    q: Tensor,
    kc: Tensor,
    *,
    q_positions: Tensor,
    num_blocks: int,
    block_size: int = 64,
    kernel_size: int = 32,
    kernel_stride: int = 16,
    topk: int = 64,
    init_blocks: int = 1,
    window_size: int = 2048,
    scale: float | None = None,
) -> Tensor:
    """InfLLM-V2 block selection (steps 2-5 of README.md) for queries at given positions.

    For the query at position t in block ``b = t // Bs``:
        visible compressed keys  j*s + l - 1 <= t;
        p_h = softmax_j(scale * q_h . kc_j) per query head, summed over the GQA group;
        block score = max-pool of that sum (see ``_block_scores``);
        selected = init blocks {0..init_blocks-1} U local {b - ceil(window_size/Bs) + 1 .. b}
                   U the ``topk`` best-scoring remaining blocks of 0..b (ties: lower block first);
        blocks > b are never selected.

    Args:
        q: ``[B, Tq, H, D]``.
        kc: ``[B, Nc, Hkv, D]`` compressed keys (``compress_keys``).
        q_positions: ``[Tq]`` or ``[B, Tq]`` int absolute position t of each query (>= 0).
        num_blocks: NB, number of blocks to score (``ceil(Tk / Bs)``).
        block_size, kernel_size, kernel_stride, topk, init_blocks, window_size: see README.md.
        scale: ``None`` = ``D ** -0.5``.

    Returns:
        ``mask [B, Hkv, Tq, NB]`` bool, True = block selected.
    """
    _check_selection_args(block_size, kernel_size, kernel_stride, topk, init_blocks, window_size)
    _check_positive_int("num_blocks", num_blocks, 0)
    if not isinstance(q, Tensor) or q.dim() != 4 or not q.is_floating_point():
        raise ValueError(f"q must be a floating-point tensor [B, Tq, H, D], got {getattr(q, 'shape', type(q))}")
    if not isinstance(kc, Tensor) or kc.dim() != 4 or not kc.is_floating_point():
        raise ValueError(f"kc must be a floating-point tensor [B, Nc, Hkv, D], got {getattr(kc, 'shape', type(kc))}")
    B, Tq, H, D = q.shape
    Hkv = kc.shape[2]
    if kc.shape[0] != B or kc.shape[3] != D:
        raise ValueError(f"kc must be [B, Nc, Hkv, D] with q's B={B} and D={D}, got {tuple(kc.shape)}")
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"the number of query heads H={H} must be a multiple of the number of kv heads Hkv={Hkv}")
    q_positions = torch.as_tensor(q_positions, device=q.device)
    if q_positions.dtype.is_floating_point or q_positions.dtype == torch.bool:
        raise ValueError(f"q_positions must be an integer tensor, got dtype {q_positions.dtype}")
    if q_positions.shape not in ((Tq,), (B, Tq)):
        raise ValueError(f"q_positions must have shape [Tq] or [B, Tq] with Tq={Tq}, got {tuple(q_positions.shape)}")
    if Tq and int(q_positions.min()) < 0:
        raise ValueError("q_positions must be >= 0")
    scale = resolve_scale(scale, D)
    q_positions = q_positions.long().reshape(-1, Tq)  # [1 or B, Tq]

    step = query_chunk_size(B, H, max(kc.shape[1], num_blocks))
    with torch.no_grad():  # selection is discrete; no gradient reaches q or kc through it
        parts = [
            _select_chunk(
                q[:, i : i + step].float(), kc.float(), q_positions[:, i : i + step], num_blocks,
                block_size, kernel_size, kernel_stride, topk, init_blocks, window_size, scale,
            )
            for i in range(0, Tq, step)
        ]
    if not parts:
        return torch.zeros(B, Hkv, 0, num_blocks, dtype=torch.bool, device=q.device)
    return torch.cat(parts, dim=2)


def _select_chunk(
    q: Tensor, kc: Tensor, pos: Tensor, num_blocks: int,
    block_size: int, kernel_size: int, kernel_stride: int, topk: int, init_blocks: int, window_size: int,
    scale: float,
) -> Tensor:
    """``select_blocks`` for one chunk: q ``[B, C, H, D]`` fp32, kc ``[B, Nc, Hkv, D]`` fp32, pos ``[1|B, C]``."""
    B, C, H, D = q.shape
    Nc, Hkv = kc.shape[1], kc.shape[2]
    G = H // Hkv
    # Step 2: compressed key j summarises keys j*s .. j*s + l - 1; visible once all of them are in the past.
    window_end = torch.arange(Nc, device=q.device) * kernel_stride + kernel_size - 1
    visible = window_end <= pos[..., None]  # [1|B, C, Nc]
    # Step 3: per-head softmax over visible compressed keys, summed over the GQA group (one selection per group).
    qg = q.reshape(B, C, Hkv, G, D).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, C, D]
    logits = (qg @ kc.permute(0, 2, 3, 1).unsqueeze(2)) * scale  # [B, Hkv, G, C, Nc]
    shared = masked_softmax(logits, visible[:, None, None]).sum(dim=2)  # [B, Hkv, C, Nc]
    # Step 4: max-pool onto blocks.
    scores = _block_scores(shared, num_blocks, block_size, kernel_stride)  # [B, Hkv, C, NB]
    # Step 5: init + local blocks are forced; top-k among the remaining past blocks.
    blk = torch.arange(num_blocks, device=q.device)
    b_t = (pos // block_size)[..., None]  # [1|B, C, 1]
    n_local = math.ceil(window_size / block_size)
    past = blk <= b_t  # [1|B, C, NB]; future blocks are never selected
    forced = past & ((blk < init_blocks) | (blk > b_t - n_local))
    candidate = (past & ~forced)[:, None]  # [1|B, 1, C, NB]
    ranked = scores.masked_fill(~candidate, float("-inf"))
    # Stable descending sort: equal scores (adjacent blocks often share their max window) go to the lower
    # block, deterministically on every device.
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, blk.expand_as(order))
    return forced[:, None] | (candidate & (rank < topk))  # [B, Hkv, C, NB]


def _effective_blocks(
    q: Tensor, kc: Tensor, pos: Tensor, num_blocks: int, dense_len: int, **selection
) -> Tensor:
    """Blocks each query attends to, dense switch included: q ``[B, C, H, D]``, pos ``[C]`` -> ``[B, Hkv, C, NB]``."""
    B, C = q.shape[:2]
    Hkv = kc.shape[2]
    blk = torch.arange(num_blocks, device=q.device)
    past = blk <= (pos // selection["block_size"])[:, None]  # [C, NB]
    # Step 1, per query: short prefixes use dense causal attention. Deciding per query (not per call) makes a
    # token's output independent of how the prompt was chunked.
    dense = (pos + 1 < dense_len) if dense_len > 0 else torch.zeros_like(pos, dtype=torch.bool)
    if bool(dense.all()):
        return past.expand(B, Hkv, C, num_blocks)
    blocks = select_blocks(q, kc, q_positions=pos, num_blocks=num_blocks, **selection)
    return torch.where(dense[:, None], past, blocks)


def _check_sparse_inputs(q, k, v, compressed_k, dense_len, kernel_size, kernel_stride) -> None:
    check_qkv(q, k, v)
    if isinstance(dense_len, bool) or not isinstance(dense_len, int):
        raise ValueError(f"dense_len must be an int (<= 0 forces sparse for every query), got {dense_len!r}")
    if compressed_k is not None:
        B, Tk, Hkv, D = k.shape
        Nc = num_compressed(Tk, kernel_size, kernel_stride)
        if not isinstance(compressed_k, Tensor) or compressed_k.shape != (B, Nc, Hkv, D):
            raise ValueError(
                f"compressed_k must be [B, Nc, Hkv, D] = {[B, Nc, Hkv, D]} (Nc = complete windows of the Tk={Tk} "
                f"keys), got {tuple(getattr(compressed_k, 'shape', ()))}"
            )


def selected_blocks(
    q: Tensor,
    k: Tensor,
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
    """The blocks ``sparse_attention`` lets each query read, dense switch included (for tests and analysis).

    Args:
        q: ``[B, Tq, H, D]``, the last Tq positions of the keys.
        k: ``[B, Tk, Hkv, D]``.
        compressed_k, block_size, kernel_size, kernel_stride, topk, init_blocks, window_size, dense_len, scale:
            as in ``naive_sparse_attention``.

    Returns:
        ``mask [B, Hkv, Tq, NB]`` bool with ``NB = ceil(Tk / block_size)``; a dense query has every block up to
        its own selected. Within its own block a query still reads only keys ``<= t``.
    """
    _check_selection_args(block_size, kernel_size, kernel_stride, topk, init_blocks, window_size)
    _check_sparse_inputs(q, k, k, compressed_k, dense_len, kernel_size, kernel_stride)
    Tq, Tk = q.shape[1], k.shape[1]
    kc = compress_keys(k.detach(), kernel_size, kernel_stride) if compressed_k is None else compressed_k.float()
    pos = torch.arange(Tk - Tq, Tk, device=q.device)
    selection = dict(block_size=block_size, kernel_size=kernel_size, kernel_stride=kernel_stride, topk=topk,
                     init_blocks=init_blocks, window_size=window_size, scale=scale)
    with torch.no_grad():
        return _effective_blocks(q, kc, pos, math.ceil(Tk / block_size), dense_len, **selection)


def dense_prefix(num_queries: int, num_keys: int, dense_len: int) -> int:
    """How many leading queries are in dense mode (query i sits at t = Tk − Tq + i; dense iff t + 1 < dense_len)."""
    if dense_len <= 0:
        return 0
    return min(num_queries, max(0, dense_len - 1 - (num_keys - num_queries)))


def sparse_setup(
    q, k, v, compressed_k, block_size, kernel_size, kernel_stride, topk, init_blocks, window_size, dense_len, scale
):
    """Checks and the shared preamble of the sparse attention implementations: ``(scale, all_dense, kc,
    selection)``. ``all_dense``: every query is in dense mode (the last one, t = Tk − 1, is, so all are); ``kc``: the
    compressed keys (fp32, detached), None when all queries are dense and none were given; ``selection``: the keyword
    arguments of ``select_blocks``."""
    _check_selection_args(block_size, kernel_size, kernel_stride, topk, init_blocks, window_size)
    _check_sparse_inputs(q, k, v, compressed_k, dense_len, kernel_size, kernel_stride)
    scale = resolve_scale(scale, q.shape[-1])
    all_dense = dense_len > 0 and k.shape[1] < dense_len
    if compressed_k is not None:
        kc = compressed_k.detach().float()
    elif all_dense:
        kc = None
    else:
        kc = compress_keys(k.detach(), kernel_size, kernel_stride)
    selection = dict(block_size=block_size, kernel_size=kernel_size, kernel_stride=kernel_stride, topk=topk,
                     init_blocks=init_blocks, window_size=window_size, scale=scale)  # fmt: skip
    return scale, all_dense, kc, selection


def naive_sparse_attention(
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
    """InfLLM-V2 sparse attention, fp32 reference (rule in README.md).

    Args:
        q: ``[B, Tq, H, D]``; query i sits at position ``t = Tk - Tq + i``.
        k: ``[B, Tk, Hkv, D]``, one unpadded sequence per batch row (pad by calling per sequence).
        v: ``[B, Tk, Hkv, Dv]``.
        compressed_k: ``[B, Nc, Hkv, D]`` precomputed ``compress_keys(k, kernel_size, kernel_stride)`` (e.g. from a
            cache), Nc = number of complete windows of the Tk keys; ``None`` = compute it here.
        block_size: Bs, tokens per KV block; a multiple of ``kernel_stride``.
        kernel_size, kernel_stride: compression window length and stride.
        topk: number of top-scoring blocks added to the init and local ones.
        init_blocks: the first ``init_blocks`` blocks are always selected (attention sinks).
        window_size: local blocks ``ceil(window_size / Bs)`` ending at the query's own block are always selected.
        dense_len: queries with ``t + 1 < dense_len`` use dense causal attention; ``<= 0`` = always sparse.
        scale: ``None`` = ``D ** -0.5``; used for the block scores and the attention.

    Returns:
        ``o [B, Tq, H, Dv]`` in q's dtype. Gradients reach q, k, v through the attention only (the selection
        is discrete; compressed keys are not trained through it).
    """
    scale, all_dense, kc, selection = sparse_setup(
        q, k, v, compressed_k, block_size, kernel_size, kernel_stride, topk, init_blocks, window_size, dense_len, scale
    )
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    num_blocks = math.ceil(Tk / block_size)

    kf, vf = k.float(), v.float()
    key_pos = torch.arange(Tk, device=q.device)
    step = query_chunk_size(B, H, Tk)
    outs = []
    for start in range(0, Tq, step):
        qc = q[:, start : start + step].float()
        pos = torch.arange(start, start + qc.shape[1], device=q.device) + (Tk - Tq)
        causal = key_pos[None, :] <= pos[:, None]  # [C, Tk]
        if all_dense:
            visible = causal[None, None]
        else:
            with torch.no_grad():
                blocks = _effective_blocks(qc, kc, pos, num_blocks, dense_len, **selection)  # [B, Hkv, C, NB]
            # Step 6: block mask -> token mask, and keys after t inside the query's own block stay hidden.
            visible = blocks.repeat_interleave(block_size, dim=-1)[..., :Tk] & causal
        outs.append(_attend(qc, kf, vf, visible, scale))
    if not outs:
        return q.new_zeros(B, 0, H, v.shape[-1])
    return torch.cat(outs, dim=1).to(q.dtype)
