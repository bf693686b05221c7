"""Lightning attention: linear attention with a fixed per-head decay (simple GLA with ``g_gamma``).

``lightning_attention`` is the seam: ``mode="auto"`` runs the recurrent form for one token (decode) and the
chunked form otherwise; the backend (fast path on CUDA when one exists, else the reference) is picked by
``longforge.ops._backend.resolve`` and can be forced with ``LONGFORGE_BACKEND_LIGHTNING=naive|fast``.
"""

from __future__ import annotations

from torch import Tensor

from .._backend import resolve

# Fast implementations with the signatures of lightning_chunk / lightning_recurrent (fla's chunk_simple_gla /
# fused_recurrent_simple_gla with g_gamma, see fla.py). Both count as op "lightning" for the seam.
from .fla import fla_chunk, fla_recurrent  # fla itself is imported lazily, at the first call
from .naive import alibi_decay, lightning_chunk, lightning_recurrent

_FAST_CHUNK = fla_chunk
_FAST_RECURRENT = fla_recurrent

MODES = ("auto", "chunk", "recurrent")


def lightning_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g_gamma: Tensor,
    *,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    mode: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Lightning attention through the backend seam.

    ``S_t = exp(g_h) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q: ``[B, T, H, K]``.
        k: ``[B, T, H, K]``.
        v: ``[B, T, H, V]``.
        g_gamma: ``[H]`` log decay per head, ``<= 0`` (e.g. ``alibi_decay(H)``).
        scale: ``None`` = ``K ** -0.5``.
        initial_state: ``[B, H, K, V]`` (any float dtype, used as fp32) or ``None``.
        output_final_state: also return the state after the last token.
        chunk_size: chunk length of the chunked form.
        mode: ``"auto"`` (recurrent when T == 1, else chunk), ``"chunk"`` or ``"recurrent"``.

    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state [B, H, K, V] fp32 or None)``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not isinstance(q, Tensor):
        raise ValueError(f"q must be a torch.Tensor, got {type(q).__name__}")
    if mode == "auto":
        mode = "recurrent" if q.dim() == 4 and q.shape[1] == 1 else "chunk"
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    if mode == "recurrent":
        impl = resolve("lightning", _FAST_RECURRENT, lightning_recurrent, q.device)
        return impl(q, k, v, g_gamma, **kwargs)
    impl = resolve("lightning", _FAST_CHUNK, lightning_chunk, q.device)
    return impl(q, k, v, g_gamma, chunk_size=chunk_size, **kwargs)


__all__ = ["alibi_decay", "lightning_attention", "lightning_chunk", "lightning_recurrent"]
