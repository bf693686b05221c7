#!/usr/bin/env bash
# The conversion's GPU work alone on one H200 (tiny-sala, tiny-sala-b and the Qwen3-0.6B-shaped run share it).
set -u
GPU_TINY=0 GPU_TINY_B=0 GPU_06B=0 bash scripts/gpu/convert.sh > /tmp/convert.out 2>&1
tail -60 /tmp/convert.out
R=$OUT/convert
if [ -d $R/model ]; then mkdir -p $OUT/shards; mv $R/model/*.safetensors $OUT/shards/; fi
cp /tmp/convert.out $R/
tar czf $OUT/results.tgz -C $OUT convert && rm -rf $R && ls -la $OUT $OUT/shards 2>/dev/null
