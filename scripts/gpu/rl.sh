#!/usr/bin/env bash
# Issue 8's GRPO learning demonstration on one GPU: scripts/rl_learning.py with outputs in $OUT/rl/.
# Run from the repository root: OUT=/some/dir bash scripts/gpu/rl.sh
# RL_ARGS adds arguments / key=value overrides of scripts/rl_learning.py (e.g. "lr=1e-4 warmup.target_reward=0.3").
# Hard limit: the whole script ends within RL_LIMIT_S (default 465) seconds of its start. The Python run gets what is
# left after the install, as a SIGTERM deadline (GRPO then stops after its current step, evaluates and writes its
# outputs; exit code 0 then, --preserve-status) plus a grace period before SIGKILL (exit 137); its own --minutes
# budget ends GRPO a margin before that deadline.
set -uo pipefail
LIMIT=${RL_LIMIT_S:-465}
GRACE=25     # SIGTERM → SIGKILL: one GRPO step (~10 s) + the final held-out evaluation (~5 s) + the outputs
MARGIN=15    # the script's own budget ends this long before the SIGTERM
TAIL=8       # kept for copying the outputs after Python ends
OUT=${OUT:-runs/gpu-out}
NAME=${RL_NAME:-rl}    # several runs side by side (scripts/gpu/rlsweep.sh) each get their own name
DEST="$OUT/$NAME"
mkdir -p "$DEST"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache TOKENIZERS_PARALLELISM=false
RUN=/tmp/rl-learning-$NAME
rm -rf "$RUN"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>&1 | head -n 2
TERM_AT=$((LIMIT - SECONDS - GRACE - TAIL))
MINUTES=$(python3 -c "print(f'{max(1.0, ($TERM_AT - $MARGIN) / 60):.2f}')")
echo "[rl.sh] ${SECONDS}s spent before Python; SIGTERM after ${TERM_AT}s, SIGKILL ${GRACE}s later; --minutes $MINUTES"
timeout --preserve-status -k "$GRACE" "$TERM_AT" python3 scripts/rl_learning.py --out "$RUN" --minutes "$MINUTES" --reserve 10 --no-progress ${RL_ARGS:-} \
  2>&1 | tee "$DEST/run.log"
rc=${PIPESTATUS[0]}
echo "rl_learning.py exit code: $rc (${SECONDS}s)" | tee -a "$DEST/run.log"
for f in summary.md grpo_summary.json rewards.png warmup.png; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$DEST/$f"
done
# the rest (resolved recipes, TensorBoard events, the held-out records) in one small archive
[ -d "$RUN" ] && timeout 5 tar -czf "$DEST/extras.tgz" -C "$RUN" --exclude=model . 2>/dev/null
echo "=== rl: $DEST"
ls -la "$DEST"
[ -f "$DEST/summary.md" ] && sed -n '1,14p' "$DEST/summary.md"
exit "$rc"
