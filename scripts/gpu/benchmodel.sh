#!/usr/bin/env bash
# Issue #5's whole-model benchmark alone on one H200: `longforge bench model`, sala-9b-shape vs qwen3-8b-shape at
# 8K..1M in one run (random weights, bf16, batch 1, 64 decoded tokens). Writes $OUT/benchmodel/model_*.{json,md,png}
# and model.log. Run from the repository root: OUT=/some/dir bash scripts/gpu/benchmodel.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
O=${OUT:-/tmp/out}/benchmodel; mkdir -p "$O"
BUDGET=${BENCH_BUDGET_S:-520}
timeout $(( BUDGET + 40 )) python3 -m longforge.cli bench model --out "$O" --decode-tokens 64 \
  --lengths 8K,32K,128K,256K,512K,1M --time-budget-s "$BUDGET" > "$O/model.log" 2>&1
echo "bench model rc=$?"
grep -E "^\[|warm-up|check|records" "$O/model.log" | tail -30
for f in "$O"/model_*.md; do [ -f "$f" ] && sed -n '/^| model/,$p' "$f"; done
