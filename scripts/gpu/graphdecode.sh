#!/usr/bin/env bash
# CUDA-graph static decode (issue #5) on ONE H200, <= 6 minutes. Run from the repository root:
#   bash scripts/gpu/graphdecode.sh
#   1. GPU tests: graph == eager static decode (fp32, bf16), engine graph tokens == generate, Triton decode
#      attention == reference, and the existing engine GPU tests                                       (<= 150 s)
#   2. decode tok/s of 4-layer slices of sala-9b-shape and qwen3-8b-shape at 8K and 256K: graph / static-eager /
#      dynamic, and torch.profiler tables of graphed vs dynamic steps (scripts/gpu/graphdecode_bench.py) (<= 140 s)
#   3. with the time left (to 355 s): `longforge bench model` of the whole shapes at 256K (engine default = graph)
# Writes $OUT/graphdecode/: decode.json, decode.md, profile.txt, log.txt, bench_model.tar.gz.
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:$PWD:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
O=${OUT:-/tmp/out}/graphdecode
mkdir -p "$O" /tmp/graphdecode_bm
LOG=$O/log.txt
T0=$(date +%s)
left() { echo $(( $1 - ( $(date +%s) - T0 ) )); }
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  2>&1 | tee -a "$LOG"

echo "== 1. GPU tests" | tee -a "$LOG"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider -rf --durations=8 \
  tests/infer/test_static_decode_gpu.py tests/infer/test_engine_gpu.py >> "$LOG" 2>&1
echo "tests rc=$? ($(( $(date +%s) - T0 )) s): $(grep -E '[0-9]+ (passed|failed)' "$LOG" | tail -1)"

echo "== 2. decode tok/s, 4-layer slices, graph vs eager" | tee -a "$LOG"
L=$(left 295); [ "$L" -gt 140 ] && L=140
timeout "$L" python3 scripts/gpu/graphdecode_bench.py "$O" --lengths 262144,8192 --tokens 64 \
  --time-budget-s $(( L - 40 )) >> "$LOG" 2>&1
echo "bench rc=$? ($(( $(date +%s) - T0 )) s)"
[ -f "$O/decode.md" ] && cat "$O/decode.md"

echo "== 3. bench model at 256K (whole shapes, engine default)" | tee -a "$LOG"
L=$(left 355)
if [ "$L" -gt 60 ]; then
  timeout "$L" python3 -m longforge.cli bench model --out /tmp/graphdecode_bm --lengths 256K --decode-tokens 64 \
    --time-budget-s $(( L - 15 )) >> "$LOG" 2>&1
  echo "bench model rc=$? ($(( $(date +%s) - T0 )) s)"
  grep -E "^\[|warm-up" "$LOG" | tail -6
  tar -czf "$O/bench_model.tar.gz" -C /tmp/graphdecode_bm . 2>/dev/null
else
  echo "bench model skipped: $L s left" | tee -a "$LOG"
fi
echo "== done in $(( $(date +%s) - T0 )) s"; ls -la "$O"
