"""`longforge bench kernels`: forward time of each token mixer's attention op against dense causal attention.

At the attention shape of an 8B-class layer (batch 1, 32 query heads, head dim 128; KV heads as the built-in shapes
use them: 8 for full and sliding attention (qwen3-8b-shape), 2 for InfLLM-V2 sparse attention (sala-9b-shape),
32 for Lightning (MHA)), per sequence length:

    dense    F.scaled_dot_product_attention(causal, GQA) with the cuDNN backend — the reference
             (on CPU: SDPA's default backend)
    full     longforge.ops.attention.attention(causal)                 — whatever backend the seam picks
    sliding  longforge.ops.attention.attention(window=W)
    sparse   longforge.ops.sparse_attention.sparse_attention(...)      — SALA's InfLLM-V2 settings
    lightning longforge.ops.linear_attention.lightning_attention(...)  — chunked form, ALiBi decay

Timing: CUDA events around each call (wall clock on CPU), one warm-up, then up to ``repeats`` calls (fewer when a
call is long); the mean is reported. Throughput: attention FLOPs (4·H·D per visible query-key pair: QKᵀ and PV,
plus InfLLM-V2's block scoring against the compressed keys; Lightning's chunked form 4·T·H·D·(C + D)) as TFLOP/s
against the H200's bf16 dense ceilings (989 TFLOP/s datasheet, 792 measured GEMM), and the bytes of q, k, v and o
as GB/s against HBM (4.8 TB/s) — Lightning is memory-bound, the others compute-bound. A run that would exceed
``max_call_s`` (extrapolated from the shorter lengths) is recorded as ``too_slow``, an out-of-memory as ``oom``.
"""

from __future__ import annotations

import gc
import math
import time

import torch
import torch.nn.functional as F

from . import _report

DEFAULT_LENGTHS = (8192, 32768, 131072, 262144, 524288)
MIXERS = ("dense", "full", "sliding", "sparse", "lightning")
PEAK_TFLOPS_DATASHEET = 989.0
PEAK_TFLOPS_GEMM = 792.0
PEAK_HBM_GBPS = 4800.0
HEADS, HEAD_DIM = 32, 128
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _sparse_settings() -> dict:
    from ..models.shapes import sala_9b_shape

    c = sala_9b_shape()
    return dict(
        block_size=c.sparse_block_size,
        kernel_size=c.sparse_kernel_size,
        kernel_stride=c.sparse_kernel_stride,
        topk=c.sparse_topk,
        init_blocks=c.sparse_init_blocks,
        window_size=c.sparse_window_size,
        dense_len=c.sparse_dense_len,
    )


def kv_heads(mixer: str) -> int:
    from ..models.shapes import qwen3_8b_shape, sala_9b_shape

    if mixer == "lightning":
        return HEADS
    if mixer == "sparse":
        return sala_9b_shape().num_key_value_heads
    return qwen3_8b_shape().num_key_value_heads


def _visible_pairs(T: int, per_query_cap: int | None, dense_len: int = 0) -> int:
    """Σ_t min(t + 1, cap) over t < T (cap None = causal: T(T+1)/2); queries with t + 1 < dense_len see all."""
    if per_query_cap is None or per_query_cap >= T:
        return T * (T + 1) // 2
    n_dense = min(T, max(0, dense_len - 1))
    pairs = n_dense * (n_dense + 1) // 2
    # t from n_dense to T-1: min(t+1, cap)
    lo, hi = n_dense + 1, T  # values of t+1
    below = max(0, min(hi, per_query_cap) - lo + 1)
    if below:
        pairs += (lo + lo + below - 1) * below // 2
    pairs += max(0, hi - max(lo, per_query_cap + 1) + 1) * per_query_cap
    return pairs


def flops(mixer: str, T: int, window: int, lightning_chunk: int = 64) -> float:
    """Useful forward FLOPs of one call (see the module docstring)."""
    per_pair = 4 * HEADS * HEAD_DIM
    if mixer in ("dense", "full"):
        return per_pair * _visible_pairs(T, None)
    if mixer == "sliding":
        return per_pair * _visible_pairs(T, window)
    if mixer == "sparse":
        s = _sparse_settings()
        pairs = _visible_pairs(T, s["topk"] * s["block_size"], s["dense_len"])
        # scoring: every query against the compressed keys before it (≈ t / stride of them)
        scoring = 2 * HEADS * HEAD_DIM * (T * T / (2 * s["kernel_stride"]))
        return per_pair * pairs + scoring
    if mixer == "lightning":
        return 4 * T * HEADS * HEAD_DIM * (lightning_chunk + HEAD_DIM)
    raise ValueError(mixer)


def io_bytes(mixer: str, T: int, dtype: torch.dtype) -> int:
    b = torch.empty((), dtype=dtype).element_size()
    return T * HEAD_DIM * b * (2 * HEADS + 2 * kv_heads(mixer))


