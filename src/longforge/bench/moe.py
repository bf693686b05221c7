"""`longforge bench moe`: DECO FFN decode latency against a dense SwiGLU FFN of the same total parameters.

For each DECO layer shape (0.1B / 0.5B / 1.2B: hidden 768 / 1280 / 1792, E = 42 / 77 / 102, d = 64, shared 128),
activation ratio ρ and chunk size (1 = batch-1 decode; 8 / 32 / 64 = speculative-verification chunks), we time
  dense:  SwiGLU(h, I) with I chosen so 3·h·I equals DECO's total FFN parameters (router + experts + shared)
  deco:   router → gates (exactly round(ρ·E) active experts per token) → sparse experts (only the chunk's union
          of active experts is read) + shared SwiGLU
in the same process, same dtype. Records: {"shape", "activation_ratio", "tokens", "dense_ms", "deco_ms", "speedup",
"device"}; JSON + markdown + PNG under benchmarks/results/moe_<device>_<yyyymmdd>.*.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..ops.moe import deco_experts_sparse

SHAPES = {"0.1B": (768, 42), "0.5B": (1280, 77), "1.2B": (1792, 102)}
EXPERT_DIM, SHARED_DIM = 64, 128


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


def bench_layer(shape: str, ratio: float, tokens: int, device: torch.device, dtype: torch.dtype, repeats: int = 20):
    h, E = SHAPES[shape]
    d, ds = EXPERT_DIM, SHARED_DIM
    g = torch.Generator().manual_seed(0)

    def rand(*s):
        return (torch.randn(*s, generator=g) / s[-1] ** 0.5).to(device, dtype)

    deco_params = 2 * h * E * d + 3 * h * ds + E * h
    dense_inter = round(deco_params / (3 * h))
    dense_w = (rand(dense_inter, h), rand(dense_inter, h), rand(h, dense_inter))
    up, down = rand(E * d, h), rand(h, E * d)
    router = rand(E, h)
    scale = torch.full((E,), 0.1, device=device)
    gamma = torch.ones(d, device=device, dtype=dtype)
    shared = (rand(ds, h), rand(ds, h), rand(h, ds))
    up_mean = up.float().mean(0)
    x = torch.randn(tokens, h, generator=g).to(device, dtype)
    # Exactly round(ratio·E) active experts per token (the router's ReLU output, with the rest zeroed).
    k = max(1, round(ratio * E))
    chosen = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(tokens)]).to(device)

    def deco():
        r = F.relu(x.float() @ router.float().t()) + 1e-3
        mask = torch.zeros_like(r).scatter_(1, chosen, 1.0)
        gates = r * mask * scale
        return deco_experts_sparse(x, gates, up, down, gamma, up_row_mean=up_mean).to(dtype) + _swiglu(x, *shared)

    def dense():
        return _swiglu(x, *dense_w)

    with torch.inference_mode():
        dense_ms = _time(dense, device, repeats)
        deco_ms = _time(deco, device, repeats)
    return {
        "shape": shape,
        "activation_ratio": ratio,
        "tokens": tokens,
        "dense_ms": round(dense_ms, 4),
        "deco_ms": round(deco_ms, 4),
        "speedup": round(dense_ms / deco_ms, 3),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "dense_params": 3 * h * dense_inter,
        "deco_params": deco_params,
    }


def run(
    out_dir: str | Path = "benchmarks/results",
    device: str = "auto",
    shapes=tuple(SHAPES),
    ratios=(0.1, 0.2, 0.3, 0.5),
    tokens=(1, 8, 32, 64),
    dtype: str = "bf16",
    repeats: int = 20,
    progress: bool = True,
) -> list[dict]:
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype]
    if dev.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    records = []
    jobs = [(s, r, t) for s in shapes for r in ratios for t in tokens]
    from rich.progress import Progress

    with Progress(disable=not progress) as bar:
        task = bar.add_task("bench moe", total=len(jobs))
        for s, r, t in jobs:
            records.append(bench_layer(s, r, t, dev, torch_dtype, repeats))
            bar.advance(task)
    write_results(records, out_dir, "cuda" if dev.type == "cuda" else "cpu")
    return records


def write_results(records: list[dict], out_dir: str | Path, device_tag: str) -> Path:
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
    for r in records:
        lines.append(
            f"| {r['shape']} | {r['activation_ratio']:.0%} | {r['tokens']} | {r['dense_ms']:.4f} | {r['deco_ms']:.4f} "
            f"| {r['speedup']:.2f}× |"
        )
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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
