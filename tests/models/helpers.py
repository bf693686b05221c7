"""Small configs shared by the model tests."""

from longforge.models import HybridConfig


def mixed_config(**overrides) -> HybridConfig:
    """All four layer types, blocks small enough that the sparse layer is really sparse at ~100 tokens."""
    kwargs = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        layer_types=[
            "sparse_attention",
            "lightning_attention",
            "sliding_attention",
            "full_attention",
            "lightning_attention",
        ],
        position_encoding="hype",
        attn_logit_scaling="hype 50",
        attn_output_gate=True,
        sliding_window=12,
        sparse_block_size=8,
        sparse_kernel_size=4,
        sparse_kernel_stride=2,
        sparse_topk=2,
        sparse_init_blocks=1,
        sparse_window_size=8,
        sparse_dense_len=-1,
        lightning_chunk_size=16,
        rope_theta=10000.0,
    )
    kwargs.update(overrides)
    return HybridConfig(**kwargs)
