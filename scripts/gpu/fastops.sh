#!/usr/bin/env bash
# GPU work of the attention fast paths (issue #5): GPU tests of every fast path against its reference, then a
# short CUDA-event timing table. Run from the repo root on one GPU; writes $OUT/fastops/.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
OUTDIR=${OUT:-/tmp/out}/fastops
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>&1 | tail -n 2

echo "== fastops: GPU tests (fast paths first, then the other GPU tests of tests/ops and the model)"
timeout 280 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_fast_paths.py --durations=10 \
  > "$OUTDIR/tests.log" 2>&1
echo "fast-path tests rc=$? (log: fastops/tests.log)"; tail -n 8 "$OUTDIR/tests.log"
timeout 60 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops tests/models/test_gpu.py \
  --deselect tests/ops/test_fast_paths.py >> "$OUTDIR/tests.log" 2>&1
echo "other GPU tests rc=$?"; tail -n 4 "$OUTDIR/tests.log"

echo "== fastops: timing"
cat > /tmp/fastops_bench.py <<'PY'
import json, math, os, sys, time, traceback
import torch
import torch.nn.functional as F

out_dir = sys.argv[1]
from longforge.ops.attention.sdpa import fast_attention, sdpa
from longforge.ops.linear_attention import alibi_decay, lightning_chunk
from longforge.ops.linear_attention.fla import fla_chunk, fla_recurrent
from longforge.ops.sparse_attention.fast import fast_sparse_attention, select_block_indices
from longforge.ops.sparse_attention.naive import compress_keys
from longforge.ops.sparse_attention.triton_kernel import triton_sparse_attention

# FASTOPS_SMALL=1: a CPU smoke run of this script's plumbing with tiny lengths (not a benchmark).
SMALL = os.environ.get("FASTOPS_SMALL") == "1"
dev = "cpu" if SMALL else "cuda"
dt = torch.float32 if SMALL else torch.bfloat16
LENS = (256, 512) if SMALL else (32768, 131072)
rows = []


def timed(fn, reps=5, warmup=2):
    if SMALL:
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / reps


def record(what, T, ms, flops=None, note=""):
    r = {"what": what, "seq_len": T, "ms": round(ms, 3),
         "tflops": round(flops / ms / 1e9, 1) if flops else None, "note": note}
    rows.append(r)
    print(json.dumps(r), flush=True)
    flush()


def guard(name, fn):
    try:
        with torch.no_grad():
            fn()
    except Exception as err:  # record and go on: one failing measurement must not lose the others
        rows.append({"what": name, "error": f"{type(err).__name__}: {err}"[:300]})
        print(name, "FAILED", err, flush=True)
        flush()
        traceback.print_exc()
    if not SMALL:
        torch.cuda.empty_cache()


