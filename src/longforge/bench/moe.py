"""`longforge bench moe`: DECO FFN decode latency against a dense SwiGLU FFN of the same total parameters.

For each DECO layer shape (0.1B / 0.5B / 1.2B: hidden 768 / 1280 / 1792, E = 42 / 77 / 102, d = 64, shared 128),
activation ratio ρ and chunk size (1 = batch-1 decode; 8 / 32 / 64 = speculative-verification chunks), we time
  dense:  SwiGLU(h, I) with I chosen so 3·h·I equals DECO's total FFN parameters (router + experts + shared)
  deco:   the whole DECO FFN — fp32 ReLU router (its weights built so that exactly round(ρ·E) experts fire per
          token), expert scale, active experts' up rows, NormSiLU with the exact global mean, scaled down columns,
          shared SwiGLU expert
in the same process, same dtype. On CUDA both sides are timed replayed from a CUDA graph (the fair comparison:
`dense_ms`, `deco_ms`, `speedup`) and eagerly (`*_eager_ms`); DECO runs as the one-launch fused Triton kernel
(`ops/moe/triton.py`), checked against the torch gather path in every record (`max_abs_err`). On CPU DECO is the
torch gather path (eager). Records: {"shape", "activation_ratio", "tokens", "dense_ms", "deco_ms", "speedup",
"device", "path", "graphed", ...}; plus whole-model decode tokens/s of a small DECO hybrid against its dense twin
(records with "shape": "model"). JSON + markdown + PNG under benchmarks/results/moe_<device>_<yyyymmdd>.*.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..ops.moe import deco_experts_sparse, fused_available

SHAPES = {"0.1B": (768, 42), "0.5B": (1280, 77), "1.2B": (1792, 102)}
EXPERT_DIM, SHARED_DIM = 64, 128
# Launch parameters tried per (shape, tokens) on CUDA; the fastest graphed one is used (and recorded).
# (The first H200 run tried ten; only the first two below ever won — the first at 1 token and mostly at 8, the
# second at 32–64 — and BLOCK_K 512 with 3 stages ran out of shared memory, so the list is cut to keep the tuning
# short.)
TUNE_CONFIGS = (
    {"BLOCK_K": 256, "BLOCK_H": 128, "SPLIT": 1, "SHARED_SLICE": 16, "num_warps": 4},
    {"BLOCK_K": 128, "BLOCK_H": 128, "SPLIT": 2, "SHARED_SLICE": 16, "num_warps": 4, "FINALIZE": False},
    {"BLOCK_K": 128, "BLOCK_H": 128, "SPLIT": 2, "SHARED_SLICE": 16, "num_warps": 4},
    {"BLOCK_K": 128, "BLOCK_H": 128, "SPLIT": 1, "SHARED_SLICE": 32, "num_warps": 4},
)
# Tried in addition for chunks of ≤ 16 tokens (one BLOCK_N): the first H200 run showed batch 1 bound by the chain of
# dependent loops (router → up → down, a memory round trip per iteration): the fused layer took the same time at
# ρ = 10 % and 50 % (14.5 µs at 0.1B, 27.5 µs at 1.2B), ≈ 5 µs + 0.8 µs per loop iteration on the critical path.
# Wider router tiles (BLOCK_R), every load of a loop pipelined (LOOP_STAGES), the down-projection over more programs
# (SPLIT), router and up-projection in
# one pass (SPECULATE). (UNROLL is left out: ptxas
# takes over a minute on the unrolled kernel, more than the tuning budget.)
TUNE_CONFIGS_SMALL = (
    {"BLOCK_K": 256, "BLOCK_R": 512, "BLOCK_H": 128, "SPLIT": 1, "SHARED_SLICE": 16, "num_warps": 4,
     "LOOP_STAGES": 3},
    {"BLOCK_K": 256, "BLOCK_R": 512, "BLOCK_H": 128, "SPLIT": 2, "SHARED_SLICE": 16, "num_warps": 4,
     "LOOP_STAGES": 3},
    {"BLOCK_K": 256, "BLOCK_R": 1024, "BLOCK_H": 256, "SPLIT": 2, "SHARED_SLICE": 16, "num_warps": 8,
     "LOOP_STAGES": 3},
    {"BLOCK_K": 128, "BLOCK_R": 512, "BLOCK_H": 64, "SPLIT": 4, "SHARED_SLICE": 16, "num_warps": 4,
     "LOOP_STAGES": 3},
    {"BLOCK_K": 512, "BLOCK_R": 1024, "BLOCK_H": 256, "SPLIT": 2, "SHARED_SLICE": 16, "num_warps": 8,
     "LOOP_STAGES": 2},
    # the fewest iterations: whole-h router tiles, 512-wide up tiles, the down-projection over 4–8 programs
    {"BLOCK_K": 512, "BLOCK_R": 1024, "BLOCK_H": 256, "SPLIT": 4, "SHARED_SLICE": 16, "num_warps": 8,
     "LOOP_STAGES": 2},
    {"BLOCK_K": 512, "BLOCK_R": 2048, "BLOCK_H": 256, "SPLIT": 8, "SHARED_SLICE": 16, "num_warps": 8},
    {"BLOCK_K": 256, "BLOCK_R": 1024, "BLOCK_H": 256, "SPLIT": 4, "SHARED_SLICE": 16, "num_warps": 4,
     "LOOP_STAGES": 3},
    # router and up-projection in one pass over x (the up rows of inactive experts are read too)
    {"BLOCK_K": 512, "BLOCK_H": 256, "SPLIT": 4, "SHARED_SLICE": 16, "num_warps": 8, "SPECULATE": True},
    {"BLOCK_K": 256, "BLOCK_H": 128, "SPLIT": 1, "SHARED_SLICE": 16, "num_warps": 4, "SPECULATE": True},
    {"BLOCK_K": 256, "BLOCK_H": 128, "SPLIT": 2, "SHARED_SLICE": 16, "num_warps": 4, "SPECULATE": True,
     "LOOP_STAGES": 3},
)


def _swiglu(x, gate, up, down):
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn()`` (after warm-up)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _time_graph(step, repeats: int, inner: int = 50) -> float:
    """Median milliseconds per replay of a captured graph (``inner`` back-to-back replays per sample)."""
    for _ in range(5):
        step.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(max(3, repeats // 4)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            step.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def routed_router(x: torch.Tensor, num_experts: int, chosen: torch.Tensor, generator) -> torch.Tensor:
    """Router weights W_r [E, h] (fp32) with W_r x_t > 0 exactly for the experts ``chosen[t]`` of each token:
    W_r = Z (X Xᵀ)⁻¹ X for target logits Z (positive = chosen), so the fused kernel's own ReLU routing produces the
    requested activation pattern."""
    xf = x.float().cpu()
    N = xf.shape[0]
    z = -(torch.rand(num_experts, N, generator=generator) + 0.5)
    z.scatter_(0, chosen.cpu().t(), torch.rand(chosen.shape[1], N, generator=generator) + 0.5)
    gram = xf @ xf.t()
    w = z @ torch.linalg.solve(gram, xf)
    return w.to(x.device)


def bench_layer(
    shape: str, ratio: float, tokens: int, device: torch.device, dtype: torch.dtype, repeats: int = 20,
    tune: bool = True,
):
    h, E = SHAPES[shape]
    d, ds = EXPERT_DIM, SHARED_DIM
    g = torch.Generator().manual_seed(0)

    def rand(*s):
        return (torch.randn(*s, generator=g) / s[-1] ** 0.5).to(device, dtype)

    deco_params = 2 * h * E * d + 3 * h * ds + E * h
    dense_inter = round(deco_params / (3 * h))
    dense_w = (rand(dense_inter, h), rand(dense_inter, h), rand(h, dense_inter))
    up, down = rand(E * d, h), rand(h, E * d)
    scale = torch.full((E,), 0.1, device=device)
    gamma = torch.ones(d, device=device, dtype=dtype)
    shared = (rand(ds, h), rand(ds, h), rand(h, ds))
    up_mean = up.float().mean(0)
    x = torch.randn(tokens, h, generator=g).to(device, dtype)
    # Exactly round(ratio·E) active experts per token, produced by the ReLU router itself.
    k = max(1, round(ratio * E))
    chosen = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(tokens)])
    router = routed_router(x, E, chosen, g)

    def deco_gather(inp):
        r = F.relu(inp.float() @ router.t())
        return deco_experts_sparse(inp, r * scale, up, down, gamma, up_row_mean=up_mean).to(dtype) + _swiglu(
            inp, *shared
        )

    def dense(inp):
        return _swiglu(inp, *dense_w)

    record = {"shape": shape, "activation_ratio": ratio, "tokens": tokens}
    with torch.inference_mode():
        reference = deco_gather(x)
        active = (F.relu(x.float() @ router.t()) > 0).float()
        record["measured_ratio"] = round(float(active.mean()), 4)
        record["union_ratio"] = round(float(active.amax(0).mean()), 4)
        if device.type == "cuda" and fused_available(device):
            from ..ops.moe import deco_ffn_fused
            from ..ops.moe import triton as fused_mod
            from ..ops.moe.graph import GraphedStep

            def fused(inp, cfg=None):
                return deco_ffn_fused(inp, router, scale, up, down, gamma, up_row_mean=up_mean, shared=shared,
                                      config=cfg)

            dense_graph = GraphedStep(dense, x)
            dense_ms = _time_graph(dense_graph, repeats)
            # a config counts only if its output matches the gather reference (dtype tolerance)
            tol = (2e-2 if dtype != torch.float32 else 1e-4) * float(reference.float().abs().max()) + 1e-3
            best, rejected = None, []
            configs = (TUNE_CONFIGS + (TUNE_CONFIGS_SMALL if tokens <= 16 else ())) if tune else (None,)
            for cfg in configs:
                cfg = {**fused_mod.DEFAULT_CONFIG, **cfg} if cfg else None
                try:
                    step = GraphedStep(lambda inp, c=cfg: fused(inp, c), x)
                except Exception as e:  # noqa: BLE001 - e.g. a tile too large for shared memory at this size
                    rejected.append({"config": cfg, "error": repr(e)[:200]})
                    continue
                ms = _time_graph(step, repeats)
                err = float((step(x).float() - reference.float()).abs().max())
                if err > tol:
                    rejected.append({"config": cfg, "max_abs_err": err})
                    continue
                if best is None or ms < best[0]:
                    best = (ms, cfg, err)
            if best is None:
                raise RuntimeError(f"fused DECO kernel disagrees with the reference for every config: {rejected}")
            deco_ms, cfg, err = best
            if rejected:
                record["rejected_configs"] = rejected
            if cfg:
                fused_mod.set_config(tokens, h, **cfg)
            record.update(
                dense_ms=round(dense_ms, 5),
                deco_ms=round(deco_ms, 5),
                speedup=round(dense_ms / deco_ms, 3),
                path="fused-triton",
                graphed=True,
                config=cfg,
                max_abs_err=round(err, 5),
                ref_max_abs=round(float(reference.float().abs().max()), 4),
                dense_eager_ms=round(_time(lambda: dense(x), device, repeats), 5),
                deco_eager_ms=round(_time(lambda: fused(x), device, repeats), 5),
                deco_gather_eager_ms=round(_time(lambda: deco_gather(x), device, repeats), 5),
            )
            record["speedup_eager"] = round(record["dense_eager_ms"] / record["deco_eager_ms"], 3)
        else:
            dense_ms = _time(lambda: dense(x), device, repeats)
            deco_ms = _time(lambda: deco_gather(x), device, repeats)
            record.update(
                dense_ms=round(dense_ms, 4), deco_ms=round(deco_ms, 4), speedup=round(dense_ms / deco_ms, 3),
                path="gather", graphed=False,
            )
    record.update(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        dtype=str(dtype).replace("torch.", ""),
        dense_params=3 * h * dense_inter,
        deco_params=deco_params,
    )
    return record


def _fused_failed() -> bool:
    from ..layers.deco_moe import DecoMoE

    return DecoMoE._fused_failed


def bench_model(device: torch.device, dtype: torch.dtype, new_tokens: int = 64, prompt_len: int = 32) -> list[dict]:
    """Whole-model decode tokens/s: a small DECO hybrid (0.1B layer shape, 8 layers, first dense) against its dense
    twin (same total parameters), batch 1, greedy, the model's own cache, eager (the cache grows, so no graph)."""
    from ..models import HybridConfig, HybridForCausalLM

    h, E = SHAPES["0.1B"]
    deco_ffn = 2 * h * E * EXPERT_DIM + 3 * h * SHARED_DIM + E * h
    base = dict(vocab_size=8192, hidden_size=h, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=2,
                moe_num_experts=E, moe_expert_dim=EXPERT_DIM, moe_shared_dim=SHARED_DIM)
    records = []
    for layer_types in ("LLLF", "F"):
        try:
            out = []
            for kind in ("dense", "deco_moe"):
                cfg = HybridConfig(layer_types=layer_types, intermediate_size=round(deco_ffn / (3 * h)),
                                   mlp_types=kind, **base)
                torch.manual_seed(0)
                model = HybridForCausalLM(cfg).to(device, dtype).eval()
                params = sum(p.numel() for p in model.parameters())
                ids = torch.randint(0, 8192, (1, prompt_len), device=device)
                with torch.inference_mode():
                    tps = []
                    for _ in range(3):
                        o = model(ids, use_cache=True)
                        cache = o.get("cache", o.get("past_key_values"))
                        nxt = o.logits[:, -1:].argmax(-1)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        for _ in range(new_tokens):
                            o = model(nxt, cache=cache, use_cache=True)
                            cache = o.get("cache", o.get("past_key_values"))
                            nxt = o.logits[:, -1:].argmax(-1)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        tps.append(new_tokens / (time.perf_counter() - t0))
                from ..train.moe import activation_counts

                counts = activation_counts(model)
                rho = sum(a for a, _ in counts) / max(sum(b for _, b in counts), 1.0) if counts else None
                out.append((kind, params, statistics.median(tps), rho))
            (_, dense_params, dense_tps, _), (_, deco_params, deco_tps, rho) = out
            records.append({
                "shape": "model", "activation_ratio": round(rho, 4) if rho is not None else None, "tokens": 1,
                "layer_types": layer_types,
                "dense_ms": round(1e3 / dense_tps, 4), "deco_ms": round(1e3 / deco_tps, 4),
                "speedup": round(deco_tps / dense_tps, 3), "dense_tokens_per_s": round(dense_tps, 1),
                "deco_tokens_per_s": round(deco_tps, 1), "dense_params": dense_params, "deco_params": deco_params,
                "path": "fused-triton" if fused_available(device) and not _fused_failed() else "gather",
                "graphed": False,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "dtype": str(dtype).replace("torch.", ""),
            })
            break
        except Exception as e:  # a layer mix the device cannot run: record it and try plain attention
            records.append({"shape": "model", "layer_types": layer_types, "speedup": 0.0, "error": repr(e)[:300]})
    return records


