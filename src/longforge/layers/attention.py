"""Softmax-attention token mixer: full, sliding-window or InfLLM-V2 sparse, with RoPE or NoPE.

One class for the three softmax layer types; which one it is comes from ``config.layer_types[layer_idx]``.
Shapes: x [B, T, hidden]; q [B, T, H, D]; k, v [B, T, Hkv, D]; attention_mask [B, past + T] bool (True = token).

Order of operations (Qwen3 / HypeNet ``Qwen3Attention``): project → per-head RMSNorm of q and k (qk_norm) →
RoPE (unless NoPE) → HyPE logit scaling of q (NoPE global layers, inference) → attention → output gate → o_proj.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modules import RMSNorm, apply_rotary, hype_logit_scale
from ..ops import attention as attention_op
from ..ops import sparse_attention as sparse_op


class SoftmaxAttention(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.layer_type = config.layer_types[layer_idx]
        assert self.layer_type in ("full_attention", "sliding_attention", "sparse_attention"), self.layer_type
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=config.attention_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        # Gated attention (Qiu et al. 2025; HypeNet `attn_use_output_gate`): o ← o · σ(W_g x).
        self.o_gate = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False) if config.attn_output_gate else None
        self.use_rope = config.layer_uses_rope(layer_idx)
        self.logit_scaling = config.logit_scaling if config.layer_uses_logit_scaling(layer_idx) else None

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache_layer=None,
    ) -> torch.Tensor:
        q, k, v = self.project_qkv(x, position_embeddings, position_ids)
        if self.layer_type == "sparse_attention":
            o = self._sparse(q, k, v, attention_mask, cache_layer)
        else:
            if cache_layer is not None:
                k, v = cache_layer.update(k, v)
            key_mask = None if attention_mask is None else attention_mask[:, -k.shape[1] :]
            window = self.config.sliding_window if self.layer_type == "sliding_attention" else None
            o = attention_op.attention(q, k, v, causal=True, window=window, key_padding_mask=key_mask)

        return self.project_out(x, o)

    def project_qkv(self, x: torch.Tensor, position_embeddings, position_ids: torch.Tensor):
        """q [B, T, H, D], k, v [B, T, Hkv, D] of ``x`` [B, T, hidden]: projections, qk-norm, RoPE (if this layer
        uses it) and the attention-logit scaling, in v's dtype (also the static decode step's prelude)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            cos, sin = position_embeddings
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.logit_scaling is not None and (not self.training or self.config.attn_logit_scaling_in_training):
            kind, value = self.logit_scaling
            if kind == "hype":
                q = q * hype_logit_scale(position_ids, value).to(q.dtype)[:, :, None, None]
            else:
                q = q * value
        # Norms and rotary run in fp32 under autocast; the attention kernels want one dtype: the activations' (v's).
        return q.to(v.dtype), k.to(v.dtype), v

    def project_out(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """The output gate and W_o on the attention output ``o`` [B, T, H, D] (or [B, T, H·D])."""
        B, T, _ = x.shape
        o = o.reshape(B, T, self.num_heads * self.head_dim)
        if self.o_gate is not None:
            o = o * torch.sigmoid(self.o_gate(x))
        return self.o_proj(o)

    # InfLLM-V2 works on the real tokens of each sequence: block boundaries and compressed-key windows are counted
    # from a sequence's first real token, so left padding must not shift them. Each row is therefore taken without
    # its padding (the real tokens of a left- or right-padded row are contiguous), and its compressed keys are kept
    # per row in the cache.
    def _sparse(self, q, k, v, attention_mask, cache_layer) -> torch.Tensor:
        cfg = self.config
        kw = dict(
            block_size=cfg.sparse_block_size,
            kernel_size=cfg.sparse_kernel_size,
            kernel_stride=cfg.sparse_kernel_stride,
            topk=cfg.sparse_topk,
            init_blocks=cfg.sparse_init_blocks,
            window_size=cfg.sparse_window_size,
            dense_len=cfg.sparse_dense_len,
        )
        if cache_layer is not None:
            k, v = cache_layer.update(k, v)
        B, T = q.shape[:2]
        if attention_mask is None and cache_layer is None:
            return sparse_op.sparse_attention(q, k, v, **kw)
        Tk = k.shape[1]
        key_mask = (
            torch.ones(B, Tk, dtype=torch.bool, device=q.device)
            if attention_mask is None
            else attention_mask[:, -Tk:].bool()
        )
        if cache_layer is not None and cache_layer.compressed_keys is None:
            cache_layer.compressed_keys = [None] * B
        out = q.new_zeros(B, T, self.num_heads, v.shape[-1])
        for b in range(B):
            real_k = key_mask[b]
            real_q = real_k[-T:]
            n_q = int(real_q.sum())
            if n_q == 0:
                continue
            # A row without padding attends to the cache as it is (a boolean index would copy the whole KV).
            full_row = bool(real_k.all())
            kb, vb = (k[b : b + 1], v[b : b + 1]) if full_row else (k[b : b + 1, real_k], v[b : b + 1, real_k])
            compressed = None
            if cache_layer is not None:
                old = cache_layer.compressed_keys[b]
                n_old = 0 if old is None else old.shape[1]
                new = sparse_op.compress_keys(kb, cfg.sparse_kernel_size, cfg.sparse_kernel_stride, start=n_old)
                compressed = new if old is None else torch.cat([old, new], dim=1)
                cache_layer.compressed_keys[b] = compressed
            out[b, real_q] = sparse_op.sparse_attention(q[b : b + 1, real_q], kb, vb, compressed_k=compressed, **kw)[0]
        return out
