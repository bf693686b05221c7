"""Fast paths of the attention ops against their fp32 references, forward and backward.

GPU tests (``@pytest.mark.gpu``, skipped without CUDA) cover every fast path in bf16 and fp32 on awkward shapes.
The CPU tests cover what runs without a GPU: SDPA/chunked attention and FlexAttention (eager, forward) on CPU,
the sparse block selection, the Triton sparse kernel under ``TRITON_INTERPRET=1`` (skipped without triton),
and the explicit fallback of the fla wrapper.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from longforge.ops.attention import attention, naive_attention
from longforge.ops.attention.flex import flex_attention_masked
from longforge.ops.attention.sdpa import fast_attention
from longforge.ops.linear_attention import alibi_decay, lightning_attention, lightning_chunk, lightning_recurrent
from longforge.ops.linear_attention.fla import fla_chunk
from longforge.ops.sparse_attention import naive_sparse_attention, selected_blocks, sparse_attention
from longforge.ops.sparse_attention.fast import fast_sparse_attention, select_block_indices
from longforge.ops.sparse_attention.naive import compress_keys

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
gpu = pytest.mark.gpu


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(|b|, 1e-6), both in fp32."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-6)).item()


def _tol(dtype) -> float:
    return 2e-2 if dtype != torch.float32 else 2e-3


def _leaves(*shapes, dtype, device, gen):
    return [torch.randn(*s, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype).requires_grad_()
            for s in shapes]


def _fwd_bwd(fn, leaves, **kw):
    for x in leaves:
        x.grad = None
    out = fn(*leaves, **kw)
    o = out[0] if isinstance(out, tuple) else out
    torch.manual_seed(1)
    g = torch.randn(o.shape, dtype=torch.float32).to(o)
    loss = (o.float() * g.float()).sum()
    if isinstance(out, tuple) and out[1] is not None:
        loss = loss + out[1].float().sum() * 1e-2
    loss.backward()
    return out, [x.grad.clone() for x in leaves]


def _compare(fast_out, fast_grads, ref_out, ref_grads, tol):
    fo = fast_out[0] if isinstance(fast_out, tuple) else fast_out
    ro = ref_out[0] if isinstance(ref_out, tuple) else ref_out
    assert fo.dtype == ro.dtype and fo.shape == ro.shape
    assert not torch.isnan(fo).any()
    assert _rel_err(fo, ro) < tol, ("output", _rel_err(fo, ro))
    if isinstance(fast_out, tuple) and fast_out[1] is not None:
        assert fast_out[1].dtype == torch.float32
        assert _rel_err(fast_out[1], ref_out[1]) < tol, ("state", _rel_err(fast_out[1], ref_out[1]))
    for i, (a, b) in enumerate(zip(fast_grads, ref_grads)):
        assert not torch.isnan(a).any(), f"grad {i} has NaN"
        assert _rel_err(a, b) < 2 * tol, (f"grad {i}", _rel_err(a, b))


# ---------------------------------------------------------------- attention

ATTN_CASES = [
    # B, Tq, Tk, H, Hkv, D, Dv, causal, window, padded
    (2, 77, 77, 4, 2, 64, 64, True, None, False),  # plain causal, GQA 2
    (1, 50, 300, 8, 1, 64, 64, True, None, False),  # causal, Tq < Tk, GQA 8
    (2, 1, 333, 4, 2, 64, 64, True, None, False),  # decode
    (2, 1, 333, 4, 2, 64, 64, True, 100, True),  # decode with window and padding
    (1, 200, 200, 4, 4, 64, 64, True, 70, False),  # sliding window
    (2, 130, 260, 4, 2, 64, 64, True, 64, True),  # sliding, Tq < Tk, padding
    (2, 90, 90, 4, 2, 64, 64, True, None, True),  # left padding, rows with no visible key
    (2, 40, 60, 4, 2, 64, 32, False, None, True),  # bidirectional with padding, Dv != D
]


def _attn_case(case, dtype, device):
    B, Tq, Tk, H, Hkv, D, Dv, causal, window, padded = case
    gen = torch.Generator().manual_seed(hash(case) % 2**31)
    leaves = _leaves((B, Tq, H, D), (B, Tk, Hkv, D), (B, Tk, Hkv, Dv), dtype=dtype, device=device, gen=gen)
    pad = None
    if padded:
        pad = torch.ones(B, Tk, dtype=torch.bool)
        pad[0, : Tk // 2 + 3] = False  # left padding: the first queries of row 0 see nothing
        pad[-1, torch.randperm(Tk, generator=gen)[: Tk // 5]] = False
        pad = pad.to(device)
    return leaves, dict(causal=causal, window=window, key_padding_mask=pad)


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", ATTN_CASES)
def test_attention_fast_matches_reference_gpu(case, dtype, monkeypatch):
    monkeypatch.delenv("LONGFORGE_BACKEND_ATTENTION", raising=False)
    leaves, kw = _attn_case(case, dtype, "cuda")
    fast = _fwd_bwd(attention, leaves, **kw)  # the seam picks the fast path on CUDA
    ref = _fwd_bwd(naive_attention, leaves, **kw)
    _compare(*fast, *ref, _tol(dtype))


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_attention_flex_path_gpu(dtype):
    """FlexAttention itself (compiled) on the masked cases, forward and backward."""
    for case in ATTN_CASES[4:7]:
        leaves, kw = _attn_case(case, dtype, "cuda")
        fn = lambda q, k, v, **kw: flex_attention_masked(q, k, v, scale=q.shape[-1] ** -0.5, **kw)  # noqa: E731
        _compare(*_fwd_bwd(fn, leaves, **kw), *_fwd_bwd(naive_attention, leaves, **kw), _tol(dtype))


@pytest.mark.parametrize("case", [ATTN_CASES[i] for i in (3, 5, 7)])
def test_attention_fast_on_cpu(case):
    """The SDPA / chunked-mask path on CPU (forward and backward) and FlexAttention eager (forward)."""
    leaves, kw = _attn_case(case, torch.float32, "cpu")
    _compare(*_fwd_bwd(fast_attention, leaves, **kw), *_fwd_bwd(naive_attention, leaves, **kw), 1e-5)
    q, k, v = (x.detach() for x in leaves)
    flex = flex_attention_masked(q, k, v, scale=q.shape[-1] ** -0.5, **kw, compiled=False)
    assert _rel_err(flex, naive_attention(q, k, v, **kw)) < 1e-5


def test_attention_fast_rejects_bad_input():
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(ValueError, match="window"):
        fast_attention(q, q, q, window=0)
    with pytest.raises(ValueError, match="key_padding_mask"):
        fast_attention(q, q, q, key_padding_mask=torch.ones(1, 3, dtype=torch.bool))


# ---------------------------------------------------------------- lightning


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("B,T,H,K,V", [(2, 100, 4, 64, 64), (1, 257, 2, 128, 64), (2, 1, 4, 64, 128)])
@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
def test_lightning_fla_matches_reference_gpu(B, T, H, K, V, dtype, mode, monkeypatch):
    if importlib.util.find_spec("fla") is None:
        pytest.skip("fla not installed")
    monkeypatch.delenv("LONGFORGE_BACKEND_LIGHTNING", raising=False)
    if mode == "recurrent" and T > 64:
        T = 64  # the reference recurrence is a Python loop
    gen = torch.Generator().manual_seed(T * 7 + K)
    q, k, v = _leaves((B, T, H, K), (B, T, H, K), (B, T, H, V), dtype=dtype, device="cuda", gen=gen)
    h0 = (torch.randn(B, H, K, V, generator=gen) * 0.1).cuda().requires_grad_()
    g = alibi_decay(H, device="cuda")
    kw = dict(scale=0.1, initial_state=h0, output_final_state=True)

    def fast(q, k, v, h0):
        return lightning_attention(q, k, v, g, mode=mode, **{**kw, "initial_state": h0})

    ref_fn = lightning_chunk if mode == "chunk" else lightning_recurrent

    def ref(q, k, v, h0):
        return ref_fn(q, k, v, g, **{**kw, "initial_state": h0})

    _compare(*_fwd_bwd(fast, [q, k, v, h0]), *_fwd_bwd(ref, [q, k, v, h0]), 2 * _tol(dtype))


def test_lightning_one_token_step_and_decay_check_on_cpu():
    """The one-token decode step (used on CUDA instead of fla's fused_recurrent) equals the reference, with and
    without a state; the decay sign check is cached per tensor version, so an in-place change is still caught."""
    from longforge.ops.linear_attention.fla import _one_token
    from longforge.ops.linear_attention.naive import _check_inputs

    gen = torch.Generator().manual_seed(6)
    q, k = torch.randn(2, 1, 4, 16, generator=gen), torch.randn(2, 1, 4, 16, generator=gen)
    v, h0 = torch.randn(2, 1, 4, 8, generator=gen), torch.randn(2, 4, 16, 8, generator=gen)
    g = alibi_decay(4)
    for state in (None, h0):
        o, S = _one_token(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, 0.25, state, True)
        ro, rS = lightning_recurrent(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, scale=0.25, initial_state=state,
                                     output_final_state=True)
        assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
        assert _rel_err(o, ro) < 1e-2 and _rel_err(S, rS) < 1e-5
    _check_inputs(q, k, v, g, None)
    g.add_(1.0)  # now positive: must be re-checked and refused
    with pytest.raises(ValueError, match="log decay"):
        _check_inputs(q, k, v, g, None)


def test_lightning_fla_falls_back_explicitly_on_cpu():
    q, k, v = (torch.randn(1, 10, 2, 8) for _ in range(3))
    g = alibi_decay(2)
    with pytest.warns(UserWarning, match="running the reference"):
        o, s = fla_chunk(q, k, v, g, output_final_state=True)
    o_ref, s_ref = lightning_chunk(q, k, v, g, output_final_state=True)
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(s, s_ref)


# ---------------------------------------------------------------- sparse attention

SELECTION_KEYS = ("block_size", "kernel_size", "kernel_stride", "topk", "init_blocks", "window_size")
SPARSE_CFG = dict(block_size=16, kernel_size=8, kernel_stride=4, topk=3, init_blocks=1, window_size=24)
SPARSE_CASES = [
    # B, Tq, Tk, H, Hkv, D, dense_len
    (1, 300, 300, 4, 2, 64, 100),  # dense prefix then sparse, T not a multiple of the block
    (2, 77, 400, 8, 2, 64, 0),  # always sparse, Tq < Tk, GQA 4
    (1, 1, 517, 4, 1, 128, 64),  # decode, GQA 4
    (1, 150, 150, 2, 2, 32, 1000),  # all dense (switch)
]


def _sparse_case(case, dtype, device):
    B, Tq, Tk, H, Hkv, D, dense_len = case
    gen = torch.Generator().manual_seed(sum(case))
    leaves = _leaves((B, Tq, H, D), (B, Tk, Hkv, D), (B, Tk, Hkv, D), dtype=dtype, device=device, gen=gen)
    return leaves, dict(SPARSE_CFG, dense_len=dense_len)


def _assert_selection_equal(q, k, cfg):
    """The fast index lists select exactly the reference's blocks (dense switch off)."""
    cfg = {**cfg, "dense_len": 0}
    ref = selected_blocks(q, k, **cfg)  # [B, Hkv, Tq, NB]
    kc = compress_keys(k, cfg["kernel_size"], cfg["kernel_stride"])
    sel = {key: cfg[key] for key in SELECTION_KEYS}
    idx, cnt = select_block_indices(q, kc, num_keys=k.shape[1], **sel)
    mask = torch.zeros(ref.shape[:-1] + (ref.shape[-1] + 1,), dtype=torch.bool, device=q.device)
    mask.scatter_(-1, torch.where(idx >= 0, idx, ref.shape[-1]).long(), True)
    assert torch.equal(mask[..., :-1], ref)
    assert torch.equal(cnt, ref.sum(-1).int())


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", SPARSE_CASES)
def test_sparse_fast_matches_reference_gpu(case, dtype, monkeypatch):
    monkeypatch.delenv("LONGFORGE_BACKEND_SPARSE_ATTENTION", raising=False)
    leaves, cfg = _sparse_case(case, dtype, "cuda")
    fast = _fwd_bwd(sparse_attention, leaves, **cfg)
    ref = _fwd_bwd(naive_sparse_attention, leaves, **cfg)
    _compare(*fast, *ref, _tol(dtype))
    if dtype == torch.float32:
        _assert_selection_equal(leaves[0].detach(), leaves[1].detach(), cfg)


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_sparse_triton_scorer_gpu(dtype, monkeypatch):
    """The Triton block scorer (used for long inputs) against the reference selection and output.

    Its sums run in another order than the reference's, so blocks whose scores tie to ~1e-6 may flip: allow a
    tiny fraction of differing (token, group) selections, and compare outputs on the tokens that agree.
    """
    monkeypatch.setenv("LONGFORGE_SPARSE_SCORES", "triton")
    leaves, cfg = _sparse_case((2, 300, 700, 8, 2, 64, 0), dtype, "cuda")
    q, k, v = (x.detach() for x in leaves)
    ref_sel = selected_blocks(q, k, **cfg)
    sel = {key: cfg[key] for key in SELECTION_KEYS}
    kc = compress_keys(k, cfg["kernel_size"], cfg["kernel_stride"])
    idx, cnt = select_block_indices(q, kc, num_keys=k.shape[1], **sel)
    mask = torch.zeros(ref_sel.shape[:-1] + (ref_sel.shape[-1] + 1,), dtype=torch.bool, device="cuda")
    mask.scatter_(-1, torch.where(idx >= 0, idx, ref_sel.shape[-1]).long(), True)
    same = (mask[..., :-1] == ref_sel).all(-1)  # [B, Hkv, Tq]
    assert same.float().mean().item() >= 0.99, same.float().mean().item()
    out = fast_sparse_attention(q, k, v, **cfg)
    ref = naive_sparse_attention(q, k, v, **cfg)
    ok = same.all(1)  # [B, Tq]: tokens whose every group agrees
    assert _rel_err(out[ok], ref[ok]) < _tol(dtype)


def _block_mask(idx, num_blocks):
    mask = torch.zeros(idx.shape[:-1] + (num_blocks + 1,), dtype=torch.bool, device=idx.device)
    mask.scatter_(-1, torch.where(idx >= 0, idx, num_blocks).long(), True)
    return mask[..., :-1]


@gpu
def test_sparse_bf16_block_scorer_gpu(monkeypatch):
    """The bf16 tensor-core block scorer (the default for long bf16 inputs): selection agreement with the fp32
    reference >= 99 % of the selected blocks on random data, and the attention over *its* selection equal to the
    reference attention computed with the same selection (an explicit mask)."""
    from longforge.ops.attention import masked_attention
    from longforge.ops.sparse_attention.triton_kernel import triton_sparse_attention

    monkeypatch.setenv("LONGFORGE_SPARSE_SCORES", "triton-bf16")
    cfg = dict(block_size=64, kernel_size=32, kernel_stride=16, topk=8, init_blocks=1, window_size=256)
    gen = torch.Generator().manual_seed(11)
    q, k, v = (x.detach() for x in _leaves((1, 700, 16, 128), (1, 3000, 2, 128), (1, 3000, 2, 128),
                                           dtype=torch.bfloat16, device="cuda", gen=gen))
    ref_sel = selected_blocks(q, k, **cfg, dense_len=0)  # [B, Hkv, Tq, NB], fp32 scores
    kc = compress_keys(k, 32, 16)
    idx, cnt = select_block_indices(q, kc, num_keys=k.shape[1], **cfg)
    sel = _block_mask(idx, ref_sel.shape[-1])
    agree = (sel & ref_sel).sum().item() / ref_sel.sum().item()
    from longforge.ops.sparse_attention import fast as fast_mod

    assert not fast_mod._blockscore_failed, fast_mod._blockscore_failed  # the bf16 kernel itself ran
    assert agree >= 0.99, agree
    assert torch.equal(cnt, sel.sum(-1).int())
    out = triton_sparse_attention(q, k, v, idx, cnt, 128**-0.5, 64)
    Tk = k.shape[1]
    t = torch.arange(Tk - q.shape[1], Tk, device="cuda")
    vis = sel.repeat_interleave(64, dim=-1)[..., :Tk] & (torch.arange(Tk, device="cuda") <= t[:, None])
    ref = masked_attention(q, k, v, vis)
    assert _rel_err(out, ref) < 2e-2


@gpu
def test_attention_split_prefix_variants_gpu():
    """Chunked-prefill attention (causal, Tq < Tk) without FlexAttention: the variant picked for inference (prefix
    + diagonal merged by log-sum-exp) and the lower-right flash path, against the reference."""
    from longforge.ops.attention.sdpa import lower_right_causal_sdpa, pick_prefix_variant, split_prefix_attention

    gen = torch.Generator().manual_seed(4)
    q, k, v = (x.detach() for x in _leaves((1, 1000, 8, 128), (1, 3000, 2, 128), (1, 3000, 2, 128),
                                           dtype=torch.bfloat16, device="cuda", gen=gen))
    ref = naive_attention(q, k, v, causal=True)
    variant = pick_prefix_variant(q, k, v)
    assert variant is not None
    assert _rel_err(split_prefix_attention(q, k, v, scale=128**-0.5, variant=variant), ref) < 2e-2
    assert _rel_err(lower_right_causal_sdpa(q, k, v, scale=128**-0.5), ref) < 2e-2
    with torch.no_grad():
        assert _rel_err(fast_attention(q, k, v, causal=True), ref) < 2e-2


def test_attention_split_prefix_merge_on_cpu():
    """The prefix (non-causal) + diagonal (causal) log-sum-exp merge is exact (CPU flash kernel)."""
    from longforge.ops.attention.sdpa import split_prefix_attention

    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(*s, generator=gen) for s in ((2, 37, 4, 16), (2, 100, 2, 16), (2, 100, 2, 16)))
    out = split_prefix_attention(q, k, v, scale=0.25, variant="split-cpu-expand")
    assert _rel_err(out, naive_attention(q, k, v, scale=0.25, causal=True)) < 1e-5