def flush(final=False):
    """Write timing.json/.md/.png from the rows so far (so a timeout still leaves results)."""
    rows_out = list(rows)
    by = {(r.get("what"), r.get("seq_len")): r.get("ms") for r in rows}
    for T in LENS:
        d = by.get(("dense causal SDPA cuDNN (32q/2kv/128)", T))
        for label in ("Triton tf32x3 (default)", "Triton bf16 (opt-in)"):
            s = by.get((f"sparse total fast_sparse_attention, scores {label}", T))
            if d and s:
                rows_out.append({"what": f"speedup sparse total ({label}) vs cuDNN dense", "seq_len": T, "x": round(d / s, 2)})
        k_ = by.get(("sparse Triton kernel (attention only)", T))
        if d and k_:
            rows_out.append({"what": "speedup sparse kernel only vs cuDNN dense", "seq_len": T, "x": round(d / k_, 2)})
    meta = {"device": "cpu (smoke)" if SMALL else torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": "bf16", "rows": rows_out, "complete": final}
    with open(os.path.join(out_dir, "timing.json.tmp"), "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(os.path.join(out_dir, "timing.json.tmp"), os.path.join(out_dir, "timing.json"))
    lines = [f"# fastops timing on {meta['device']} (torch {meta['torch']}, bf16, batch 1, CUDA events)", "",
             "| what | T | ms | TFLOP/s | speedup |", "|---|---|---|---|---|"]
    for r in rows_out:
        if "error" in r:
            lines.append(f"| {r['what']} | | FAILED: {r['error']} | | |")
        else:
            lines.append(f"| {r['what']} | {r.get('seq_len', '')} | {r.get('ms', '')} | {r.get('tflops') or ''} | {r.get('x', '')} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "timing.md.tmp"), "w") as f:
        f.write(md)
    os.replace(os.path.join(out_dir, "timing.md.tmp"), os.path.join(out_dir, "timing.md"))
    if final:
        print(md)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        timed_rows = [r for r in rows_out if r.get("ms")]
        fig, ax = plt.subplots(figsize=(10, 0.35 * len(timed_rows) + 1))
        ax.barh([f"{r['what']} @ {r['seq_len']}" for r in timed_rows], [r["ms"] for r in timed_rows])
        ax.set_xscale("log"); ax.set_xlabel("ms (log)"); ax.invert_yaxis()
        ax.set_title(f"longforge fast paths, {meta['device']}, bf16")
        fig.tight_layout(); fig.savefig(os.path.join(out_dir, "timing.png.tmp.png"), dpi=90)
        os.replace(os.path.join(out_dir, "timing.png.tmp.png"), os.path.join(out_dir, "timing.png"))
    except Exception as err:
        print("plot failed:", err)


H, HKV, D = 32, 2, 128  # SALA's sparse layers
SALA = dict(block_size=64, kernel_size=32, kernel_stride=16, topk=64, init_blocks=1, window_size=2048, dense_len=8192)

def rnd(*s):
    return torch.randn(*s, device=dev, dtype=dt)

for T in LENS:
    def dense_and_sparse(T=T):
        q, k, v = rnd(1, T, H, D), rnd(1, T, HKV, D), rnd(1, T, HKV, D)
        causal_flops = 4 * T * T / 2 * H * D
        guard(f"dense cuDNN {T}", lambda: record("dense causal SDPA cuDNN (32q/2kv/128)", T,
              timed(lambda: sdpa(q, k, v, scale=D**-0.5, is_causal=True)), causal_flops))
        kc = compress_keys(k, 32, 16)
        sel = dict(num_keys=T, block_size=64, kernel_size=32, kernel_stride=16, topk=64, init_blocks=1, window_size=2048)
        for mode, label in (("triton", "Triton tf32x3 (default)"), ("triton-lowp", "Triton bf16 (opt-in)")):
            os.environ["LONGFORGE_SPARSE_SCORES"] = mode
            guard(f"selection {label} {T}", lambda: record(f"sparse selection, {label}", T,
                  timed(lambda: select_block_indices(q, kc, **sel), reps=2, warmup=1)))
            guard(f"sparse total {label} {T}", lambda: record(f"sparse total fast_sparse_attention, scores {label}", T,
                  timed(lambda: fast_sparse_attention(q, k, v, compressed_k=kc, **SALA), reps=2, warmup=1)))
        if T == LENS[0]:
            os.environ["LONGFORGE_SPARSE_SCORES"] = "torch"
            guard(f"selection torch {T}", lambda: record("sparse selection, torch fp32 (exact)", T,
                  timed(lambda: select_block_indices(q, kc, **sel), reps=1, warmup=1)))
        os.environ["LONGFORGE_SPARSE_SCORES"] = "auto"

        def kernel_only():
            idx, cnt = select_block_indices(q, kc, **sel)
            sparse_flops = 4 * float(cnt.float().sum()) * 64 * (H // HKV) * D
            record("sparse Triton kernel (attention only)", T,
                   timed(lambda: triton_sparse_attention(q, k, v, idx, cnt, D**-0.5, 64)), sparse_flops,
                   note=f"{float(cnt.float().mean()):.1f} blocks/token")
        guard(f"sparse kernel {T}", kernel_only)
        qd = q[:, -1:]
        guard(f"sparse decode {T}", lambda: record("sparse decode (1 query, SALA cfg)", T,
              timed(lambda: fast_sparse_attention(qd, k, v, compressed_k=kc, **SALA), reps=10)))
        guard(f"dense decode {T}", lambda: record("dense decode SDPA (1 query)", T,
              timed(lambda: fast_attention(qd, k, v), reps=10)))
    guard(f"dense/sparse {T}", dense_and_sparse)

def sparse_bwd(T=LENS[0]):
    q, k, v = (x.requires_grad_() for x in (rnd(1, T, H, D), rnd(1, T, HKV, D), rnd(1, T, HKV, D)))
    with torch.enable_grad():
        def step():
            o = fast_sparse_attention(q, k, v, **SALA)
            o.backward(torch.ones_like(o))
        record("sparse fwd+bwd (SALA cfg)", T, timed(step, reps=2, warmup=1))
        def dstep():
            o = sdpa(q, k, v, scale=D**-0.5, is_causal=True)
            o.backward(torch.ones_like(o))
        record("dense causal SDPA fwd+bwd", T, timed(dstep, reps=2, warmup=1))
guard("sparse bwd", sparse_bwd)

def sliding(T=LENS[0]):
    q, k, v = rnd(1, T, 32, 128), rnd(1, T, 8, 128), rnd(1, T, 8, 128)
    record("sliding window 4096 FlexAttention (32q/8kv)", T, timed(lambda: fast_attention(q, k, v, window=4096 if not SMALL else 64)),
           4 * T * 4096 * 32 * 128)
    qo, ko, vo = rnd(1, T // 2, 32, 128), k, v
    record("causal Tq=T/2 < Tk FlexAttention (32q/8kv)", T, timed(lambda: fast_attention(qo, ko, vo)))
guard("sliding", sliding)

for T in LENS:
    def light(T=T):
        Hl, K = 32, 128
        q, k, v = rnd(1, T, Hl, K), rnd(1, T, Hl, K), rnd(1, T, Hl, K)
        g = alibi_decay(Hl, device=dev)
        record("lightning fla chunk_simple_gla g_gamma (32x128)", T, timed(lambda: fla_chunk(q, k, v, g, output_final_state=True)))
        if T == LENS[0]:
            record("lightning reference lightning_chunk", T, timed(lambda: lightning_chunk(q, k, v, g), reps=1, warmup=1))
            s0 = torch.zeros(1, Hl, K, K, device=dev)
            record("lightning fla fused_recurrent decode (1 token)", 1,
                   timed(lambda: fla_recurrent(q[:, :1], k[:, :1], v[:, :1], g, initial_state=s0, output_final_state=True), reps=20))
    guard(f"lightning {T}", light)

flush(final=True)
PY
timeout 170 python3 /tmp/fastops_bench.py "$OUTDIR" > "$OUTDIR/timing.log" 2>&1
echo "timing rc=$?"
if [ -f "$OUTDIR/timing.md" ]; then cat "$OUTDIR/timing.md"; else tail -n 30 "$OUTDIR/timing.log"; fi
