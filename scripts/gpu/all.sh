#!/usr/bin/env bash
# One batched call on a 4-GPU H200 machine: every issue's GPU work in parallel, one GPU each, so that the benchmarks
# run alone on theirs. Results come back as $OUT/results.tgz plus the weight shards of the tiny hybrid ($OUT/shards).
#   OUT=/some/dir JOBS=perf,deco,convert,rl bash scripts/gpu/all.sh
# A job may name its GPU (JOBS=model@0,kernels@1,convert@2,gputests@2,rl@3); jobs without one take the next GPU.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
nvidia-smi -L
JOBS=${JOBS:-perf,deco,convert,rl}
IFS=, read -ra LIST <<< "$JOBS"
# each script without its own pip install (installed once above), next to the original so relative paths hold
for j in "${LIST[@]}"; do s=${j%@*}; sed '/pip install/d' scripts/gpu/$s.sh > scripts/gpu/.run_$s.sh; done
R=$OUT/run; mkdir -p $R
start=$(date +%s)
gpu=0
for j in "${LIST[@]}"; do
  s=${j%@*}; [ "$s" != "$j" ] && gpu=${j#*@}
  (CUDA_VISIBLE_DEVICES=$gpu OUT=$R timeout ${JOB_LIMIT:-468} bash scripts/gpu/.run_$s.sh > $R/$s.out 2>&1; echo "$s rc=$?" >> $R/$s.out) &
  gpu=$(( (gpu + 1) % 4 ))
done
wait
echo "all jobs done in $(( $(date +%s) - start )) s"
for f in $R/*.out; do echo "=================== $f"; tail -30 $f; done
if [ -d $R/convert/model ]; then mkdir -p $OUT/shards; mv $R/convert/model/*.safetensors $OUT/shards/ 2>/dev/null; fi
tar czf $OUT/results.tgz -C $R . && rm -rf $R
ls -la $OUT $OUT/shards 2>/dev/null