@gpu
def test_sparse_decode_with_cached_compressed_keys_gpu():
    """One query against a long cache, compressed keys passed in (as the cache does), SALA-like block sizes."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (x.detach() for x in _leaves((1, 1, 16, 128), (1, 9000, 2, 128), (1, 9000, 2, 128),
                                           dtype=torch.bfloat16, device="cuda", gen=gen))
    cfg = dict(block_size=64, kernel_size=32, kernel_stride=16, topk=16, init_blocks=1, window_size=512,
               dense_len=8192)
    kc = compress_keys(k, 32, 16)
    fast = fast_sparse_attention(q, k, v, compressed_k=kc, **cfg)
    ref = naive_sparse_attention(q, k, v, compressed_k=kc, **cfg)
    assert _rel_err(fast, ref) < 2e-2


def test_sparse_decode_path_on_cpu():
    """The one-token decode path (selection from cached compressed keys, gathered blocks, one SDPA call) equals the
    reference, including GQA, Dv != D, several init blocks and a ragged last block."""
    from longforge.ops.sparse_attention.fast import sparse_decode

    gen = torch.Generator().manual_seed(8)
    for B, Tk, H, Hkv, D, Dv, cfg in (
        (2, 517, 4, 1, 32, 16, dict(SPARSE_CFG)),
        (1, 70, 4, 2, 16, 16, dict(SPARSE_CFG, topk=8, init_blocks=2, window_size=40)),
    ):
        q, k, v = (torch.randn(*s, generator=gen) for s in ((B, 1, H, D), (B, Tk, Hkv, D), (B, Tk, Hkv, Dv)))
        kc = compress_keys(k, cfg["kernel_size"], cfg["kernel_stride"])
        out = sparse_decode(q, k, v, kc, scale=D**-0.5, **cfg)
        ref = naive_sparse_attention(q, k, v, compressed_k=kc, dense_len=0, **cfg)
        assert _rel_err(out, ref) < 1e-5


def test_sparse_selection_indices_on_cpu():
    for case in SPARSE_CASES[:3]:
        (q, k, _), cfg = _sparse_case(case, torch.float32, "cpu")
        _assert_selection_equal(q.detach(), k.detach(), cfg)


_INTERPRET_SCRIPT = r"""
import torch
from longforge.ops.sparse_attention.fast import fast_sparse_attention
from longforge.ops.sparse_attention.naive import naive_sparse_attention
cfg = dict(block_size=8, kernel_size=4, kernel_stride=2, topk=1, init_blocks=1, window_size=8, dense_len=27)
import os
for dtype, tol, scores in ((torch.float32, 1e-5, "triton"), (torch.float32, 1e-5, "triton-bf16"),
                           (torch.float16, 5e-3, "torch")):  # no bf16 dot here (triton-bf16 runs fp32 dots)
    os.environ["LONGFORGE_SPARSE_SCORES"] = scores  # the Triton block scorer too
    g = torch.Generator().manual_seed(5)
    shapes = ((1, 3, 2, 16), (1, 29, 1, 16), (1, 29, 1, 16))
    q, k, v = (torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes)
    grad = torch.randn(1, 3, 2, 16, generator=g).to(dtype)
    res = []
    for fn in (fast_sparse_attention, naive_sparse_attention):
        for x in (q, k, v):
            x.grad = None
        o = fn(q, k, v, **cfg)
        o.backward(grad)
        res.append([o.detach().float()] + [x.grad.float() for x in (q, k, v)])
    for a, b in zip(*res):
        err = ((a - b).abs().max() / b.abs().max()).item()
        assert err < tol, (dtype, err)
