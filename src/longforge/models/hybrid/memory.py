"""What a hybrid costs, from its config alone: parameters by kind and cache bytes per sequence length.

Cache accounting follows `HybridCache` exactly (a test checks it against a real cache):
full = 2·L·Hkv·D, sliding = 2·min(L, W-1)·Hkv·D, sparse = 2·L·Hkv·D + Nc(L)·Hkv·D (compressed keys,
Nc = ⌊(L - l)/s⌋ + 1), all in the cache dtype; lightning = H·Dk·Dv in fp32, independent of L.
"""

from __future__ import annotations

import torch

from .configuration_hybrid import HybridConfig


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def layer_cache_bytes(config: HybridConfig, layer_idx: int, seq_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of one layer's cache for one sequence that has consumed ``seq_len`` tokens."""
    b = _dtype_bytes(dtype)
    kind = config.layer_types[layer_idx]
    kv_row = config.num_key_value_heads * config.head_dim * b
    if kind == "full_attention":
        return 2 * seq_len * kv_row
    if kind == "sliding_attention":
        return 2 * min(seq_len, config.sliding_window - 1) * kv_row
    if kind == "sparse_attention":
        n_compressed = max(0, (seq_len - config.sparse_kernel_size) // config.sparse_kernel_stride + 1)
        return 2 * seq_len * kv_row + n_compressed * kv_row
    if kind == "lightning_attention":
        return config.lightning_num_heads * config.lightning_head_dim * config.lightning_head_dim * 4
    raise AssertionError(kind)


def cache_bytes(config: HybridConfig, seq_len: int, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Cache bytes for one sequence at ``seq_len`` tokens, by layer kind and in total (key ``"total"``)."""
    out: dict[str, int] = {}
    for i, kind in enumerate(config.layer_types):
        out[kind] = out.get(kind, 0) + layer_cache_bytes(config, i, seq_len, dtype)
    out["total"] = sum(out.values())
    return out


def parameter_counts(config: HybridConfig) -> dict[str, int]:
    """Parameters by kind: embedding, lm_head (0 when tied), one entry per mixer kind, mlp, norms, and total.

    Built on the meta device, so even a 9B shape costs no memory."""
    from .modeling_hybrid import HybridForCausalLM

    with torch.device("meta"):
        model = HybridForCausalLM(config)
    counts: dict[str, int] = {"embedding": model.model.embed_tokens.weight.numel()}
    counts["lm_head"] = 0 if config.tie_word_embeddings else model.lm_head.weight.numel()
    counts["norms"] = model.model.norm.weight.numel()
    for layer in model.model.layers:
        mixer = sum(p.numel() for p in layer.mixer.parameters())
        counts[layer.layer_type] = counts.get(layer.layer_type, 0) + mixer
        counts["mlp"] = counts.get("mlp", 0) + sum(p.numel() for p in layer.mlp.parameters())
        counts["norms"] += layer.input_layernorm.weight.numel() + layer.post_attention_layernorm.weight.numel()
    counts["total"] = sum(v for k, v in counts.items())
    return counts


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def format_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)
