"""Model loading for evaluation: longforge directories, transformers' own models, built-in names."""

import pytest
import torch

from longforge.eval import EvalConfig, run_eval
from longforge.eval.loading import (
    BUILTIN_MODELS,
    load_model_and_tokenizer,
    register_builtin_model,
    resolve_dtype,
    resolve_model_path,
)


def test_loads_a_longforge_directory(model_dir):
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu", dtype="float32")
    assert type(model).__name__ == "HybridForCausalLM" and not model.training
    assert tokenizer.eos_token_id == 0 and next(model.parameters()).dtype == torch.float32


def test_builtin_name_hook(model_dir, monkeypatch):
    monkeypatch.setitem(BUILTIN_MODELS, "test-builtin", lambda: model_dir)
    assert resolve_model_path("test-builtin") == model_dir
    register_builtin_model("test-builtin-2", lambda: str(model_dir))
    try:
        model, _ = load_model_and_tokenizer("test-builtin-2", device="cpu")
        assert model.config.vocab_size == 2048
    finally:
        BUILTIN_MODELS.pop("test-builtin-2")


def test_bad_model_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'tiny-teacher-x'"):
        resolve_model_path("tiny-teacher-x")
    with pytest.raises(ValueError, match="has no config.json"):
        resolve_model_path(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        resolve_model_path(tmp_path / "weights.bin")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp8", "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16


def test_transformers_qwen3_runs_through_the_suite(tmp_path, tokenizer):
    """Any HF causal LM directory works, not only longforge's (here a tiny random Qwen3)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        model.model.norm.weight.zero_()  # all logits 0: greedy says EOS (id 0) at once, keeping the test fast
    model.save_pretrained(tmp_path / "qwen3")
    tokenizer.save_pretrained(tmp_path / "qwen3")
    config = EvalConfig(
        model=str(tmp_path / "qwen3"), suite="ruler-lite", tasks=["niah_single_1", "qa_1"], lengths=[1024],
        samples=2, batch_size=2, device="cpu", out=str(tmp_path / "out"),
    )  # fmt: skip
    results = run_eval(config, progress=False)
    assert results["environment"]["model_class"] == "Qwen3ForCausalLM"
    assert results["scores"] == {"niah_single_1": {"1024": 0.0}, "qa_1": {"1024": 0.0}}
    assert (tmp_path / "out" / "results.md").is_file()
