#!/usr/bin/env bash
# benchmarks/gpu_vs_trl.py on a lent GPU machine (no internet), from what
# benchmarks/gpu_bundle.py packed into .gpu-bundle/ here. One device call:
#   command "bash benchmarks/gpu_run.sh", carry [".gpu-bundle"], timeout_s 590
# (kind nvidia-h200 where one is lent: issue 17 measured TRL at 77 GB in float32 at the
# 1.5B shape there, about all an H100's 78 GiB holds; in bf16 it should need less).
# SHAPES (default: both, 135M first), STEPS and GENERATION pass on to the benchmark. Each
# shape runs in its own process and writes $OUT/SHAPE.json and its tables as soon as it is
# done, so a call cut short keeps what finished; everything printed is also in $OUT/log.
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-.gpu-bundle}
OUT=${OUT:-/tmp/gpu-run}
SITE=${SITE:-/tmp/site}
PYTHON=${PYTHON:-python3}

run() {
    if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
        echo "no GPU here: the benchmark's small CPU version, 135M shape only"
        SHAPES=${SHAPES:-smollm2-135m}
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$BUNDLE"/wheels/*.whl || return
    export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    "$PYTHON" benchmarks/gpu_bundle.py --out "$BUNDLE" --check || return
    local status=0 started shape
    for shape in ${SHAPES:-smollm2-135m qwen2.5-1.5b}; do
        started=$SECONDS
        "$PYTHON" benchmarks/gpu_vs_trl.py --shapes "$shape" --base "$BUNDLE/smollm2" --json "$OUT/$shape.json" \
            ${STEPS:+--steps "$STEPS"} ${GENERATION:+--generation "$GENERATION"} || status=$?
        echo "$shape: $((SECONDS - started)) s"
    done
    return $status
}

if [ ! -d "$BUNDLE/wheels" ]; then
    echo "no $BUNDLE/wheels: run '.venv/bin/python benchmarks/gpu_bundle.py' here first, and carry $BUNDLE" >&2
    exit 2
fi
mkdir -p "$OUT"
run 2>&1 | tee -a "$OUT/log"
exit "${PIPESTATUS[0]}"
