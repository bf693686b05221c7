#!/usr/bin/env bash
# Issue 8's GRPO learning demonstration on one GPU (≤ 9 minutes): scripts/rl_learning.py with outputs in $OUT/rl/.
# Run from the repository root: OUT=/some/dir bash scripts/gpu/rl.sh
set -uo pipefail
OUT=${OUT:-runs/gpu-out}
DEST="$OUT/rl"
mkdir -p "$DEST"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache TOKENIZERS_PARALLELISM=false
RUN=/tmp/rl-learning-run
rm -rf "$RUN"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>&1 | head -n 2
# 8 minutes of budget inside the script (it stops GRPO from measured step times); the timeout is the hard stop.
timeout -k 10 515 python3 scripts/rl_learning.py --out "$RUN" --minutes 7.9 2>&1 | tee "$DEST/run.log"
rc=${PIPESTATUS[0]}
echo "rl_learning.py exit code: $rc" | tee -a "$DEST/run.log"
for f in summary.md grpo_summary.json rewards.png warmup.png; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$DEST/$f"
done
# the rest (resolved recipes, TensorBoard events, the held-out records) in one small archive
[ -d "$RUN" ] && tar -czf "$DEST/extras.tgz" -C "$RUN" --exclude=model . 2>/dev/null
echo "=== rl: $DEST"
ls -la "$DEST"
[ -f "$DEST/summary.md" ] && sed -n '1,14p' "$DEST/summary.md"
exit "$rc"
