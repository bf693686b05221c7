"""longforge.ops.attention against the loop reference (tests/ops/loop_reference.py)."""

import pytest
import torch
from loop_reference import loop_attention

from longforge.ops.attention import attention, masked_attention, naive, naive_attention


def _qkv(B, Tq, Tk, H, Hkv, D, Dv, dtype=torch.float32, requires_grad=False):
    q = torch.randn(B, Tq, H, D, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(B, Tk, Hkv, D, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(B, Tk, Hkv, Dv, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


def _left_padding(B, Tk, lengths):
    mask = torch.zeros(B, Tk, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, Tk - n :] = True
    return mask


# (B, Tq, Tk, H, Hkv, D, Dv, kwargs, padded lengths or None)
CASES = {
    "causal_gqa_T63": (2, 63, 63, 4, 2, 60, 60, {}, None),
    "causal_mha_T500_dv": (2, 500, 500, 4, 4, 60, 36, {}, None),
    "noncausal_gqa": (2, 63, 63, 4, 2, 60, 44, {"causal": False}, None),
    "window_gqa_T63": (2, 63, 63, 4, 2, 60, 60, {"window": 16}, None),
    "window_mha_T500": (2, 500, 500, 4, 4, 60, 60, {"window": 100}, None),
    "window_1": (2, 63, 63, 4, 2, 60, 60, {"window": 1}, None),
    "left_padding_causal": (2, 63, 63, 4, 2, 60, 60, {}, (63, 40)),
    "left_padding_noncausal": (2, 63, 63, 4, 2, 60, 60, {"causal": False}, (50, 7)),
    "decode_queries": (2, 5, 63, 4, 2, 60, 60, {}, None),
    "decode_queries_window_padding": (2, 7, 63, 4, 2, 60, 28, {"window": 20}, (63, 30)),
    "single_query": (2, 1, 500, 4, 2, 60, 60, {"window": 64}, None),
    "custom_scale": (2, 63, 63, 4, 2, 60, 60, {"scale": 0.3}, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_loop_reference(name):
    B, Tq, Tk, H, Hkv, D, Dv, kwargs, lengths = CASES[name]
    q, k, v = _qkv(B, Tq, Tk, H, Hkv, D, Dv)
    mask = None if lengths is None else _left_padding(B, Tk, lengths)
    out = attention(q, k, v, key_padding_mask=mask, **kwargs)
    ref = loop_attention(q, k, v, key_padding_mask=mask, **kwargs)
    assert out.shape == (B, Tq, H, Dv) and out.dtype == q.dtype
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_sliding_window_equals_full_attention_with_window_mask():
    """Sliding window == full softmax over the same scores with an explicit band mask built here."""
    B, T, H, Hkv, D, w = 2, 63, 4, 2, 60, 9
    q, k, v = _qkv(B, T, T, H, Hkv, D, D)
    k_rep, v_rep = k.repeat_interleave(H // Hkv, dim=2), v.repeat_interleave(H // Hkv, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k_rep) * D**-0.5
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    band = (j <= i) & (j > i - w)
    probs = scores.masked_fill(~band, float("-inf")).softmax(dim=-1)
    expected = torch.einsum("bhij,bjhd->bihd", probs, v_rep)
    torch.testing.assert_close(attention(q, k, v, window=w), expected, atol=2e-5, rtol=1e-4)
    # The explicit-mask entry point gives the same thing.
    torch.testing.assert_close(masked_attention(q, k, v, band), expected, atol=2e-5, rtol=1e-4)
    # A window covering the whole sequence is plain causal attention; a smaller one is not.
    torch.testing.assert_close(attention(q, k, v, window=T), attention(q, k, v), atol=1e-6, rtol=1e-6)
    assert (attention(q, k, v, window=T - 1) - attention(q, k, v)).abs().max() > 1e-3


def test_padding_query_rows_are_zero_and_finite_with_zero_grad():
    B, T, H, Hkv, D = 2, 30, 4, 2, 60
    q, k, v = _qkv(B, T, T, H, Hkv, D, D, requires_grad=True)
    mask = _left_padding(B, T, (30, 12))
    out = attention(q, k, v, key_padding_mask=mask)
    assert torch.isfinite(out).all()
    assert out[1, : T - 12].abs().max() == 0  # left-padded queries see only padded keys -> zeros
    assert out[1, T - 12 :].abs().min() > 0
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert q.grad[1, : T - 12].abs().max() == 0
    assert k.grad[1, : T - 12].abs().max() == 0 and v.grad[1, : T - 12].abs().max() == 0


@pytest.mark.parametrize(
    "kwargs,lengths,Tq",
    [({}, None, 20), ({"window": 5}, (20, 9), 20), ({"causal": False}, (14, 20), 20), ({"window": 7}, None, 6)],
)
def test_gradients_match_loop_reference(kwargs, lengths, Tq):
    B, Tk, H, Hkv, D, Dv = 2, 20, 4, 2, 12, 10
    q, k, v = _qkv(B, Tq, Tk, H, Hkv, D, Dv, requires_grad=True)
    mask = None if lengths is None else _left_padding(B, Tk, lengths)
    weight = torch.randn(B, Tq, H, Dv)
    grads = torch.autograd.grad((attention(q, k, v, key_padding_mask=mask, **kwargs) * weight).sum(), (q, k, v))
    ref = torch.autograd.grad((loop_attention(q, k, v, key_padding_mask=mask, **kwargs) * weight).sum(), (q, k, v))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_bf16_close_to_fp32_reference():
    q, k, v = _qkv(2, 63, 63, 4, 2, 60, 60, dtype=torch.bfloat16)
    out = attention(q, k, v, window=20)
    assert out.dtype == torch.bfloat16
    ref = loop_attention(q.float(), k.float(), v.float(), window=20)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_query_chunking_is_invisible(monkeypatch):
    """The reference splits queries into chunks; with tiny chunks the result must not change."""
    q, k, v = _qkv(2, 50, 63, 4, 2, 60, 60, requires_grad=True)
    mask = _left_padding(2, 63, (63, 33))
    full = attention(q, k, v, window=10, key_padding_mask=mask)
    gfull = torch.autograd.grad(full.sum(), (q, k, v))
    monkeypatch.setattr(naive, "MAX_QUERY_CHUNK", 7)
    assert naive.query_chunk_size(2, 4, 63) == 7
    chunked = attention(q, k, v, window=10, key_padding_mask=mask)
    gchunked = torch.autograd.grad(chunked.sum(), (q, k, v))
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)
    for a, b in zip(gchunked, gfull):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_public_function_is_sdpa_on_cpu_and_the_reference_when_forced(monkeypatch):
    q, k, v = _qkv(1, 9, 9, 2, 1, 8, 8)
    ref = naive_attention(q, k, v, window=3)
    torch.testing.assert_close(attention(q, k, v, window=3), ref, atol=2e-6, rtol=1e-5)
    monkeypatch.setenv("LONGFORGE_BACKEND_ATTENTION", "naive")
    torch.testing.assert_close(attention(q, k, v, window=3), ref, atol=0, rtol=0)


def _bad(**over):
    q, k, v = _qkv(2, 8, 8, 4, 2, 16, 16)
    args = {"q": q, "k": k, "v": v}
    args.update(over)
    return args


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (_bad(q=torch.randn(2, 8, 4)), {}, r"q must have shape"),
        (_bad(q=torch.randn(2, 8, 3, 16)), {}, r"H=3 must be a multiple of .* Hkv=2"),
        (_bad(q=torch.randn(2, 8, 4, 12)), {}, r"same head dim D"),
        (_bad(v=torch.randn(2, 7, 2, 16)), {}, r"must agree on B, Tk, Hkv"),
        (_bad(q=torch.randn(3, 8, 4, 16)), {}, r"batch size"),
        (_bad(q=torch.randn(2, 9, 4, 16)), {}, r"Tk must be >= Tq"),
        (_bad(q=torch.randint(0, 3, (2, 8, 4, 16))), {}, r"q must be a floating-point"),
        (_bad(), {"window": 0}, r"window must be an int >= 1"),
        (_bad(), {"window": 2.5}, r"window must be an int >= 1"),
        (_bad(), {"window": 4, "causal": False}, r"window requires causal=True"),
        (_bad(), {"key_padding_mask": torch.ones(2, 7, dtype=torch.bool)}, r"key_padding_mask must have shape"),
        (_bad(), {"key_padding_mask": torch.ones(2, 8)}, r"key_padding_mask must be a bool"),
        (_bad(), {"scale": "big"}, r"scale must be a float"),
    ],
)
def test_bad_inputs_raise_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention(args["q"], args["k"], args["v"], **kwargs)


def test_masked_attention_bad_mask():
    q, k, v = _qkv(2, 8, 8, 4, 2, 16, 16)
    with pytest.raises(ValueError, match="visible must broadcast"):
        masked_attention(q, k, v, torch.ones(3, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="visible must be a bool"):
        masked_attention(q, k, v, torch.ones(8, 8))
