#!/usr/bin/env bash
# GPU work of the HALO conversion issue on one H200: two variants of the sala recipe (attn_ratio 0.5; the second moves 200K tokens from stage 1 to a stage 3 at a higher lr) on the embedded tiny teacher,
# in parallel (the tiny model leaves the GPU mostly idle), then the one meeting more of the targets is kept.
# Run from the repo root with OUT set; writes $OUT/convert/ (reports, logs, targets.txt, model/ of the chosen run).
# The reference ops are used (LONGFORGE_BACKEND_*=naive): at 512–16K tokens on an 8-layer 28M model they cost
# little, and they keep Triton autotuning out of a run that has a hard time limit.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export LONGFORGE_BACKEND_ATTENTION=naive LONGFORGE_BACKEND_SPARSE_ATTENTION=naive LONGFORGE_BACKEND_LIGHTNING=naive
LIMIT=${CONVERT_LIMIT:-500}
O=$OUT/convert; W=/tmp/convert; mkdir -p $O $W
python3 -c "from longforge.data.corpus import prose_documents; print(len(prose_documents(('stdlib','numpy','torch'), cache_dir='/tmp/lfcache')), 'prose docs')" 2>&1 | tail -1
# Evaluation sized to fit the time limit (the full-size sweeps of the recipe took > 5 min per run on one GPU):
EVAL="select.samples=10 select.tasks=[niah_single_2,niah_multikey_1,vt] hype.alphas=[128,500,2000] hype.samples=10
 hype.tasks=[niah_single_2,niah_multikey_1] report.samples=10
 report.tasks=[niah_single_1,niah_single_2,niah_multikey_1,niah_multivalue] report.lengths=[1024,2048,4096,8192,16384]"
COMMON="--config recipes/convert/tiny-sala.yaml --no-progress"
(timeout $LIMIT python3 -m longforge.cli convert $COMMON --out $W/sala-0.5 --attn-ratio 0.5 $EVAL > $O/sala-0.5.log 2>&1;
 echo "sala-0.5 rc=$?" >> $O/sala-0.5.log) &
(timeout $LIMIT python3 -m longforge.cli convert $COMMON --out $W/sala-0.5L --attn-ratio 0.5 $EVAL \
   stage1.tokens=300000 stage3.tokens=700000 stage3.lr=3.0e-4 > $O/sala-0.5L.log 2>&1;
 echo "sala-0.5L rc=$?" >> $O/sala-0.5L.log) &
wait
for r in sala-0.5 sala-0.5L; do
  mkdir -p $O/$r; cp $W/$r/report.* $W/$r/state.json $O/$r/ 2>/dev/null; grep -v "Writing model" $O/$r.log | tail -4
done
python3 scripts/convert_targets.py $W/sala-0.5/report.json $W/sala-0.5L/report.json > $O/targets.txt 2>&1
cat $O/targets.txt
CHOSEN=$(tail -1 $O/targets.txt | awk '{print $NF}')
if [ -d "$W/$CHOSEN/model" ]; then cp -r $W/$CHOSEN/model $O/model && echo "shipping $CHOSEN (final model)"
else  # no report in time: ship the last finished stage of the first variant that has one
  for r in sala-0.5 sala-0.5L; do for s in 3 2; do
    if [ ! -d $O/model ] && [ -d $W/$r/stage$s/model ]; then
      python3 -c "import sys, torch; from longforge.models import HybridForCausalLM as M; M.from_pretrained(sys.argv[1], dtype=torch.bfloat16).save_pretrained(sys.argv[2], max_shard_size='15MB')" $W/$r/stage$s/model $O/model
      cp $W/$r/stage$s/model/tokenizer* $O/model/ 2>/dev/null; echo "shipping $r stage $s in bf16 (no report)"
    fi
  done; done
fi
for r in sala-0.5 sala-0.5L; do [ -f $O/$r/report.md ] && cat $O/$r/report.md; done
