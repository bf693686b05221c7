"""CUDA-graph decode (skipped without a GPU): the graph replays give the eager static step's logits in fp32 and bf16,
the engine uses the graph by default and still produces generate's tokens, and the Triton split-KV decode attention
matches its PyTorch reference."""

import pytest
import torch
from tests.models.helpers import mixed_config

from longforge.infer import InferenceEngine, preallocated_cache
from longforge.infer.static_attention import decode_attention_reference, decode_attention_triton
from longforge.infer.static_decode import StaticDecoder, StaticDecodeState
from longforge.models import HybridForCausalLM
from longforge.models.shapes import tiny_hybrid_shape

pytestmark = pytest.mark.gpu


def _prefilled(model, prompt, new, dtype):
    cache = preallocated_cache(model.config, prompt.shape[0], prompt.shape[1] + new, dtype, "cuda")
    logits = model(prompt, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
    return StaticDecodeState(model, cache, prompt.shape[1] + new), logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_decode_equals_eager_static_decode(dtype):
    torch.manual_seed(0)
    # every layer type; dense_len 70 puts the sparse layer's dense -> sparse switch inside the decode (two graphs)
    model = HybridForCausalLM(mixed_config(sparse_dense_len=70)).eval().to("cuda", dtype)
    prompt = torch.randint(0, 97, (2, 60), generator=torch.Generator().manual_seed(1)).cuda()
    new = 30
    with torch.inference_mode():
        st_e, first = _prefilled(model, prompt, new, dtype)
        st_g, _ = _prefilled(model, prompt, new, dtype)
        eager, graph = StaticDecoder(model, st_e, cuda_graph=False), StaticDecoder(model, st_g, cuda_graph=True)
        token = first.argmax(-1)
        for i in range(new - 1):
            a = eager.step(token).clone()
            b = graph.step(token).clone()
            tol = 1e-5 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(b, a, atol=tol, rtol=tol, msg=lambda m, i=i: f"step {i}: {m}")
            token = a.argmax(-1)
    assert graph.graph_failed is None and graph.use_graph
    assert len(graph.graphs) == 2 and graph.replays >= new - 1 - 2 * 2 * graph.warmup


def test_engine_uses_the_graph_and_keeps_generate_tokens():
    torch.manual_seed(0)
    model = HybridForCausalLM(tiny_hybrid_shape()).eval().cuda()
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=0)[:, 300:]
    engine = InferenceEngine(model, chunk_size=128)
    result = engine.generate(ids, 24)
    assert torch.equal(result.tokens, ref)
    info = engine.last_decode_info
    assert info["static"] and info["cuda_graph"] and info["graph_failed"] is None and info["graph_replays"] > 10
    eager = InferenceEngine(model, chunk_size=128, cuda_graph=False)
    assert torch.equal(eager.generate(ids, 24).tokens, ref) and not eager.last_decode_info["static"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 32, 8, 128, 5000, 4321), (2, 6, 2, 64, 700, 0), (1, 32, 2, 128, 70000, 69999)])
def test_triton_decode_attention_matches_reference(dtype, shape):
    B, H, Hkv, D, L, pos = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, 1, H, D, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(B, L, Hkv, D, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(B, L, Hkv, D, device="cuda", dtype=dtype, generator=g)
    p = torch.tensor(pos, device="cuda")
    out = decode_attention_triton(q, k, v, p)
    ref = decode_attention_reference(q, k, v, p)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