def run(
    out_dir: str | Path = "benchmarks/results",
    device: str = "auto",
    shapes=tuple(SHAPES),
    ratios=(0.1, 0.2, 0.3, 0.5),
    tokens=(1, 8, 32, 64),
    dtype: str = "bf16",
    repeats: int = 20,
    progress: bool = True,
    model: bool = True,
) -> list[dict]:
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype]
    if dev.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    records = []
    # batch-1 decode first, so a run cut short by a time limit still has the headline numbers (the JSON and the
    # markdown are rewritten after every record; the plot at the end)
    jobs = [(s, r, t) for t in tokens for s in shapes for r in ratios]
    tag = "cuda" if dev.type == "cuda" else "cpu"
    from rich.progress import Progress

    with Progress(disable=not progress) as bar:
        task = bar.add_task("bench moe", total=len(jobs))
        for s, r, t in jobs:
            try:
                records.append(bench_layer(s, r, t, dev, torch_dtype, repeats))
            except Exception as e:  # noqa: BLE001 - keep measuring the other shapes; the failure is recorded
                if dev.type != "cuda":
                    raise
                records.append({"shape": s, "activation_ratio": r, "tokens": t, "speedup": 0.0, "error": repr(e)[:500],
                                "device": torch.cuda.get_device_name(dev), "dtype": dtype})
            write_results(records, out_dir, tag, plot=False)
            bar.advance(task)
    if model:
        records.extend(bench_model(dev, torch_dtype))
    write_results(records, out_dir, tag)
    return records


