#!/usr/bin/env bash
# Issue 8's learning demonstration, three settings side by side on one GPU (the tiny policy leaves it mostly idle):
# each is scripts/gpu/rl.sh with its own RL_ARGS, writing $OUT/rl-<name>/. All three are reported, whichever wins.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
sed "/pip[ ]install/d" scripts/gpu/rl.sh > scripts/gpu/.rl_nopip.sh   # installed once above, not three times at once
run() { RL_NAME=rl-$1 RL_ARGS="$2" bash scripts/gpu/.rl_nopip.sh > /tmp/rl-$1.out 2>&1; echo "rl-$1 rc=$?"; }
# exact match for the short answers (a name, a place): binary and unhackable by longer completions
EX='reward_overrides={"FuzzyNeedle":"exact_match","KeyChain":"exact_match"}'
EX3='reward_overrides={"FuzzyNeedle":"exact_match","KeyChain":"exact_match","MultiNeedle":"f1"}'
FK="data.datasets=[FuzzyNeedle,KeyChain]"
W="--warmup-share 0.4"
NAMES="${RL_VARIANTS:-big4k ctx2k ctx1k}"
# big: 48 prompts x 16 per step (4x the groups with a signal; the H200 runs kept only 1-4 of 12 groups per step)
BIG="prompts_per_step=48 rollout_batch_size=384"
for n in $NAMES; do
  case $n in
    fk5) run fk5 "$W $FK $EX lr=5.0e-5" & ;;
    fk10) run fk10 "$W $FK $EX lr=1.0e-4" & ;;
    all-kl) run all-kl "$W $EX3 lr=1.0e-4 beta=0.04" & ;;
    w30) run w30 "$W warmup.target_reward=0.30 lr=1.0e-4" & ;;
    w15) run w15 "$W lr=1.0e-4" & ;;
    big4k) run big4k "$W $FK $EX $BIG lr=5.0e-5" & ;;
    ctx2k) run ctx2k "$W $FK $EX prompts_per_step=32 rollout_batch_size=256 data.max_tokens=2048 lr=5.0e-5" & ;;
    ctx1k) run ctx1k "$W $FK $EX prompts_per_step=32 rollout_batch_size=256 data.max_tokens=1024 lr=5.0e-5" & ;;
  esac
done
wait
for n in $NAMES; do echo "=== rl-$n"; tail -12 /tmp/rl-$n.out; done
