"""InferenceEngine: chunked prefill + decode gives generate's tokens; the planner refuses what cannot fit."""

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from longforge.cli import main
from longforge.infer import InferenceEngine, InferenceMemoryError, preallocated_cache
from longforge.models import HybridCache, HybridForCausalLM, from_transformers
from longforge.models.hybrid.memory import cache_bytes
from longforge.models.shapes import tiny_hybrid_shape

PROMPT_LEN, NEW = 150, 10


@pytest.fixture(scope="module")
def hybrid():
    torch.manual_seed(0)
    config = tiny_hybrid_shape()  # sparse + lightning + sliding + full
    assert set(config.layer_types) == {"sparse_attention", "lightning_attention", "sliding_attention", "full_attention"}
    return HybridForCausalLM(config).eval()


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, 512, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(hybrid, prompt):
    with torch.no_grad():
        return hybrid.generate(prompt, max_new_tokens=NEW, do_sample=False, pad_token_id=0)[:, PROMPT_LEN:]


@pytest.mark.parametrize("chunk_size,static", [(37, True), (64, False)])
def test_hybrid_engine_equals_generate(hybrid, prompt, reference, chunk_size, static):
    result = InferenceEngine(hybrid, chunk_size=chunk_size, static_cache=static).generate(prompt, NEW)
    assert torch.equal(result.tokens, reference)
    assert result.prompt_tokens == PROMPT_LEN and result.decode_steps == NEW - 1
    assert len(result.chunk_times_s) == -(-PROMPT_LEN // chunk_size)
    assert result.ttft_s > 0 and result.decode_tokens_per_s > 0


def test_preallocated_cache_holds_what_the_plan_counts(hybrid, prompt):
    config = hybrid.config
    cache = preallocated_cache(config, 1, PROMPT_LEN + 5, torch.float32, "cpu")
    grown = HybridCache(config)
    with torch.no_grad():
        a = hybrid(prompt[:, :100], cache=cache, use_cache=True).logits
        a2 = hybrid(prompt[:, 100:], cache=cache, use_cache=True).logits
        b = hybrid(prompt[:, :100], cache=grown, use_cache=True).logits
        b2 = hybrid(prompt[:, 100:], cache=grown, use_cache=True).logits
    torch.testing.assert_close(torch.cat([a, a2], 1), torch.cat([b, b2], 1))
    for static_layer, grown_layer in zip(cache.layers, grown.layers):
        if hasattr(grown_layer, "keys"):
            torch.testing.assert_close(static_layer.keys, grown_layer.keys[:, -static_layer.keys.shape[1] :])
    # the pre-allocated bytes are exactly the planner's count at the allocated length (+ compressed keys so far)
    planned = cache_bytes(config, PROMPT_LEN + 5, torch.float32)
    assert sum(layer.nbytes() for layer in cache.layers if layer.kind == "full_attention") == planned["full_attention"]
    with pytest.raises(ValueError, match="pre-allocated KV cache holds 155"):
        hybrid(prompt[:, :6], cache=cache, use_cache=True)


def test_qwen3_and_its_import_match_generate():
    torch.manual_seed(0)
    src = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=211,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            tie_word_embeddings=True,
        )
    ).eval()
    ids = torch.randint(0, 211, (1, 90), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = src.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)[:, 90:]
    assert torch.equal(InferenceEngine(src, chunk_size=32).generate(ids, 8, eos_token_id=None).tokens, ref)
    imported = from_transformers(src)
    assert torch.equal(InferenceEngine(imported, chunk_size=40).generate(ids, 8, eos_token_id=None).tokens, ref)


def test_sampling_is_seeded_and_limits_work(hybrid, prompt):
    engine = InferenceEngine(hybrid, chunk_size=64)
    short = prompt[:, :24]
    greedy = engine.generate(short, 4).tokens
    a = engine.generate(short, 4, temperature=1.0, top_p=0.9, seed=3).tokens
    assert torch.equal(a, engine.generate(short, 4, temperature=1.0, top_p=0.9, seed=3).tokens)
    draws = {tuple(engine.generate(short, 4, temperature=2.0, seed=s).tokens[0].tolist()) for s in range(3)}
    assert len(draws) > 1
    # top-k 1 and a tiny top-p both leave only the most likely token: greedy
    assert torch.equal(engine.generate(short, 4, temperature=0.7, top_k=1, seed=5).tokens, greedy)
    assert torch.equal(engine.generate(short, 4, temperature=0.7, top_p=1e-6, seed=5).tokens, greedy)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(short, 2, temperature=1.0, top_p=0.0)


def test_stops_on_eos(hybrid, prompt, reference):
    eos = int(reference[0, 3])
    first = int((reference[0] == eos).nonzero()[0])
    result = InferenceEngine(hybrid, chunk_size=64).generate(prompt, NEW, eos_token_id=eos)
    assert result.stopped_on_eos and torch.equal(result.tokens, reference[:, : first + 1])


def test_planner_refuses_an_impossible_request(hybrid, prompt):
    engine = InferenceEngine(hybrid, chunk_size=64, memory_budget_bytes=64 * 1024)
    with pytest.raises(InferenceMemoryError, match=r"150-token prompt .* needs .* only 64.00 KiB is free") as info:
        engine.generate(prompt, 4)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)
    assert info.value.need_bytes > info.value.free_bytes == 64 * 1024


def test_a_real_out_of_memory_becomes_the_same_error(hybrid, prompt):
    class RunsOutOfMemory(HybridForCausalLM):
        calls = 0

        def forward(self, *args, **kwargs):
            RunsOutOfMemory.calls += 1
            if RunsOutOfMemory.calls == 2:  # the second prefill chunk
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
            return super().forward(*args, **kwargs)

    model = RunsOutOfMemory(hybrid.config).eval()
    with pytest.raises(InferenceMemoryError, match="ran out of memory although the plan") as info:
        InferenceEngine(model, chunk_size=64).generate(prompt, 2)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_bad_requests_are_value_errors(hybrid):
    with pytest.raises(ValueError, match="chunk_size"):
        InferenceEngine(hybrid, chunk_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        InferenceEngine(hybrid).generate(torch.tensor([[1, 2]]), 0)
    with pytest.raises(ValueError, match="input_ids"):
        InferenceEngine(hybrid).generate(torch.zeros(1, 0, dtype=torch.long), 2)


def test_generate_cli_on_the_builtin_model(tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Once upon a time there was a long document. " * 12)
    assert (
        main(["generate", "tiny-teacher", "--prompt-file", str(prompt), "--max-new-tokens", "5", "--chunk-size", "64"])
        == 0
    )
    out = capsys.readouterr().out
    assert "prompt tokens" in out and "prefill (TTFT)" in out and "tokens/s" in out and "peak memory" in out
    assert main(["generate", "tiny-teacher", "--prompt-file", str(tmp_path / "missing.txt")]) == 2
