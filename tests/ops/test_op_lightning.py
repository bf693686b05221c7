"""longforge.ops.linear_attention (Lightning attention) against loop references."""

import math

import pytest
import torch
from loop_reference import loop_lightning, loop_lightning_parallel

from longforge.ops.linear_attention import alibi_decay, lightning_attention, lightning_chunk, lightning_recurrent

# Head decays from "none" to "gone after one step": exercises both overflow directions of exp(g * n).
G4 = torch.tensor([0.0, -2.0**-8, -0.7, -30.0])


def _inputs(B=2, T=63, H=4, K=60, V=32, dtype=torch.float32, requires_grad=False, state=False):
    q = torch.randn(B, T, H, K, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(B, T, H, K, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(B, T, H, V, dtype=dtype, requires_grad=requires_grad)
    h0 = torch.randn(B, H, K, V, requires_grad=requires_grad) if state else None
    return q, k, v, h0


def test_alibi_decay_values():
    g = alibi_decay(16)
    assert g.dtype == torch.float32 and g.shape == (16,)
    assert abs(math.exp(g[0]) - 0.4931) < 1e-4
    assert abs(math.exp(g[15]) - 0.99610) < 1e-5
    expected = torch.tensor([-(2 ** (-8 * (h + 1) / 16)) for h in range(16)])
    torch.testing.assert_close(g, expected, atol=0, rtol=1e-6)
    assert (alibi_decay(5) < 0).all() and torch.all(alibi_decay(5).diff() > 0)  # later heads decay slower
    with pytest.raises(ValueError, match="num_heads must be an int >= 1"):
        alibi_decay(0)


@pytest.mark.parametrize("T,chunk_size", [(63, 64), (63, 16), (63, 1), (63, 100), (500, 64), (500, 37)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_loop_recurrence(T, chunk_size, with_state):
    q, k, v, h0 = _inputs(T=T, state=with_state)
    o, ht = lightning_chunk(q, k, v, G4, initial_state=h0, output_final_state=True, chunk_size=chunk_size)
    o_ref, ht_ref = loop_lightning(q, k, v, G4, initial_state=h0)
    assert o.shape == (2, T, 4, 32) and ht.shape == (2, 4, 60, 32) and ht.dtype == torch.float32
    # Head 0 has no decay, so values grow like sqrt(T); compare relative to that size.
    torch.testing.assert_close(o, o_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ht, ht_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("T", [1, 63, 500])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_matches_loop_recurrence(T, with_state):
    q, k, v, h0 = _inputs(T=T, state=with_state)
    g = alibi_decay(4)
    o, ht = lightning_recurrent(q, k, v, g, initial_state=h0, output_final_state=True, scale=0.2)
    o_ref, ht_ref = loop_lightning(q, k, v, g, initial_state=h0, scale=0.2)
    torch.testing.assert_close(o, o_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ht, ht_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("with_state", [False, True])
def test_chunk_matches_unrolled_form(with_state):
    """Independent formulation: o_t = scale * (sum_s exp(g (t-s)) (q_t.k_s) v_s + exp(g (t+1)) q_t S_0)."""
    q, k, v, h0 = _inputs(B=2, T=40, K=12, V=10, state=with_state)
    o, _ = lightning_chunk(q, k, v, G4, initial_state=h0, chunk_size=16)
    torch.testing.assert_close(o, loop_lightning_parallel(q, k, v, G4, initial_state=h0), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("T", [63, 500])
def test_chunk_equals_recurrent(T):
    q, k, v, h0 = _inputs(T=T, state=True)
    g = alibi_decay(4)
    o_c, h_c = lightning_chunk(q, k, v, g, initial_state=h0, output_final_state=True)
    o_r, h_r = lightning_recurrent(q, k, v, g, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o_c, o_r, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_c, h_r, atol=1e-4, rtol=1e-4)


def test_no_overflow_for_extreme_decay_and_long_chunks():
    q, k, v, h0 = _inputs(T=300, state=True)
    g = torch.tensor([-1e4, -500.0, -80.0, 0.0])
    o, ht = lightning_chunk(q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=300)
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    o_r, h_r = lightning_recurrent(q, k, v, g, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, o_r, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ht, h_r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("split", [1, 40, 64, 130])
def test_split_sequence_with_carried_state_equals_one_call(split):
    q, k, v, h0 = _inputs(T=200, state=True)
    g = alibi_decay(4)
    o_full, h_full = lightning_attention(q, k, v, g, initial_state=h0, output_final_state=True)
    o1, h1 = lightning_attention(q[:, :split], k[:, :split], v[:, :split], g, initial_state=h0, output_final_state=True)
    o2, h2 = lightning_attention(q[:, split:], k[:, split:], v[:, split:], g, initial_state=h1, output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h2, h_full, atol=1e-4, rtol=1e-4)


def test_prefill_then_token_by_token_decode_equals_one_call():
    q, k, v, _ = _inputs(T=70)
    g = alibi_decay(4)
    o_full, h_full = lightning_attention(q, k, v, g, output_final_state=True)
    outs, state = [], None
    o, state = lightning_attention(q[:, :64], k[:, :64], v[:, :64], g, output_final_state=True)
    outs.append(o)
    for t in range(64, 70):  # T == 1: mode "auto" takes the recurrent path
        o, state = lightning_attention(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], g,
                                       initial_state=state, output_final_state=True)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, dim=1), o_full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state, h_full, atol=1e-4, rtol=1e-4)


def test_gradients_chunk_vs_recurrent():
    q, k, v, h0 = _inputs(B=2, T=45, K=12, V=10, requires_grad=True, state=True)
    g = torch.tensor([0.0, -0.05, -0.7, -3.0], requires_grad=True)
    w_o, w_h = torch.randn(2, 45, 4, 10), torch.randn(2, 4, 12, 10)
    grads = []
    for fn, kw in ((lightning_chunk, {"chunk_size": 16}), (lightning_recurrent, {})):
        o, ht = fn(q, k, v, g, initial_state=h0, output_final_state=True, **kw)
        grads.append(torch.autograd.grad((o * w_o).sum() + (ht * w_h).sum(), (q, k, v, h0, g)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # Also against autograd through the loop recurrence.
    o, ht = loop_lightning(q, k, v, g, initial_state=h0)
    ref = torch.autograd.grad((o * w_o).sum() + (ht * w_h).sum(), (q, k, v, h0, g))
    for a, b in zip(grads[0], ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_dtypes():
    q, k, v, _ = _inputs(T=63, dtype=torch.bfloat16)
    h0 = torch.randn(2, 4, 60, 32, dtype=torch.bfloat16)
    g = alibi_decay(4)
    for mode in ("chunk", "recurrent"):
        o, ht = lightning_attention(q, k, v, g, initial_state=h0, output_final_state=True, mode=mode)
        assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
        o_ref, ht_ref = loop_lightning(q.float(), k.float(), v.float(), g, initial_state=h0.float())
        torch.testing.assert_close(o.float(), o_ref, atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(ht, ht_ref, atol=1e-4, rtol=1e-4)  # bf16 inputs, fp32 state math
    o, ht = lightning_attention(q, k, v, g)
    assert ht is None


def test_mode_dispatch(monkeypatch):
    import longforge.ops.linear_attention as la

    calls = []
    monkeypatch.setattr(la, "lightning_chunk", lambda *a, **kw: calls.append("chunk") or (None, None))
    monkeypatch.setattr(la, "lightning_recurrent", lambda *a, **kw: calls.append("recurrent") or (None, None))
    g = alibi_decay(4)
    for T, mode in ((1, "auto"), (2, "auto"), (1, "chunk"), (5, "recurrent")):
        q, k, v, _ = _inputs(B=1, T=T, K=4, V=4)
        la.lightning_attention(q, k, v, g, mode=mode)
    assert calls == ["recurrent", "chunk", "chunk", "recurrent"]
    with pytest.raises(ValueError, match="mode must be one of auto, chunk, recurrent"):
        la.lightning_attention(q, k, v, g, mode="parallel")


@pytest.mark.parametrize(
    "over,kwargs,match",
    [
        ({"k": torch.randn(2, 8, 4, 6)}, {}, r"q and k must both be \[B, T, H, K\]"),
        ({"v": torch.randn(2, 7, 4, 5)}, {}, r"v must be \[B, T, H, V\]"),
        ({"q": torch.randn(2, 8, 4)}, {}, r"q must have shape"),
        ({"g": torch.zeros(3)}, {}, r"g_gamma must have shape \[H\]"),
        ({"g": torch.tensor([0.0, -1.0, 0.5, -1.0])}, {}, r"g_gamma .* must be <= 0"),
        ({}, {"initial_state": torch.zeros(2, 4, 8, 8)}, r"initial_state must have shape \[B, H, K, V\]"),
        ({}, {"chunk_size": 0}, r"chunk_size must be an int >= 1"),
        ({}, {"scale": [1.0]}, r"scale must be a float"),
    ],
)
def test_bad_inputs_raise_value_error(over, kwargs, match):
    args = {"q": torch.randn(2, 8, 4, 8), "k": torch.randn(2, 8, 4, 8), "v": torch.randn(2, 8, 4, 5),
            "g": alibi_decay(4)}
    args.update(over)
    with pytest.raises(ValueError, match=match):
        lightning_attention(args["q"], args["k"], args["v"], args["g"], mode="chunk", **kwargs)
