"""Fast softmax attention: PyTorch SDPA (cuDNN / flash backends, GQA) and FlexAttention for masked cases.

``fast_attention`` has ``naive_attention``'s signature and result (query i at key index ``t = Tk - Tq + i``;
rows with no visible key are zeros with zero gradient). Dispatch:

- no padding, and ``causal=False`` or ``Tq == Tk`` (or a window that covers every key): one
  ``F.scaled_dot_product_attention(..., is_causal=causal, enable_gqa=True)``. On CUDA in bf16/fp16 with
  ``D == Dv`` it is restricted to the cuDNN then flash backends (the memory-efficient backend refuses GQA); fp32
  or ``D != Dv`` expands the kv heads and uses the memory-efficient backend (math as the last resort);
- decode (``Tq == 1``): causal is "every key", a window is a slice of the last ``window`` keys, so it is the
  case above (with an explicit ``[B, 1, 1, Tk]`` mask when there is padding);
- causal with ``1 < Tq < Tk`` (chunked prefill), no window, no padding, CUDA bf16/fp16: without grad, the prefix
  (non-causal) and the diagonal block (causal) as two cuDNN calls merged exactly by their log-sum-exps; with grad,
  flash SDPA with a lower-right causal bias (``prefix_causal_attention``; each variant checked once per device);
- everything else (sliding windows, key padding, or no variant above): on CUDA FlexAttention
  (``flex.py``, compiled) with a ``BlockMask`` built from per-query-block KV-block ranges (never a dense
  ``[Tq, Tk]`` table); elsewhere, or if FlexAttention fails to compile/run (warned once), ``chunked_masked_sdpa``:
  SDPA over query chunks with the chunk's key range and an explicit small mask. Both are exact.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .naive import check_qkv, resolve_scale

# Elements of one chunk's explicit [B, H, C, span] mask/score matrix in chunked_masked_sdpa.
_CHUNK_ELEMENTS = 2**26
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def validate_attention_args(q, k, v, causal, window, key_padding_mask) -> None:
    """The reference's argument checks (same ValueErrors as ``naive_attention``)."""
    check_qkv(q, k, v)
    B, Tk = q.shape[0], k.shape[1]
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


def _backend_ctx(backends):
    from torch.nn.attention import sdpa_kernel

    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # older torch without set_priority: the list is still a restriction
        return sdpa_kernel(backends)


