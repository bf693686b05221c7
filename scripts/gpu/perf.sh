#!/usr/bin/env bash
# GPU verification of the long-context fast-path performance work (issue #5), ONE H200, <= 9 minutes:
#   1. GPU tests of the changed fast paths (split prefix, bf16 block scorer, sparse, lightning decode) (<= 95 s)
#   2. longforge bench model  sala-9b-shape vs qwen3-8b-shape, 8K..1M + the 1M check                    (<= 320 s)
#   3. micro-timing: chunked-prefill attention variants, selection scorers, sparse kernel configs       (<= 55 s)
#   4. longforge bench kernels 8K..128K, no lightning (fla autotunes ~40 s; bench model runs it)        (<= 35 s)
#   5. decode profile of 4-layer slices of both shapes (torch.profiler tables, for the next round)     (<= 25 s)
#   6. GPU tests of the inference engine (tests/infer/test_engine_gpu.py)                              (<= 30 s)
# Everything goes to $OUT/perf/ (5 files): model_*.{json,md,png}, kernels.tar.gz (kernels_*.{json,md,png}) and
# logs.tar.gz (all logs, tests.log, timing.{json,md}, kernels_*).
# Run from the repository root: bash scripts/gpu/perf.sh
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUTDIR=${OUT:-/tmp/out}/perf
LOGS=/tmp/perf_logs
mkdir -p "$OUTDIR" "$LOGS"
LF="python3 -m longforge.cli"
T0=$(date +%s)
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  2>&1 | tee "$LOGS/env.log"

echo "== 1. GPU tests (changed fast paths)"
timeout 45 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_fast_paths.py --durations=6 -rf \
  -k "split_prefix or bf16_block or sparse_decode or (attention_fast_matches_reference_gpu and case1 and dtype0)" \
  > "$LOGS/tests.log" 2>&1
echo "new-path tests rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "passed|failed|FAILED|error" "$LOGS/tests.log" | tail -4
timeout 50 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_fast_paths.py --durations=6 -rf \
  -k "sparse_fast_matches or sparse_triton_scorer or (lightning_fla and recurrent)" >> "$LOGS/tests.log" 2>&1
echo "sparse + lightning-decode tests rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "passed|failed|FAILED|error" "$LOGS/tests.log" | tail -4

