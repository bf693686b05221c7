#!/usr/bin/env bash
# DECO GPU work in one go (≤ 9 min on ONE H200): GPU tests of the fused Triton kernel and the graph helper,
# `longforge bench moe --device cuda`, and the small replication. Run from the repo root:
#     OUT=/some/dir bash scripts/gpu/deco.sh
# Writes to $OUT/deco/: summary.txt, bench.tgz (moe_h200_<date>.{json,md,png}),
# replication.tgz (deco_replication.{json,md}, deco_replication_{loss,rho}.png), logs.tgz (all logs, run histories).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
OUT=${OUT:-/tmp/out}
D=$OUT/deco
W=/tmp/deco_work
rm -rf "$W"; mkdir -p "$D" "$W/bench" "$W/logs" "$W/rep"
START=$(date +%s)
{
echo "== deco: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); torch $(python3 -c 'import torch; print(torch.__version__)'); triton $(python3 -c 'import triton; print(triton.__version__)')"

# 1. GPU tests (kernel vs dense-masked reference: bf16/fp32, 1/7/64 tokens, 0 %/20 %/100 % active; graph helper)
timeout 170 python3 -m pytest -q -m gpu tests/ops/test_moe_fast.py tests/models/test_moe.py -p no:cacheprovider \
    > "$W/logs/gpu_tests.log" 2>&1
echo "== gpu tests rc=$? ($(tail -1 "$W/logs/gpu_tests.log")) [$(( $(date +%s) - START )) s]"

# 2. bench moe: all shapes, ratios 10–50 %, tokens 1/8/32/64, bf16, graphed + eager, plus whole-model decode
timeout 230 python3 -c "import sys; from longforge.cli import main; sys.exit(main(sys.argv[1:]))" \
    bench moe --device cuda --out "$W/bench" --ratios 0.1,0.2,0.3,0.5 --tokens 1,8,32,64 > "$W/logs/bench.log" 2>&1
echo "== bench rc=$? [$(( $(date +%s) - START )) s]"
python3 - "$W/bench" <<'PY' || true
import glob, json, sys
for path in glob.glob(sys.argv[1] + "/moe_*.json"):
    for r in json.load(open(path)):
        if r.get("shape") == "model":
            print("   model", {k: r.get(k) for k in ("layer_types", "dense_tokens_per_s", "deco_tokens_per_s", "speedup",
                                                  "activation_ratio", "error")})
        elif r["activation_ratio"] == 0.2:
            print("   {shape} rho=0.2 tokens={tokens}: dense {dense_ms} ms, deco {deco_ms} ms -> {speedup}x graphed"
                  " (eager {speedup_eager}x; max err {max_abs_err} of {ref_max_abs}; cfg {config})".format(
                      **{"speedup_eager": None, "max_abs_err": None, "ref_max_abs": None, "config": None, **r}))
PY

# 3. the replication: 5 runs in parallel processes on this GPU, equal params and tokens
ELAPSED=$(( $(date +%s) - START ))
BUDGET=$(( 500 - ELAPSED )); [ "$BUDGET" -gt 320 ] && BUDGET=320; [ "$BUDGET" -lt 60 ] && BUDGET=60
timeout $(( BUDGET + 25 )) python3 scripts/deco_replication.py --out "$W/rep" --device cuda --timeout "$BUDGET" \
    > "$W/logs/replication.log" 2>&1
echo "== replication rc=$? (budget ${BUDGET}s) [$(( $(date +%s) - START )) s]"
tail -1 "$W/logs/replication.log"
cat "$W/rep/deco_replication.md" 2>/dev/null
} 2>&1 | tee "$W/summary.txt"
cp "$W/summary.txt" "$D/summary.txt"
cp "$W"/rep/*.log "$W"/rep/*.history.json "$W/logs/" 2>/dev/null
tar czf "$D/logs.tgz" -C "$W" logs
tar czf "$D/bench.tgz" -C "$W" bench
tar czf "$D/replication.tgz" -C "$W/rep" $(cd "$W/rep" && ls deco_replication* 2>/dev/null)
echo "== deco done in $(( $(date +%s) - START )) s; $(ls -la "$D" | tail -n +2 | awk '{print $NF, $5}' | tr '\n' ' ')"