def sdpa(q: Tensor, k: Tensor, v: Tensor, *, scale: float, is_causal: bool = False,
         attn_mask: Tensor | None = None) -> Tensor:
    """SDPA on ``[B, T, heads, dim]`` tensors with GQA; ``attn_mask`` bool broadcastable to ``[B, H, Tq, Tk]``.

    ``is_causal`` is SDPA's (top-left aligned): use it only with Tq == Tk. Returns ``[B, Tq, H, Dv]``.
    """
    H, Hkv = q.shape[2], k.shape[2]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if q.device.type != "cuda":
        o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                           enable_gqa=H != Hkv)
        return o.transpose(1, 2)
    from torch.nn.attention import SDPBackend

    half = q.dtype in (torch.bfloat16, torch.float16)
    if half and attn_mask is None and q.shape[-1] == v.shape[-1] and q.shape[-1] <= 256:
        with _backend_ctx([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=is_causal, scale=scale, enable_gqa=H != Hkv)
        return o.transpose(1, 2)
    if H != Hkv:  # the memory-efficient backend (fp32, masks) takes no GQA: expand the kv heads
        kt = kt.repeat_interleave(H // Hkv, dim=1)
        vt = vt.repeat_interleave(H // Hkv, dim=1)
    with _backend_ctx([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]):
        o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    return o.transpose(1, 2)


def _masked_sdpa(q, k, v, scale, visible: Tensor) -> Tensor:
    """SDPA under an explicit ``visible [B, 1, Tq, Tk]`` mask; rows with nothing visible give zeros (and zero grad).

    Such a row gets one key unmasked (so SDPA has no NaN anywhere, forward or backward) and is zeroed after.
    """
    has = visible.any(-1, keepdim=True)  # [B, 1, Tq, 1]
    if bool(has.all()):
        return sdpa(q, k, v, scale=scale, attn_mask=visible)
    first = torch.zeros_like(visible)
    first[..., 0] = True
    o = sdpa(q, k, v, scale=scale, attn_mask=visible | (~has & first))
    return torch.where(has.transpose(1, 2), o, torch.zeros((), dtype=o.dtype, device=o.device))


def chunked_masked_sdpa(q, k, v, *, scale: float, causal: bool, window: int | None,
                        key_padding_mask: Tensor | None) -> Tensor:
    """Exact masked attention by query chunks: each chunk reads only its key range, with a small explicit mask."""
    B, Tq, H, _ = q.shape
    Tk = k.shape[1]
    off = Tk - Tq
    span_max = Tk if (not causal or window is None) else min(Tk, window + 1024)
    step = max(1, min(Tq, _CHUNK_ELEMENTS // max(1, B * H * span_max)))
    outs = []
    for s in range(0, Tq, step):
        e = min(Tq, s + step)
        t = torch.arange(s, e, device=q.device) + off  # [C]
        hi = off + e if causal else Tk  # exclusive
        lo = max(0, off + s - window + 1) if window is not None else 0
        j = torch.arange(lo, hi, device=q.device)
        vis = torch.ones(e - s, hi - lo, dtype=torch.bool, device=q.device)
        if causal:
            vis = j[None, :] <= t[:, None]
            if window is not None:
                vis = vis & (t[:, None] - j[None, :] < window)
        vis = vis[None, None]
        if key_padding_mask is not None:
            vis = vis & key_padding_mask[:, None, None, lo:hi].to(q.device)
        outs.append(_masked_sdpa(q[:, s:e], k[:, lo:hi], v[:, lo:hi], scale, vis.expand(B, 1, e - s, hi - lo)))
    return torch.cat(outs, dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Causal attention of the last Tq of Tk keys (1 < Tq < Tk, no window, no padding): chunked prefill.
#
# Without grad (inference): split the keys into the prefix [0, Tk - Tq) -- every query sees all of it, a
# non-causal call -- and the diagonal block [Tk - Tq, Tk) -- an ordinary square causal call. Each call returns
# its output and per-row log-sum-exp; the exact result is their softmax-weighted merge
#     o = o_diag + (o_prefix - o_diag) * sigmoid(lse_prefix - lse_diag).
# Both calls go to cuDNN (the fastest backend on Hopper), or flash. With grad: SDPA's flash kernel with a
# lower-right causal mask (torch.nn.attention.bias.causal_lower_right). Which variants work on this device is
# checked once per (device, dtype, head dims) against chunked_masked_sdpa on a small problem; a variant that
# fails the check or raises is never used again (FlexAttention remains the last resort).
_PREFIX_VARIANTS = ("split-cudnn", "split-cudnn-expand", "split-flash", "split-flash-expand")
_prefix_ok: dict[tuple, str | None] = {}
_lower_right_ok: dict[tuple, bool] = {}


def _expand_kv(kt: Tensor, H: int) -> Tensor:
    return kt if kt.shape[1] == H else kt.repeat_interleave(H // kt.shape[1], dim=1)


def _attn_lse(qt: Tensor, kt: Tensor, vt: Tensor, scale: float, causal: bool, backend: str, expand: bool):
    """(o [B, H, Tq, Dv], lse [B, H, Tq] fp32, natural log) of one SDPA-kernel call on [B, heads, T, D] views."""
    B, H, Tq = qt.shape[:3]
    if expand:
        kt, vt = _expand_kv(kt, H), _expand_kv(vt, H)
    if backend == "cudnn":
        res = torch.ops.aten._scaled_dot_product_cudnn_attention(qt, kt, vt, None, True, 0.0, causal, False,
                                                                 scale=scale)
    elif backend == "flash":
        res = torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt, 0.0, causal, False, scale=scale)
    else:  # "cpu": the CPU flash kernel (used by the CPU test of the merge)
        res = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt, 0.0, causal, scale=scale)
    return res[0], res[1].reshape(B, H, Tq).float()


def split_prefix_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float, variant: str) -> Tensor:
    """Exact causal attention of the last Tq of Tk keys as prefix (non-causal) + diagonal (causal) merged by LSE.

    ``[B, T, heads, dim]`` tensors, 1 <= Tq < Tk; ``variant`` one of ``_PREFIX_VARIANTS``. No autograd through the
    log-sum-exps: callers use it only without grad.
    """
    Tq, Tk = q.shape[1], k.shape[1]
    off = Tk - Tq
    backend = variant.split("-")[1]  # split-<cudnn|flash|cpu>[-expand]
    expand = variant.endswith("expand")
    qt = q.transpose(1, 2)
    kp, vp = k[:, :off].transpose(1, 2), v[:, :off].transpose(1, 2)
    kd, vd = k[:, off:].transpose(1, 2), v[:, off:].transpose(1, 2)
    o_p, l_p = _attn_lse(qt, kp, vp, scale, False, backend, expand)
    o_d, l_d = _attn_lse(qt, kd, vd, scale, True, backend, expand)
    w = torch.sigmoid(l_p - l_d).unsqueeze(-1)  # weight of the prefix part, [B, H, Tq, 1]
    o = torch.lerp(o_d.float(), o_p.float(), w).to(q.dtype)
    return o.transpose(1, 2)


def lower_right_causal_sdpa(q: Tensor, k: Tensor, v: Tensor, *, scale: float) -> Tensor:
    """Causal attention of the last Tq of Tk keys via SDPA with a lower-right causal bias (flash, GQA, autograd)."""
    from torch.nn.attention.bias import causal_lower_right

    H, Hkv = q.shape[2], k.shape[2]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    bias = causal_lower_right(q.shape[1], k.shape[1])
    o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=bias, scale=scale, enable_gqa=H != Hkv)
    return o.transpose(1, 2)


def _probe_inputs(q: Tensor, k: Tensor, v: Tensor):
    g = torch.Generator(device=q.device).manual_seed(1234)
    H, Hkv, D, Dv = q.shape[2], k.shape[2], q.shape[3], v.shape[3]
    Tq, Tk = 200, 456

    def rnd(*shape):
        return torch.randn(*shape, device=q.device, generator=g, dtype=torch.float32).to(q.dtype)

    return rnd(1, Tq, H, D), rnd(1, Tk, Hkv, D), rnd(1, Tk, Hkv, Dv)


def _close(o: Tensor, ref: Tensor) -> bool:
    return bool(torch.isfinite(o).all()) and float((o.float() - ref.float()).abs().max()) < 2e-2


def _prefix_key(q: Tensor, k: Tensor, v: Tensor) -> tuple:
    return (str(q.device), q.dtype, q.shape[2], k.shape[2], q.shape[3], v.shape[3])


def pick_prefix_variant(q: Tensor, k: Tensor, v: Tensor) -> str | None:
    """The first split variant that runs and matches the exact chunked reference here (cached); None if none."""
    key = _prefix_key(q, k, v)
    if key not in _prefix_ok:
        _prefix_ok[key] = None
        pq, pk, pv = _probe_inputs(q, k, v)
        scale = pq.shape[-1] ** -0.5
        with torch.no_grad():
            ref = chunked_masked_sdpa(pq, pk, pv, scale=scale, causal=True, window=None, key_padding_mask=None)
            for variant in _PREFIX_VARIANTS:
                try:
                    if _close(split_prefix_attention(pq, pk, pv, scale=scale, variant=variant), ref):
                        _prefix_ok[key] = variant
                        break
                except Exception:  # noqa: BLE001 - an unsupported backend/shape: try the next variant
                    continue
        if _prefix_ok[key] is None:
            _warn_once("attention fast path: no split prefix+diagonal SDPA variant passed the exactness check here")
    return _prefix_ok[key]


def lower_right_ok(q: Tensor, k: Tensor, v: Tensor) -> bool:
    key = _prefix_key(q, k, v)
    if key not in _lower_right_ok:
        pq, pk, pv = _probe_inputs(q, k, v)
        scale = pq.shape[-1] ** -0.5
        try:
            with torch.no_grad():
                ref = chunked_masked_sdpa(pq, pk, pv, scale=scale, causal=True, window=None, key_padding_mask=None)
                _lower_right_ok[key] = _close(lower_right_causal_sdpa(pq, pk, pv, scale=scale), ref)
        except Exception:  # noqa: BLE001
            _lower_right_ok[key] = False
    return _lower_right_ok[key]


def prefix_causal_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float) -> Tensor | None:
    """Causal attention of the last Tq (1 < Tq < Tk) of Tk keys without FlexAttention, or None (not available)."""
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16) or q.shape[-1] > 256:
        return None
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if not needs_grad:
        variant = pick_prefix_variant(q, k, v)
        if variant is not None:
            try:
                return split_prefix_attention(q, k, v, scale=scale, variant=variant)
            except Exception as err:  # noqa: BLE001 - e.g. a shape the backend refuses: try the next path
                _warn_once(f"attention fast path: split prefix SDPA failed ({type(err).__name__}: {err})")
    if q.shape[-1] == v.shape[-1] and lower_right_ok(q, k, v):
        try:
            return lower_right_causal_sdpa(q, k, v, scale=scale)
        except Exception as err:  # noqa: BLE001
            _warn_once(f"attention fast path: lower-right causal SDPA failed ({type(err).__name__}: {err})")
    return None


def fast_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """``naive_attention`` through SDPA / FlexAttention (same signature and result; see the module docstring)."""
    validate_attention_args(q, k, v, causal, window, key_padding_mask)
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    scale = resolve_scale(scale, D)
    if Tq == 0:
        return q.new_zeros(B, 0, H, v.shape[-1])
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype for the fast path; got {q.dtype}, {k.dtype}, {v.dtype}")
    if window is not None and window >= Tk:
        window = None  # every key is within the window of every query
    if causal and Tq == 1:  # decode: the one query sees every key, or the last `window` of them
        lo = 0 if window is None else Tk - window
        k, v = k[:, lo:], v[:, lo:]
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask[:, lo:]
        causal, window, Tk = False, None, Tk - lo
    if key_padding_mask is not None:
        key_padding_mask = key_padding_mask.to(q.device)
    if window is None and (not causal or Tq == Tk):
        if key_padding_mask is None:
            return sdpa(q, k, v, scale=scale, is_causal=causal and Tq > 1)
        if not causal and B * Tq * Tk <= _CHUNK_ELEMENTS:
            return _masked_sdpa(q, k, v, scale, key_padding_mask[:, None, None, :].expand(B, 1, Tq, Tk))
    if causal and window is None and key_padding_mask is None and 1 < Tq < Tk:
        o = prefix_causal_attention(q, k, v, scale=scale)
        if o is not None:
            return o
    if q.device.type == "cuda":
        try:
            from .flex import flex_attention_masked

            return flex_attention_masked(q, k, v, scale=scale, causal=causal, window=window,
                                         key_padding_mask=key_padding_mask)
        except Exception as err:  # noqa: BLE001 - any compile/runtime failure: use the exact chunked path
            _warn_once(f"attention fast path: FlexAttention failed ({type(err).__name__}: {err}); "
                       "using chunked SDPA with explicit masks (exact, slower)")
    return chunked_masked_sdpa(q, k, v, scale=scale, causal=causal, window=window,
                               key_padding_mask=key_padding_mask)


__all__ = [
    "chunked_masked_sdpa",
    "fast_attention",
    "lower_right_causal_sdpa",
    "prefix_causal_attention",
    "sdpa",
    "split_prefix_attention",
    "validate_attention_args",
]