print("interpreted sparse kernel ok")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_sparse_triton_kernel_interpreted_on_cpu():
    """The Triton kernel (forward + backward) under TRITON_INTERPRET=1, in a fresh process (the flag is read when
    triton is imported)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1", LONGFORGE_SPARSE_TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", _INTERPRET_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interpreted sparse kernel ok" in done.stdout


def test_sparse_fast_falls_back_explicitly_on_cpu(monkeypatch):
    monkeypatch.delenv("LONGFORGE_SPARSE_TRITON_INTERPRET", raising=False)
    (q, k, v), cfg = _sparse_case(SPARSE_CASES[1], torch.float32, "cpu")
    with pytest.warns(UserWarning, match="running the reference"):
        out = fast_sparse_attention(q.detach(), k.detach(), v.detach(), **cfg)
    torch.testing.assert_close(out, naive_sparse_attention(q.detach(), k.detach(), v.detach(), **cfg))
    assert math.isfinite(out.abs().sum().item())


# ---------------------------------------------------------------- sparse attention: tile kernel, fused top-k

_TILE_INTERPRET_SCRIPT = r"""
import os
import torch
from longforge.ops.sparse_attention.fast import fast_sparse_attention, select_block_indices, sparse_attend
from longforge.ops.sparse_attention.naive import compress_keys, naive_sparse_attention, selected_blocks
from longforge.ops.sparse_attention.triton_tile import sparse_fwd_tile, tile_unions
from longforge.ops.sparse_attention.triton_topk import select_topk

