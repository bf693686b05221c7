"""The fused Triton DECO decode kernel against the dense-masked reference: on CPU under TRITON_INTERPRET=1 (in a
subprocess, because the interpreter must be on before the kernel is defined), and on CUDA (`gpu` marker)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def _case(N, h, E, d, S, ratio, dtype, device, seed=0):
    """Inputs with round(ratio·E) experts active per token (ratio 0: none; 1: all) and the truth in fp32."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, h, generator=g)
    k = round(ratio * E)
    z = -(torch.rand(E, N, generator=g) + 0.5)
    for t in range(N):
        z[torch.randperm(E, generator=g)[:k], t] = torch.rand(k, generator=g) + 0.5
    xr = x.to(dtype).float()
    router = z @ torch.linalg.solve(xr @ xr.t() + 1e-6 * torch.eye(N), xr)  # W_r x_t > 0 exactly for the chosen
    scale = torch.rand(E, generator=g) + 0.05
    up = torch.randn(E * d, h, generator=g) / h**0.5 + 0.05  # a nonzero mean: NormSiLU's centring matters
    down = torch.randn(h, E * d, generator=g) / (E * d) ** 0.5
    gamma = torch.rand(d, generator=g) + 0.5
    shared = tuple(torch.randn(*s, generator=g) / s[1] ** 0.5 for s in [(S, h), (S, h), (h, S)])
    cast = lambda t: t.to(device, dtype)  # noqa: E731
    return dict(
        x=cast(x), router=router.to(device), scale=scale.to(device), up=cast(up), down=cast(down),
        gamma=cast(gamma), shared=tuple(cast(w) for w in shared),
    )


def _reference(c, dtype=None, with_norm=True, with_shared=True):
    """Dense-masked DECO layer (every expert computed and masked) in ``dtype`` (None: fp32 on upcast inputs)."""
    from longforge.ops.moe import deco_experts_dense, relu_router

    t = (lambda w: w.float()) if dtype is None else (lambda w: w.to(dtype))  # noqa: E731
    x = t(c["x"])
    r = relu_router(x, c["router"])
    y = deco_experts_dense(x, r * c["scale"], t(c["up"]), t(c["down"]), t(c["gamma"]) if with_norm else None)
    if with_shared:
        sg, su, sd = (t(w) for w in c["shared"])
        y = y + F.linear(F.silu(F.linear(x, sg)) * F.linear(x, su), sd)
    return y.float(), r


def _check_close(got, c, dtype, floor=8e-3, **kw):
    truth, _ = _reference(c, None, **kw)
    if dtype == torch.float32:
        torch.testing.assert_close(got.float(), truth, atol=1e-4, rtol=1e-4)
        return
    ref_dt, _ = _reference(c, dtype, **kw)
    ref_err = (ref_dt - truth).abs().max().item()
    err = (got.float() - truth).abs().max().item()
    # within the dtype's own rounding: no worse than twice the bf16 reference's error, plus a floor relative to the
    # output's scale (the interpreter's bf16 casts truncate, hence the CPU run's larger floor)
    assert err <= 2 * ref_err + floor * truth.abs().max().item(), (err, ref_err)


CPU_SCRIPT = textwrap.dedent(
    """
    import functools
    import sys
    import torch
    import triton.runtime.interpreter as ti

    # triton 3.6's interpreter calls int() on 1-element arrays, which numpy >= 2.4 refuses: index by element
    _orig = ti._patch_lang_tensor
    def _patched(tensor, scope):
        _orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
    ti._patch_lang_tensor = _patched

    sys.path.insert(0, sys.argv[1])
    from test_moe_fast import _case, _check_close, _reference
    from longforge.ops.moe.triton import deco_experts_fused, deco_ffn_fused

    _check_close = functools.partial(_check_close, floor=2e-2)

    h, E, d, S = 40, 6, 16, 24
    cases = {torch.float32: ((1, 0.34), (3, 0.0)), torch.bfloat16: ((7, 0.5), (2, 1.0))}
    for dtype, shapes in cases.items():
        for N, ratio in shapes:
            c = _case(N, h, E, d, S, ratio, dtype, "cpu", seed=N)
            r_out = torch.full((N, E), -1.0)
            y = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], c["gamma"], shared=c["shared"],
                               router_out=r_out)
            assert y.dtype == dtype and y.shape == (N, h)
            _check_close(y, c, dtype)
            _, r = _reference(c)
            assert torch.allclose(r_out, r, atol=1e-5), "router output"
            assert ((r > 0).float().mean(1) == round(ratio * E) / E).all()
    c = _case(5, h, E, d, S, 0.5, torch.bfloat16, "cpu", seed=9)
    _, r = _reference(c)
    # the _FAST slot: deco_experts_sparse's signature (given gates, no shared expert), with and without NormSiLU
    for with_norm in (True, False):
        y = deco_experts_fused(c["x"], r * c["scale"], c["up"], c["down"], c["gamma"] if with_norm else None)
        _check_close(y, c, torch.bfloat16, with_norm=with_norm, with_shared=False)
    # the caller-zeroed / cast fallback, and a split down-projection
    c = _case(4, h, E, d, S, 0.5, torch.float32, "cpu", seed=4)
    y = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], c["gamma"], shared=c["shared"],
                       finalize=False)
    _check_close(y, c, torch.float32)
    y = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], c["gamma"], shared=c["shared"],
                       config=dict(BLOCK_K=16, BLOCK_H=16, SPLIT=3, SHARED_SLICE=8))
    _check_close(y, c, torch.float32)
    # the latency knobs: a router tile wider than h, per-loop pipelining and unrolling, router and up-projection in
    # one pass (SPECULATE, also with the router output written and an all-inactive chunk), bf16 at one token
    for N, dtype, ratio, spec in ((4, torch.float32, 0.5, False), (1, torch.bfloat16, 0.5, False),
                                  (1, torch.bfloat16, 0.34, True), (3, torch.float32, 0.5, True),
                                  (2, torch.float32, 0.0, True)):
        c = _case(N, h, E, d, S, ratio, dtype, "cpu", seed=11 + N)
        r_out = torch.full((N, E), -1.0)
        y = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], c["gamma"], shared=c["shared"],
                           router_out=r_out, config=dict(BLOCK_K=16, BLOCK_H=32, BLOCK_R=64, SPLIT=2, SHARED_SLICE=8,
                                                         LOOP_STAGES=3, UNROLL=2, SPECULATE=spec))
        _check_close(y, c, dtype)
        assert torch.allclose(r_out, _reference(c)[1], atol=1e-5), "router output"
    c = _case(3, h, E, d, S, 0.5, torch.float32, "cpu", seed=21)
    y = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], None, shared=c["shared"],
                       config=dict(BLOCK_K=16, SPECULATE=True))
    _check_close(y, c, torch.float32, with_norm=False)
    print("OK")
    """
)


