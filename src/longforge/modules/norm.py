"""RMSNorm (Zhang & Sennrich 2019) as used by Qwen3 / Llama: y = x / sqrt(mean(x²) + eps) · γ, computed in fp32."""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMS-normalise the last dimension in fp32 and return in x's dtype (the weight multiplies after the cast back,
    as in transformers' Qwen3RMSNorm, so imported checkpoints reproduce the same numbers)."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    out = x32.to(dtype)
    return out if weight is None else weight * out


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