def write_results(records: list[dict], out_dir: str | Path, device_tag: str, plot: bool = True) -> Path:
    from ..utils.io import atomic_write_text

    out = Path(out_dir)
    tag = "h200" if device_tag == "cuda" and "H200" in records[0]["device"] else device_tag
    stem = out / f"moe_{tag}_{_dt.date.today():%Y%m%d}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(records, indent=2) + "\n")
    lines = [
        f"# DECO FFN decode latency vs dense SwiGLU (same total parameters) — {records[0]['device']}, "
        f"{records[0]['dtype']}, torch {torch.__version__}",
        "",
        "| shape | ρ | tokens | dense ms | DECO ms | speedup |",
        "|---|---|---|---|---|---|",
    ]
    layer_records = [r for r in records if r["shape"] in SHAPES and "error" not in r]
    failed = [r for r in records if r["shape"] in SHAPES and "error" in r]
    for r in layer_records:
        lines.append(
            f"| {r['shape']} | {r['activation_ratio']:.0%} | {r['tokens']} | {r['dense_ms']:.4f} | {r['deco_ms']:.4f} "
            f"| {r['speedup']:.2f}× |"
        )
    if layer_records and layer_records[0].get("graphed"):
        lines += [
            "",
            "dense_ms / deco_ms: replayed from a CUDA graph (dense: cuBLAS SwiGLU; DECO: the one-launch fused Triton "
            "kernel incl. router and shared expert). Eager (no graph) and the unfused torch gather path:",
            "",
            "| shape | ρ | tokens | dense eager ms | DECO fused eager ms | eager speedup | gather eager ms "
            "| max abs err |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in layer_records:
            lines.append(
                f"| {r['shape']} | {r['activation_ratio']:.0%} | {r['tokens']} | {r['dense_eager_ms']:.4f} | "
                f"{r['deco_eager_ms']:.4f} | {r['speedup_eager']:.2f}× | {r['deco_gather_eager_ms']:.4f} | "
                f"{r['max_abs_err']:.4g} |"
            )
    if failed:
        lines += ["", "Failed records:", ""] + [
            f"- {r['shape']} ρ {r['activation_ratio']} tokens {r['tokens']}: {r['error']}" for r in failed
        ]
    model_records = [r for r in records if r["shape"] == "model"]
    if model_records:
        lines += ["", "## Whole-model decode (batch 1, greedy, eager, the model's own cache)", ""]
        for r in model_records:
            if "error" in r:
                lines.append(f"- layer_types {r['layer_types']}: failed ({r['error']})")
            else:
                lines.append(
                    f"- layer_types {r['layer_types']}: dense {r['dense_tokens_per_s']} tok/s "
                    f"({r['dense_params']:,} params) vs DECO {r['deco_tokens_per_s']} tok/s ({r['deco_params']:,} "
                    f"params, measured ρ {r['activation_ratio']}, {r['path']}): {r['speedup']:.2f}×"
                )
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    if not plot:
        return stem
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return stem
    records = [r for r in records if r["shape"] in SHAPES and "error" not in r]
    if not records:
        return stem
    shapes = sorted({r["shape"] for r in records}, key=list(SHAPES).index)
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        for tokens in sorted({r["tokens"] for r in records}):
            rows = [r for r in records if r["shape"] == shape and r["tokens"] == tokens]
            ax.plot(
                [r["activation_ratio"] for r in rows], [r["speedup"] for r in rows], marker="o", label=f"{tokens} tok"
            )
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"DECO {shape}")
        ax.set_xlabel("activation ratio")
        ax.set_ylabel("speedup over dense")
        ax.legend()
    fig.tight_layout()
    tmp = stem.parent / f".{stem.name}.png.tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(stem.with_suffix(".png"))
    return stem
