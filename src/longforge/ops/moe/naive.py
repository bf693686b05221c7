"""Reference and gather-based sparse compute for DECO's routed experts.

Shape legend: N tokens, h hidden, E experts of width d, K active experts of a chunk (K ≤ E).
    x [N, h]; gates g [N, E] (= ReLU(W_r x) ⊙ s, zero for inactive experts);
    up_weight [E·d, h]; down_weight [h, E·d]; norm_weight γ [d] (None → plain SiLU, the ReMoE baseline).

    y = W_down · vec_e( g_e · act(W_up x)_e )

NormSiLU's global mean (over all E·d pre-activations) would seem to force computing every expert's rows. It does
not: mean(W_up x) = (mean of W_up's rows) · x, so the sparse path precomputes w̄ = mean_rows(W_up) ∈ R^h once and
pays one extra dot product per token; the per-expert RMSNorm only needs the active slices. The result is exact
(equal to the dense-masked reference up to float rounding), not an approximation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...modules.norm_silu import norm_silu


def relu_router(x: Tensor, router_weight: Tensor) -> Tensor:
    """r = ReLU(W_r x) in fp32 (DECO's `RouterFP32`): x [N, h], router_weight [E, h] → [N, E] fp32."""
    return F.relu(x.float() @ router_weight.float().t())


def _check(x, gates, up_weight, down_weight, norm_weight):
    if x.dim() != 2 or gates.dim() != 2 or gates.shape[0] != x.shape[0]:
        raise ValueError(f"x must be [N, h] and gates [N, E]; got {tuple(x.shape)} and {tuple(gates.shape)}")
    E = gates.shape[1]
    if up_weight.shape[0] % E or up_weight.shape[1] != x.shape[1] or down_weight.shape != up_weight.shape[::-1]:
        raise ValueError(
            f"up_weight must be [E·d, h] and down_weight [h, E·d] with E={E}, h={x.shape[1]}; "
            f"got {tuple(up_weight.shape)} and {tuple(down_weight.shape)}"
        )
    d = up_weight.shape[0] // E
    if norm_weight is not None and norm_weight.shape != (d,):
        raise ValueError(f"norm_weight must be [{d}], got {tuple(norm_weight.shape)}")
    return E, d


def _activate(u: Tensor, num_experts: int, norm_weight: Tensor | None, eps: float, mean: Tensor | None) -> Tensor:
    return F.silu(u) if norm_weight is None else norm_silu(u, num_experts, norm_weight, eps, mean=mean)


def deco_experts_dense(
    x: Tensor, gates: Tensor, up_weight: Tensor, down_weight: Tensor, norm_weight: Tensor | None, *, eps: float = 1e-6
) -> Tensor:
    """Dense-masked: every expert computed, multiplied by its gate (0 when inactive). Training path; the truth."""
    E, d = _check(x, gates, up_weight, down_weight, norm_weight)
    u = x @ up_weight.t()  # [N, E·d]
    a = _activate(u, E, norm_weight, eps, None).view(-1, E, d) * gates.to(u.dtype)[..., None]
    return a.reshape(-1, E * d) @ down_weight.t()


def deco_experts_sparse(
    x: Tensor,
    gates: Tensor,
    up_weight: Tensor,
    down_weight: Tensor,
    norm_weight: Tensor | None,
    *,
    eps: float = 1e-6,
    up_row_mean: Tensor | None = None,
) -> Tensor:
    """Reads only the union of the chunk's active experts (a gather of their d-row slices). Inference path.

    ``up_row_mean`` [h]: mean of W_up's rows (precompute it once per layer; computed here when None)."""
    E, d = _check(x, gates, up_weight, down_weight, norm_weight)
    active = (gates != 0).any(dim=0).nonzero().flatten()  # union over the chunk's tokens
    if active.numel() == 0:
        return x.new_zeros(x.shape[0], down_weight.shape[0])
    rows = (active[:, None] * d + torch.arange(d, device=x.device)).flatten()  # [K·d]
    mean = None
    if norm_weight is not None:
        w_bar = up_weight.float().mean(0) if up_row_mean is None else up_row_mean.float()
        mean = (x.float() @ w_bar)[:, None]  # exact mean of all E·d pre-activations
    u = x @ up_weight[rows].t()  # [N, K·d]
    K = active.numel()
    a = _activate(u, K, norm_weight, eps, mean).view(-1, K, d) * gates[:, active].to(u.dtype)[..., None]
    return a.reshape(-1, K * d) @ down_weight[:, rows].t()
