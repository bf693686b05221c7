"""Import of transformers Qwen3 / Llama weights: same function when nothing is converted, HALO transfer otherwise."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from longforge import from_transformers
from longforge.models import HybridForCausalLM, load_config
from longforge.models.adapters import to_transformers_state_dict

COMMON = dict(
    vocab_size=101,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rope_theta=10000.0,
)


def qwen3(**kw):
    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(**{**COMMON, "head_dim": 16, **kw})).eval()


def llama(**kw):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**COMMON, **kw})).eval()


def assert_same_function(src, hybrid, T=70):
    ids = torch.randint(0, 101, (2, T))
    mask = torch.ones_like(ids)
    mask[1, :13] = 0  # left padding as well
    with torch.no_grad():
        ref = src(ids, attention_mask=mask).logits
        out = hybrid(ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1, 13:], ref[1, 13:], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "make", [qwen3, lambda: qwen3(tie_word_embeddings=True), llama, lambda: llama(attention_bias=True)]
)
def test_same_logits_as_transformers_from_a_directory(make, tmp_path):
    src = make()
    src.save_pretrained(tmp_path)
    hybrid = from_transformers(tmp_path)
    assert isinstance(hybrid, HybridForCausalLM)
    assert hybrid.config.layer_types == ["full_attention"] * 3
    assert_same_function(src, hybrid)
    # and the config alone gives the same shape (what `longforge info DIR` reads)
    assert load_config(str(tmp_path)).num_key_value_heads == 2


def test_llama3_rope_scaling_is_reproduced():
    src = llama(
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    )
    hybrid = from_transformers(src)
    assert hybrid.config.rope_extension["rope_type"] == "llama3"
    assert_same_function(src, hybrid, T=200)


def test_generate_matches_transformers():
    src = qwen3()
    hybrid = from_transformers(src)
    ids = torch.randint(0, 101, (1, 30))
    with torch.no_grad():
        a = src.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=0)
        b = hybrid.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert torch.equal(a, b)


def test_export_back_to_transformers():
    src = qwen3()
    hybrid = from_transformers(src)
    state = to_transformers_state_dict(hybrid)
    twin = Qwen3ForCausalLM(src.config).eval()
    twin.load_state_dict(state, strict=True)
    ids = torch.randint(0, 101, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(twin(ids).logits, src(ids).logits, atol=1e-6, rtol=0)


def test_halo_transfer_into_lightning_layers():
    src = qwen3()
    hybrid = from_transformers(src, layer_types="LLF", position_encoding="hype", attn_output_gate=True)
    assert hybrid.config.layer_types == ["lightning_attention", "lightning_attention", "full_attention"]
    s_attn = src.model.layers[0].self_attn
    h_mix = hybrid.model.layers[0].mixer
    torch.testing.assert_close(h_mix.q_proj.weight, s_attn.q_proj.weight)
    torch.testing.assert_close(h_mix.o_proj.weight, s_attn.o_proj.weight)
    torch.testing.assert_close(h_mix.q_norm.weight, s_attn.q_norm.weight)
    # GQA → MHA: KV head g serves query heads 2g, 2g+1, so its rows appear twice in a row.
    k_src = s_attn.k_proj.weight.view(2, 16, 64)
    k_new = h_mix.k_proj.weight.view(4, 16, 64)
    for h in range(4):
        torch.testing.assert_close(k_new[h], k_src[h // 2])
    assert h_mix.z_proj is not None and h_mix.o_norm is not None
    torch.testing.assert_close(h_mix.o_norm.weight, torch.ones_like(h_mix.o_norm.weight))
    # the kept attention layer keeps its weights and gains a gate
    full = hybrid.model.layers[2].mixer
    torch.testing.assert_close(full.k_proj.weight, src.model.layers[2].self_attn.k_proj.weight)
    assert full.o_gate is not None and not full.use_rope
    # the hybrid runs and is a different function
    ids = torch.randint(0, 101, (1, 40))
    with torch.no_grad():
        assert torch.isfinite(hybrid(ids).logits).all()


def test_sparse_and_sliding_layers_inherit_dense_weights():
    src = qwen3()
    hybrid = from_transformers(src, layer_types="SWF", sparse_dense_len=8192, sliding_window=4096)
    # below dense_len and inside the window both are exactly dense attention
    assert_same_function(src, hybrid)


def test_unsupported_and_broken_sources(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64}))
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        from_transformers(tmp_path)
    with pytest.raises(ValueError, match="nor a local model directory"):
        from_transformers(tmp_path / "nowhere")
    src = qwen3()
    good = tmp_path / "qwen"
    src.save_pretrained(good)
    weights = good / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        from_transformers(good)
    with pytest.raises(ValueError, match="unknown HybridConfig field"):
        from_transformers(src, sliding_windw=3)
    with pytest.raises(ValueError, match="lightning_num_heads"):
        from_transformers(src, layer_types="LLF", lightning_num_heads=8)
