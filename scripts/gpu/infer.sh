#!/usr/bin/env bash
# GPU work of the inference engine and the long-context benchmarks (issue #5, deliverables 3-5), one H200:
#   1. longforge bench kernels   each mixer's attention op vs dense cuDNN attention, 8K..512K       (<= 70 s)
#   2. longforge bench model     TTFT / decode tok/s / peak memory, sala-9b-shape vs qwen3-8b-shape,
#                                8K..1M, plus the 1M hybrid check                                   (<= 350 s)
#   3. longforge generate        a ~64K-token prompt through tiny-teacher and through a HALO-style
#                                sparse+lightning import of it (SLLLSLLL)                      (<= 15 + 2 x 25 s)
#   4. pytest -m gpu tests/infer  the engine on CUDA == generate; a real OOM becomes InferenceMemoryError (<= 40 s)
# Everything goes to $OUT/infer/: kernels_*.{json,md,png}, model_*.{json,md,png} and logs.tar.gz (all logs).
# Run from the repository root: bash scripts/gpu/infer.sh
set -u
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUTDIR=${OUT:-/tmp/out}/infer
LOGS=/tmp/infer_logs
mkdir -p "$OUTDIR" "$LOGS"
LF="python3 -m longforge.cli"
T0=$(date +%s)
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  2>&1 | tee "$LOGS/env.log"

echo "== bench kernels"
timeout 70 $LF bench kernels --out "$OUTDIR" > "$LOGS/kernels.log" 2>&1
echo "rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "^ *(dense|full|sliding|sparse|lightning) @" "$LOGS/kernels.log"

echo "== bench model"
timeout 350 $LF bench model --out "$OUTDIR" --time-budget-s 320 > "$LOGS/model.log" 2>&1
echo "rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "^\[|tokens  |check|records" "$LOGS/model.log"

echo "== generate (long prompt)"
python3 - <<'PY' > "$LOGS/prompt.log" 2>&1
import random
words = ("the archive of the northern observatory records every comet seen since the river town was founded "
         "and each entry names the keeper who wrote it together with the weather of that night").split()
rng = random.Random(0)
text = " ".join(rng.choice(words) for _ in range(60000))
open("/tmp/infer_long_prompt.txt", "w").write("Read the notes and summarise them.\n" + text + "\nSummary:")
PY
timeout 15 $LF import src/longforge/assets/tiny-teacher --out /tmp/infer_tt_hybrid --layer-types SLLLSLLL \
  > "$LOGS/import.log" 2>&1 || echo "import failed (see import.log)"
for M in tiny-teacher /tmp/infer_tt_hybrid; do
  timeout 25 $LF generate "$M" --prompt-file /tmp/infer_long_prompt.txt --max-new-tokens 32 --chunk-size 16384 \
    > "$LOGS/generate_$(basename $M).log" 2>&1
  echo "$M: rc=$? ($(( $(date +%s) - T0 )) s)"; grep -E "prompt tokens|error" "$LOGS/generate_$(basename $M).log"
done

echo "== GPU tests of the engine"
timeout 40 python3 -m pytest -q -p no:cacheprovider tests/infer/test_engine_gpu.py > "$LOGS/pytest_gpu.log" 2>&1
echo "rc=$? ($(( $(date +%s) - T0 )) s)"; tail -3 "$LOGS/pytest_gpu.log"

tar -czf "$OUTDIR/logs.tar.gz" -C "$LOGS" . 2>/dev/null
echo "== summary ($(( $(date +%s) - T0 )) s)"
for f in "$OUTDIR"/model_*.md; do [ -f "$f" ] && sed -n '/Speedup/,$p' "$f"; done
ls -la "$OUTDIR"
