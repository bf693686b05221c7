"""Sparse MoE channel mixers: DECO (arXiv 2605.10933) and its baselines ReMoE and a DeepSeek-style top-k MoE.

DECO (thunlp/DECO `blockffn.py`, moe_and_sp.md §1.2):
    r = ReLU(W_r x)                 fp32 router; a token activates a variable number of experts
    g = r ⊙ s                       learnable expert-wise scale s ∈ R^E, initialised to 0.1
    u = W_up x ∈ R^{E·d}            E non-gated experts of width d stored as one [E·d, h] matrix
    y = W_down vec_e(g_e · NormSiLU(u)_e) + SwiGLU_shared(x)
Sparsity is steered by an adaptive penalty (router entropy for DECO, L1 for ReMoE) — see
`longforge.train.moe` for the controller.

ReMoE (arXiv 2412.14711) here: ReLU routing without the expert scale, plain SiLU non-gated experts (as DECO's
own ReMoE baseline runs), and the L1 penalty. Top-k: softmax router, k gated SwiGLU experts, the normalised
top-k probabilities as weights, and a switch-style load-balancing loss.

Training computes the dense-masked form (every expert, masked by its gate); inference (``eval()``) reads only
the active experts (`ops.moe`, exact).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..modules import RMSNorm
from ..ops import moe as moe_op
from .mlp import SwiGLU


def router_entropy(r: torch.Tensor) -> torch.Tensor:
    """DECO's penalty: p = r / (Σ_e r + 1e-5), H = mean_t Σ_e −p log(p + 1e-5). r [N, E] ≥ 0."""
    p = r / (r.sum(-1, keepdim=True) + 1e-5)
    return (-(p * torch.log(p + 1e-5)).sum(-1)).mean()


def remoe_l1(r: torch.Tensor, target_active: float) -> torch.Tensor:
    """ReMoE's load-balanced L1: E / (k T²) · Σ_e (Σ_t r_te) · f_e, f_e = #tokens routed to e, k = target·E."""
    T, E = r.shape
    k = max(target_active * E, 1e-6)
    f = (r > 0).float().sum(0).detach()
    return E / (k * T * T) * (r.sum(0) * f).sum()


