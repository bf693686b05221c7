#!/usr/bin/env bash
# GPU verification + timing of the InfLLM-V2 sparse forward work (issue #5: multi-token tile attention kernel,
# fused Triton top-k selection), ONE H200 (use CUDA_VISIBLE_DEVICES as given), <= 7 minutes:
#   1. GPU tests of the sparse fast paths, new and old (tile / split kernels, fused top-k, scorers, decode) (<= 175 s)
#   2. timing at 32K / 128K / 256K: dense cuDNN, old / new selection, scorer launches, token / tile / split
#      kernels, the whole fast_sparse_attention (old / auto / tile / split / token), random and smooth queries
#      (<= 200 s; timing.{json,md,png} are rewritten after every length and query kind)
#   3. longforge bench kernels --mixers dense,sparse at 32K,128K: the seam picks the new path           (<= 45 s)
# Everything goes to $OUT/sparsekernel/ (4 files): timing.{json,md,png} and logs.tar.gz (tests.log, timing.log,
# bench.log, bench kernels' JSON / MD / PNG).
# Run from the repository root: bash scripts/gpu/sparsekernel.sh
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUTDIR=${OUT:-/tmp/out}/sparsekernel
LOGS=/tmp/sparsekernel_logs
mkdir -p "$OUTDIR" "$LOGS"
T0=$(date +%s)
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  2>&1 | tee "$LOGS/env.log"

echo "== 1. GPU tests (sparse)"
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_fast_paths.py --durations=8 -rf \
  -k "sparse_tile or fused_topk" > "$LOGS/tests.log" 2>&1
echo "new-path tests rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "passed|failed|FAILED|Error" "$LOGS/tests.log" | tail -8
timeout 55 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_fast_paths.py --durations=5 -rf \
  -k "sparse and not sparse_tile and not fused_topk" >> "$LOGS/tests.log" 2>&1
echo "old sparse tests rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "passed|failed|FAILED|Error" "$LOGS/tests.log" | tail -6

echo "== 2. timing"
LEFT=$(( 370 - ( $(date +%s) - T0 ) ))
[ "$LEFT" -gt 200 ] && LEFT=200
[ "$LEFT" -lt 60 ] && LEFT=60
timeout "$LEFT" python3 scripts/gpu/sparsekernel_timing.py "$OUTDIR" --lengths 32768,131072,262144 \
  > "$LOGS/timing.log" 2>&1
echo "timing rc=$? ($(( $(date +%s) - T0 )) s)"
grep -E "^T=" "$LOGS/timing.log" | grep -E " (dense|sel_old|sel_new|token|tile\[[0-9]+\]|split\[[0-9]+\]|total_old|total_auto|total_tile|total_split|total_token) " | tail -60

echo "== 3. bench kernels (dense, sparse) through the seam"
LEFT=$(( 415 - ( $(date +%s) - T0 ) ))
[ "$LEFT" -gt 45 ] && LEFT=45
if [ "$LEFT" -ge 20 ]; then
  timeout "$LEFT" python3 -m longforge.cli bench kernels --mixers dense,sparse --lengths 32K,128K \
    --out "$LOGS/bench" > "$LOGS/bench.log" 2>&1
  echo "bench kernels rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "sparse|dense" "$LOGS/bench"/*.md 2>/dev/null | tail -6
else
  echo "skipped: no time left"
fi

tar -czf "$OUTDIR/logs.tar.gz" -C "$LOGS" . 2>/dev/null
ls -la "$OUTDIR"
echo "done in $(( $(date +%s) - T0 )) s"
