"""Softmax attention (full causal, sliding window, bidirectional) with GQA and key padding.

``attention`` is the seam: ``fast_attention`` (PyTorch SDPA / FlexAttention; on the CPU SDPA, or SDPA over query
chunks with a small explicit mask for windows and padding) on every device; ``LONGFORGE_BACKEND_ATTENTION=naive``
forces the fp32 reference ``naive_attention`` (see ``longforge.ops._backend``). Shapes and semantics: ``naive.py`` and ``README.md``.
"""

from __future__ import annotations

from torch import Tensor

from .._backend import resolve
from .naive import masked_attention, naive_attention
from .sdpa import fast_attention

# Fast implementation with naive_attention's signature (SDPA cuDNN/flash + FlexAttention, see sdpa.py).
_FAST = fast_attention


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Softmax attention through the backend seam.

    Args:
        q: ``[B, Tq, H, D]``; query i sits at key index ``Tk - Tq + i``.
        k: ``[B, Tk, Hkv, D]``, Tk >= Tq, H % Hkv == 0 (query head h reads kv head ``h // (H // Hkv)``).
        v: ``[B, Tk, Hkv, Dv]``.
        scale: logit scale, ``None`` = ``D ** -0.5``.
        causal: key j visible iff ``j <= Tk - Tq + i``; ``False`` = all keys (padding still applies).
        window: sliding window ``w >= 1`` (needs ``causal``): additionally ``j > Tk - Tq + i - w``.
        key_padding_mask: ``[B, Tk]`` bool, True = real token.

    Returns:
        ``o [B, Tq, H, Dv]`` in q's dtype; queries with no visible key are zeros.
    """
    # A non-tensor q falls through to the reference, whose validation names the problem.
    device = q.device if isinstance(q, Tensor) else "cpu"
    impl = resolve("attention", _FAST, naive_attention, device, cpu_impl=_FAST)
    return impl(q, k, v, scale=scale, causal=causal, window=window, key_padding_mask=key_padding_mask)


__all__ = ["attention", "masked_attention", "naive_attention"]
