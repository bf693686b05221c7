import json

import pytest
from transformers import AutoConfig

from longforge.models import HybridConfig, load_config
from longforge.models.hybrid.configuration_hybrid import expand_layer_types


def test_pattern_is_tiled_and_stored_in_full(tmp_path):
    cfg = HybridConfig(num_hidden_layers=8, layer_types="SLLL")
    assert (
        cfg.layer_types
        == ["sparse_attention"] + ["lightning_attention"] * 3 + ["sparse_attention"] + ["lightning_attention"] * 3
    )
    cfg.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["layer_types"] == cfg.layer_types
    assert "full_attention_interval" not in stored
    again = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(again, HybridConfig) and again.layer_types == cfg.layer_types


def test_full_attention_interval():
    cfg = HybridConfig(num_hidden_layers=8, full_attention_interval=4)
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == [3, 7]
    assert all(t == "lightning_attention" for i, t in enumerate(cfg.layer_types) if i not in (3, 7))


def test_defaults_follow_the_papers():
    cfg = HybridConfig()
    assert (cfg.sparse_block_size, cfg.sparse_kernel_size, cfg.sparse_kernel_stride) == (64, 32, 16)
    assert (cfg.sparse_topk, cfg.sparse_init_blocks, cfg.sparse_window_size, cfg.sparse_dense_len) == (
        64,
        1,
        2048,
        8192,
    )
    assert cfg.lightning_decay == "alibi" and cfg.lightning_qk_norm and cfg.lightning_output_gate
    assert cfg.layer_types == ["full_attention"] * cfg.num_hidden_layers


def test_hype_position_rule():
    cfg = HybridConfig(num_hidden_layers=4, layer_types="FWSL", position_encoding="hype", attn_logit_scaling="hype")
    assert [cfg.layer_uses_rope(i) for i in range(4)] == [False, True, False, True]
    assert [cfg.layer_uses_logit_scaling(i) for i in range(4)] == [True, False, True, False]
    assert cfg.logit_scaling == ("hype", 362.0)
    rope = HybridConfig(num_hidden_layers=4, layer_types="FWSL", position_encoding="rope")
    assert all(rope.layer_uses_rope(i) for i in range(4))
    assert HybridConfig(attn_logit_scaling=1.5).logit_scaling == ("const", 1.5)
    assert HybridConfig(attn_logit_scaling="hype 500").logit_scaling == ("hype", 500.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_hidden_layers=2, layer_types=["full_attention", "mamba"]), "layer_types[1]"),
        (dict(num_hidden_layers=3, layer_types=["full_attention"] * 2), "layer_types has 2 entries"),
        (dict(num_hidden_layers=4, layer_types="FXLL"), "pattern"),
        (dict(num_hidden_layers=4, layer_types="FL", full_attention_interval=2), "not both"),
        (dict(num_hidden_layers=4, full_attention_interval=0), "full_attention_interval"),
        (dict(num_attention_heads=6, num_key_value_heads=4), "num_key_value_heads"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(sliding_window=-3), "sliding_window"),
        (dict(head_dim=0), "head_dim"),
        (dict(position_encoding="alibi"), "position_encoding"),
        (dict(attn_logit_scaling="yarn"), "attn_logit_scaling"),
        (dict(attn_logit_scaling=-1.0), "attn_logit_scaling"),
        (dict(attn_logit_scaling="hype 0.5"), "a > 1"),
        (dict(sparse_block_size=60, sparse_kernel_stride=16), "sparse_block_size"),
        (dict(sparse_topk=-1), "sparse_topk"),
        (dict(sparse_dense_len=1.5), "sparse_dense_len"),
        (dict(lightning_decay="fla"), "lightning_decay"),
        (dict(lightning_num_heads=0), "lightning_num_heads"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(rope_extension={"rope_type": "yarn", "factor": 4}), "rope_extension"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        HybridConfig(**kwargs)


def test_expand_rejects_bad_depth():
    with pytest.raises(ValueError, match="num_hidden_layers"):
        expand_layer_types("SL", 0)


def test_builtin_shapes():
    sala = load_config("sala-9b-shape")
    sparse = [i for i, t in enumerate(sala.layer_types) if t == "sparse_attention"]
    assert sparse == [0, 9, 16, 17, 22, 29, 30, 31]
    assert sala.layer_types.count("lightning_attention") == 24
    assert (sala.num_attention_heads, sala.num_key_value_heads, sala.head_dim) == (32, 2, 128)
    assert (sala.lightning_num_heads, sala.lightning_head_dim, sala.intermediate_size, sala.vocab_size) == (
        32,
        128,
        16384,
        73448,
    )
    qwen = load_config("qwen3-8b-shape")
    assert qwen.layer_types == ["full_attention"] * 36 and qwen.num_key_value_heads == 8
    with pytest.raises(ValueError, match="built-in shape"):
        load_config("no-such-model")
