"""InfLLM-V2 sparse layer forward at 32K-256K: old vs new selection and attention kernels, against cuDNN dense.

Run by scripts/gpu/sparsekernel.sh on one H200 (bf16, batch 1, SALA's shape: 32 query heads / 2 kv heads x 128,
block 64, kernel 32 / stride 16, top-k 64, init 1, window 2048, dense_len 8192). Per length and per query kind:

    dense        SDPA cuDNN causal (GQA), the reference cost
    compress     compress_keys
    sel_old      select_block_indices with the PyTorch top-k (LONGFORGE_SPARSE_TOPK=torch; bf16 block scorer)
    sel_new      the same with the fused Triton top-k (the default now)
    scorer       the bf16 block scorer alone (its two passes) on 16K tokens, default launch and two alternatives
                 (128K only)
    unions       tile_unions (the tile kernel's pre-pass)
    token        the per-token attention kernel (triton_kernel.sparse_fwd)
    tile[BT]     the tile attention kernel, BT tokens per tile (sparse_fwd_tile), pre-pass excluded
    split[BT]    each tile's widely shared blocks by the tile kernel, the rest per token, lse-merged (pre-pass
                 split_prep included)
    total_*      fast_sparse_attention end to end (auto / tile / split / token kernel; old = torch top-k + token
                 kernel),
                 dense prefix included

Query kinds: ``random`` (i.i.d. normal, as bench kernels uses: top-k blocks independent from token to token) and
``smooth`` (each query the scaled mean of the last 64 noise vectors: neighbouring tokens' queries correlate, as
in a trained model, so they share top-k blocks). TFLOP/s of the attention kernels count 4 * D * G per visible
(query, key) pair of the selection (= 4 T |selected keys| D H); dense counts the causal pairs.

Usage: python scripts/gpu/sparsekernel_timing.py OUT_DIR [--lengths 32768,131072,262144] [--smoke]
(--smoke: tiny shapes, for a CPU run under TRITON_INTERPRET=1 with LONGFORGE_SPARSE_TRITON_INTERPRET=1).
Writes OUT_DIR/timing.{json,md,png} after every length (a later crash keeps what was measured).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

from longforge.ops.sparse_attention.fast import (
    TILE_MAX_UNION_RATIO,
    fast_sparse_attention,
    select_block_indices,
    sparse_attend,
    union_ratio,
)
from longforge.ops.sparse_attention.naive import compress_keys
from longforge.ops.sparse_attention.triton_blockscore import block_scores_lowp
from longforge.ops.sparse_attention.triton_kernel import sparse_fwd
from longforge.ops.sparse_attention.triton_tile import default_block_t, sparse_fwd_tile, split_unions, tile_unions
from longforge.utils.io import atomic_write_bytes, atomic_write_text

SALA = dict(block_size=64, kernel_size=32, kernel_stride=16, topk=64, init_blocks=1, window_size=2048)
DENSE_LEN = 8192


def timed(fn, reps: int, cuda: bool) -> float:
    """Mean ms of ``fn()`` after one untimed warm-up (compilation, autotuning, cuDNN plans)."""
    fn()
    if cuda:
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) * 1e3 / reps


class Env:
    """Set environment variables for a block, restoring them after."""

    def __init__(self, **kv):
        self.kv, self.old = kv, {}

    def __enter__(self):
        for key, val in self.kv.items():
            self.old[key] = os.environ.get(key)
            os.environ[key] = val

    def __exit__(self, *exc):
        for key, val in self.old.items():
            if val is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = val


def visible_pairs(idx: torch.Tensor, cnt: torch.Tensor, Tq: int, Tk: int, block_size: int) -> int:
    """Sum over (token, kv head) of the keys its selected blocks show it (its own block only up to t)."""
    t = torch.arange(Tk - Tq, Tk, device=idx.device)
    valid = idx >= 0
    start = idx.long() * block_size
    n = (torch.minimum(start + block_size, t[None, None, :, None] + 1) - start).clamp(min=0)
    n = torch.minimum(n, (Tk - start).clamp(min=0))
    return int(torch.where(valid, n, 0).sum())


def make_inputs(T, H, Hkv, D, kind, device, dtype, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    k = torch.randn(1, T, Hkv, D, device=device, dtype=dtype, generator=g)
    v = torch.randn(1, T, Hkv, D, device=device, dtype=dtype, generator=g)
    if kind == "random":
        q = torch.randn(1, T, H, D, device=device, dtype=dtype, generator=g)
    else:  # mean of the last W noise vectors, times sqrt(W): unit variance, neighbours correlated (1 - lag / W)
        W = 64
        noise = torch.randn(1, T + W, H, D, device=device, dtype=torch.float32, generator=g)
        c = noise.cumsum(1)
        q = ((c[:, W:] - c[:, :-W]) / math.sqrt(W)).to(dtype)
        del noise, c
    return q, k, v


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--lengths", default="32768,131072,262144")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET=1)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    if args.smoke:
        H, Hkv, D = 4, 2, 16
        cfg = dict(block_size=16, kernel_size=8, kernel_stride=4, topk=3, init_blocks=1, window_size=32)
        dense_len, lengths, dtype, reps = 40, [int(x) for x in args.lengths.split(",")], torch.float32, 1
    else:
        H, Hkv, D = 32, 2, 128
        cfg, dense_len, dtype, reps = SALA, DENSE_LEN, torch.bfloat16, args.reps
        lengths = [int(x) for x in args.lengths.split(",")]
    G = H // Hkv
    bs = cfg["block_size"]
    env_info = dict(torch=torch.__version__, device=torch.cuda.get_device_name(0) if cuda else "cpu (interpreter)",
                    shape=f"B=1 H={H} Hkv={Hkv} D={D}", dtype=str(dtype), config=dict(cfg, dense_len=dense_len))
    rows: list[dict] = []

    def save():
        payload = dict(env=env_info, rows=rows)
        atomic_write_text(os.path.join(args.out, "timing.json"), json.dumps(payload, indent=1))
        md = [f"# InfLLM-V2 sparse layer forward — {env_info['device']}, {env_info['dtype']}, {env_info['shape']}",
              "", f"torch {env_info['torch']}; config {env_info['config']}", "",
              "| T | queries | what | ms | TFLOP/s | note |", "|---|---|---|---|---|---|"]
        for r in rows:
            ms = "—" if r.get("ms") is None else f"{r['ms']:.2f}"
            tf = "" if r.get("tflops") is None else f"{r['tflops']:.0f}"
            md.append(f"| {r['T']} | {r['kind']} | {r['what']} | {ms} | {tf} | {r.get('note', '')} |")
        atomic_write_text(os.path.join(args.out, "timing.md"), "\n".join(md) + "\n")
        try:
            _plot(rows, os.path.join(args.out, "timing.png"))
        except Exception as err:  # noqa: BLE001 - a plot failure must not lose the numbers
            print("plot failed:", err)
        return "\n".join(md)

    def rec(T, kind, what, fn, flops=None, note="", n=reps):
        try:
            ms = timed(fn, n, cuda)
            row = dict(T=T, kind=kind, what=what, ms=ms, note=note)
            if flops:
                row["tflops"] = flops / ms / 1e9
        except Exception as err:  # noqa: BLE001 - record and go on
            traceback.print_exc()
            row = dict(T=T, kind=kind, what=what, ms=None, note=f"error: {type(err).__name__}: {str(err)[:200]}")
        rows.append(row)
        print(f"T={T} {kind:6s} {what:22s} {row['ms'] if row['ms'] is None else round(row['ms'], 3)} ms "
              f"{round(row.get('tflops', 0) or 0)} TFLOP/s {row['note']}", flush=True)
        if cuda:
            torch.cuda.empty_cache()
        return row

    scale = D**-0.5

    def run_case(T: int, kind: str, n: int) -> None:
        """Every measurement of one length and one query kind (locals are freed on return)."""
        q, k, v = make_inputs(T, H, Hkv, D, kind, device, dtype)
        if kind == "random":
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))

            def dense():
                if cuda:
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)

            rec(T, kind, "dense", dense, flops=2.0 * T * T * D * H, note="SDPA cuDNN causal", n=n)
        n_dense = min(T, max(0, dense_len - 1))
        qs = q[:, n_dense:]
        kc = compress_keys(k, cfg["kernel_size"], cfg["kernel_stride"])
        rec(T, kind, "compress", lambda: compress_keys(k, cfg["kernel_size"], cfg["kernel_stride"]), n=n)

        def sel():
            return select_block_indices(qs, kc, num_keys=T, scale=scale, **cfg)

        with Env(LONGFORGE_SPARSE_TOPK="torch"):
            rec(T, kind, "sel_old", sel, note="bf16 scorer + torch top-k", n=n)
        with Env(LONGFORGE_SPARSE_TOPK="auto"):
            rec(T, kind, "sel_new", sel, note="bf16 scorer + fused Triton top-k", n=n)
            idx, cnt = sel()
        if kind == "random" and not args.smoke and T == 131072:  # the scorer's launch settings, at 128K only
            nb = math.ceil(T / bs)
            chunk = qs[:, : min(qs.shape[1], 16384)]
            kc16 = kc.to(dtype)
            for launch in (dict(), dict(block_c=128), dict(num_stages=3)):
                rec(T, kind, f"scorer {launch or 'default'}",
                    lambda launch=launch: block_scores_lowp(chunk, kc16, T - qs.shape[1], nb, block_size=bs,
                                                            kernel_size=cfg["kernel_size"],
                                                            kernel_stride=cfg["kernel_stride"], scale=scale,
                                                            raw=True, **launch),
                    note=f"first {chunk.shape[1]} sparse tokens only", n=n)
        pairs = visible_pairs(idx, cnt, qs.shape[1], T, bs)
        fl = 4.0 * pairs * D * G
        sel_keys = pairs / max(1, qs.shape[1] * Hkv)
        rec(T, kind, "token", lambda: sparse_fwd(qs, k, v, idx, cnt, scale, bs), flops=fl,
            note=f"{sel_keys:.0f} keys per query", n=n)
        for bt in sorted({4, 8, default_block_t(G, dtype), 16}):
            if bt * triton_pow2(G) < 16:
                continue
            ratio = union_ratio(idx, cnt, bt)
            un = tile_unions(idx, cnt, bt)
            if bt == default_block_t(G, dtype):
                rec(T, kind, f"unions[{bt}]", lambda bt=bt: tile_unions(idx, cnt, bt), n=n)
            rec(T, kind, f"tile[{bt}]", lambda bt=bt, un=un: sparse_fwd_tile(qs, k, v, *un, scale, bs, bt),
                flops=fl, note=f"union ratio {ratio:.3f} (auto takes the tile kernel at <= "
                               f"{TILE_MAX_UNION_RATIO})", n=n)
            un = None
        bt = default_block_t(G, dtype)
        rec(T, kind, f"split_prep[{bt}]", lambda: split_unions(idx, cnt, bt), n=n)
        rec(T, kind, f"split[{bt}]", lambda: sparse_attend(qs, k, v, idx, cnt, scale, bs, kernel="split"),
            flops=fl, note="shared blocks by tiles + the rest per token, lse-merged; pre-pass included", n=n)
        idx = cnt = None

        def full():
            return fast_sparse_attention(q, k, v, dense_len=dense_len, scale=scale, **cfg)

        for kernel in ("auto", "tile", "split", "token"):
            with Env(LONGFORGE_SPARSE_KERNEL=kernel):
                rec(T, kind, f"total_{kernel}", full, note="selection + attention + dense prefix", n=n)
        with Env(LONGFORGE_SPARSE_KERNEL="token", LONGFORGE_SPARSE_TOPK="torch"):
            rec(T, kind, "total_old", full, note="before this round: torch top-k + per-token kernel", n=n)

    for T in lengths:
        for kind in ("random", "smooth"):
            run_case(T, kind, reps if T <= 131072 else max(1, reps - 1))
            if cuda:
                torch.cuda.empty_cache()
            print(save().splitlines()[-1], flush=True)
    text = save()
    print(text)
    return 0


def triton_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _plot(rows, path):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["T"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, kind in zip(axes, ("random", "smooth")):
        whats = ["dense", "sel_old", "sel_new", "token"] + sorted({r["what"] for r in rows if r["what"].startswith(
            "tile[")}) + ["split[8]", "total_old", "total_auto", "total_tile", "total_split", "total_token"]
        width = 0.8 / max(1, len(whats))
        for i, what in enumerate(whats):
            ys = []
            for T in lengths:
                hit = [r for r in rows if r["T"] == T and r["what"] == what
                       and (r["kind"] == kind or what == "dense") and r.get("ms")]
                ys.append(hit[0]["ms"] if hit else float("nan"))
            ax.bar([j + i * width for j in range(len(lengths))], ys, width, label=what)
        ax.set_xticks([j + 0.4 for j in range(len(lengths))], [f"{T // 1024}K" for T in lengths])
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"{kind} queries")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
