"""Built-in model shapes (configs only, no weights) and the one place that turns a name or path into a config."""

from __future__ import annotations

import json
from pathlib import Path

from .hybrid.configuration_hybrid import HybridConfig

SALA_SPARSE_LAYERS = (0, 9, 16, 17, 22, 29, 30, 31)


def qwen3_8b_shape() -> HybridConfig:
    """Qwen3-8B's dimensions, every layer full attention with RoPE (the dense baseline)."""
    return HybridConfig(
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        rope_theta=1_000_000.0,
        max_position_embeddings=40960,
        qk_norm=True,
        layer_types=["full_attention"] * 36,
        position_encoding="rope",
    )


def sala_9b_shape() -> HybridConfig:
    """MiniCPM-SALA's dimensions (architecture.md §2.2): 32 layers, InfLLM-V2 sparse NoPE attention at layers
    0, 9, 16, 17, 22, 29, 30, 31 (32 query / 2 KV heads × 128), Lightning with RoPE elsewhere (32 heads × 128),
    QK-norm and output gates everywhere, SwiGLU 16384, vocabulary 73448."""
    layer_types = ["sparse_attention" if i in SALA_SPARSE_LAYERS else "lightning_attention" for i in range(32)]
    return HybridConfig(
        vocab_size=73448,
        hidden_size=4096,
        intermediate_size=16384,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=2,
        head_dim=128,
        rope_theta=10000.0,
        max_position_embeddings=524288,
        qk_norm=True,
        layer_types=layer_types,
        position_encoding="hype",
        attn_output_gate=True,
        lightning_num_heads=32,
        lightning_head_dim=128,
        lightning_qk_norm=True,
        lightning_output_norm=True,
        lightning_output_gate=True,
    )


def tiny_hybrid_shape() -> HybridConfig:
    """A small random hybrid that mixes all four layer types; the demo and tests use it. Blocks are small so the
    sparse layer really is sparse at a few hundred tokens."""
    return HybridConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        layer_types=["sparse_attention", "lightning_attention", "sliding_attention", "full_attention"],
        position_encoding="hype",
        attn_logit_scaling="hype 500",
        attn_output_gate=True,
        sliding_window=32,
        sparse_block_size=16,
        sparse_kernel_size=8,
        sparse_kernel_stride=4,
        sparse_topk=2,
        sparse_init_blocks=1,
        sparse_window_size=16,
        sparse_dense_len=-1,
        max_position_embeddings=4096,
        rope_theta=10000.0,
    )


BUILTIN_SHAPES = {
    "qwen3-8b-shape": qwen3_8b_shape,
    "sala-9b-shape": sala_9b_shape,
    "tiny-hybrid-shape": tiny_hybrid_shape,
}


def load_config(name_or_path: str) -> HybridConfig:
    """A built-in shape name, a ``config.json``, or a model directory → `HybridConfig`.

    A transformers Qwen3 / Llama config is mapped to the equivalent all-full-attention hybrid."""
    if name_or_path in BUILTIN_SHAPES:
        return BUILTIN_SHAPES[name_or_path]()
    from ..assets import BUILTIN_MODELS, asset_path

    path = asset_path(name_or_path) if name_or_path in BUILTIN_MODELS else Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(
            f"{name_or_path!r} is neither a built-in shape ({', '.join(BUILTIN_SHAPES)}) nor a config.json / model "
            "directory that exists (built-in models such as tiny-teacher are accepted too)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    model_type = data.get("model_type")
    if model_type == HybridConfig.model_type:
        data.pop("model_type")
        data.pop("transformers_version", None)
        return HybridConfig(**data)
    from .adapters.hf import hybrid_config_from_transformers

    return hybrid_config_from_transformers(data)
