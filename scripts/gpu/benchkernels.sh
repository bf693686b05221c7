#!/usr/bin/env bash
# Issue #5's per-layer kernel benchmark alone on one H200: `longforge bench kernels` 8K..512K, every mixer against
# dense causal cuDNN attention. Writes $OUT/benchkernels/kernels_*.{json,md,png} and kernels.log.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
O=${OUT:-/tmp/out}/benchkernels; mkdir -p "$O"
timeout ${KERNELS_LIMIT:-440} python3 -m longforge.cli bench kernels --out "$O" --lengths 8K,32K,128K,256K,512K \
  > "$O/kernels.log" 2>&1
echo "bench kernels rc=$?"
grep -E "^ *(dense|full|sliding|sparse|lightning) @" "$O/kernels.log"
for f in "$O"/kernels_*.md; do [ -f "$f" ] && cat "$f"; done
