"""Reference softmax attention: causal, sliding-window or bidirectional, GQA, key padding.

Shape legend
    B    batch size
    Tq   number of queries; they are the LAST Tq positions of the key sequence
         (query i sits at key index Tk - Tq + i: a cache calls with past keys + new keys)
    Tk   number of keys, Tk >= Tq
    H    query heads
    Hkv  key/value heads, H % Hkv == 0; query head h reads kv head h // G
    G    H // Hkv, query heads per kv head (the GQA group)
    D    query/key head dim
    Dv   value head dim
    C    queries per chunk (the score matrix is built C queries at a time)

Everything is computed in fp32 and returned in the query's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

# A [B, H, C, Tk] fp32 score matrix (plus its softmax, kept for backward) is what costs memory; keep one chunk
# of it under ~2^26 elements (256 MiB) and never use more than 1024 queries per chunk.
MAX_QUERY_CHUNK = 1024
_MAX_SCORE_ELEMENTS = 2**26


def query_chunk_size(batch: int, num_heads: int, num_keys: int) -> int:
    """Queries per chunk so that a ``[batch, num_heads, chunk, num_keys]`` score matrix stays small."""
    per_query = max(1, batch * num_heads * num_keys)
    return max(1, min(MAX_QUERY_CHUNK, _MAX_SCORE_ELEMENTS // per_query))


def masked_softmax(scores: Tensor, visible: Tensor) -> Tensor:
    """Softmax over the last dim restricted to ``visible`` entries; rows with nothing visible are all zero.

    Args:
        scores: ``[..., N]`` fp32 logits.
        visible: bool, broadcastable to ``scores``.

    Returns:
        ``[..., N]`` probabilities; exactly 0 where not visible, and an all-zero row (with zero gradient) where
        no entry is visible, where ``torch.softmax`` would give NaN.
    """
    if scores.shape[-1] == 0:  # nothing to attend to (amax would reject the empty dim)
        return scores
    scores = scores.masked_fill(~visible, float("-inf"))
    # Softmax is shift invariant, so the stabilising max may be detached: the gradient stays exact and we
    # avoid amax's tie-splitting backward. A fully masked row has max -inf; shift it by 0 instead so that
    # exp(-inf - 0) = 0 rather than exp(nan).
    row_max = scores.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    p = torch.exp(scores - row_max)
    denom = p.sum(dim=-1, keepdim=True)
    return p / torch.where(denom > 0, denom, torch.ones_like(denom))


def _attend(q: Tensor, k: Tensor, v: Tensor, visible: Tensor, scale: float) -> Tensor:
    """fp32 GQA attention of one query chunk under an explicit visibility mask.

    Args:
        q: ``[B, C, H, D]`` fp32.
        k: ``[B, Tk, Hkv, D]`` fp32.
        v: ``[B, Tk, Hkv, Dv]`` fp32.
        visible: bool, broadcastable to ``[B, Hkv, C, Tk]``.
        scale: logit scale.

    Returns:
        ``[B, C, H, Dv]`` fp32.
    """
    B, C, H, D = q.shape
    Hkv, Dv = k.shape[2], v.shape[3]
    G = H // Hkv
    assert H == G * Hkv, "caller must validate H % Hkv == 0"
    # Group query heads by the kv head they read (h = kv * G + g, i.e. kv = h // G) instead of repeating k/v
    # G times: the broadcast matmul reads each kv head once.
    qg = q.reshape(B, C, Hkv, G, D).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, C, D]
    kt = k.permute(0, 2, 3, 1).unsqueeze(2)  # [B, Hkv, 1, D, Tk]
    vt = v.permute(0, 2, 1, 3).unsqueeze(2)  # [B, Hkv, 1, Tk, Dv]
    scores = (qg @ kt) * scale  # [B, Hkv, G, C, Tk]
    p = masked_softmax(scores, visible.unsqueeze(-3))  # the mask is shared by the G heads of a group
    o = p @ vt  # [B, Hkv, G, C, Dv]
    return o.permute(0, 3, 1, 2, 4).reshape(B, C, H, Dv)


def visible_keys(q_pos: Tensor, num_keys: int, *, causal: bool = True, window: int | None = None) -> Tensor:
    """Positional visibility of keys to queries.

    Args:
        q_pos: ``[C]`` int64 key index of each query (``Tk - Tq + i``).
        num_keys: Tk.
        causal: key j visible iff ``j <= q_pos``.
        window: with ``causal``, additionally ``j > q_pos - window`` (the query and ``window - 1`` keys before it).

    Returns:
        ``[C, Tk]`` bool.
    """
    k_pos = torch.arange(num_keys, device=q_pos.device)
    rel = q_pos[:, None] - k_pos[None, :]  # [C, Tk], distance back from the query
    if not causal:
        return torch.ones_like(rel, dtype=torch.bool)
    vis = rel >= 0
    if window is not None:
        vis = vis & (rel < window)
    return vis


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Validate ``q [B, Tq, H, D]``, ``k [B, Tk, Hkv, D]``, ``v [B, Tk, Hkv, Dv]`` with Tk >= Tq, H % Hkv == 0."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape [B, T, heads, dim] (4 dims), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"q, k, v must share the batch size B; got {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(
            "k [B, Tk, Hkv, D] and v [B, Tk, Hkv, Dv] must agree on B, Tk, Hkv; "
            f"got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must have the same head dim D; got q {q.shape[3]} and k {k.shape[3]}")
    H, Hkv = q.shape[2], k.shape[2]
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"the number of query heads H={H} must be a multiple of the number of kv heads Hkv={Hkv}")
    if k.shape[1] < q.shape[1]:
        raise ValueError(
            f"Tk must be >= Tq (queries are the last Tq of the Tk keys); got Tq={q.shape[1]}, Tk={k.shape[1]}"
        )
    if q.device != k.device or q.device != v.device:
        raise ValueError(f"q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """``scale=None`` means ``head_dim ** -0.5``."""
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a float or None, got {scale!r}")
    return float(scale)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, visible: Tensor, *, scale: float | None = None) -> Tensor:
    """Softmax attention under an explicit visibility mask (the building block of every reference here).

    Args:
        q: ``[B, Tq, H, D]``.
        k: ``[B, Tk, Hkv, D]``.
        v: ``[B, Tk, Hkv, Dv]``.
        visible: bool, broadcastable to ``[B, Hkv, Tq, Tk]``; True = query may attend to key.
        scale: logit scale, ``None`` = ``D ** -0.5``.

    Returns:
        ``o [B, Tq, H, Dv]`` in q's dtype; a query with no visible key outputs zeros (zero gradient).
    """
    check_qkv(q, k, v)
    if visible.dtype != torch.bool:
        raise ValueError(f"visible must be a bool tensor, got dtype {visible.dtype}")
    B, Tq, H, _ = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    try:
        torch.broadcast_shapes(visible.shape, (B, Hkv, Tq, Tk))
    except RuntimeError:
        raise ValueError(
            f"visible must broadcast to [B, Hkv, Tq, Tk] = {[B, Hkv, Tq, Tk]}, got {tuple(visible.shape)}"
        ) from None
    scale = resolve_scale(scale, q.shape[-1])
    visible = visible.reshape((1,) * (4 - visible.dim()) + tuple(visible.shape))
    kf, vf = k.float(), v.float()
    step = query_chunk_size(B, H, Tk)
    outs = []
    for start in range(0, Tq, step):
        vis = visible[:, :, start : start + step] if visible.shape[2] > 1 else visible
        outs.append(_attend(q[:, start : start + step].float(), kf, vf, vis, scale))
    if not outs:
        return q.new_zeros(B, 0, H, v.shape[-1])
    return torch.cat(outs, dim=1).to(q.dtype)


def naive_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Causal / sliding-window / bidirectional softmax attention with GQA (fp32 reference).

    Query i sits at key index ``t = Tk - Tq + i``. Key j is visible iff
    ``(not causal or j <= t) and (window is None or j > t - window) and key_padding_mask[b, j]``.

    Args:
        q: ``[B, Tq, H, D]``.
        k: ``[B, Tk, Hkv, D]``, Tk >= Tq, H % Hkv == 0.
        v: ``[B, Tk, Hkv, Dv]``.
        scale: logit scale, ``None`` = ``D ** -0.5``.
        causal: mask future keys. ``False`` = bidirectional (padding still applies).
        window: sliding window ``w >= 1``: the query sees itself and ``w - 1`` previous keys. Needs ``causal``.
        key_padding_mask: ``[B, Tk]`` bool, True = real token; False keys are invisible.

    Returns:
        ``o [B, Tq, H, Dv]`` in q's dtype. A query with no visible key outputs zeros (zero gradient).
    """
    check_qkv(q, k, v)
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1 or None, got {window!r}")
        if not causal:
            raise ValueError("window requires causal=True (a sliding window looks back from each query)")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
            raise ValueError("key_padding_mask must be a bool tensor [B, Tk] (True = real token)")
        if tuple(key_padding_mask.shape) != (B, Tk):
            raise ValueError(
                f"key_padding_mask must have shape [B, Tk] = {[B, Tk]}, got {tuple(key_padding_mask.shape)}"
            )
    scale = resolve_scale(scale, D)

    kf, vf = k.float(), v.float()
    pad = None if key_padding_mask is None else key_padding_mask.to(q.device)[:, None, None, :]  # [B, 1, 1, Tk]
    step = query_chunk_size(B, H, Tk)
    outs = []
    for start in range(0, Tq, step):
        stop = min(start + step, Tq)
        q_pos = torch.arange(start, stop, device=q.device) + (Tk - Tq)
        vis = visible_keys(q_pos, Tk, causal=causal, window=window)[None, None]  # [1, 1, C, Tk]
        if pad is not None:
            vis = vis & pad
        outs.append(_attend(q[:, start:stop].float(), kf, vf, vis, scale))
    if not outs:
        return q.new_zeros(B, 0, H, v.shape[-1])
    return torch.cat(outs, dim=1).to(q.dtype)