echo "== 2. bench model"
LEFT=$(( 385 - ( $(date +%s) - T0 ) ))
[ "$LEFT" -gt 320 ] && LEFT=320
BUDGET=$(( LEFT - 20 ))
echo "time left for bench model: $LEFT s (budget $BUDGET s)"
timeout "$LEFT" $LF bench model --out "$OUTDIR" --decode-tokens 32 --time-budget-s "$BUDGET" > "$LOGS/model.log" 2>&1
echo "rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "^\[|warm-up|tokens  |check|records" "$LOGS/model.log"

echo "== 3. micro-timing"
cat > /tmp/perf_timing.py <<'PY'
import json, sys, traceback
import torch
from longforge.ops.attention.sdpa import (fast_attention, lower_right_causal_sdpa, pick_prefix_variant, sdpa,
                                          split_prefix_attention)
from longforge.ops.attention.flex import flex_attention_masked
from longforge.ops.sparse_attention.fast import fast_sparse_attention, select_block_indices
from longforge.ops.sparse_attention.naive import compress_keys
from longforge.ops.sparse_attention.triton_kernel import triton_sparse_attention
import os

out = sys.argv[1]
rows = []
dev, dt = "cuda", torch.bfloat16


def timed(fn, reps=3, warmup=2):
    for _ in range(warmup):  # warm-up: compile / autotune / cuDNN plans
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / reps


def save():
    md = ["# perf micro-timing (H200, bf16, batch 1)", "", "| what | T | ms | note |", "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['what']} | {r['T']} | {r['ms'] if r['ms'] is not None else '—'} | {r.get('note', r.get('error', ''))} |")
    open(f"{out}/timing.md", "w").write("\n".join(md) + "\n")
    json.dump(rows, open(f"{out}/timing.json", "w"), indent=1)
    return "\n".join(md)


def rec(what, T, fn, reps=3, warmup=2):
    try:
        ms = timed(fn, reps, warmup)
        rows.append({"what": what, "T": T, "ms": round(ms, 3)})
    except Exception as err:  # noqa: BLE001
        rows.append({"what": what, "T": T, "ms": None, "error": f"{type(err).__name__}: {err}"[:300]})
        traceback.print_exc()
    print(rows[-1], flush=True)
    save()


with torch.no_grad():
    # chunked prefill: the last 32K queries of 128K keys, qwen3 attention shape (32 q / 8 kv x 128)
    Tq, Tk = 32768, 131072
    q = torch.randn(1, Tq, 32, 128, device=dev, dtype=dt)
    k = torch.randn(1, Tk, 8, 128, device=dev, dtype=dt)
    v = torch.randn(1, Tk, 8, 128, device=dev, dtype=dt)
    variant = pick_prefix_variant(q, k, v)
    rows.append({"what": "split variant picked", "T": Tk, "ms": None, "note": str(variant)})
    if variant:
        rec(f"prefill chunk 32K of 128K: split {variant}", Tk, lambda: split_prefix_attention(q, k, v, scale=128**-0.5, variant=variant), 1, 1)
    rec("prefill chunk 32K of 128K: lower-right flash", Tk, lambda: lower_right_causal_sdpa(q, k, v, scale=128**-0.5), 1, 1)
    rec("prefill chunk 32K of 128K: fast_attention (seam)", Tk, lambda: fast_attention(q, k, v, causal=True), 1, 1)
    rec("prefill chunk 32K of 128K: FlexAttention", Tk, lambda: flex_attention_masked(q, k, v, scale=128**-0.5, causal=True, window=None, key_padding_mask=None), 1, 1)
    del q, k, v
    # InfLLM-V2 at 128K, SALA config: 32 q / 2 kv heads x 128
    T = 131072
    cfg = dict(block_size=64, kernel_size=32, kernel_stride=16, topk=64, init_blocks=1, window_size=2048)
    q = torch.randn(1, T, 32, 128, device=dev, dtype=dt)
    k = torch.randn(1, T, 2, 128, device=dev, dtype=dt)
    v = torch.randn(1, T, 2, 128, device=dev, dtype=dt)
    rec("dense causal SDPA cuDNN (32q/2kv)", T, lambda: sdpa(q, k, v, scale=128**-0.5, is_causal=True))
    kc = compress_keys(k, 32, 16)
    qs = q[:, 8191:]
    for scorer in ("triton-bf16", "triton-lowp", "triton"):
        os.environ["LONGFORGE_SPARSE_SCORES"] = scorer
        rec(f"sparse selection {scorer}", T, lambda: select_block_indices(qs, kc, num_keys=T, **cfg), reps=2)
    os.environ["LONGFORGE_SPARSE_SCORES"] = "auto"
    from longforge.ops.sparse_attention import fast as fast_mod
    rows.append({"what": "bf16 block scorer failures", "T": T, "ms": None, "note": str(fast_mod._blockscore_failed[:1])[:300]})
    idx, cnt = select_block_indices(qs, kc, num_keys=T, **cfg)
    rec("sparse Triton kernel (attention only)", T, lambda: triton_sparse_attention(qs, k, v, idx, cnt, 128**-0.5, 64))
    rec("sparse total fast_sparse_attention (auto = bf16 scorer)", T, lambda: fast_sparse_attention(q, k, v, dense_len=8192, **cfg), reps=2)
    rec("sparse decode (1 query)", T, lambda: fast_sparse_attention(q[:, -1:], k, v, compressed_k=kc, dense_len=8192, **cfg), reps=20)
    rec("dense decode SDPA (1 query)", T, lambda: sdpa(q[:, -1:], k, v, scale=128**-0.5), reps=20)
    from longforge.ops.sparse_attention.triton_kernel import sparse_fwd
    qsc = qs.contiguous()
    for w, st in ((4, 2), (8, 2), (8, 3)):
        rec(f"sparse Triton kernel num_warps={w} num_stages={st}", T,
            lambda: sparse_fwd(qsc, k, v, idx, cnt, 128**-0.5, 64, num_warps=w, num_stages=st), 2, 1)
    del idx, cnt

print(save())
PY
timeout 55 python3 /tmp/perf_timing.py "$LOGS" > "$LOGS/timing.log" 2>&1
echo "rc=$? ($(( $(date +%s) - T0 )) s)"; cat "$LOGS/timing.md" 2>/dev/null || tail -5 "$LOGS/timing.log"

echo "== 4. bench kernels"
timeout 35 $LF bench kernels --out "$OUTDIR" --lengths 8K,32K,128K --mixers dense,full,sliding,sparse > "$LOGS/kernels.log" 2>&1
echo "rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "^ *(dense|full|sliding|sparse|lightning) @" "$LOGS/kernels.log"

echo "== 5. decode profile (4-layer slices of both shapes: where a decoded token's time goes)"
cat > /tmp/perf_decode.py <<'PY'
import sys, time
import torch
from longforge.bench.model import build_random_model
from longforge.infer import InferenceEngine
from longforge.models import load_config

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
small = dev.type == "cpu"  # CPU smoke run of the plumbing
dtype = torch.float32 if small else torch.bfloat16
T = 300 if small else 12288
for name in ("qwen3-8b-shape", "sala-9b-shape"):
    c = load_config(name)
    c.num_hidden_layers = 4
    c.layer_types = c.layer_types[:4]
    if small:
        c.hidden_size, c.intermediate_size, c.vocab_size = 256, 512, 1000
        c.num_attention_heads, c.head_dim = 4, 64
        c.num_key_value_heads = 2 if name.startswith("q") else 1
        c.sparse_dense_len = 128
        if hasattr(c, "lightning_num_heads"):
            c.lightning_num_heads = 4
    m = build_random_model(c, dev, dtype)
    eng = InferenceEngine(m, chunk_size=T)
    p = torch.randint(0, c.vocab_size, (1, T), device=dev)
    eng.generate(p, 4, eos_token_id=None)
    r = eng.generate(p, 33, eos_token_id=None)
    print(f"{name} (4 of {load_config(name).num_hidden_layers} layers {c.layer_types}) @ {T}: "
          f"{1e3 / r.decode_tokens_per_s:.2f} ms per decoded token", flush=True)
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        eng.generate(p[:, : T // 2], 9, eos_token_id=None)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)
    if dev.type == "cuda":
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15), flush=True)
    del m, eng
PY
timeout 25 python3 /tmp/perf_decode.py cuda > "$LOGS/decode_profile.log" 2>&1
echo "rc=$? ($(( $(date +%s) - T0 )) s)"; grep "ms per decoded token" "$LOGS/decode_profile.log"

echo "== 6. GPU tests of the inference engine"
timeout 30 python3 -m pytest -q -m gpu -p no:cacheprovider tests/infer/test_engine_gpu.py -rf >> "$LOGS/tests.log" 2>&1
echo "engine tests rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "passed|failed|FAILED|error" "$LOGS/tests.log" | tail -2

for f in "$OUTDIR"/kernels_*; do [ -f "$f" ] && mv "$f" "$LOGS/"; done
tar -czf "$OUTDIR/kernels.tar.gz" -C "$LOGS" $(cd "$LOGS" && ls kernels_* 2>/dev/null) 2>/dev/null
tar -czf "$OUTDIR/logs.tar.gz" -C "$LOGS" . 2>/dev/null
echo "== summary ($(( $(date +%s) - T0 )) s)"
for f in "$OUTDIR"/model_*.md; do [ -f "$f" ] && sed -n '/Speedup/,$p' "$f"; done
ls -la "$OUTDIR"
