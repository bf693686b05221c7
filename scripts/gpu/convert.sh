#!/usr/bin/env bash
# GPU work of the HALO conversion issue. Usage (repo root, one H200 per job via GPU_* variables):
#   GPU_TINY=0 GPU_TINY_B=0 GPU_06B=1 bash scripts/gpu/convert.sh
# Writes $OUT/convert/: tiny-sala/ (model + report), tiny-sala-b/ (report only), qwen3-0.6b/ (report only), logs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
O=$OUT/convert; mkdir -p $O
W=/tmp/convert; mkdir -p $W
# the prose parse cache is shared by the jobs: build it once first
python3 -c "from longforge.data.corpus import prose_documents; print(len(prose_documents(('stdlib','numpy','torch'), cache_dir='/tmp/lfcache')), 'prose docs')" 2>&1 | tail -1
(CUDA_VISIBLE_DEVICES=${GPU_TINY:-0} timeout 540 python3 -m longforge.cli convert --config recipes/convert/tiny-sala.yaml \
   --out $W/tiny-sala --no-progress > $O/tiny-sala.log 2>&1; echo "tiny-sala rc=$?" >> $O/tiny-sala.log) &
(CUDA_VISIBLE_DEVICES=${GPU_TINY_B:-0} timeout 540 python3 -m longforge.cli convert --config recipes/convert/tiny-sala.yaml \
   --out $W/tiny-sala-b --attn-ratio 0.375 --no-progress > $O/tiny-sala-b.log 2>&1; echo "tiny-sala-b rc=$?" >> $O/tiny-sala-b.log) &
(CUDA_VISIBLE_DEVICES=${GPU_06B:-0} python3 scripts/make_random_teacher.py --shape qwen3-0.6b --out $W/q06 > $O/qwen3-0.6b.log 2>&1 && \
 CUDA_VISIBLE_DEVICES=${GPU_06B:-0} timeout 480 python3 -m longforge.cli convert --teacher $W/q06 --recipe hypenet \
   --out $W/qwen3-0.6b --tokens-per-stage 200K,200K,64K --no-progress \
   stage1.batch_size=16 stage2.batch_size=16 stage3.seq_len=16384 stage3.batch_size=1 \
   select.tasks=[niah_single_1] select.samples=1 select.length=1024 select.loss_batches=1 \
   hype.alphas=[500] hype.samples=1 hype.length=4096 hype.tasks=[niah_single_1] \
   report.samples=0 report.loss_batches=2 eval_batch_size=4 max_shard_size=2GB >> $O/qwen3-0.6b.log 2>&1; \
 echo "qwen3-0.6b rc=$?" >> $O/qwen3-0.6b.log) &
wait
for r in tiny-sala tiny-sala-b qwen3-0.6b; do
  mkdir -p $O/$r; cp $W/$r/report.* $W/$r/state.json $O/$r/ 2>/dev/null; tail -3 $O/$r.log
done
# Which tiny hybrid to ship: the one meeting more of the targets (ties: the 1:3 recipe, tiny-sala).
python3 scripts/convert_targets.py $W/tiny-sala/report.json $W/tiny-sala-b/report.json > $O/targets.txt 2>&1
cat $O/targets.txt
CHOSEN=$(tail -1 $O/targets.txt | awk '{print $NF}')
[ -d "$W/$CHOSEN/model" ] && cp -r $W/$CHOSEN/model $O/model && echo "shipping $CHOSEN" && ls -la $O/model
