#!/usr/bin/env bash
# One batched call on 4 H200s (the last of a session), every job pinned to its GPUs, one shared deadline:
#   GPU 0+1  `longforge bench model --gpus 0,1` (sala-9b-shape and qwen3-8b-shape side by side, 8K..1M), then on
#            what is left: the InfLLM-V2 kernel timing (GPU 0) and the graph-decode timing of layer slices (GPU 1)
#   GPU 2/3  the two tiny-teacher conversions (scripts/gpu/convert.sh, one per GPU), the GRPO sweep (GPU 3), the
#            FSDP2 conversion check (both), and every GPU test module (dealt over both)
# Results: $OUT/results.tgz, and the chosen tiny hybrid's shards in $OUT/shards.   OUT=/some/dir bash scripts/gpu/final.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L
LIMIT=${FINAL_LIMIT:-450}          # every job ends by then (seconds from now)
R=$OUT/run; mkdir -p $R
T0=$(date +%s)
for s in convert rlsweep gputests convertfsdp; do sed '/pip install/d' scripts/gpu/$s.sh > scripts/gpu/.run_$s.sh; done
left() { echo $(( LIMIT - ( $(date +%s) - T0 ) )); }

( CUDA_VISIBLE_DEVICES=0,1 timeout $(( $(left) - 5 )) python3 -m longforge.cli bench model --gpus 0,1 \
    --out $R/benchmodel --decode-tokens 64 --lengths 8K,32K,128K,256K,512K,1M --time-budget-s $(( LIMIT - 110 )) \
    > $R/benchmodel.log 2>&1
  echo "bench model rc=$? ($(( $(date +%s) - T0 )) s)" >> $R/benchmodel.log
  L=$(( $(left) - 8 ))
  if [ $L -gt 40 ]; then
    (CUDA_VISIBLE_DEVICES=0 timeout $L python3 scripts/gpu/sparsekernel_timing.py $R/sparsekernel \
       --lengths 131072,262144 > $R/sparsekernel.log 2>&1; echo "sparse timing rc=$?" >> $R/sparsekernel.log) &
    (CUDA_VISIBLE_DEVICES=1 timeout $L python3 scripts/gpu/graphdecode_bench.py $R/graphdecode --lengths 8192,262144 \
       --tokens 64 --time-budget-s $(( L - 15 )) > $R/graphdecode.log 2>&1; echo "graph timing rc=$?" >> $R/graphdecode.log) &
    wait
  fi ) &
(OUT=$R GPU_A=2 GPU_B=3 CONVERT_LIMIT=$(( $(left) - 25 )) timeout $(left) bash scripts/gpu/.run_convert.sh \
   > $R/convert.out 2>&1; echo "convert rc=$?" >> $R/convert.out) &
(CUDA_VISIBLE_DEVICES=3 OUT=$R RL_LIMIT_S=$(( $(left) - 10 )) timeout $(left) bash scripts/gpu/.run_rlsweep.sh \
   > $R/rlsweep.out 2>&1; echo "rlsweep rc=$?" >> $R/rlsweep.out) &
(CUDA_VISIBLE_DEVICES=2,3 OUT=$R CONVERTFSDP_DEADLINE=$(( $(left) - 20 )) timeout $(left) \
   bash scripts/gpu/.run_convertfsdp.sh > $R/convertfsdp.out 2>&1; echo "convertfsdp rc=$?" >> $R/convertfsdp.out) &
(OUT=$R TEST_GPUS=2,3 TEST_LIMIT=$(( $(left) - 15 )) GPUTESTS_SKIP=test_fsdp timeout $(left) \
   bash scripts/gpu/.run_gputests.sh > $R/gputests.out 2>&1; echo "gputests rc=$?" >> $R/gputests.out) &
wait
echo "all jobs done in $(( $(date +%s) - T0 )) s"
for f in $R/*.out $R/*.log; do echo "=================== $f"; tail -22 $f; done
if [ -d $R/convert/model ]; then mkdir -p $OUT/shards; mv $R/convert/model/*.safetensors $OUT/shards/ 2>/dev/null; fi
tar czf $OUT/results.tgz -C $R . && rm -rf $R
ls -la $OUT $OUT/shards 2>/dev/null
