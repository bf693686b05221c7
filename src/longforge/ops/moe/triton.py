"""Fused Triton decode kernel for DECO's FFN: ONE launch for router, active experts, NormSiLU, down-projection,
the shared SwiGLU expert and the output cast. Forward only (inference), 1–64 tokens.

Shape legend: N tokens (≤ 64), h hidden, E experts of width d, S shared-expert width.
    x [N, h]; router_weight W_r [E, h]; expert_scale s [E]; up W_up [E·d, h]; down W_down [h, E·d]; γ [d];
    w̄ [h] = mean of W_up's rows; shared (W_g [S, h], W_u [S, h], W_o [h, S]).

Grid: (E + ceil(S / SW)) × SPLIT programs. Program (e, j), e < E, handles expert e:
    r_e = ReLU(x · W_r[e]) (fp32)  →  g_e = r_e · s_e  (or g_e read from a given gate matrix)
    if g_e = 0 for every token of the chunk: nothing else is read (the sparsity)
    u_e = x W_up[e·d:(e+1)·d]ᵀ                                   [N, d], fp32 accumulation
    μ   = x · w̄  — the exact mean of ALL E·d pre-activations (mean(W_up x) = mean_rows(W_up) · x)
    a_e = g_e · SiLU(γ ⊙ (u_e − μ) / rms(u_e − μ))                 NormSiLU (moe_and_sp.md §1.2)
    y  += a_e W_down[:, e·d:(e+1)·d]ᵀ  on the j-th 1/SPLIT of the h output columns (fp32 atomics)
Programs e ≥ E do the shared SwiGLU expert, one SW-wide slice of its intermediate each (SW ≤ d: the shared
expert's 3·S·h weights are spread over several SMs). SPLIT > 1 re-reads the
up-projection slice (from L2) to spread the down-projection over more SMs.

The output is accumulated in an fp32 workspace with atomics; the LAST program to finish (an arrival counter,
acq_rel) reads the workspace back, writes y in x's dtype and leaves workspace and counter zeroed for the next
launch — so no memset and no cast kernel are needed, and the whole layer is one graph node. (The pattern of
CUDA's threadFenceReduction sample.) ``finalize=False`` keeps the classic form (caller zeroes the workspace
and casts), as a fallback and for checking.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_TOKENS = 64


@triton.jit
def _expert_activation(u, mu, g, x_ptr, gamma_ptr, offs_d, D, eps, HAS_NORM: tl.constexpr):
    """a = g · SiLU(RMSNorm_γ(u − μ)) over the expert's d units ([BLOCK_N, BLOCK_D], fp32, zero outside d), with
    the reference's roundings: u and the activation in x's dtype."""
    u = u.to(x_ptr.dtype.element_ty).to(tl.float32)  # the reference computes x @ W in x's dtype
    valid_d = (offs_d < D)[None, :]
    if HAS_NORM:
        c = tl.where(valid_d, u - mu[:, None], 0.0)
        rms = tl.sqrt(tl.sum(c * c, 1) / D + eps)
        gamma = tl.load(gamma_ptr + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
        n = c / rms[:, None] * gamma[None, :]
    else:
        n = u
    act = n / (1.0 + tl.exp(-n))
    act = act.to(x_ptr.dtype.element_ty).to(tl.float32)  # the reference's activation dtype
    return tl.where(valid_d, act * g[:, None], 0.0)


@triton.jit
def _deco_decode_kernel(
    x_ptr, router_ptr, scale_ptr, gates_ptr, up_ptr, down_ptr, gamma_ptr, wbar_ptr,
    sg_ptr, su_ptr, sd_ptr, ws_ptr, counter_ptr, out_ptr, r_out_ptr,
    N, H, E, D, S, SW, eps,
    stride_down, stride_sd,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_F: tl.constexpr, SPLIT: tl.constexpr, GATES_GIVEN: tl.constexpr, HAS_NORM: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    WRITE_ROUTER: tl.constexpr, FINALIZE: tl.constexpr, FP32_DOT: tl.constexpr,
    BLOCK_R: tl.constexpr, LOOP_STAGES: tl.constexpr, UNROLL: tl.constexpr, SPECULATE: tl.constexpr,
):
    pid = tl.program_id(0)
    part = tl.program_id(1)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_k = tl.arange(0, BLOCK_K)
    mask_n = offs_n < N
    # Batch-1 decode is a chain of dependent loops (router → up → down), each iteration a memory round trip:
    # BLOCK_R (the router's K tile) shortens the first link; LOOP_STAGES pipelines every load of a loop (not
    # only those feeding a dot) and UNROLL unrolls the loops so independent loads can be issued together
    # (None = the compiler's defaults).
    offs_r = tl.arange(0, BLOCK_R)
    h_per = ((H + SPLIT - 1) // SPLIT + BLOCK_H - 1) // BLOCK_H * BLOCK_H
    h_lo = part * h_per
    h_hi = tl.minimum(h_lo + h_per, H)
    a = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if pid < E:
        row0 = pid * D
        if SPECULATE and not GATES_GIVEN:
            # --- router row, this expert's up rows and w̄ in ONE pass over x: one dependent loop fewer on the
            # batch-1 critical path, paid for by reading the up rows of experts that turn out inactive ---
            r = tl.zeros([BLOCK_N], dtype=tl.float32)
            u = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
            mu = tl.zeros([BLOCK_N], dtype=tl.float32)
            for k0 in tl.range(0, H, BLOCK_K, num_stages=LOOP_STAGES, loop_unroll_factor=UNROLL):
                kk = k0 + offs_k
                mask_k = kk < H
                xk = tl.load(x_ptr + offs_n[:, None] * H + kk[None, :], mask=mask_n[:, None] & mask_k[None, :],
                             other=0.0)
                wr = tl.load(router_ptr + pid * H + kk, mask=mask_k, other=0.0).to(tl.float32)
                r += tl.sum(xk.to(tl.float32) * wr[None, :], 1)
                w = tl.load(up_ptr + (row0 + offs_d[None, :]) * H + kk[:, None],
                            mask=mask_k[:, None] & (offs_d[None, :] < D), other=0.0)  # [BLOCK_K, BLOCK_D]
                if FP32_DOT:
                    u += tl.dot(xk.to(tl.float32), w.to(tl.float32), input_precision="ieee")
                else:
                    u += tl.dot(xk, w)
                if HAS_NORM:
                    wb = tl.load(wbar_ptr + kk, mask=mask_k, other=0.0)
                    mu += tl.sum(xk.to(tl.float32) * wb[None, :], 1)
            r = tl.maximum(r, 0.0)
            if WRITE_ROUTER:
                if part == 0:
                    tl.store(r_out_ptr + offs_n * E + pid, r, mask=mask_n)
            g = r
            if HAS_SCALE:
                g = r * tl.load(scale_ptr + pid).to(tl.float32)
            g = tl.where(mask_n, g, 0.0)
            a = _expert_activation(u, mu, g, x_ptr, gamma_ptr, offs_d, D, eps, HAS_NORM)
        else:
            # --- router: g_e for every token of the chunk (fp32, DECO's RouterFP32) ---
            if GATES_GIVEN:
                g = tl.load(gates_ptr + offs_n * E + pid, mask=mask_n, other=0.0).to(tl.float32)
            else:
                r = tl.zeros([BLOCK_N], dtype=tl.float32)
                for k0 in tl.range(0, H, BLOCK_R, num_stages=LOOP_STAGES, loop_unroll_factor=UNROLL):
                    kk = k0 + offs_r
                    xk = tl.load(x_ptr + offs_n[:, None] * H + kk[None, :],
                                 mask=mask_n[:, None] & (kk[None, :] < H), other=0.0).to(tl.float32)
                    wr = tl.load(router_ptr + pid * H + kk, mask=kk < H, other=0.0).to(tl.float32)
                    r += tl.sum(xk * wr[None, :], 1)
                r = tl.maximum(r, 0.0)
                if WRITE_ROUTER:
                    if part == 0:
                        tl.store(r_out_ptr + offs_n * E + pid, r, mask=mask_n)
                g = r
                if HAS_SCALE:
                    g = r * tl.load(scale_ptr + pid).to(tl.float32)
            g = tl.where(mask_n, g, 0.0)
            if tl.max(tl.abs(g), 0) > 0.0:
                # --- up-projection of this expert's d rows, and the token's global mean μ = x · w̄ ---
                u = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
                mu = tl.zeros([BLOCK_N], dtype=tl.float32)
                for k0 in tl.range(0, H, BLOCK_K, num_stages=LOOP_STAGES, loop_unroll_factor=UNROLL):
                    kk = k0 + offs_k
                    mask_k = kk < H
                    xk = tl.load(x_ptr + offs_n[:, None] * H + kk[None, :], mask=mask_n[:, None] & mask_k[None, :],
                                 other=0.0)
                    w = tl.load(up_ptr + (row0 + offs_d[None, :]) * H + kk[:, None],
                                mask=mask_k[:, None] & (offs_d[None, :] < D), other=0.0)  # [BLOCK_K, BLOCK_D]
                    if FP32_DOT:
                        u += tl.dot(xk.to(tl.float32), w.to(tl.float32), input_precision="ieee")
                    else:
                        u += tl.dot(xk, w)
                    if HAS_NORM:
                        wb = tl.load(wbar_ptr + kk, mask=mask_k, other=0.0)
                        mu += tl.sum(xk.to(tl.float32) * wb[None, :], 1)
                a = _expert_activation(u, mu, g, x_ptr, gamma_ptr, offs_d, D, eps, HAS_NORM)
        w_ptr = down_ptr
        stride_w = stride_down
        col0 = pid * D
        d_valid = D
        h_end = tl.where(tl.max(tl.abs(g), 0) > 0.0, h_hi, h_lo)  # inactive: no down-projection either
    else:
        # --- the shared SwiGLU expert, one SW-wide slice (SW ≤ BLOCK_D) of its S intermediate units per program ---
        col0 = (pid - E) * SW
        cols = col0 + offs_d
        mask_c = (offs_d < SW) & (cols < S)
        acc_g = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        acc_u = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        for k0 in tl.range(0, H, BLOCK_K, num_stages=LOOP_STAGES, loop_unroll_factor=UNROLL):
            kk = k0 + offs_k
            mask_k = kk < H
            xk = tl.load(x_ptr + offs_n[:, None] * H + kk[None, :], mask=mask_n[:, None] & mask_k[None, :],
                         other=0.0)
            wg = tl.load(sg_ptr + cols[None, :] * H + kk[:, None], mask=mask_k[:, None] & mask_c[None, :], other=0.0)
            wu = tl.load(su_ptr + cols[None, :] * H + kk[:, None], mask=mask_k[:, None] & mask_c[None, :], other=0.0)
            if FP32_DOT:
                acc_g += tl.dot(xk.to(tl.float32), wg.to(tl.float32), input_precision="ieee")
                acc_u += tl.dot(xk.to(tl.float32), wu.to(tl.float32), input_precision="ieee")
            else:
                acc_g += tl.dot(xk, wg)
                acc_u += tl.dot(xk, wu)
        gt = acc_g.to(x_ptr.dtype.element_ty).to(tl.float32)
        ut = acc_u.to(x_ptr.dtype.element_ty).to(tl.float32)
        a = (gt / (1.0 + tl.exp(-gt))).to(x_ptr.dtype.element_ty).to(tl.float32) * ut
        a = tl.where(mask_c[None, :], a, 0.0)
        w_ptr = sd_ptr
        stride_w = stride_sd
        d_valid = tl.minimum(SW, S - col0)
        h_end = h_hi
    # --- down-projection: ws[n, h_lo:h_end] += a @ W[h_lo:h_end, col0:col0+d_valid]ᵀ (fp32 atomics) ---
    for h0 in tl.range(h_lo, h_end, BLOCK_H, num_stages=LOOP_STAGES, loop_unroll_factor=UNROLL):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        mask_h = offs_h < h_end
        w = tl.load(w_ptr + offs_h[None, :] * stride_w + col0 + offs_d[:, None],
                    mask=mask_h[None, :] & (offs_d[:, None] < d_valid), other=0.0)  # [BLOCK_D, BLOCK_H]
        if FP32_DOT:
            y = tl.dot(a.to(x_ptr.dtype.element_ty).to(tl.float32), w.to(tl.float32), input_precision="ieee")
        else:
            y = tl.dot(a.to(w.dtype), w)
        tl.atomic_add(ws_ptr + offs_n[:, None] * H + offs_h[None, :], y,
                      mask=mask_n[:, None] & mask_h[None, :], sem="relaxed")
    if FINALIZE:
        # Arrival counter: every thread's atomics are issued before the barrier; the acq_rel increment publishes
        # them (cumulativity), and the last arriving program reads the sums back and re-zeroes the workspace.
        tl.debug_barrier()
        total = tl.num_programs(0) * tl.num_programs(1)
        arrived = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
        if arrived == total - 1:
            offs = tl.arange(0, BLOCK_F)
            for i0 in range(0, N * H, BLOCK_F):
                idx = i0 + offs
                m = idx < N * H
                # an atomic read (+0) sees the L2 sums coherently; then the slot is re-zeroed
                v = tl.atomic_add(ws_ptr + idx, tl.zeros([BLOCK_F], dtype=tl.float32), mask=m, sem="acquire")
                tl.store(ws_ptr + idx, tl.zeros([BLOCK_F], dtype=tl.float32), mask=m)
                tl.store(out_ptr + idx, v.to(out_ptr.dtype.element_ty), mask=m)
            tl.atomic_xchg(counter_ptr, 0, sem="acq_rel", scope="gpu")


# Persistent, always-zero workspaces (fp32 [MAX_TOKENS·h] + an int32 counter) per (device, h): the kernel leaves
# them zeroed, so CUDA-graph replays and consecutive layers reuse them without a memset.
_WORKSPACES: dict = {}


def _workspace(device: torch.device, h: int) -> tuple[Tensor, Tensor]:
    key = (str(device), h)
    if key not in _WORKSPACES:
        _WORKSPACES[key] = (
            torch.zeros(MAX_TOKENS * h, device=device, dtype=torch.float32),
            torch.zeros(1, device=device, dtype=torch.int32),
        )
    return _WORKSPACES[key]


# Launch parameters; the benchmark may tune them per (tokens, h) with ``set_config``.
DEFAULT_CONFIG = {"BLOCK_K": 128, "BLOCK_H": 128, "SPLIT": 1, "SHARED_SLICE": 32, "FINALIZE": True, "num_warps": 4,
                  "num_stages": 2, "BLOCK_R": 0, "LOOP_STAGES": None, "UNROLL": None, "SPECULATE": False}
_CONFIGS: dict = {}


def set_config(tokens: int, hidden: int, **config) -> None:
    """Launch parameters for chunks of ``tokens`` at width h: BLOCK_K (up-projection K tile), BLOCK_H (down tile),
    SPLIT (programs per expert over the output columns), SHARED_SLICE (shared-expert units per program), FINALIZE
    (last program casts and re-zeroes; False: memset + cast launches), num_warps, num_stages; BLOCK_R (router K tile,
    0 = BLOCK_K), LOOP_STAGES (per-loop pipelining of every load, None = only dot operands), UNROLL (loop unroll
    factor, None = none), SPECULATE (router and up-projection in one pass over x: the up rows of inactive experts
    are read too, one dependent loop fewer)."""
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown launch parameters {sorted(unknown)}; allowed: {sorted(DEFAULT_CONFIG)}")
    _CONFIGS[(_block_n(tokens), hidden)] = {**DEFAULT_CONFIG, **config}


def _block_n(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def deco_ffn_fused(
    x: Tensor,
    router_weight: Tensor | None,
    expert_scale: Tensor | None,
    up_weight: Tensor,
    down_weight: Tensor,
    norm_weight: Tensor | None,
    *,
    eps: float = 1e-6,
    up_row_mean: Tensor | None = None,
    gates: Tensor | None = None,
    shared: tuple[Tensor, Tensor, Tensor] | None = None,
    router_out: Tensor | None = None,
    finalize: bool | None = None,
    config: dict | None = None,
) -> Tensor:
    """One launch: y = DECO routed experts (+ shared SwiGLU expert) for x [N ≤ 64, h], in x's dtype.

    Either ``router_weight`` [E, h] (+ optional ``expert_scale`` [E]) — the router runs in the kernel — or
    ``gates`` [N, E] (zero = inactive). ``router_out`` [N, E] fp32, if given, receives ReLU(W_r x).
    ``shared``: the shared expert's (gate [S, h], up [S, h], down [h, S]) weights, or None."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_TOKENS:
        raise ValueError(f"deco_ffn_fused: x must be [N, h] with 1 <= N <= {MAX_TOKENS}, got {tuple(x.shape)}")
    N, h = x.shape
    if (gates is None) == (router_weight is None):
        raise ValueError("deco_ffn_fused: give exactly one of router_weight and gates")
    E = gates.shape[1] if gates is not None else router_weight.shape[0]
    if up_weight.shape[0] % E or up_weight.shape[1] != h or down_weight.shape != (h, up_weight.shape[0]):
        raise ValueError(
            f"deco_ffn_fused: up_weight must be [E·d, h] and down_weight [h, E·d] with E={E}, h={h}; "
            f"got {tuple(up_weight.shape)} and {tuple(down_weight.shape)}"
        )
    d = up_weight.shape[0] // E
    if norm_weight is not None and up_row_mean is None:
        up_row_mean = up_weight.float().mean(0)
    x = x.contiguous()
    up_weight = up_weight.contiguous()
    if down_weight.stride(1) != 1:
        down_weight = down_weight.contiguous()
    S = 0
    sg = su = sd = x  # unused pointers when there is no shared expert
    if shared is not None:
        sg, su, sd = (w.contiguous() for w in shared)
        S = sg.shape[0]
        if su.shape != (S, h) or sg.shape != (S, h) or sd.shape != (h, S):
            raise ValueError("deco_ffn_fused: shared must be (gate [S, h], up [S, h], down [h, S])")
    cfg = {**DEFAULT_CONFIG, **(config or _CONFIGS.get((_block_n(N), h), {}))}
    if finalize is None:
        finalize = cfg["FINALIZE"]
    sw = min(int(cfg["SHARED_SLICE"]), d, max(16, triton.next_power_of_2(d)))
    ws, counter = _workspace(x.device, h)
    if not finalize:
        ws = torch.zeros(N * h, device=x.device, dtype=torch.float32)
    out = torch.empty(N, h, device=x.device, dtype=x.dtype)
    dummy = up_row_mean if up_row_mean is not None else ws
    grid = (E + triton.cdiv(S, sw), cfg["SPLIT"])
    _deco_decode_kernel[grid](
        x, router_weight if router_weight is not None else dummy,
        expert_scale if expert_scale is not None else dummy,
        gates.contiguous() if gates is not None else dummy,
        up_weight, down_weight,
        norm_weight if norm_weight is not None else dummy,
        up_row_mean.float().contiguous() if up_row_mean is not None else dummy,
        sg, su, sd, ws, counter, out,
        router_out if router_out is not None else dummy,
        N, h, E, d, S, sw, eps,
        down_weight.stride(0), sd.stride(0),
        BLOCK_N=_block_n(N), BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_K=cfg["BLOCK_K"],
        BLOCK_H=cfg["BLOCK_H"], BLOCK_F=min(4096, triton.next_power_of_2(N * h)), SPLIT=cfg["SPLIT"],
        GATES_GIVEN=gates is not None,
        HAS_NORM=norm_weight is not None, HAS_SCALE=expert_scale is not None,
        WRITE_ROUTER=router_out is not None, FINALIZE=finalize,
        # fp32: exact (IEEE) dots; on CPU (TRITON_INTERPRET=1) also for bf16, whose dot the interpreter lacks
        FP32_DOT=x.dtype == torch.float32 or x.device.type != "cuda",
        BLOCK_R=int(cfg["BLOCK_R"] or cfg["BLOCK_K"]), LOOP_STAGES=cfg["LOOP_STAGES"], UNROLL=cfg["UNROLL"],
        SPECULATE=bool(cfg["SPECULATE"]),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if not finalize:
        out = ws.view(N, h).to(x.dtype)
    return out


def deco_experts_fused(
    x: Tensor,
    gates: Tensor,
    up_weight: Tensor,
    down_weight: Tensor,
    norm_weight: Tensor | None,
    *,
    eps: float = 1e-6,
    up_row_mean: Tensor | None = None,
) -> Tensor:
    """``deco_experts_sparse``'s signature on the fused kernel (chunks of ≤ 64 tokens per launch). Long inputs
    (prefill, evaluation: > 256 tokens, where the chunk's union is every expert anyway) and mixed dtypes (autocast)
    go to the gather path."""
    from .naive import _check, deco_experts_sparse

    _check(x, gates, up_weight, down_weight, norm_weight)
    if x.shape[0] > 4 * MAX_TOKENS or x.dtype != up_weight.dtype or x.dtype != down_weight.dtype:
        return deco_experts_sparse(x, gates, up_weight, down_weight, norm_weight, eps=eps, up_row_mean=up_row_mean)
    if norm_weight is not None and up_row_mean is None:
        up_row_mean = up_weight.float().mean(0)
    chunks = [
        deco_ffn_fused(x[i : i + MAX_TOKENS], None, None, up_weight, down_weight, norm_weight, eps=eps,
                       up_row_mean=up_row_mean, gates=gates[i : i + MAX_TOKENS].float())
        for i in range(0, x.shape[0], MAX_TOKENS)
    ]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)
