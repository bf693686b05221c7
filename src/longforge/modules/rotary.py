"""Rotary position embedding (RoPE) and HyPE's attention-logit scaling.

Shapes: positions [B, T] (absolute, int), cos/sin [B, T, D], q/k [B, T, H, D].
The rotate-half convention is the one of HF Llama / Qwen3, so imported weights reproduce their logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_inv_freq(dim: int, theta: float, rope_scaling: dict | None = None) -> torch.Tensor:
    """Inverse frequencies θ^(-2i/D), i < D/2, optionally rescaled ('linear' or Llama-3 'llama3' scaling)."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {dim}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    rope_type = (rope_scaling or {}).get("rope_type", (rope_scaling or {}).get("type", "default"))
    if rope_type == "linear":
        inv_freq = inv_freq / float(rope_scaling["factor"])
    elif rope_type == "llama3":
        # Llama 3.1 frequency-dependent scaling: long wavelengths divided by `factor`, short ones kept,
        # a smooth interpolation between the two bands.
        factor = float(rope_scaling["factor"])
        low = float(rope_scaling.get("low_freq_factor", 1.0))
        high = float(rope_scaling.get("high_freq_factor", 4.0))
        old_len = float(rope_scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif rope_type != "default":
        raise ValueError(f"rope_scaling type {rope_type!r} is not supported; use default, linear or llama3")
    return inv_freq.float()


class RotaryEmbedding(nn.Module):
    """Produces (cos, sin) of shape [B, T, D] for absolute positions [B, T]."""

    def __init__(self, dim: int, theta: float, rope_scaling: dict | None = None):
        super().__init__()
        self.dim, self.theta, self.rope_scaling = dim, theta, rope_scaling
        rope_inv_freq(dim, theta, rope_scaling)  # validate now, so a bad config fails at construction
        # Built on first use, as a plain attribute rather than a buffer: it is a function of the config, and a buffer
        # would be left on the meta device when transformers builds the model lazily in `from_pretrained`.
        self._inv_freq: torch.Tensor | None = None

    @torch.no_grad()
    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self._inv_freq is None or self._inv_freq.device != positions.device:
            with torch.device(positions.device):
                self._inv_freq = rope_inv_freq(self.dim, self.theta, self.rope_scaling).to(positions.device)
        # [B, T, D/2]; fp32 outer product as in transformers' rotary embedding (autocast would lose precision).
        freqs = positions[..., None].float() * self._inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, D] by cos/sin [B, T, D]."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return x * cos + rotate_half(x) * sin


def hype_logit_scale(positions: torch.Tensor, a: float) -> torch.Tensor:
    """HyPE query scale s_t = log(t + a) / log(a) (HALO Eq. 11), t the absolute position; [B, T] float32.

    s_0 = 1 and it grows slowly: for a = 500, 1.357 at 4K and 2.231 at 1M."""
    return torch.log(positions.float() + a) / math.log(a)
