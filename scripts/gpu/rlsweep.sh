#!/usr/bin/env bash
# Issue 8's learning demonstration, three settings side by side on one GPU (the tiny policy leaves it mostly idle):
# each is scripts/gpu/rl.sh with its own RL_ARGS, writing $OUT/rl-<name>/. All three are reported, whichever wins.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
sed "/pip[ ]install/d" scripts/gpu/rl.sh > scripts/gpu/.rl_nopip.sh   # installed once above, not three times at once
run() { RL_NAME=rl-$1 RL_ARGS="$2" bash scripts/gpu/.rl_nopip.sh > /tmp/rl-$1.out 2>&1; echo "rl-$1 rc=$?"; }
W="--warmup-share 0.45"
run w30 "$W warmup.target_reward=0.30 lr=1.0e-4" &
run w30kl "$W warmup.target_reward=0.30 lr=1.0e-4 beta=0.04" &
run w15 "$W lr=1.0e-4" &
wait
for n in w30 w30kl w15; do echo "=== rl-$n"; tail -12 /tmp/rl-$n.out; done
