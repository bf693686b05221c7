"""Lightning attention on CUDA through flash-linear-attention (fla 0.6): ``simple_gla`` with a constant ``g_gamma``.

``fla_chunk`` wraps ``fla.ops.simple_gla.chunk_simple_gla`` (prefill / training) and ``fla_recurrent`` wraps
``fla.ops.simple_gla.fused_recurrent_simple_gla`` (decode). Both keep the signatures of the references
``lightning_chunk`` / ``lightning_recurrent`` and compute the same recurrence
``S_t = exp(g_h) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t`` with states ``[B, H, K, V]`` in fp32.

fla is imported lazily, on the first call (``import longforge`` must work without it, e.g. on the CPU install).

Explicit fallbacks to the reference (same result, slower), each for a stated reason:
    - tensors not on CUDA (fla's kernels are Triton GPU kernels);
    - fla is not installed;
    - ``g_gamma`` requires a gradient (fla returns no gradient for ``g_gamma``);
    - a head dim above 256 (fla's kernels tile K and V up to 256).
``chunk_size`` only changes the reference's summation order, not the result, so fla keeps its own chunk
length (64); the argument is still validated like the reference does.

fp32 inputs: Triton's default for fp32 dot products is TF32 (~1e-3 relative error). At the first fp32 call we set
``TRITON_F32_DEFAULT=ieee`` for the process (unless the user set it), so fla's fp32 kernels are compiled with
IEEE fp32 dots and agree with the reference to ~1e-6; it only affects fp32 dots of Triton kernels that do not
choose a precision themselves (bf16/fp16 kernels are unaffected).
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch
from torch import Tensor

from ..attention.naive import resolve_scale
from .naive import _check_inputs, lightning_chunk, lightning_recurrent

_MAX_HEAD_DIM = 256
_fla_ops = None  # (chunk_simple_gla, fused_recurrent_simple_gla) once imported; False when unavailable
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def _load_fla():
    """Import fla's two simple_gla entry points, or return None when fla is not installed."""
    global _fla_ops
    if _fla_ops is None:
        try:
            chunk_mod = importlib.import_module("fla.ops.simple_gla.chunk")
            rec_mod = importlib.import_module("fla.ops.simple_gla.fused_recurrent")
            _fla_ops = (chunk_mod.chunk_simple_gla, rec_mod.fused_recurrent_simple_gla)
        except ImportError:
            _fla_ops = False
    return _fla_ops or None


def fla_unsupported_reason(q: Tensor, v: Tensor, g_gamma: Tensor) -> str | None:
    """Why fla cannot run this call (then the reference runs), or None when it can."""
    if q.device.type != "cuda":
        return f"tensors are on {q.device.type}, fla's kernels need CUDA"
    if g_gamma.requires_grad:
        return "g_gamma requires a gradient, which fla does not compute"
    if q.shape[-1] > _MAX_HEAD_DIM or v.shape[-1] > _MAX_HEAD_DIM:
        return f"head dims K={q.shape[-1]}, V={v.shape[-1]} exceed fla's {_MAX_HEAD_DIM}"
    if _load_fla() is None:
        return "fla (flash-linear-attention) is not installed"
    return None


def _ieee_fp32(q: Tensor) -> None:
    """Make Triton compile fp32 dots as IEEE fp32 (see the module docstring), once, for fp32 inputs."""
    if q.dtype == torch.float32 and "TRITON_F32_DEFAULT" not in os.environ:
        os.environ["TRITON_F32_DEFAULT"] = "ieee"


def _prepare(q, k, v, g_gamma, scale, initial_state):
    B, T, H, K, V = _check_inputs(q, k, v, g_gamma, initial_state)
    scale = resolve_scale(scale, K)
    g = g_gamma.detach().to(device=q.device, dtype=torch.float32).contiguous()
    h0 = None if initial_state is None else initial_state.to(device=q.device, dtype=torch.float32)
    return B, T, H, K, V, scale, g, h0


def _finish(o: Tensor, ht: Tensor | None, q: Tensor, output_final_state: bool):
    if ht is not None:
        ht = ht.float()
    return o.to(q.dtype), (ht if output_final_state else None)


def fla_chunk(
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
    """``lightning_chunk`` through fla's ``chunk_simple_gla(q, k, v, g_gamma=g_gamma, ...)``; same signature."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    B, T, H, K, V, scale, g, h0 = _prepare(q, k, v, g_gamma, scale, initial_state)
    reason = fla_unsupported_reason(q, v, g_gamma)
    if reason is not None:
        _warn_once("chunk:" + reason, f"lightning fast path: {reason}; running the reference lightning_chunk")
        return lightning_chunk(q, k, v, g_gamma, chunk_size=chunk_size, **kwargs)
    if T == 0:
        return lightning_chunk(q, k, v, g_gamma, chunk_size=chunk_size, **kwargs)
    chunk_simple_gla = _load_fla()[0]
    _ieee_fp32(q)
    o, ht = chunk_simple_gla(
        q, k, v, g_gamma=g, scale=scale, initial_state=h0, output_final_state=output_final_state,
    )
    return _finish(o, ht, q, output_final_state)


def _one_token(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float, h0: Tensor | None,
               output_final_state: bool) -> tuple[Tensor, Tensor | None]:
    """``S = exp(g) S0 + k^T v``, ``o = scale * q S`` for T = 1 in fp32 (the reference's formula, no loop, no sync)."""
    B, _, H, K = q.shape
    V = v.shape[-1]
    decay = torch.exp(g)[None, :, None, None]
    kv = k[:, 0, :, :, None].float() * v[:, 0, :, None, :].float()  # [B, H, K, V]
    S = kv if h0 is None else torch.addcmul(kv, decay, h0)
    o = torch.matmul(q[:, 0, :, None, :].float() * scale, S)  # [B, H, 1, V]
    return o.view(B, 1, H, V).to(q.dtype), (S if output_final_state else None)


def fla_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g_gamma: Tensor,
    *,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``lightning_recurrent`` through fla's ``fused_recurrent_simple_gla(q, k, v, g_gamma=g_gamma, ...)``."""
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    B, T, H, K, V, scale, g, h0 = _prepare(q, k, v, g_gamma, scale, initial_state)
    reason = fla_unsupported_reason(q, v, g_gamma)
    if reason is not None:
        _warn_once("rec:" + reason, f"lightning fast path: {reason}; running the reference lightning_recurrent")
        return lightning_recurrent(q, k, v, g_gamma, **kwargs)
    if T == 0:
        return lightning_recurrent(q, k, v, g_gamma, **kwargs)
    if T == 1:  # one decoded token: four small PyTorch ops beat fla's launch and wrapper overhead (~0.4 ms)
        return _one_token(q, k, v, g, scale, h0, output_final_state)
    fused_recurrent_simple_gla = _load_fla()[1]
    _ieee_fp32(q)
    o, ht = fused_recurrent_simple_gla(
        q, k, v, g_gamma=g, scale=scale, initial_state=h0, output_final_state=output_final_state,
    )
    return _finish(o, ht, q, output_final_state)


__all__ = ["fla_chunk", "fla_recurrent", "fla_unsupported_reason"]
