#!/usr/bin/env bash
# Multi-GPU HALO conversion (FSDP2 under torchrun) on two GPUs of one host. Run from the repo root with OUT set and
# two GPUs given, e.g.   CUDA_VISIBLE_DEVICES=2,3 bash scripts/gpu/convertfsdp.sh
#  1. the FSDP-vs-replicas test on the two GPUs (NCCL): same loss curves, an interrupted sharded stage resumes, the
#     final model rank 0 saves is the one it reported on (tests/convert/test_fsdp.py, cuda case);
#  2. a randomly initialised Qwen3-0.6B-shaped teacher (scripts/make_random_teacher.py) converted with small budgets
#     (stages 1, 2, 3; kept layers given, no sweeps): FSDP2 on 2 GPUs, then 1 GPU, then replicas on 2 GPUs if time
#     is left; per stage tokens/s and peak memory on each GPU.
# Writes $OUT/convertfsdp/{results.json,results.md,results.png,log.txt}. Lightning runs on the reference (chunked
# PyTorch) op here, so that no Triton autotuning lands inside the timed steps: the ratios, not the absolute tokens/s,
# are the result. At most ~9 minutes: every step is under `timeout`, and the conversions share a deadline (510 s into
# the script, CONVERTFSDP_DEADLINE); a run that has no time left is skipped, one cut short reports its finished stages.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
O=$OUT/convertfsdp; W=/tmp/convertfsdp; mkdir -p $O; rm -rf $W; mkdir -p $W
LOG=$O/log.txt; : > $LOG
GPUS=${CUDA_VISIBLE_DEVICES:-0,1}; FIRST=${GPUS%%,*}
export CUDA_VISIBLE_DEVICES=$GPUS
say() { echo "$*" | tee -a $LOG; }
say "convertfsdp on GPUs $GPUS ($(date -u +%H:%M:%S))"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'gpus', torch.cuda.device_count(), torch.cuda.get_device_name(0))" 2>&1 | tee -a $LOG
python3 -c "from longforge.data.corpus import prose_documents; print(len(prose_documents(('stdlib','numpy','torch'), \
cache_dir='/tmp/lfcache')), 'prose docs')" >> $LOG 2>&1

# 1. correctness on two GPUs (~1 min)
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/convert/test_fsdp.py >> $LOG 2>&1
say "gpu test rc=$? ($(grep -E 'passed|failed|error' $LOG | tail -1))"

# 2. the Qwen3-0.6B-shaped teacher
CUDA_VISIBLE_DEVICES=$FIRST timeout 90 python3 scripts/make_random_teacher.py --shape qwen3-0.6b --out $W/q06 >> $LOG 2>&1
say "random teacher rc=$?"
export LONGFORGE_BACKEND_LIGHTNING=naive
ARGS="--teacher $W/q06 --recipe hypenet --keep-layers 3,10,17,24 --stages 1,select,2,3 --no-progress \
 --tokens-per-stage 48K,48K,32K stage1.batch_size=8 stage2.batch_size=8 stage1.seq_len=512 stage2.seq_len=512 \
 stage3.seq_len=4096 stage3.batch_size=1 stage1.warmup_steps=2 stage2.warmup_steps=2 stage3.warmup_steps=0 \
 report.samples=0 report.loss_batches=1 eval_batch_size=4 max_shard_size=2GB"
TORCHRUN="python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m longforge.cli convert"
DEADLINE=${CONVERTFSDP_DEADLINE:-510}  # seconds of this script; each run's limit is cut to what is left
run() {  # name limit override command...
  local name=$1 limit=$2 extra=$3; shift 3
  local t0=$SECONDS left=$((DEADLINE - SECONDS))
  [ $left -lt $limit ] && limit=$left
  if [ $limit -lt 60 ]; then say "$name skipped (time)"; return; fi
  timeout $limit "$@" --out $W/$name $ARGS $extra > $W/$name.log 2>&1
  local rc=$?
  say "$name rc=$rc in $((SECONDS - t0)) s"; grep -v "Writing model\|Loading weights" $W/$name.log | tail -25 >> $LOG
}
run fsdp 180 parallel=fsdp $TORCHRUN
CUDA_VISIBLE_DEVICES=$FIRST run single 140 device=cuda python3 -m longforge.cli convert
run replicate 140 parallel=replicate $TORCHRUN
RUNS="single=$W/single fsdp=$W/fsdp"; [ -d $W/replicate ] && RUNS="$RUNS replicate=$W/replicate"
timeout 30 python3 scripts/convert_fsdp_compare.py --out $O --teacher "random Qwen3-0.6B shape" $RUNS >> $LOG 2>&1
say "compare rc=$?"
[ -f $O/results.md ] && cat $O/results.md
say "done in $SECONDS s; files: $(ls $O | tr '\n' ' ')"
