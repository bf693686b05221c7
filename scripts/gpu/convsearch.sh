#!/usr/bin/env bash
# Conversion search (issue 6): many variants of recipes/convert/tiny-sala.yaml on the embedded tiny teacher at once,
# SEARCH_PER_GPU per GPU (the 28M model leaves an H200 mostly idle), each converted without the HyPE sweep and the
# teacher's RULER, then probed on the hybrid alone (scripts/gpu/convprobe.py: RULER at 4K/16K/8K, two HyPE alphas,
# JSON after every cell). The best variant's weights come back in $OUT/shards, everything else in $OUT/results.tgz.
#   OUT=dir [SEARCH_DEADLINE=500] [SEARCH_GPUS=0,1,2,3] bash scripts/gpu/convsearch.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
export LONGFORGE_BACKEND_LIGHTNING=naive OMP_NUM_THREADS=3 TOKENIZERS_PARALLELISM=false
DEADLINE=${SEARCH_DEADLINE:-500}   # seconds from this script's start when every variant must stop
IFS=, read -ra GPUS <<< "${SEARCH_GPUS:-0,1,2,3}"
R=$OUT/run; W=/tmp/search; mkdir -p $R $W
python3 -c "from longforge.data.corpus import prose_documents; print(len(prose_documents(('stdlib','numpy','torch'), cache_dir='/tmp/lfcache')), 'prose docs')" 2>&1 | tail -1
COMMON="--config recipes/convert/tiny-sala.yaml --no-progress --stages 1,select,2,3"
OVR="eval_batch_size=30 report.samples=0"   # key=value overrides go after every flag (argparse)
# name | overrides (the recipe's budgets: 300K / 1.4M / 450K tokens, stage 2 at 512, stage 3 at 4K)
# Round 1 (benchmarks/results/convert_search_h200_20261128.md) kept 0,1,5,7 / 0,X,5,7 and tried stage settings;
# round 2 (SEARCH_ROUND=2, the default) explores around its best: keep 0,5,6,7 with stage-2 lr 2e-3.
ROUND1=(
  "k0157|--keep-layers 0,1,5,7"
  "k0567|--keep-layers 0,5,6,7"
  "k0457|--keep-layers 0,4,5,7"
  "k0357|--keep-layers 0,3,5,7"
  "k0257|--keep-layers 0,2,5,7"
  "k057|--keep-layers 0,5,7"
  "k0567-lr3e4|--keep-layers 0,5,6,7 stage2.lr=3e-4"
  "k0567-s2at1k|--keep-layers 0,5,6,7 stage2.seq_len=1024 stage2.batch_size=16"
  "k0567-s1150k|--keep-layers 0,5,6,7 --tokens-per-stage 150K,1.55M,450K"
  "k0567-mix|--keep-layers 0,5,6,7 'mix={\"prose\":0.2,\"niah\":0.35,\"multikey\":0.25,\"kv\":0.05,\"vt\":0.1,\"facts\":0.05}'"
  "k0567-seed1|--keep-layers 0,5,6,7 --seed 1"
  "k0567-s3lr3e4|--keep-layers 0,5,6,7 stage3.lr=3e-4 stage3.min_lr=3e-4"
  "hypesel|select.mode=hype select.samples=10 select.tasks=[niah_single_2,niah_multikey_1,vt]"
  "k0567-s3at2k|--keep-layers 0,5,6,7 stage3.seq_len=2048 stage3.batch_size=16"
  "k0567-s2lr2e3|--keep-layers 0,5,6,7 stage2.lr=2e-3"
  "k0567-s2long|--keep-layers 0,5,6,7 --tokens-per-stage 300K,1.75M,100K"
)
MIX="'mix={\"prose\":0.2,\"niah\":0.35,\"multikey\":0.25,\"kv\":0.05,\"vt\":0.1,\"facts\":0.05}'"
ROUND2=(
  "a-seed1|--keep-layers 0,5,6,7 --seed 1 stage2.lr=2e-3"
  "a-lr3e3|--keep-layers 0,5,6,7 stage2.lr=3e-3"
  "a-lr4e3|--keep-layers 0,5,6,7 stage2.lr=4e-3"
  "a-mix|--keep-layers 0,5,6,7 stage2.lr=2e-3 $MIX"
  "b-k0257|--keep-layers 0,2,5,7 stage2.lr=2e-3"
  "b-k0257-mix|--keep-layers 0,2,5,7 stage2.lr=2e-3 $MIX"
  "b-bs16|--keep-layers 0,5,6,7 stage2.lr=2e-3 stage2.batch_size=16"
  "b-bs16-lr1e3|--keep-layers 0,5,6,7 stage2.lr=1e-3 stage2.batch_size=16"
  "c-bs8|--keep-layers 0,5,6,7 stage2.lr=2e-3 stage2.batch_size=8"
  "c-s1lr3e3|--keep-layers 0,5,6,7 stage2.lr=2e-3 stage1.lr=3e-3"
  "c-k057|--keep-layers 0,5,7 stage2.lr=2e-3"
  "c-s3short|--keep-layers 0,5,6,7 --tokens-per-stage 300K,1.75M,100K stage2.lr=2e-3"
  "d-s1150k|--keep-layers 0,5,6,7 --tokens-per-stage 150K,1.55M,450K stage2.lr=2e-3"
  "d-warm20|--keep-layers 0,5,6,7 stage2.lr=2e-3 stage2.warmup_steps=20"
  "d-minlr1e4|--keep-layers 0,5,6,7 stage2.lr=2e-3 stage2.min_lr=1e-4"
  "d-mix-bs16|--keep-layers 0,5,6,7 stage2.lr=2e-3 stage2.batch_size=16 $MIX"
)
if [ "${SEARCH_ROUND:-2}" = 1 ]; then VARIANTS=("${ROUND1[@]}"); else VARIANTS=("${ROUND2[@]}"); fi
i=0
for v in "${VARIANTS[@]}"; do
  name=${v%%|*}; args=${v#*|}; gpu=${GPUS[$(( i % ${#GPUS[@]} ))]}; i=$((i + 1))
  (
    left=$(( DEADLINE - SECONDS )); [ $left -lt 30 ] && exit 0
    CUDA_VISIBLE_DEVICES=$gpu timeout $left bash -c "python3 -m longforge.cli convert $COMMON --out $W/$name $args $OVR" \
      > $R/$name.log 2>&1; echo "convert rc=$?" >> $R/$name.log
    left=$(( DEADLINE - SECONDS )); [ $left -lt 20 ] && exit 0
    CUDA_VISIBLE_DEVICES=$gpu timeout $left python3 scripts/gpu/convprobe.py $W/$name ${PROBE_ARGS:---alphas 1000} --out $R/$name.probe.json \
      >> $R/$name.log 2>&1; echo "probe rc=$?" >> $R/$name.log
  ) &
  sleep 2
done
wait
echo "search done at ${SECONDS}s"
for d in $W/*/; do n=$(basename $d); cp $d/state.json $R/$n.state.json 2>/dev/null; cp $d/report.json $R/$n.report.json 2>/dev/null; done
python3 - $R <<'PY' | tee $R/summary.txt
import json, sys, glob, os
rows = []
for f in sorted(glob.glob(sys.argv[1] + "/*.probe.json")):
    r = json.load(open(f)); best = {}
    for c in r["cells"]:
        best.setdefault(c["alpha"], {})[c["length"]] = c["score"]
    for alpha, by in best.items():
        mean = sum(by.values()) / len(by)
        rows.append((mean, len(by), r["run"], alpha, by))
rows.sort(key=lambda x: (x[1], x[0]), reverse=True)
for mean, n, run, alpha, by in rows:
    print(f"{run:16s} {str(alpha):10s} n={n} mean={mean:5.1f} " + " ".join(f"{k}:{v:.1f}" for k, v in sorted(by.items())))
print("BEST", rows[0][2] if rows else "none")
PY
BEST=$(tail -1 $R/summary.txt | awk '{print $2}')
if [ -d "$W/$BEST/model" ]; then
  mkdir -p $OUT/shards $R/best_model; cp $W/$BEST/model/*.safetensors $OUT/shards/; cp $W/$BEST/model/*.json $R/best_model/
  echo "$BEST" > $R/best_model/NAME
fi
tar czf $OUT/results.tgz -C $R . && rm -rf $R && ls -la $OUT $OUT/shards 2>/dev/null
