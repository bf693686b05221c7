"""NormSiLU, DECO's expert activation (thunlp/DECO `activations.py`, "two-level normalisation").

    NormSiLU(u)_e = SiLU( RMSNorm_γ( (u − mean(u))_e ) )

u ∈ R^{E·d} holds the up-projections of all E experts of one token; the mean is over all E·d values (level one),
the RMSNorm is per expert slice of width d with one γ ∈ R^d shared by the experts (level two).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def norm_silu(
    u: torch.Tensor, num_experts: int, weight: torch.Tensor, eps: float = 1e-6, mean: torch.Tensor | None = None
) -> torch.Tensor:
    """u [..., K·d] → [..., K·d] (in u's dtype; computed in fp32).

    ``mean`` [..., 1]: the token's mean over ALL E·d pre-activations, when u holds only K < E experts' slices
    (the sparse inference path computes it exactly from the mean row of W_up, see ``ops/moe``). None → u's mean,
    which is right when u holds every expert."""
    *lead, width = u.shape
    if width % num_experts:
        raise ValueError(f"norm_silu: last dim {width} is not a multiple of num_experts={num_experts}")
    d = width // num_experts
    if weight.shape != (d,):
        raise ValueError(f"norm_silu: weight must have shape ({d},), got {tuple(weight.shape)}")
    uf = u.float()
    mu = uf.mean(-1, keepdim=True) if mean is None else mean.float()
    centered = (uf - mu).view(*lead, num_experts, d)
    normed = centered * torch.rsqrt(centered.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return F.silu(normed).reshape(*lead, width).to(u.dtype)
