#!/usr/bin/env bash
# Every @pytest.mark.gpu test module of the repository, the modules side by side (they compile Triton /
# FlexAttention kernels per shape: CPU-bound), each under TEST_LIMIT seconds. GPUs: CUDA_VISIBLE_DEVICES (modules
# are dealt round-robin over TEST_GPUS when given, e.g. TEST_GPUS=2,3). Writes $OUT/gputests/{<module>.log,junit_*.xml}.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
O=${OUT:-/tmp/out}/gputests; mkdir -p "$O"
IFS=, read -ra G <<< "${TEST_GPUS:-${CUDA_VISIBLE_DEVICES:-0}}"
T0=$(date +%s); i=0
for m in $(grep -rlE "mark\.gpu|@gpu\b" tests --include=test_*.py | sort); do
  name=$(basename $m .py)
  case ",${GPUTESTS_SKIP:-}," in *",$name,"*) echo "$m skipped (GPUTESTS_SKIP)"; continue ;; esac
  gpu=${G[$(( i % ${#G[@]} ))]}; i=$((i + 1))
  [ "$name" = test_fsdp ] && gpu=$(IFS=,; echo "${G[*]}")   # its GPU case wants two devices
  (CUDA_VISIBLE_DEVICES=$gpu timeout ${TEST_LIMIT:-300} python3 -m pytest -q -m gpu -p no:cacheprovider "$m" -rfE \
     --durations=5 --junitxml="$O/junit_$name.xml" > "$O/$name.log" 2>&1
   echo "$m rc=$? ($(( $(date +%s) - T0 )) s): $(grep -E '[0-9]+ (passed|failed|skipped|error)' "$O/$name.log" | tail -1)") &
done
wait
