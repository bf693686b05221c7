"""longforge.ops.sparse_attention (InfLLM-V2) against the loop reference (tests/ops/loop_reference.py)."""

import pytest
import torch
from loop_reference import loop_compress_keys, loop_select_blocks, loop_sparse_attention

from longforge.ops.attention import attention
from longforge.ops.sparse_attention import (
    compress_keys,
    num_compressed,
    select_blocks,
    selected_blocks,
    sparse_attention,
)

# Small blocks so that a 63..200-token sequence really is sparse: 8-token blocks, 1 init + 1 local + top-2.
SMALL = dict(block_size=8, kernel_size=4, kernel_stride=2, topk=2, init_blocks=1, window_size=8)


def _qkv(B, Tq, Tk, H, Hkv, D, Dv, requires_grad=False):
    q = torch.randn(B, Tq, H, D, requires_grad=requires_grad)
    k = torch.randn(B, Tk, Hkv, D, requires_grad=requires_grad)
    v = torch.randn(B, Tk, Hkv, Dv, requires_grad=requires_grad)
    return q, k, v


@pytest.mark.parametrize("T,l,s", [(63, 4, 2), (500, 32, 16), (500, 7, 3), (20, 32, 16), (32, 32, 16)])
def test_compress_keys_matches_loop(T, l, s):
    k = torch.randn(2, T, 2, 60)
    kc = compress_keys(k, l, s)
    assert kc.dtype == torch.float32 and kc.shape == (2, num_compressed(T, l, s), 2, 60)
    assert kc.shape[1] == max(0, (T - l) // s + 1)
    torch.testing.assert_close(kc, loop_compress_keys(k, l, s), atol=1e-6, rtol=1e-5)


def test_compress_keys_incremental():
    """A cache appends new windows as they complete: growing the keys and asking from `start` = old count."""
    l, s = 32, 16
    k = torch.randn(2, 500, 2, 60, dtype=torch.bfloat16)
    full = compress_keys(k, l, s)
    cached = compress_keys(k[:, :10], l, s)  # no complete window yet
    assert cached.shape[1] == 0
    for end in (40, 47, 48, 100, 101, 333, 500):
        new = compress_keys(k[:, :end], l, s, start=cached.shape[1])
        cached = torch.cat([cached, new], dim=1)
        assert cached.shape[1] == num_compressed(end, l, s)
    torch.testing.assert_close(cached, full, atol=0, rtol=0)
    assert compress_keys(k, l, s, start=full.shape[1] + 3).shape == (2, 0, 2, 60)
    torch.testing.assert_close(compress_keys(k, l, s, start=5), full[:, 5:], atol=0, rtol=0)


SELECT_CASES = {
    "small_T63_gqa": (63, 4, 2, SMALL),
    "small_T200_mha": (200, 2, 2, SMALL),
    "two_init_two_local_top3": (200, 4, 2, dict(block_size=8, kernel_size=4, kernel_stride=2, topk=3,
                                                   init_blocks=2, window_size=12)),
    "block_equals_stride": (120, 4, 2, dict(block_size=4, kernel_size=8, kernel_stride=4, topk=3,
                                             init_blocks=1, window_size=4)),
    "pool_ratio_4_T500": (500, 4, 2, dict(block_size=32, kernel_size=16, kernel_stride=8, topk=4,
                                           init_blocks=1, window_size=64)),
    "no_init_no_local": (100, 4, 2, dict(block_size=8, kernel_size=4, kernel_stride=2, topk=3,
                                          init_blocks=0, window_size=0)),
}


@pytest.mark.parametrize("name", list(SELECT_CASES))
def test_select_blocks_matches_loop(name):
    T, H, Hkv, cfg = SELECT_CASES[name]
    q, k, _ = _qkv(2, T, T, H, Hkv, 60, 60)
    kc = compress_keys(k, cfg["kernel_size"], cfg["kernel_stride"])
    positions = torch.arange(T)
    nb = -(-T // cfg["block_size"])
    mask = select_blocks(q, kc, q_positions=positions, num_blocks=nb, **cfg)
    ref = loop_select_blocks(q, kc, positions.tolist(), nb, **cfg)
    assert mask.shape == (2, Hkv, T, nb) and mask.dtype == torch.bool
    assert torch.equal(mask, ref)
    # The rule's invariants, checked directly: never a future block; at most init + local + topk blocks.
    b_t = positions // cfg["block_size"]
    assert not (mask & (torch.arange(nb) > b_t[:, None])).any()
    n_local = -(-cfg["window_size"] // cfg["block_size"])
    assert mask.sum(-1).max() <= cfg["init_blocks"] + n_local + cfg["topk"]


def test_select_blocks_is_really_sparse_and_uses_scores():
    """With the SMALL config most late queries skip blocks, and different queries pick different blocks."""
    q, k, _ = _qkv(2, 200, 200, 4, 2, 60, 60)
    mask = selected_blocks(q, k, dense_len=-1, **SMALL)
    counts = mask.sum(-1)  # [B, Hkv, T]
    assert counts[..., 100:].max() <= 4 and counts[..., 100:].min() >= 2
    late = mask[..., 150:, :18]  # blocks 1..17 are neither init nor local for these queries
    assert late[..., 1:].any(dim=2).sum() > 6  # top-k choices vary across queries


def test_select_blocks_per_batch_positions():
    q, k, _ = _qkv(2, 5, 80, 4, 2, 16, 16)
    kc = compress_keys(k, 4, 2)
    pos = torch.tensor([[3, 20, 40, 60, 79], [10, 11, 12, 78, 79]])
    mask = select_blocks(q, kc, q_positions=pos, num_blocks=10, **SMALL)
    for b in range(2):
        ref = loop_select_blocks(q[b : b + 1], kc[b : b + 1], pos[b].tolist(), 10, **SMALL)
        assert torch.equal(mask[b : b + 1], ref)


SPARSE_CASES = {
    "T63_gqa": (2, 63, 63, 4, 2, 60, 60),
    "T200_gqa_dv": (2, 200, 200, 4, 2, 60, 36),
    "T200_mha": (2, 200, 200, 2, 2, 60, 60),
    "decode_queries": (2, 9, 200, 4, 2, 60, 60),
}


@pytest.mark.parametrize("name", list(SPARSE_CASES))
def test_sparse_attention_matches_loop(name):
    B, Tq, Tk, H, Hkv, D, Dv = SPARSE_CASES[name]
    q, k, v = _qkv(B, Tq, Tk, H, Hkv, D, Dv)
    out = sparse_attention(q, k, v, dense_len=-1, **SMALL)
    ref = loop_sparse_attention(q, k, v, dense_len=-1, **SMALL)
    assert out.shape == (B, Tq, H, Dv) and out.dtype == q.dtype
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    # ...and it is genuinely sparse: far from dense causal attention for late queries.
    dense = attention(q, k, v)
    assert (out - dense)[:, -5:].abs().max() > 1e-2


def test_topk_covering_every_block_equals_dense_attention():
    q, k, v = _qkv(2, 200, 200, 4, 2, 60, 44)
    cfg = dict(SMALL, topk=25)  # 200 / 8 = 25 blocks
    out = sparse_attention(q, k, v, dense_len=-1, **cfg)
    torch.testing.assert_close(out, attention(q, k, v), atol=2e-5, rtol=1e-4)
    # Same with decode-style queries.
    out = sparse_attention(q[:, -7:], k, v, dense_len=-1, **cfg)
    torch.testing.assert_close(out, attention(q[:, -7:], k, v), atol=2e-5, rtol=1e-4)


def test_dense_len_switch_is_per_query():
    q, k, v = _qkv(2, 200, 200, 4, 2, 60, 60)
    dense = attention(q, k, v)
    out = sparse_attention(q, k, v, dense_len=100, **SMALL)
    # t + 1 < 100 -> dense
    torch.testing.assert_close(out[:, :99], dense[:, :99], atol=2e-5, rtol=1e-4)
    # from t = 99 on -> sparse (equal to the always-sparse output, different from dense)
    sparse = sparse_attention(q, k, v, dense_len=-1, **SMALL)
    torch.testing.assert_close(out[:, 99:], sparse[:, 99:], atol=1e-6, rtol=1e-6)
    assert (out[:, 99:] - dense[:, 99:]).abs().amax(dim=(0, 2, 3)).gt(1e-3).sum() > 50
    # A sequence shorter than dense_len is all dense (the default dense_len=8192 here).
    torch.testing.assert_close(sparse_attention(q, k, v, **SMALL), dense, atol=2e-5, rtol=1e-4)
    ref = loop_sparse_attention(q[:, -20:], k, v, dense_len=190, **SMALL)
    torch.testing.assert_close(sparse_attention(q[:, -20:], k, v, dense_len=190, **SMALL), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "cfg,dense_len",
    [
        (SMALL, -1),
        (SMALL, 70),
        # No local blocks: the query's own, still incomplete block competes in the top-k on its partial score.
        (dict(SMALL, window_size=0, topk=3), -1),
        # Windows longer than two strides: the previous block's last windows complete only inside the next block.
        (dict(SMALL, kernel_size=6), -1),
    ],
)
def test_chunked_calls_equal_one_call(cfg, dense_len):
    """Chunked prefill with a growing compressed-key cache, then token-by-token decode == one full call."""
    T = 200
    q, k, v = _qkv(2, T, T, 4, 2, 60, 60)
    full = sparse_attention(q, k, v, dense_len=dense_len, **cfg)
    l, s = cfg["kernel_size"], cfg["kernel_stride"]
    kc = compress_keys(k[:, :0], l, s)
    outs = []
    bounds = [0, 37, 64, 65, 150, *range(151, T + 1)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        kc = torch.cat([kc, compress_keys(k[:, :hi], l, s, start=kc.shape[1])], dim=1)
        outs.append(sparse_attention(q[:, lo:hi], k[:, :hi], v[:, :hi], compressed_k=kc, dense_len=dense_len, **cfg))
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=2e-5, rtol=1e-4)


def test_gradients_match_loop_reference():
    q, k, v = _qkv(2, 40, 40, 4, 2, 12, 10, requires_grad=True)
    cfg = dict(block_size=4, kernel_size=4, kernel_stride=2, topk=2, init_blocks=1, window_size=4)
    w = torch.randn(2, 40, 4, 10)
    grads = torch.autograd.grad((sparse_attention(q, k, v, dense_len=-1, **cfg) * w).sum(), (q, k, v))
    ref = torch.autograd.grad((loop_sparse_attention(q, k, v, dense_len=-1, **cfg) * w).sum(), (q, k, v))
    for g, r in zip(grads, ref):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_selected_blocks_helper_matches_attention_pattern():
    """Attention over the keys of the selected blocks (causal) reproduces sparse_attention exactly."""
    q, k, v = _qkv(2, 80, 80, 4, 2, 16, 16)
    blocks = selected_blocks(q, k, dense_len=30, **SMALL)  # [B, Hkv, T, NB]
    assert blocks.shape == (2, 2, 80, 10)
    # dense rows: every block up to the query's own
    assert torch.equal(blocks[:, :, :28], (torch.arange(10) <= torch.arange(28)[:, None] // 8).expand(2, 2, 28, 10))
    token_mask = blocks.repeat_interleave(8, dim=-1) & torch.ones(80, 80, dtype=torch.bool).tril()
    k_rep = k.repeat_interleave(2, dim=2)
    v_rep = v.repeat_interleave(2, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k_rep) / 4.0
    probs = scores.masked_fill(~token_mask.repeat_interleave(2, dim=1), float("-inf")).softmax(-1)
    expected = torch.einsum("bhij,bjhd->bihd", probs, v_rep)
    torch.testing.assert_close(sparse_attention(q, k, v, dense_len=30, **SMALL), expected, atol=2e-5, rtol=1e-4)


def test_default_config_runs_and_matches_dense_when_short():
    """Deployed config (64/32/16, topk 64): at 500 tokens every block is init/local/top-k, so it is dense."""
    q, k, v = _qkv(1, 500, 500, 4, 2, 60, 60)
    torch.testing.assert_close(sparse_attention(q, k, v, dense_len=-1), attention(q, k, v), atol=2e-5, rtol=1e-4)


def _args(**over):
    q, k, v = _qkv(2, 16, 16, 4, 2, 8, 8)
    args = {"q": q, "k": k, "v": v}
    args.update(over)
    return args


@pytest.mark.parametrize(
    "over,kwargs,match",
    [
        ({}, {"block_size": 10, "kernel_stride": 4}, r"block_size \(10\) must be a multiple of kernel_stride \(4\)"),
        ({}, {"topk": -1}, r"topk must be an int >= 0"),
        ({}, {"init_blocks": 1.5}, r"init_blocks must be an int >= 0"),
        ({}, {"window_size": -8}, r"window_size must be an int >= 0"),
        ({}, {"kernel_size": 0}, r"kernel_size must be an int >= 1"),
        ({}, {"dense_len": 10.0}, r"dense_len must be an int"),
        ({}, {"compressed_k": torch.zeros(2, 5, 2, 8)}, r"compressed_k must be \[B, Nc, Hkv, D\] = \[2, 7, 2, 8\]"),
        ({"q": torch.randn(2, 17, 4, 8)}, {}, r"Tk must be >= Tq"),
        ({"q": torch.randn(2, 16, 3, 8)}, {}, r"multiple of the number of kv heads"),
    ],
)
def test_bad_inputs_raise_value_error(over, kwargs, match):
    args = _args(**over)
    cfg = dict(block_size=4, kernel_size=4, kernel_stride=2, dense_len=-1)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sparse_attention(args["q"], args["k"], args["v"], **cfg)


def test_select_blocks_bad_inputs():
    q, k, _ = _qkv(2, 16, 16, 4, 2, 8, 8)
    kc = compress_keys(k, 4, 2)
    with pytest.raises(ValueError, match=r"q_positions must have shape \[Tq\] or \[B, Tq\]"):
        select_blocks(q, kc, q_positions=torch.arange(15), num_blocks=4, **SMALL)
    with pytest.raises(ValueError, match="q_positions must be an integer tensor"):
        select_blocks(q, kc, q_positions=torch.arange(16.0), num_blocks=4, **SMALL)
    with pytest.raises(ValueError, match="q_positions must be >= 0"):
        select_blocks(q, kc, q_positions=torch.arange(16) - 1, num_blocks=4, **SMALL)
    with pytest.raises(ValueError, match=r"kc must be \[B, Nc, Hkv, D\]"):
        select_blocks(q, kc[..., :4], q_positions=torch.arange(16), num_blocks=4, **SMALL)
    with pytest.raises(ValueError, match="start must be an int >= 0"):
        compress_keys(k, 4, 2, start=-1)


def test_query_chunking_is_invisible(monkeypatch):
    """The reference selects and attends a few queries at a time; tiny chunks must not change anything."""
    from longforge.ops.attention import naive as attention_naive

    q, k, v = _qkv(2, 90, 120, 4, 2, 16, 16, requires_grad=True)
    full = sparse_attention(q, k, v, dense_len=60, **SMALL)
    grads = torch.autograd.grad(full.sum(), (q, k, v))
    mask = selected_blocks(q, k, dense_len=60, **SMALL)
    monkeypatch.setattr(attention_naive, "MAX_QUERY_CHUNK", 7)
    chunked = sparse_attention(q, k, v, dense_len=60, **SMALL)
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(chunked.sum(), (q, k, v)), grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert torch.equal(selected_blocks(q, k, dense_len=60, **SMALL), mask)


def test_short_sequences_without_complete_windows():
    """Before the first window completes there are no compressed keys: init/local blocks only, no crash."""
    q, k, v = _qkv(2, 3, 3, 4, 2, 8, 8)
    out = sparse_attention(q, k, v, dense_len=-1, **SMALL)
    torch.testing.assert_close(out, attention(q, k, v), atol=1e-6, rtol=1e-6)
    assert sparse_attention(q[:, :0], k, v, dense_len=-1, **SMALL).shape == (2, 0, 4, 8)


@pytest.mark.parametrize("dense_len", [-1, 70, 8192])
@pytest.mark.parametrize("chunk", [16, 128])
def test_sdpa_path_matches_reference_forward_and_backward(monkeypatch, dense_len, chunk):
    """The CPU default (the reference's selection, SDPA over each query chunk's union of blocks) against the fp32
    reference, several chunks, dense switch inside the call, GQA, Dv != D, decode-style queries."""
    from longforge.ops.sparse_attention import naive_sparse_attention, sdpa
    from longforge.ops.sparse_attention.sdpa import sdpa_sparse_attention

    monkeypatch.setattr(sdpa, "QUERY_CHUNK", chunk)
    w = torch.randn(2, 150, 4, 36)
    for Tq in (150, 9):
        q, k, v = _qkv(2, Tq, 150, 4, 2, 60, 36, requires_grad=True)
        out = sdpa_sparse_attention(q, k, v, dense_len=dense_len, **SMALL)
        ref = naive_sparse_attention(q, k, v, dense_len=dense_len, **SMALL)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
        grads = torch.autograd.grad((out * w[:, -Tq:]).sum(), (q, k, v))
        refs = torch.autograd.grad((ref * w[:, -Tq:]).sum(), (q, k, v))
        for g, r in zip(grads, refs):
            torch.testing.assert_close(g, r, atol=2e-5, rtol=1e-4)
    # bf16 in, bf16 out (computed in fp32 on the CPU, as the reference does)
    q, k, v = (t.detach().to(torch.bfloat16) for t in _qkv(1, 150, 150, 4, 2, 60, 36))
    out = sdpa_sparse_attention(q, k, v, dense_len=dense_len, **SMALL)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), naive_sparse_attention(q, k, v, dense_len=dense_len, **SMALL).float(),
                               atol=2e-2, rtol=2e-2)  # fmt: skip


def test_cpu_default_is_the_sdpa_path(monkeypatch):
    from longforge.ops.sparse_attention import sdpa

    calls = []
    real = sdpa.sdpa_sparse_attention
    monkeypatch.setattr("longforge.ops.sparse_attention.sdpa_sparse_attention",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    q, k, v = _qkv(1, 40, 40, 2, 1, 8, 8)
    sparse_attention(q, k, v, dense_len=-1, **SMALL)
    assert calls == [1]
    monkeypatch.setenv("LONGFORGE_BACKEND_SPARSE_ATTENTION", "naive")
    sparse_attention(q, k, v, dense_len=-1, **SMALL)
    assert calls == [1]