def test_fused_kernel_matches_reference_under_triton_interpreter():
    pytest.importorskip("triton")
    path = f"{ROOT / 'src'}{os.pathsep}" + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-c", CPU_SCRIPT, str(Path(__file__).parent)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_fused_rejects_bad_input():
    pytest.importorskip("triton")
    from longforge.ops.moe.triton import deco_ffn_fused, set_config

    c = _case(2, 32, 4, 16, 16, 0.5, torch.float32, "cpu")
    with pytest.raises(ValueError, match="1 <= N <= 64"):
        deco_ffn_fused(torch.zeros(65, 32), c["router"], None, c["up"], c["down"], None)
    with pytest.raises(ValueError, match="exactly one of router_weight and gates"):
        deco_ffn_fused(c["x"], None, None, c["up"], c["down"], None)
    with pytest.raises(ValueError, match="up_weight must be"):
        deco_ffn_fused(c["x"], c["router"], None, c["up"][:, :8], c["down"], None)
    with pytest.raises(ValueError, match="unknown launch parameters"):
        set_config(1, 32, BLOCK_Q=3)


# ---------------------------------------------------------------------------------------------- on CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tokens", [1, 7, 64])
@pytest.mark.parametrize("ratio", [0.0, 0.2, 1.0])
def test_fused_kernel_on_cuda(dtype, tokens, ratio):
    from longforge.ops.moe.triton import deco_ffn_fused

    c = _case(tokens, 768, 42, 64, 128, ratio, dtype, "cuda", seed=tokens)
    r_out = torch.empty(tokens, 42, device="cuda")
    for cfg in (None, dict(BLOCK_K=128, BLOCK_H=256, SPLIT=4, num_warps=8, num_stages=2),
                dict(BLOCK_K=128, BLOCK_H=128, BLOCK_R=256, SPLIT=3, num_warps=4, LOOP_STAGES=2),
                dict(BLOCK_K=128, BLOCK_H=128, SPLIT=2, num_warps=4, LOOP_STAGES=2, SPECULATE=True)):
        for finalize in (True, False):
            y = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], c["gamma"], shared=c["shared"],
                               router_out=r_out, finalize=finalize, config=cfg)
            torch.cuda.synchronize()
            _check_close(y.cpu(), {k: (v.cpu() if torch.is_tensor(v) else tuple(w.cpu() for w in v)) for k, v in
                                   c.items()}, dtype)
    # the persistent workspace is left zeroed: a second launch gives the same result
    y2 = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], c["gamma"], shared=c["shared"])
    y3 = deco_ffn_fused(c["x"], c["router"], c["scale"], c["up"], c["down"], c["gamma"], shared=c["shared"])
    torch.testing.assert_close(y2, y3, atol=2e-2 if dtype == torch.bfloat16 else 1e-5, rtol=0)


@pytest.mark.gpu
def test_graphed_layer_and_model_decode_on_cuda():
    from longforge.layers.deco_moe import DecoMoE
    from longforge.models import HybridConfig
    from longforge.ops.moe.graph import GraphedStep

    cfg = HybridConfig(vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, layer_types="F", mlp_types="deco_moe",
                       moe_num_experts=16, moe_expert_dim=64, moe_shared_dim=128)
    layer = DecoMoE(cfg, 1).cuda().to(torch.bfloat16)
    with torch.no_grad():
        layer.router.weight.normal_(std=0.05)
    x = torch.randn(3, 256, device="cuda", dtype=torch.bfloat16)
    layer.train()
    dense = layer(x).detach().float()  # the dense-masked training path
    layer.eval()
    with torch.no_grad():
        eager = layer(x).float()  # the fused kernel
    assert not DecoMoE._fused_failed and layer._router_out is not None  # it ran, no fallback
    assert 0 < float(layer.num_active) < 3 * 16
    torch.testing.assert_close(eager, dense, atol=3e-2, rtol=3e-2)
    step = GraphedStep(layer, x)
    for _ in range(3):
        x2 = torch.randn_like(x)
        with torch.no_grad():
            want = layer(x2).float()
        torch.testing.assert_close(step(x2).float(), want, atol=1e-2, rtol=1e-2)
