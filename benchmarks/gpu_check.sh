#!/usr/bin/env bash
# The first run on a CUDA machine, in one go and under a hard time budget (default 470 s):
#
#   1. pytest -m gpu                       the gpu-marked tests (AMP training steps on CUDA, ...)
#   2. bench_training.py --device cuda     per CNN recipe: AMP step images/s, peak GPU memory,
#                                          AMP dtype, uint8 loader / step ratio
#   3. bench_mil.py --extraction           gcn_mil block features: blocks/s, peak memory, autocast
#   4. snakemake                           one job of each GPU rule of the default config with
#                                          device=cuda and --resources gpu=1 (and the data rules
#                                          upstream), in a scratch copy of the workflow
#
# then one summary table (one row per recipe and per GPU rule, and every failure). It exits
# non-zero when any step failed or ran out of time, and prints the summary in every case.
#
# Usage, from a fresh clone (the venv is made by `make setup` when missing):
#
#   bash benchmarks/gpu_check.sh                       # on the GPU machine
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh  # the same pipeline on the CPU, tiny sizes,
#                                                      # Snakemake as dry runs (tests do this)
#
# Environment: GPU_CHECK_BUDGET (seconds, default 470), GPU_CHECK_OUT (folder for logs and the
# JSON lines; default a new temporary folder), PYTHON (default .venv/bin/python).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-470}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
PYTHON=${PYTHON:-.venv/bin/python}
# The rules that declare gpu=1 (tests/test_benchmarks.py checks this list against the rules).
GPU_RULES=(train_effnet_ham train_siim2020 train_gradcam_overlap
    extract_gcn_mil_features train_gcn_mil evaluate_gcn_mil)
# Those no other GPU rule needs: their targets pull in the rest.
LEAF_GPU_RULES=(train_effnet_ham train_siim2020 train_gradcam_overlap evaluate_gcn_mil)
case "$DEVICE" in
    cuda | cpu) ;;
    *)
        echo "GPU_CHECK_DEVICE must be cuda or cpu, not '$DEVICE'" >&2
        exit 2
        ;;
esac
mkdir -p "$OUT"
STEPS="$OUT/steps.tsv"
: >"$STEPS"
: >"$OUT/bench.jsonl"
STARTED=$SECONDS

summary() {
    "$PYTHON" benchmarks/gpu_check_summary.py "$OUT" --rules "${GPU_RULES[@]}"
}

# run NAME COMMAND...: one step under what is left of the budget; its log is $OUT/NAME.log.
run() {
    local name=$1 left rc started
    shift
    left=$((BUDGET - (SECONDS - STARTED)))
    if ((left < 10)); then
        printf '%s\t%s\t%s\n' "$name" "skipped: budget spent" 0 >>"$STEPS"
        return 1
    fi
    echo "== $name (${left} s left of ${BUDGET} s): $*"
    started=$SECONDS
    timeout --kill-after=10 "$left" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    if ((rc == 124 || rc == 137)); then
        rc="timeout after ${left} s"
    fi
    printf '%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - started)) >>"$STEPS"
    tail -n 3 "$OUT/$name.log"
    [[ "$rc" == 0 ]]
}

trap 'summary; exit 130' INT TERM

if [[ ! -x "$PYTHON" ]]; then
    run setup make setup
fi
# Absolute, for the steps that run in the scratch copy of the workflow.
if [[ "$PYTHON" == */* ]]; then
    PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
fi
# Without the device nothing else can pass (and the workflow would run its data rules first).
if ! run device "$PYTHON" -c "
import torch
if '$DEVICE' == 'cuda':
    assert torch.cuda.is_available(), 'torch sees no CUDA device'
    print(torch.cuda.get_device_name(0), torch.version.cuda, 'bf16:', torch.cuda.is_bf16_supported())
print('torch', torch.__version__)"; then
    summary
    exit 1
fi

if [[ "$DEVICE" == cuda ]]; then
    # Paper sizes; large device batches; 4 loader workers as in config/isic.yaml.
    TRAINING_SIZES=(--workers 4 --threads 4 --repeat 2 --device-batch 64 --no-cpu-step)
    MIL_SIZES=(--images 4)
    WORKFLOW=(--cores all)
else
    TRAINING_SIZES=(--workers 0 --threads 2 --repeat 1 --n 8 --batch 4 --size 32
        --device-batch 2 --no-cpu-step)
    MIL_SIZES=(--images 1 --quick)
    WORKFLOW=(--cores 2 --dry-run)
fi

# -m gpu comes after pyproject's addopts (-m "not slow") and replaces it: every gpu test runs,
# slow ones too. Without CUDA they are skipped (the CPU mode only proves they collect).
# Only the test files that use the marker are collected (the whole suite takes long to import).
mapfile -t GPU_TEST_FILES < <(grep -l "mark.gpu" tests/test_*.py)
run pytest "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider "${GPU_TEST_FILES[@]}"
run bench_training "$PYTHON" benchmarks/bench_training.py --recipe all --device "$DEVICE" \
    "${TRAINING_SIZES[@]}" --summary "$OUT/bench.jsonl"
run bench_mil "$PYTHON" benchmarks/bench_mil.py --extraction --device "$DEVICE" \
    "${MIL_SIZES[@]}" --summary "$OUT/bench.jsonl"

# The default config in a scratch copy (results, resources and .snakemake stay out of the clone):
# a dry run plans the GPU rules, then one job of each runs (gpu_check_targets.py says why one).
WORKDIR="$OUT/workflow"
mkdir -p "$WORKDIR"
for item in Snakefile workflow scripts config envs profiles src docs; do
    cp -r "$item" "$WORKDIR/"
done
# --config, --resources and --until take every word after them: targets go first.
SNAKEMAKE="cd '$WORKDIR' && '$PYTHON' -m snakemake"
run plan bash -c "$SNAKEMAKE --dry-run --cores 1 --config device=$DEVICE --until ${LEAF_GPU_RULES[*]}"
TARGETS=$("$PYTHON" benchmarks/gpu_check_targets.py "$OUT/plan.log" "${LEAF_GPU_RULES[@]}")
if [[ -n "$TARGETS" ]]; then
    run snakemake bash -c "$SNAKEMAKE ${TARGETS//$'\n'/ } ${WORKFLOW[*]} --config device=$DEVICE \
        --resources gpu=1"
else
    printf '%s\t%s\t%s\n' snakemake "no targets from the plan" 0 >>"$STEPS"
fi
if [[ -d "$WORKDIR/benchmarks/results" ]]; then
    cp -r "$WORKDIR/benchmarks/results" "$OUT/rule_benchmarks"
fi

trap - INT TERM
summary
