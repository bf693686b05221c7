#!/usr/bin/env bash
# One batched call on 4 H200s (the last of a session), every job pinned to its GPUs, one shared deadline:
#   GPU 0+1  `longforge bench model --gpus 0,1`: sala-9b-shape and qwen3-8b-shape side by side, 8K..1M
#   GPU 2    two sala conversions of the tiny teacher (scripts/gpu/convert.sh, VARIANTS=E) + every GPU test module
#   GPU 3    the GRPO sweep (scripts/gpu/rlsweep.sh, RL_VARIANTS) + the helpers' GPU scripts, if any (EXTRA)
# Results: $OUT/results.tgz, and the chosen tiny hybrid's shards in $OUT/shards.
#   OUT=/some/dir bash scripts/gpu/final.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L
LIMIT=${FINAL_LIMIT:-450}          # every job ends by then (seconds from now)
R=$OUT/run; mkdir -p $R
T0=$(date +%s)
for s in convert rlsweep gputests ${EXTRA:-}; do sed '/pip install/d' scripts/gpu/$s.sh > scripts/gpu/.run_$s.sh; done
left() { echo $(( LIMIT - ( $(date +%s) - T0 ) )); }

(CUDA_VISIBLE_DEVICES=0,1 timeout $(left) python3 -m longforge.cli bench model --gpus 0,1 --out $R/benchmodel \
   --decode-tokens 64 --lengths 8K,32K,128K,256K,512K,1M --time-budget-s $(( LIMIT - 25 )) > $R/benchmodel.log 2>&1
 echo "bench model rc=$? ($(( $(date +%s) - T0 )) s)" >> $R/benchmodel.log) &
(CUDA_VISIBLE_DEVICES=2 GPU_A=2 GPU_B=2 OUT=$R CONVERT_LIMIT=$(( $(left) - 25 )) timeout $(left) \
   bash scripts/gpu/.run_convert.sh > $R/convert.out 2>&1; echo "convert rc=$?" >> $R/convert.out) &
(CUDA_VISIBLE_DEVICES=2 OUT=$R TEST_LIMIT=150 timeout $(left) bash scripts/gpu/.run_gputests.sh > $R/gputests.out 2>&1
 echo "gputests rc=$?" >> $R/gputests.out) &
(CUDA_VISIBLE_DEVICES=3 OUT=$R RL_LIMIT_S=$(( $(left) - 10 )) timeout $(left) bash scripts/gpu/.run_rlsweep.sh \
   > $R/rlsweep.out 2>&1; echo "rlsweep rc=$?" >> $R/rlsweep.out) &
for s in ${EXTRA:-}; do
  (CUDA_VISIBLE_DEVICES=3 OUT=$R timeout $(left) bash scripts/gpu/.run_$s.sh > $R/$s.out 2>&1; echo "$s rc=$?" >> $R/$s.out) &
done
wait
echo "all jobs done in $(( $(date +%s) - T0 )) s"
for f in $R/*.out $R/benchmodel.log; do echo "=================== $f"; tail -25 $f; done
if [ -d $R/convert/model ]; then mkdir -p $OUT/shards; mv $R/convert/model/*.safetensors $OUT/shards/ 2>/dev/null; fi
tar czf $OUT/results.tgz -C $R . && rm -rf $R
ls -la $OUT $OUT/shards 2>/dev/null