def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()

g = torch.Generator().manual_seed(3)
cfg = dict(block_size=16, kernel_size=8, kernel_stride=4, topk=3, init_blocks=1, window_size=24)
os.environ["LONGFORGE_SPARSE_SCORES"] = "torch"
# 1. tile forward == reference: Tq not a multiple of the tile or the block, Tq < Tk, GQA 2 / 3 (padded heads) / 4,
#    Dv != D, a 32-token tile (the token mask's sign bit), explicit and default tile sizes
for Tq, Tk, H, Hkv, D, Dv, block_t in ((37, 150, 4, 2, 16, 32, None), (40, 101, 6, 2, 16, 16, 32),
                                       (19, 19, 8, 2, 32, 16, 4)):
    q, k, v = (torch.randn(*s, generator=g) for s in ((1, Tq, H, D), (1, Tk, Hkv, D), (1, Tk, Hkv, Dv)))
    idx, cnt = select_block_indices(q, compress_keys(k, 8, 4), num_keys=Tk, **cfg)
    ref = naive_sparse_attention(q, k, v, dense_len=0, **cfg)
    if block_t is None:
        out = sparse_attend(q, k, v, idx, cnt, D**-0.5, 16, kernel="tile")
        split = sparse_attend(q, k, v, idx, cnt, D**-0.5, 16, kernel="split")  # tile + per-token, lse-merged
        assert rel(split, ref) < 1e-5, (Tq, rel(split, ref))
    else:
        out, lse = sparse_fwd_tile(q, k, v, *tile_unions(idx, cnt, block_t), D**-0.5, 16, block_t)
        assert torch.isfinite(lse).all()
    assert rel(out, ref) < 1e-5, (Tq, rel(out, ref))