def _inputs(mixer: str, T: int, device, dtype, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    hk = kv_heads(mixer)
    q = torch.randn(1, T, HEADS, HEAD_DIM, device=device, dtype=dtype, generator=g)
    k = torch.randn(1, T, hk, HEAD_DIM, device=device, dtype=dtype, generator=g)
    v = torch.randn(1, T, hk, HEAD_DIM, device=device, dtype=dtype, generator=g)
    if mixer == "lightning":  # Lightning's q / k are RMS-normed then scaled by D^-1/2; keep magnitudes sane
        q, k = q / HEAD_DIM**0.5, k / HEAD_DIM**0.5
    return q, k, v


def make_call(mixer: str, T: int, device, dtype, window: int):
    """A zero-argument function running one forward of ``mixer`` at length ``T`` (inputs allocated here)."""
    from ..ops import attention as attention_op
    from ..ops import linear_attention as linear_op
    from ..ops import sparse_attention as sparse_op

    q, k, v = _inputs(mixer, T, device, dtype)
    if mixer == "dense":
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # SDPA's [B, H, T, D]
        if device.type == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def call():
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
        else:

            def call():
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)

        return call
    if mixer == "full":
        return lambda: attention_op.attention(q, k, v, causal=True)
    if mixer == "sliding":
        return lambda: attention_op.attention(q, k, v, causal=True, window=window)
    if mixer == "sparse":
        s = _sparse_settings()
        return lambda: sparse_op.sparse_attention(q, k, v, **s)
    if mixer == "lightning":
        g_gamma = linear_op.alibi_decay(HEADS).to(device)
        return lambda: linear_op.lightning_attention(q, k, v, g_gamma, mode="chunk")[0]
    raise ValueError(f"unknown mixer {mixer!r}; choose from {', '.join(MIXERS)}")


def backend_of(mixer: str, device: torch.device) -> str:
    """Which implementation the seam runs for ``mixer`` here: 'cudnn' / 'sdpa' for the reference, else the
    seam's choice ('fast' or 'naive')."""
    import os

    from ..ops import attention as attention_op
    from ..ops import linear_attention as linear_op
    from ..ops import sparse_attention as sparse_op

    if mixer == "dense":
        return "cudnn" if device.type == "cuda" else "sdpa-cpu"
    mod, op = {
        "full": (attention_op, "attention"),
        "sliding": (attention_op, "attention"),
        "sparse": (sparse_op, "sparse_attention"),
        "lightning": (linear_op, "lightning"),
    }[mixer]
    forced = os.environ.get(f"LONGFORGE_BACKEND_{op.upper()}", "").strip().lower()
    if forced:
        return forced
    fast = getattr(mod, "_FAST", None) if mixer != "lightning" else getattr(mod, "_FAST_CHUNK", None)
    return "fast" if fast is not None and device.type == "cuda" else "naive"


def time_call(call, device: torch.device, repeats: int, max_total_s: float = 5.0) -> float:
    """Mean seconds of ``call()`` after an untimed warm-up call (compilation and autotuning happen there); fewer
    repeats when a call is long (≤ ``max_total_s``)."""

    def once() -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0

    cold = once()  # untimed warm-up: compilation, autotuning, cuDNN plan
    # A path that slow even cold is a reference on the GPU: no second call. The bar sits above the cold cost of
    # autotuning (fla's chunk kernels spent 34 s in their first call on the H200, then ms per call).
    if cold >= 12 * max_total_s:
        return cold
    first = once()  # the first warm call: compile / autotune time never enters the result
    if first >= max_total_s:
        return first
    n = max(1, min(repeats, int(max_total_s / max(first, 1e-6))))
    return sum(once() for _ in range(n)) / n


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _predict_s(records: list[dict], mixer: str, T: int) -> float | None:
    done = sorted((r for r in records if r["mixer"] == mixer and r["status"] == "ok"), key=lambda r: r["seq_len"])
    if not done:
        return None
    last = done[-1]
    if len(done) >= 2 and done[-2]["ms"] > 0:
        a = math.log(last["ms"] / done[-2]["ms"]) / math.log(last["seq_len"] / done[-2]["seq_len"])
        a = min(max(a, 1.0), 2.0)
    else:
        a = 2.0
    return last["ms"] / 1e3 * (T / last["seq_len"]) ** a


