#!/usr/bin/env bash
# Every @pytest.mark.gpu test of the repository on one GPU, each module under its own time limit (they compile
# Triton / FlexAttention kernels per shape). Writes $OUT/gputests/{tests.log,junit.xml}.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site:${PYTHONPATH:-} LONGFORGE_CACHE=/tmp/lfcache
O=${OUT:-/tmp/out}/gputests; mkdir -p "$O"
T0=$(date +%s)
for m in $(grep -rl "mark.gpu\|pytestmark = pytest.mark.gpu\|@gpu" tests --include=test_*.py | sort); do
  timeout ${TEST_LIMIT:-240} python3 -m pytest -q -m gpu -p no:cacheprovider "$m" -rf --durations=5 \
    --junitxml="$O/junit_$(basename $m .py).xml" >> "$O/tests.log" 2>&1
  echo "$m rc=$? ($(( $(date +%s) - T0 )) s): $(grep -E '[0-9]+ (passed|failed)' "$O/tests.log" | tail -1)"
done