# 2. the whole fast path with the tile kernel: dense/sparse switch inside what would be the first tile,
#    fp16 (bf16 has no interpreter dot), forward + backward (through the per-token backward) vs the reference
os.environ["LONGFORGE_SPARSE_KERNEL"] = "tile"
for dtype, tol, shapes, dense_len in ((torch.float32, 1e-5, ((1, 7, 4, 16), (1, 70, 2, 16), (1, 70, 2, 16)), 66),
                                      (torch.float16, 5e-3, ((1, 23, 4, 16), (1, 90, 2, 16), (1, 90, 2, 16)), 75)):
    q, k, v = (torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes)
    w = torch.randn(shapes[0], generator=g).to(dtype)
    res = []
    for fn in (fast_sparse_attention, naive_sparse_attention):
        o = fn(q, k, v, dense_len=dense_len, **cfg)
        grads = torch.autograd.grad((o.float() * w.float()).sum(), (q, k, v)) if dtype == torch.float32 else ()
        res.append([o.detach()] + list(grads))
    for a, b in zip(*res):
        assert rel(a, b) < tol, (dtype, rel(a, b))
# 3. the fused top-k: exact ties (lower block first), init 2, no local window, too few candidates
for NB, C, pos0, bs, n_local, init, topk in ((20, 3, 1000, 64, 2, 2, 5), (37, 3, 2300, 64, 0, 0, 64)):
    sc, edge = (torch.randint(0, 4, (1, 2, C, NB), generator=g).float() / 4 for _ in range(2))
    comb = sc.clone()
    comb[..., 1:] = torch.maximum(comb[..., 1:], edge[..., :-1])
    pos = torch.arange(pos0, pos0 + C)
    blk = torch.arange(NB)
    b_t = (pos // bs)[:, None]
    past = blk <= b_t
    forced = past & ((blk < init) | (blk > b_t - n_local))
    cand = past & ~forced
    order = torch.sort(comb.masked_fill(~cand, float("-inf")), dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, blk.expand_as(order))
    ref = forced | (cand & (rank < topk))
    idx, cnt = select_topk(sc, pos0, block_size=bs, n_local=n_local, init_blocks=init, topk=topk,
                           width=min(NB, init + n_local + topk), edge=edge)
    mask = torch.zeros(1, 2, C, NB + 1, dtype=torch.bool).scatter_(-1, torch.where(idx >= 0, idx, NB).long(), True)
    assert torch.equal(mask[..., :-1], ref) and torch.equal(cnt, ref.sum(-1).int())
    ids = torch.where(idx >= 0, idx, NB)
    assert torch.equal(ids, ids.sort(-1).values)
# 4. Triton block scores (fp32 dots here) + fused top-k == the reference's selection
os.environ["LONGFORGE_SPARSE_SCORES"] = "triton-bf16"
q, k = torch.randn(1, 6, 4, 16, generator=g), torch.randn(1, 120, 2, 16, generator=g)
idx, cnt = select_block_indices(q, compress_keys(k, 8, 4), num_keys=120, **cfg)
ref = selected_blocks(q, k, dense_len=0, **cfg)
mask = torch.zeros(ref.shape[:-1] + (ref.shape[-1] + 1,), dtype=torch.bool)
mask.scatter_(-1, torch.where(idx >= 0, idx, ref.shape[-1]).long(), True)
assert torch.equal(mask[..., :-1], ref) and torch.equal(cnt, ref.sum(-1).int())
# 5. "auto" survives a failing fused top-k / tile kernel: one warning each, then the PyTorch top-k / token kernel
import warnings
from longforge.ops.sparse_attention import fast, triton_tile, triton_topk
def boom(*a, **k):
    raise RuntimeError("simulated compile failure")
orig_topk, orig_tile = triton_topk.select_topk, triton_tile.triton_sparse_attention_tile
triton_topk.select_topk = boom
triton_tile.triton_sparse_attention_tile = boom
fast.union_ratio = lambda *a, **k: 0.0
os.environ["LONGFORGE_SPARSE_KERNEL"] = "auto"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    idx2, cnt2 = select_block_indices(q, compress_keys(k, 8, 4), num_keys=120, **cfg)
    v = torch.randn(1, 120, 2, 16, generator=g)
    out = fast_sparse_attention(q, k, v, dense_len=0, **cfg)
assert torch.equal(idx2, idx) and torch.equal(cnt2, cnt)
assert rel(out, naive_sparse_attention(q, k, v, dense_len=0, **cfg)) < 1e-5
text = " ".join(str(w.message) for w in caught)
assert "fused Triton top-k failed" in text and "tile kernel failed" in text, text
# 6. ... and a kernel that runs but computes wrong results: the one-time self-check under "auto" catches it
fast._kernel_failed.clear(); fast._kernel_checked.clear(); fast._warned.clear()
def wrong_topk(*a, **k):
    idx, cnt = orig_topk(*a, **k)
    return torch.where(idx == idx.amax(-1, keepdim=True), idx - 1, idx), cnt  # one block off in every row
triton_topk.select_topk = wrong_topk
triton_tile.triton_sparse_attention_tile = lambda q, k, v, *a: torch.zeros_like(q[..., : v.shape[-1]])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    idx3, cnt3 = select_block_indices(q, compress_keys(k, 8, 4), num_keys=120, **cfg)
    out3 = fast_sparse_attention(q, k, v, dense_len=0, **cfg)
assert torch.equal(idx3, idx) and torch.equal(cnt3, cnt)
assert rel(out3, naive_sparse_attention(q, k, v, dense_len=0, **cfg)) < 1e-5
text = " ".join(str(w.message) for w in caught)
assert "top-k self-check" in text and "tile self-check" in text, text
print("interpreted tile kernel ok")
"""


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_sparse_tile_kernel_and_fused_topk_interpreted_on_cpu():
    """The multi-token tile forward kernel and the fused top-k selection kernel under TRITON_INTERPRET=1 against
    the reference (fresh process: the flag is read when triton is imported)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1", LONGFORGE_SPARSE_TRITON_INTERPRET="1")
    env.pop("LONGFORGE_SPARSE_KERNEL", None)
    env.pop("LONGFORGE_SPARSE_TOPK", None)
    done = subprocess.run([sys.executable, "-c", _TILE_INTERPRET_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interpreted tile kernel ok" in done.stdout


def test_sparse_kernel_choice_rejects_bad_values(monkeypatch):
    from longforge.ops.sparse_attention import fast as fast_mod

    monkeypatch.setenv("LONGFORGE_SPARSE_KERNEL", "fastest")
    with pytest.raises(ValueError, match="LONGFORGE_SPARSE_KERNEL"):
        fast_mod._kernel_choice()
    monkeypatch.setenv("LONGFORGE_SPARSE_TOPK", "heap")
    with pytest.raises(ValueError, match="LONGFORGE_SPARSE_TOPK"):
        fast_mod._use_triton_topk(torch.zeros(1, 1, 1, 1), 4, True)
    if HAS_TRITON:
        from longforge.ops.sparse_attention.triton_tile import tile_unions

        with pytest.raises(ValueError, match="block_t"):
            tile_unions(torch.zeros(1, 1, 4, 2, dtype=torch.int32), torch.zeros(1, 1, 4, dtype=torch.int32), 33)


def test_sparse_tile_unions_on_cpu():
    """The union lists and token masks, and the split into shared tile entries + per-token residual lists, against
    direct set computations (plain PyTorch, no kernel)."""
    pytest.importorskip("triton")
    from longforge.ops.sparse_attention.triton_tile import split_unions, tile_unions

    gen = torch.Generator().manual_seed(0)
    B, Hkv, Tq, S, NB = 2, 2, 45, 6, 30
    idx = torch.full((B, Hkv, Tq, S), -1, dtype=torch.int32)
    cnt = torch.randint(0, S + 1, (B, Hkv, Tq), generator=gen, dtype=torch.int32)
    for b, h, t in torch.cartesian_prod(torch.arange(B), torch.arange(Hkv), torch.arange(Tq)).tolist():
        n = int(cnt[b, h, t])
        idx[b, h, t, :n] = torch.randperm(NB, generator=gen)[:n].sort().values.int()
    for block_t in (1, 7, 32):
        # the split: every (token, block) pair exactly once, in a shared tile entry or in the token's residual list
        (suidx, sbits, scnt), (ridx, rcnt) = split_unions(idx, cnt, block_t, min_share=2)
        pairs = set()
        tiles = torch.arange(sbits.shape[2])
        for b, h, tile in torch.cartesian_prod(torch.arange(B), torch.arange(Hkv), tiles).tolist():
            for j in range(int(scnt[b, h, tile])):
                bits = int(sbits[b, h, tile, j]) & 0xFFFFFFFF
                assert bin(bits).count("1") >= 2
                pairs |= {(b, h, tile * block_t + i, int(suidx[b, h, tile, j])) for i in range(32) if bits >> i & 1}
        for b, h, t in torch.cartesian_prod(torch.arange(B), torch.arange(Hkv), torch.arange(Tq)).tolist():
            own = ridx[b, h, t, : int(rcnt[b, h, t])].tolist()
            assert own == sorted(own) and not pairs & {(b, h, t, x) for x in own}
            pairs |= {(b, h, t, x) for x in own}
        want = {(b, h, t, int(x)) for b, h, t in torch.cartesian_prod(torch.arange(B), torch.arange(Hkv),
                                                                      torch.arange(Tq)).tolist()
                for x in idx[b, h, t, : int(cnt[b, h, t])]}
        assert pairs == want
        uidx, ubits, ucnt = tile_unions(idx, cnt, block_t)
        for b, h, tile in ((0, 0, 0), (1, 1, (Tq - 1) // block_t), (1, 0, 1 if Tq > block_t else 0)):
            toks = range(tile * block_t, min(Tq, (tile + 1) * block_t))
            want = sorted({int(x) for t in toks for x in idx[b, h, t, : int(cnt[b, h, t])]})
            n = int(ucnt[b, h, tile])
            assert uidx[b, h, tile, :n].tolist() == want
            for j, blk in enumerate(want):
                bits = int(ubits[b, h, tile, j]) & 0xFFFFFFFF
                sel = {i for i, t in enumerate(toks) if blk in idx[b, h, t, : int(cnt[b, h, t])].tolist()}
                assert {i for i in range(32) if bits >> i & 1} == sel


@gpu
@pytest.mark.parametrize("kernel", ["tile", "split"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", SPARSE_CASES[:2] + [(1, 130, 260, 12, 4, 64, 40)])
def test_sparse_tile_kernel_matches_reference_gpu(case, dtype, kernel, monkeypatch):
    """The multi-token tile forward (forced; or split with the per-token kernel) through the whole fast path,
    forward and backward, vs the reference: a dense/sparse switch inside a tile, Tq < Tk, GQA 2 / 3 / 4, T not a
    multiple of the tile or the block."""
    monkeypatch.delenv("LONGFORGE_BACKEND_SPARSE_ATTENTION", raising=False)
    monkeypatch.setenv("LONGFORGE_SPARSE_KERNEL", kernel)
    leaves, cfg = _sparse_case(case, dtype, "cuda")
    fast = _fwd_bwd(sparse_attention, leaves, **cfg)
    ref = _fwd_bwd(naive_sparse_attention, leaves, **cfg)
    _compare(*fast, *ref, _tol(dtype))


@gpu
@pytest.mark.parametrize("block_t", [None, 4, 16])
def test_sparse_tile_equals_token_kernel_sala_shape_gpu(block_t):
    """SALA's shape (16 heads per kv head x 128, 64-token blocks, bf16): the tile kernel's o and lse equal the
    per-token kernel's over the same (bf16-scored) selection, on random and on slowly varying queries."""
    from longforge.ops.sparse_attention.fast import sparse_attend
    from longforge.ops.sparse_attention.triton_kernel import sparse_fwd
    from longforge.ops.sparse_attention.triton_tile import default_block_t, sparse_fwd_tile, tile_unions

    cfg = dict(block_size=64, kernel_size=32, kernel_stride=16, topk=16, init_blocks=1, window_size=512)
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(*s, generator=gen) for s in ((1, 1000, 32, 128), (1, 5000, 2, 128), (1, 5000, 2, 128)))
    smooth = torch.cumsum(q, dim=1) / torch.arange(1, 1001).sqrt()[None, :, None, None]  # correlated queries
    for qq in (q, smooth):
        qq, k_, v_ = (x.to("cuda", torch.bfloat16).contiguous() for x in (qq, k, v))
        idx, cnt = select_block_indices(qq, compress_keys(k_, 32, 16), num_keys=5000, **cfg)
        bt = block_t or default_block_t(16, torch.bfloat16)
        o1, l1 = sparse_fwd(qq, k_, v_, idx, cnt, 128**-0.5, 64)
        o2, l2 = sparse_fwd_tile(qq, k_, v_, *tile_unions(idx, cnt, bt), 128**-0.5, 64, bt)
        assert _rel_err(o2, o1) < 1e-2
        assert (l1 - l2).abs().max().item() < 1e-3
        o3 = sparse_attend(qq, k_, v_, idx, cnt, 128**-0.5, 64, kernel="split")
        assert _rel_err(o3, o1) < 1e-2


@gpu
@pytest.mark.parametrize("scores", ["triton-bf16", "triton", "torch"])
def test_sparse_fused_topk_equals_torch_topk_gpu(scores, monkeypatch):
    """The fused Triton top-k gives exactly the PyTorch top-k's id lists from the same scorer (ties included)."""
    monkeypatch.setenv("LONGFORGE_SPARSE_SCORES", scores)
    cfg = dict(block_size=64, kernel_size=32, kernel_stride=16, topk=8, init_blocks=1, window_size=256)
    gen = torch.Generator().manual_seed(5)
    q, k = (x.to("cuda", torch.bfloat16) for x in (torch.randn(1, 700, 16, 128, generator=gen),
                                                   torch.randn(1, 4000, 2, 128, generator=gen)))
    kc = compress_keys(k, 32, 16)
    res = []
    for topk_impl in ("torch", "triton"):
        monkeypatch.setenv("LONGFORGE_SPARSE_TOPK", topk_impl)
        res.append(select_block_indices(q, kc, num_keys=4000, **cfg))
    (i1, c1), (i2, c2) = res
    assert torch.equal(c1, c2)
    w = min(i1.shape[-1], i2.shape[-1])
    assert torch.equal(i1[..., :w], i2[..., :w])
    assert (i1[..., w:] == -1).all() and (i2[..., w:] == -1).all()
