"""Static-shape decode (the step a CUDA graph captures) against the dynamic decode, on CPU: same logits (fp32, 1e-4)
and tokens for a model with every layer type, sparse layers really sparse, crossing the dense→sparse switch."""

import pytest
import torch
from tests.models.helpers import mixed_config

from longforge.infer import InferenceEngine, preallocated_cache
from longforge.infer.static_attention import decode_attention, decode_attention_reference
from longforge.infer.static_decode import StaticDecoder, StaticDecodeState, select_block_slots
from longforge.models import HybridCache, HybridForCausalLM
from longforge.ops.attention import naive_attention
from longforge.ops.sparse_attention import compress_keys, select_blocks

PROMPT, NEW = 40, 26


def _model(**overrides):
    torch.manual_seed(0)
    # full + sliding + sparse + lightning; 8-token blocks, top-2: the sparse layer reads a few of ~11 blocks.
    config = mixed_config(**overrides)
    assert set(config.layer_types) == {"sparse_attention", "lightning_attention", "sliding_attention",
                                       "full_attention"}
    return HybridForCausalLM(config).eval()


def _dynamic_and_static(model, prompt, new, static_prefill_cache: bool):
    """Greedy decode with the dynamic path; the static path is fed the same tokens. Returns both logit lists."""
    B, T = prompt.shape
    cfg = model.config
    with torch.no_grad():
        dyn = HybridCache(cfg)
        sta = preallocated_cache(cfg, B, T + new, torch.float32, "cpu") if static_prefill_cache else HybridCache(cfg)
        for start in range(0, T, 16):  # chunked prefill, as the engine does it
            a = model(prompt[:, start : start + 16], cache=dyn, use_cache=True, logits_to_keep=1).logits[:, -1]
            b = model(prompt[:, start : start + 16], cache=sta, use_cache=True, logits_to_keep=1).logits[:, -1]
        torch.testing.assert_close(a, b)
        decoder = StaticDecoder(model, StaticDecodeState(model, sta, T + new), cuda_graph=False)
        token = a.argmax(-1)
        dyn_logits, sta_logits = [], []
        for _ in range(new - 1):
            dyn_logits.append(model(token[:, None], cache=dyn, use_cache=True).logits[:, -1].float())
            sta_logits.append(decoder.step(token).clone())
            token = dyn_logits[-1].argmax(-1)
    return dyn_logits, sta_logits


@pytest.mark.parametrize("dense_len,batch,static_prefill_cache", [(-1, 1, True), (52, 2, True), (-1, 1, False)])
def test_static_decode_matches_dynamic(dense_len, batch, static_prefill_cache):
    model = _model(sparse_dense_len=dense_len)
    prompt = torch.randint(0, 97, (batch, PROMPT), generator=torch.Generator().manual_seed(1))
    dyn, sta = _dynamic_and_static(model, prompt, NEW, static_prefill_cache)
    for i, (a, b) in enumerate(zip(dyn, sta)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=lambda m, i=i: f"decode step {i}: {m}")
        assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_engine_static_decode_equals_dynamic_decode():
    model = _model()
    prompt = torch.randint(0, 97, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    ref = InferenceEngine(model, chunk_size=16, static_decode=False).generate(prompt, 20, eos_token_id=None)
    engine = InferenceEngine(model, chunk_size=16, static_decode=True)
    out = engine.generate(prompt, 20, eos_token_id=None)
    assert torch.equal(out.tokens, ref.tokens)
    assert engine.last_decode_info == {"static": True, "cuda_graph": False, "graph_replays": 0, "graph_failed": None,
                                       "capture_s": 0.0, "replay_tokens_per_s": None}
    # the default on CPU is the dynamic decode; cuda_graph is ignored there
    assert not InferenceEngine(model, cuda_graph=True).static_decode


def test_static_decoder_refuses_a_step_past_its_buffers():
    model = _model()
    cache = HybridCache(model.config)
    with torch.inference_mode():
        model(torch.ones(1, 5, dtype=torch.long), cache=cache, use_cache=True)
        decoder = StaticDecoder(model, StaticDecodeState(model, cache, 7), cuda_graph=True)  # ignored on CPU
        token = torch.ones(1, dtype=torch.long)
        decoder.step(token)
        decoder.step(token)  # positions 5 and 6 of 7
        with pytest.raises(ValueError, match="all 7 are used"):
            decoder.step(token)
    assert decoder.replays == 0 and not decoder.use_graph


def test_decode_attention_over_the_buffer_equals_attention_of_the_prefix():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 1, 6, 24, generator=g)
    k, v = torch.randn(2, 50, 2, 24, generator=g), torch.randn(2, 50, 2, 24, generator=g)
    for pos in (0, 17, 49):
        ref = naive_attention(q, k[:, : pos + 1], v[:, : pos + 1], causal=True)
        out = decode_attention(q, k, v, torch.tensor(pos))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decode_attention_reference(q, k, v, torch.tensor(20), limit=21),
                               naive_attention(q, k[:, :21], v[:, :21], causal=True), atol=1e-5, rtol=1e-5)


