"""Reference Lightning attention: linear attention with a fixed per-head decay (simple GLA with ``g_gamma``).

Recurrence per head h (S is a [K, V] matrix, q_t, k_t row vectors):

    S_t = exp(g_h) * S_{t-1} + k_t^T v_t
    o_t = scale * q_t S_t

Shape legend
    B    batch size
    T    sequence length
    H    heads (Lightning layers use as many kv heads as query heads)
    K    query/key head dim
    V    value head dim
    L    length of one chunk (chunk_size, the last chunk may be shorter)
    S    recurrent state [B, H, K, V], fp32

Everything is computed in fp32; outputs are returned in q's dtype, states always in fp32 (a bf16 state would
lose the small increments of slowly decaying heads over long sequences).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..attention.naive import resolve_scale


def alibi_decay(num_heads: int, *, device: torch.device | str | None = None) -> Tensor:
    """ALiBi slopes, negated, as per-head log decays: ``g_h = -2 ** (-8 * (h + 1) / H)`` for h = 0..H-1.

    Used by Lightning Attention-1/2, HypeNet and MiniCPM-SALA (not fla's ``chunk_lightning_attn``, which uses a
    different, layer-dependent rule).

    Args:
        num_heads: H >= 1.
        device: where to put the result.

    Returns:
        ``g [H]`` fp32 in (-1, 0): ``g_0 = -2**(-8/H)`` (fastest decay) up to ``g_{H-1} = -2**-8`` (slowest).
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be an int >= 1, got {num_heads!r}")
    h = torch.arange(num_heads, dtype=torch.float64, device=device)
    # Computed in fp64 and rounded once, so the values do not depend on fp32 pow rounding.
    return (-torch.pow(2.0, -8.0 * (h + 1) / num_heads)).to(torch.float32)


def _check_log_decay(g_gamma: Tensor) -> None:
    """``g_gamma <= 0`` everywhere, else ValueError. The check reads the values (a device sync on a GPU), so a
    tensor that passed is marked with its version counter and not re-read until it is modified in place: a model's
    decay buffer is checked once, not at every decoded token of every layer."""
    try:
        version = g_gamma._version
    except RuntimeError:  # an inference tensor has no version counter: marked once (in-place edits go unseen)
        version = "inference"
    if getattr(g_gamma, "_lf_nonpositive_at_version", None) == version:
        return
    if bool((g_gamma > 0).any()):
        raise ValueError("g_gamma is a log decay and must be <= 0 for every head (exp(g) <= 1)")
    try:
        g_gamma._lf_nonpositive_at_version = version
    except (AttributeError, RuntimeError):
        pass


