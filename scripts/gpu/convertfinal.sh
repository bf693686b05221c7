#!/usr/bin/env bash
# The HALO issue's last GPU batch on a 4-GPU host: the tiny-teacher conversion (scripts/gpu/convert.sh: the recipe
# and its runner-up on GPUs 0 and 1, the better one kept) next to the FSDP2 conversion of a Qwen3-0.6B shape
# (scripts/gpu/convertfsdp.sh on GPUs 2 and 3). The kept hybrid's shards come back in $OUT/shards, the rest in
# $OUT/results.tgz.   OUT=dir [FINAL_LIMIT=540] [GPU_A=0 GPU_B=1 FSDP_GPUS=2,3] bash scripts/gpu/convertfinal.sh
# On a 2-GPU host: GPU_A=0 GPU_B=1 FSDP_GPUS=0,1 (the FSDP run then shares the GPUs with the conversions).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
LIMIT=${FINAL_LIMIT:-540}
R=$OUT/run; mkdir -p $R $OUT/shards
for s in convert convertfsdp; do sed '/pip install/d' scripts/gpu/$s.sh > scripts/gpu/.run_$s.sh; done
python3 -c "from longforge.data.corpus import prose_documents; print(len(prose_documents(('stdlib','numpy','torch'), cache_dir='/tmp/lfcache')), 'prose docs')" 2>&1 | tail -1
(GPU_A=${GPU_A:-0} GPU_B=${GPU_B:-1} CONVERT_LIMIT=$((LIMIT - SECONDS - 5)) OUT=$R bash scripts/gpu/.run_convert.sh > $R/convert.out 2>&1) &
(CUDA_VISIBLE_DEVICES=${FSDP_GPUS:-2,3} CONVERTFSDP_DEADLINE=$((LIMIT - SECONDS - 40)) OUT=$R bash scripts/gpu/.run_convertfsdp.sh \
   > $R/convertfsdp.out 2>&1) &
wait
echo "done at ${SECONDS}s"
for f in $R/*.out; do echo "=================== $f"; tail -25 $f; done
if [ -d $R/convert/model ]; then mv $R/convert/model/*.safetensors $OUT/shards/ 2>/dev/null; fi
tar czf $OUT/results.tgz -C $R . && rm -rf $R
ls -la $OUT $OUT/shards
