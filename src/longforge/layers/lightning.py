"""Lightning attention token mixer (HypeNet `LightningAttention`, MiniCPM-SALA `MiniCPMLightningMixer`).

    q, k, v = W_q x, W_k x, W_v x                (MHA: lightning_num_heads × lightning_head_dim)
    q, k    = RMSNorm_d(q), RMSNorm_d(k)          (lightning_qk_norm)
    q, k    = RoPE(q, k)                          (always: RoPE in the linear layers under both "rope" and "hype")
    S_t     = exp(g_h) S_{t-1} + k_tᵀ v_t,   o_t = q_t S_t / sqrt(d)
    g_h     = -2^(-8(h+1)/H)                     (ALiBi slopes, fixed, no parameters; architecture.md §2.6)
    o       = RMSNorm_{H·d}(o)                    (lightning_output_norm)
    o       = o · σ(W_z x)                        (lightning_output_gate)
    y       = W_o o

Padding: keys and values of padded positions are zeroed, so they add nothing to the state; since the state
starts at zero, a left-padded row reaches its first real token with S = 0, exactly as it would alone.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modules import RMSNorm, apply_rotary
from ..ops import linear_attention as linear_op


class LightningAttention(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.lightning_num_heads
        self.head_dim = config.lightning_head_dim
        hidden, inner = config.hidden_size, config.lightning_num_heads * config.lightning_head_dim
        self.q_proj = nn.Linear(hidden, inner, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden, inner, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden, inner, bias=config.attention_bias)
        self.o_proj = nn.Linear(inner, hidden, bias=config.attention_bias)
        if config.lightning_qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.o_norm = RMSNorm(inner, eps=config.rms_norm_eps) if config.lightning_output_norm else None
        self.z_proj = nn.Linear(hidden, inner, bias=False) if config.lightning_output_gate else None
        # The decay is fixed (no parameters) and a function of the config alone: built on first use rather than held
        # as a buffer, so meta-device construction in `from_pretrained` never leaves it uninitialised.
        self._g_gamma: torch.Tensor | None = None

    def g_gamma(self, device: torch.device) -> torch.Tensor:
        if self._g_gamma is None or self._g_gamma.device != device:
            self._g_gamma = linear_op.alibi_decay(self.num_heads).to(device)
        return self._g_gamma

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache_layer=None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x, position_embeddings)
        if attention_mask is not None:
            real = attention_mask[:, -T:].to(k.dtype)[:, :, None, None]
            k, v = k * real, v * real
        initial_state = cache_layer.state if cache_layer is not None else None
        o, final_state = linear_op.lightning_attention(
            q,
            k,
            v,
            self.g_gamma(q.device),
            initial_state=initial_state,
            output_final_state=cache_layer is not None,
            chunk_size=self.config.lightning_chunk_size,
        )
        if cache_layer is not None:
            cache_layer.state = final_state
        return self.project_out(x, o)

    def project_qkv(self, x: torch.Tensor, position_embeddings):
        """q, k, v [B, T, H, D] of ``x``: projections, qk-norm and RoPE, in v's dtype (also the static decode
        step's prelude)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = position_embeddings
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # Norms and rotary run in fp32 under autocast; the kernels want one dtype: the activations' (v's).
        return q.to(v.dtype), k.to(v.dtype), v

    def project_out(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Output norm, output gate and W_o on the mixer output ``o`` [B, T, H, D] (or [B, T, H·D])."""
        B, T, _ = x.shape
        o = o.reshape(B, T, self.num_heads * self.head_dim)
        if self.o_norm is not None:
            o = self.o_norm(o)
        if self.z_proj is not None:
            o = o * torch.sigmoid(self.z_proj(x))
        return self.o_proj(o)