class DecoMoE(nn.Module):
    """DECO (``variant="deco"``) or ReMoE (``variant="remoe"``) FFN layer. In inference on CUDA, chunks of ≤ 64
    tokens (decode, speculative verification) run the whole layer as one fused Triton launch (``ops/moe``)."""

    _fused_failed = False  # set (with a warning) if the fused kernel ever fails; then the torch path runs

    def __init__(self, config, layer_idx: int, variant: str = "deco"):
        super().__init__()
        assert variant in ("deco", "remoe"), variant
        self.variant = variant
        self.num_experts = E = config.moe_num_experts
        self.expert_dim = d = config.moe_expert_dim
        h = config.hidden_size
        self.target = config.moe_target_activation
        self.eps = config.rms_norm_eps
        self.router = nn.Linear(h, E, bias=False)
        self.up_proj = nn.Linear(h, E * d, bias=False)
        self.down_proj = nn.Linear(E * d, h, bias=False)
        if variant == "deco":
            self.expert_scale = nn.Parameter(torch.full((E,), float(config.moe_router_scale_init)))
            self.act_norm = RMSNorm(d, eps=config.rms_norm_eps)
        else:
            self.expert_scale = None
            self.act_norm = None
        self.shared = SwiGLU(h, config.moe_shared_dim) if config.moe_shared_dim > 0 else None
        # Filled by every forward: the penalty (with grad, in training) and activation counts, read by the trainer.
        self.penalty: torch.Tensor | None = None
        self.num_active = torch.zeros(())
        self.num_routed = torch.zeros(())
        self._router_out: torch.Tensor | None = None  # the fused decode path's ReLU router output (lazy counts)
        self._up_row_mean: torch.Tensor | None = None
        self._up_row_mean_version = None

    def up_row_mean(self) -> torch.Tensor:
        """Mean of W_up's rows (for NormSiLU's exact mean on the sparse path), cached until the weight changes."""
        w = self.up_proj.weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if self._up_row_mean is None or self._up_row_mean_version != key:
            self._up_row_mean = w.detach().float().mean(0)
            self._up_row_mean_version = key
        return self._up_row_mean

    @property
    def num_active(self) -> torch.Tensor:
        if self._router_out is not None:  # counted only when asked: no extra launches on the decode path
            self._num_active = (self._router_out > 0).sum()
            self._router_out = None
        return self._num_active

    @num_active.setter
    def num_active(self, value: torch.Tensor) -> None:
        self._num_active = value
        self._router_out = None

    def _fused_decode(self, flat: torch.Tensor) -> torch.Tensor:
        """Inference on CUDA, ≤ 64 tokens: the whole layer (router, experts, shared expert) in one Triton launch."""
        r = torch.empty(flat.shape[0], self.num_experts, device=flat.device, dtype=torch.float32)
        shared = None
        if self.shared is not None:
            shared = (self.shared.gate_proj.weight, self.shared.up_proj.weight, self.shared.down_proj.weight)
        y = moe_op.deco_ffn_fused(
            flat,
            self.router.weight,
            self.expert_scale,
            self.up_proj.weight,
            self.down_proj.weight,
            self.act_norm.weight if self.act_norm is not None else None,
            eps=self.eps,
            up_row_mean=self.up_row_mean() if self.act_norm is not None else None,
            shared=shared,
            router_out=r,
        )
        self.penalty = None
        self._router_out = r
        self.num_routed = torch.tensor(r.numel())
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if (
            not self.training
            and not torch.is_grad_enabled()
            and flat.shape[0] <= 64
            and moe_op.fused_available(flat.device)
            and self.up_proj.weight.dtype == flat.dtype
            and not DecoMoE._fused_failed
        ):
            try:
                return self._fused_decode(flat).view(shape)
            except Exception as e:  # noqa: BLE001 - e.g. the kernel does not compile on this GPU / triton
                DecoMoE._fused_failed = True
                warnings.warn(f"DecoMoE: the fused Triton decode kernel failed ({e!r}); using the torch path",
                              stacklevel=2)
        r = moe_op.relu_router(flat, self.router.weight)  # [N, E] fp32
        gates = r * self.expert_scale.float() if self.expert_scale is not None else r
        self.num_active = (r > 0).sum().detach()
        self.num_routed = torch.tensor(r.numel())
        if self.training:
            self.penalty = router_entropy(r) if self.variant == "deco" else remoe_l1(r, self.target)
        norm_weight = self.act_norm.weight if self.act_norm is not None else None
        sparse = not self.training and not torch.is_grad_enabled()
        y = moe_op.deco_experts(
            flat,
            gates,
            self.up_proj.weight,
            self.down_proj.weight,
            norm_weight,
            eps=self.eps,
            up_row_mean=self.up_row_mean() if sparse and norm_weight is not None else None,
            mode="sparse" if sparse else "dense",
        ).to(x.dtype)
        if self.shared is not None:
            y = y + self.shared(flat)
        return y.view(shape)


class TopKMoE(nn.Module):
    """DeepSeek-style baseline: softmax router, top-k of E gated SwiGLU experts (weights renormalised over the k),
    a shared SwiGLU expert, and a switch-style load-balancing loss as its penalty."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.num_experts = E = config.moe_num_experts
        self.top_k = config.moe_top_k
        h = config.hidden_size
        self.router = nn.Linear(h, E, bias=False)
        self.experts = nn.ModuleList(SwiGLU(h, config.moe_expert_dim) for _ in range(E))
        self.shared = SwiGLU(h, config.moe_shared_dim) if config.moe_shared_dim > 0 else None
        self.penalty: torch.Tensor | None = None
        self.num_active = torch.zeros(())
        self.num_routed = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = torch.softmax(flat.float() @ self.router.weight.float().t(), dim=-1)  # [N, E]
        weights, idx = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        self.num_active = torch.tensor(idx.numel())
        self.num_routed = torch.tensor(probs.numel())
        if self.training:
            # Switch Transformer load balancing: E · Σ_e f_e · P_e (f: fraction of assignments, P: mean prob).
            f = F.one_hot(idx, self.num_experts).float().sum((0, 1)) / idx.numel()
            self.penalty = self.num_experts * (f * probs.mean(0)).sum()
        y = torch.zeros_like(flat)
        for e in range(self.num_experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel():
                y.index_add_(0, rows, self.experts[e](flat[rows]) * weights[rows, slot, None].to(flat.dtype))
        if self.shared is not None:
            y = y + self.shared(flat)
        return y.view(shape)


def build_mlp(config, layer_idx: int) -> nn.Module:
    kind = config.mlp_types[layer_idx]
    if kind == "dense":
        return SwiGLU(config.hidden_size, config.intermediate_size)
    if kind == "deco_moe":
        return DecoMoE(config, layer_idx, "deco")
    if kind == "remoe":
        return DecoMoE(config, layer_idx, "remoe")
    if kind == "topk_moe":
        return TopKMoE(config, layer_idx)
    raise AssertionError(kind)