def test_block_slots_are_the_reference_selection():
    g = torch.Generator().manual_seed(4)
    kw = dict(block_size=8, kernel_size=4, kernel_stride=2, topk=3, init_blocks=1, window_size=16)
    k = torch.randn(1, 120, 2, 16, generator=g)
    kc_all = compress_keys(k, 4, 2)
    for pos in (3, 9, 40, 77, 119):
        q = torch.randn(1, 1, 4, 16, generator=g)
        kc = compress_keys(k[:, : pos + 1], 4, 2)
        ref = select_blocks(q, kc, q_positions=torch.tensor([pos]), num_blocks=pos // 8 + 1, **kw)[:, :, 0]
        blocks, valid = select_block_slots(q, kc_all, torch.tensor(pos), num_blocks=15, scale=16**-0.5, **kw)
        got = torch.zeros(1, 2, 15, dtype=torch.bool)
        for h in range(2):
            chosen = blocks[0, h][valid[0, h]]
            assert len(set(chosen.tolist())) == len(chosen)  # each selected block once
            got[0, h, chosen] = True
        assert torch.equal(got[..., : pos // 8 + 1], ref) and not got[..., pos // 8 + 1 :].any()


def test_static_state_rejects_bad_requests():
    model = _model()
    cfg = model.config
    with pytest.raises(ValueError, match="prefill"):
        StaticDecodeState(model, HybridCache(cfg), 10)
    cache = HybridCache(cfg)
    with torch.no_grad():
        model(torch.ones(1, 5, dtype=torch.long), cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="already holds 5"):
        StaticDecodeState(model, cache, 5)
    with pytest.raises(ValueError, match="static_decode needs a HybridForCausalLM"):
        InferenceEngine(torch.nn.Linear(2, 2), static_decode=True)


_INTERPRET_SCRIPT = r"""
import torch
from longforge.infer.static_attention import decode_attention_reference, decode_attention_triton
torch.manual_seed(0)
# fp32 and fp16 (the interpreter's bf16 dot is wrong, so bf16 is checked on the GPU only); a split past pos, GQA 4
for B, H, Hkv, D, L, pos, limit, dt in [(2, 8, 2, 32, 700, 137, None, torch.float32),
                                        (1, 6, 2, 48, 300, 0, 64, torch.float16)]:
    q, k, v = (torch.randn(B, n, h, D, dtype=dt) for n, h in ((1, H), (L, Hkv), (L, Hkv)))
    out = decode_attention_triton(q, k, v, torch.tensor(pos), limit=limit)
    ref = decode_attention_reference(q, k, v, torch.tensor(pos), limit=limit)
    tol = 1e-5 if dt == torch.float32 else 2e-3
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
print("ok")
"""


def test_triton_decode_attention_under_the_interpreter():
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", _INTERPRET_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_static_step_never_reads_a_device_value_on_the_host():
    """What CUDA-graph capture forbids, checked on CPU: no op of the step copies a tensor value to the host
    (``.item()``, ``bool(t)``, ``nonzero``, boolean-mask indexing), in both sparse regimes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from longforge.infer.static_decode import static_decode_step

    class NoHostReads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            indices = args[1] if name in ("index", "index_put", "index_put_") and len(args) > 1 else ()
            bool_index = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
            if name in ("_local_scalar_dense", "is_nonzero", "item", "nonzero", "masked_select", "equal") or bool_index:
                raise AssertionError(f"host read in the static decode step: aten.{name}")
            return func(*args, **(kwargs or {}))

    model = _model(sparse_dense_len=50)
    cache = HybridCache(model.config)
    with torch.inference_mode():
        model(torch.randint(0, 97, (1, 48)), cache=cache, use_cache=True)
        state = StaticDecodeState(model, cache, 60)
        ids = torch.ones(1, 1, dtype=torch.long)
        for dense in (True, False):
            with NoHostReads():
                static_decode_step(model, ids, state, (dense,))


def test_preallocated_buffers_start_zeroed():
    """The static step reads the whole buffer with the unwritten tail masked: 0 · NaN from uninitialised memory
    would still be NaN, so both keys and values must start at zero."""
    cfg = mixed_config()
    cache = preallocated_cache(cfg, 2, 300, torch.float32, "cpu")
    kv = [layer for layer in cache.layers if hasattr(layer, "_k")]
    assert kv and all(not layer._k.any() and not layer._v.any() for layer in kv)
