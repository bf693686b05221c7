#!/usr/bin/env bash
# One batched call on a 4-GPU H200 machine: every issue's GPU work in parallel, one GPU each (benchmarks alone on
# theirs). Results come back as $OUT/results.tgz plus the shipped tiny-hybrid's weight shards.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
nvidia-smi -L
for s in fastops infer deco rl convert; do sed '/pip install/d' scripts/gpu/$s.sh > /tmp/gpu_$s.sh; done
python3 -c "from longforge.data.corpus import prose_documents; print(len(prose_documents(('stdlib','numpy','torch'), cache_dir='/tmp/lfcache')), 'prose docs cached')"
R=$OUT/run; mkdir -p $R
JOBS=${JOBS:-infer,fastops,deco,convert,rl}
start=$(date +%s)
[[ $JOBS == *infer* ]]   && (CUDA_VISIBLE_DEVICES=0 OUT=$R bash /tmp/gpu_infer.sh   > $R/infer.out 2>&1) &
[[ $JOBS == *fastops* ]] && (CUDA_VISIBLE_DEVICES=1 OUT=$R bash /tmp/gpu_fastops.sh > $R/fastops.out 2>&1) &
[[ $JOBS == *deco* ]]    && (CUDA_VISIBLE_DEVICES=2 OUT=$R bash /tmp/gpu_deco.sh    > $R/deco.out 2>&1) &
[[ $JOBS == *convert* ]] && (GPU_TINY=3 GPU_TINY_B=3 GPU_06B=1 OUT=$R bash /tmp/gpu_convert.sh > $R/convert.out 2>&1) &
[[ $JOBS == *rl* ]]      && (CUDA_VISIBLE_DEVICES=3 OUT=$R bash /tmp/gpu_rl.sh      > $R/rl.out 2>&1) &
wait
echo "all jobs done in $(( $(date +%s) - start )) s"
for f in $R/*.out; do echo "=================== $f"; tail -25 $f; done
# weight shards of the shipped tiny hybrid come back as separate files; everything else in one archive
if [ -d $R/convert/model ]; then
  mkdir -p $OUT/shards; mv $R/convert/model/*.safetensors $OUT/shards/ 2>/dev/null
fi
tar czf $OUT/results.tgz -C $R . && rm -rf $R && ls -la $OUT $OUT/shards 2>/dev/null
du -sh $OUT/results.tgz