def _check_inputs(
    q: Tensor, k: Tensor, v: Tensor, g_gamma: Tensor, initial_state: Tensor | None
) -> tuple[int, int, int, int, int]:
    for name, t in (("q", q), ("k", k), ("v", v), ("g_gamma", g_gamma)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape [B, T, H, dim] (4 dims), got shape {tuple(t.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must both be [B, T, H, K]; got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, V] with q's B, T, H; got q {tuple(q.shape)} and v {tuple(v.shape)}")
    B, T, H, K = q.shape
    V = v.shape[3]
    if g_gamma.shape != (H,):
        raise ValueError(f"g_gamma must have shape [H] = [{H}] (one log decay per head), got {tuple(g_gamma.shape)}")
    _check_log_decay(g_gamma)
    if initial_state is not None:
        if not isinstance(initial_state, Tensor) or not initial_state.is_floating_point():
            raise ValueError("initial_state must be a floating-point tensor [B, H, K, V] or None")
        if initial_state.shape != (B, H, K, V):
            raise ValueError(
                f"initial_state must have shape [B, H, K, V] = {[B, H, K, V]}, got {tuple(initial_state.shape)}"
            )
    return B, T, H, K, V


def _initial_state(initial_state: Tensor | None, B: int, H: int, K: int, V: int, device: torch.device) -> Tensor:
    if initial_state is None:
        return torch.zeros(B, H, K, V, dtype=torch.float32, device=device)
    return initial_state.to(device=device, dtype=torch.float32)


def lightning_chunk(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g_gamma: Tensor,
    *,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor | None]:
    """Chunked Lightning attention (Lightning Attention-2: intra-chunk parallel, inter-chunk recurrent carry).

    Inside a chunk of length L starting from state S (positions i, j = 0..L-1):

        o_i   = scale * ( sum_{j<=i} exp(g (i-j)) (q_i . k_j) v_j  +  exp(g (i+1)) q_i S )
        S_new = exp(g L) S + sum_j exp(g (L-1-j)) k_j^T v_j

    Every decay factor is ``exp`` of a non-positive number (g <= 0 times a non-negative count), so nothing
    overflows for any g <= 0 or chunk size; no factor is ever divided out.

    Args:
        q: ``[B, T, H, K]``.
        k: ``[B, T, H, K]``.
        v: ``[B, T, H, V]``.
        g_gamma: ``[H]`` log decay per head, ``<= 0``.
        scale: ``None`` = ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` (any float dtype, used as fp32) or ``None`` (zeros).
        output_final_state: return the state after the last token.
        chunk_size: L >= 1; any T works (the last chunk is shorter).

    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state [B, H, K, V] fp32 or None)``.
    """
    B, T, H, K, V = _check_inputs(q, k, v, g_gamma, initial_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    scale = resolve_scale(scale, K)
    g = g_gamma.to(device=q.device, dtype=torch.float32)
    # [B, H, T, dim] so that per-head matmuls batch over (B, H).
    qf = q.float().transpose(1, 2) * scale
    kf = k.float().transpose(1, 2)
    vf = v.float().transpose(1, 2)
    S = _initial_state(initial_state, B, H, K, V, q.device)

    outs = []
    for start in range(0, T, chunk_size):
        L = min(chunk_size, T - start)
        qc, kc, vc = qf[:, :, start : start + L], kf[:, :, start : start + L], vf[:, :, start : start + L]
        pos = torch.arange(L, device=q.device, dtype=torch.float32)
        steps_back = pos[:, None] - pos[None, :]  # [L, L] = i - j
        causal = steps_back >= 0
        # Clamp before exp so the (discarded) upper triangle never computes exp(positive).
        intra = torch.exp(g[:, None, None] * steps_back.clamp(min=0)) * causal  # [H, L, L]
        q_decay = torch.exp(g[:, None] * (pos + 1))[..., None]  # [H, L, 1]: decay of S seen from query i
        k_decay = torch.exp(g[:, None] * (L - 1 - pos))[..., None]  # [H, L, 1]: decay of k_j v_j to chunk end
        chunk_decay = torch.exp(g * L)[:, None, None]  # [H, 1, 1]

        scores = (qc @ kc.transpose(-1, -2)) * intra  # [B, H, L, L]
        outs.append(scores @ vc + (qc * q_decay) @ S)  # [B, H, L, V]
        S = chunk_decay * S + (kc * k_decay).transpose(-1, -2) @ vc

    o = torch.cat(outs, dim=2) if outs else vf.new_zeros(B, H, 0, V)
    return o.transpose(1, 2).to(q.dtype), (S if output_final_state else None)


def lightning_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g_gamma: Tensor,
    *,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Step-by-step Lightning attention (the decode path; T is usually 1).

    ``S_t = exp(g_h) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q: ``[B, T, H, K]``.
        k: ``[B, T, H, K]``.
        v: ``[B, T, H, V]``.
        g_gamma: ``[H]`` log decay per head, ``<= 0``.
        scale: ``None`` = ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` (any float dtype, used as fp32) or ``None`` (zeros).
        output_final_state: return the state after the last token.

    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state [B, H, K, V] fp32 or None)``.
    """
    B, T, H, K, V = _check_inputs(q, k, v, g_gamma, initial_state)
    scale = resolve_scale(scale, K)
    decay = torch.exp(g_gamma.to(device=q.device, dtype=torch.float32))[None, :, None, None]  # [1, H, 1, 1]
    qf, kf, vf = q.float() * scale, k.float(), v.float()
    S = _initial_state(initial_state, B, H, K, V, q.device)
    outs = []
    for t in range(T):
        S = decay * S + kf[:, t, :, :, None] * vf[:, t, :, None, :]  # outer product k_t^T v_t: [B, H, K, V]
        outs.append((qf[:, t, :, None, :] @ S).squeeze(-2))  # [B, H, V]
    o = torch.stack(outs, dim=1) if outs else vf.new_zeros(B, 0, H, V)
    return o.to(q.dtype), (S if output_final_state else None)