def run(
    out_dir="benchmarks/results",
    lengths=DEFAULT_LENGTHS,
    mixers=MIXERS,
    device: str = "auto",
    dtype: str = "bf16",
    window: int = 4096,
    repeats: int = 5,
    max_call_s: float = 20.0,
    log=print,
) -> list[dict]:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    bad = [m for m in mixers if m not in MIXERS]
    if bad or not mixers:
        raise ValueError(f"unknown mixer(s) {bad}; choose from {', '.join(MIXERS)}")
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be positive, got {lengths}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    dev = _report.resolve_device(device)
    torch_dtype = DTYPES[dtype]
    records: list[dict] = []
    for T in sorted(lengths):
        for mixer in mixers:
            rec = {
                "mixer": mixer,
                "seq_len": T,
                "ms": None,
                "tflops": None,
                "gbps": None,
                "speedup_vs_dense": None,
                "status": "ok",
                "backend": backend_of(mixer, dev),
                "q_heads": HEADS,
                "kv_heads": kv_heads(mixer),
                "head_dim": HEAD_DIM,
                "dtype": dtype,
                "device": _report.device_name(dev),
                "note": "",
            }
            est = _predict_s(records, mixer, T)
            prior_fail = any(r["mixer"] == mixer and r["status"] in ("oom", "too_slow") for r in records)
            if prior_fail:
                rec["status"] = next(r["status"] for r in records if r["mixer"] == mixer and r["status"] != "ok")
                rec["note"] = "failed at a shorter length"
            elif est is not None and est > max_call_s:
                rec["status"] = "too_slow"
                rec["note"] = f"~{est:.1f} s per call predicted (> {max_call_s} s)"
            else:
                call = None
                try:
                    with torch.inference_mode():
                        call = make_call(mixer, T, dev, torch_dtype, window)
                        sec = time_call(call, dev, repeats)
                    rec["ms"] = _sig(sec * 1e3)
                    rec["tflops"] = _sig(flops(mixer, T, window) / sec / 1e12)
                    rec["gbps"] = _sig(io_bytes(mixer, T, torch_dtype) / sec / 1e9)
                except Exception as e:  # noqa: BLE001 — an OOM is a result; anything else is re-raised
                    if not (isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()):
                        raise
                    rec["status"] = "oom"
                    rec["note"] = str(e).splitlines()[0][:200]
                finally:
                    del call
                    gc.collect()
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
            records.append(rec)
            log(
                f"{mixer:>9} @ {_report.length_label(T):>5}: {rec['status']:>8} "
                + (
                    f"{rec['ms']:10.3f} ms  {rec['tflops']:8.3g} TFLOP/s  {rec['gbps']:8.3g} GB/s  [{rec['backend']}]"
                    if rec["status"] == "ok"
                    else rec["note"]
                )
            )
        dense = next((r for r in records if r["mixer"] == "dense" and r["seq_len"] == T and r["status"] == "ok"), None)
        for r in records:
            if r["seq_len"] == T and r["status"] == "ok" and dense is not None:
                r["speedup_vs_dense"] = _sig(dense["ms"] / r["ms"])
        write_results(records, out_dir, dev)  # after every length: a killed benchmark keeps what it measured
    return records


def write_results(records: list[dict], out_dir, device: torch.device, plot: bool = True):
    stem = _report.results_stem(out_dir, "kernels", device)
    _report.write_json(stem, records)
    env = _report.environment()
    r0 = records[0]
    lines = [
        f"# Attention ops, forward — {r0['device']}, {r0['dtype']}, batch 1, {HEADS} query heads × {HEAD_DIM}, "
        f"torch {env['torch']}",
        "",
        "KV heads: full / sliding 8 (qwen3-8b-shape), sparse 2 (sala-9b-shape), lightning 32 (MHA). `dense` is SDPA "
        "with the cuDNN backend on CUDA. TFLOP/s counts useful attention FLOPs (visible query-key pairs; sparse "
        "adds the compressed-key scoring); GB/s counts q, k, v, o once. Ceilings (H200): "
        f"{PEAK_TFLOPS_DATASHEET:.0f} TFLOP/s bf16 dense datasheet, {PEAK_TFLOPS_GEMM:.0f} measured GEMM, "
        f"{PEAK_HBM_GBPS / 1000:.1f} TB/s HBM.",
        "",
        "| mixer | length | backend | status | ms | TFLOP/s | % of 792 | GB/s | % of HBM | speedup vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        ok = r["status"] == "ok"
        lines.append(
            f"| {r['mixer']} | {_report.length_label(r['seq_len'])} | {r['backend']} | {r['status']} | "
            + (
                f"{r['ms']:.3f} | {r['tflops']:.4g} | {100 * r['tflops'] / PEAK_TFLOPS_GEMM:.0f}% | {r['gbps']:.4g} | "
                f"{100 * r['gbps'] / PEAK_HBM_GBPS:.0f}% | "
                + ("—" if r["speedup_vs_dense"] is None else f"{r['speedup_vs_dense']:.2f}×")
                + " |"
                if ok
                else f"— | — | — | — | — | {r['note'][:80]} |"
            )
        )
    _report.write_markdown(stem, lines)
    if not plot:
        return stem
    plt = _report.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for mixer in dict.fromkeys(r["mixer"] for r in records):
        pts = [(r["seq_len"], r["ms"], r["tflops"]) for r in records if r["mixer"] == mixer and r["status"] == "ok"]
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mixer)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=mixer)
    if device.type == "cuda":
        axes[1].axhline(PEAK_TFLOPS_GEMM, color="gray", ls="--", lw=0.8, label="792 TFLOP/s (GEMM)")
    _report.style_log_axes(axes, ("forward time (ms)", "achieved TFLOP/s"), "sequence length")
    fig.suptitle(f"longforge bench kernels — {r0['device']}")
    fig.tight_layout()
    _report.save_figure(fig, stem)
    return stem


__all__ = ["DEFAULT_LENGTHS", "MIXERS", "flops", "run", "write_results"]
