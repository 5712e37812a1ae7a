#!/usr/bin/env bash
# One prepared check for a GPU machine (issue 22, item 3): start to finish in <= 8 minutes.
#
# Usage: bash benchmarks/device_check.sh [--out DIR] [--data-dir DIR] [--train-minutes M] [--budget-s S]
#                                        [--tests-budget S] [--eager-budget S] [--compile-budget S]
#                                        [--seg-budget S] [--smoke]
#
# Parts, each with its own time budget, each failing soft (a failed part is recorded, the script goes on):
#   a. tests:  python3 -m pytest -q --device cuda --dtype all tests/test_devices.py tests/test_host_sync.py
#              (stopped with SIGINT at its budget, so pytest still prints the summary of what ran)
#   b. speed:  benchmarks/speed.py --sections 4 (SalfMix / HybridMix v3, exact / cached / lowres saliency,
#              ratio over the plain step): full-width PreActResNet-18, batch 128, 32 px and 64 px, bf16
#              autocast + channels_last, torch.compile off and on (model only, mode default)
#   b2. seg:   benchmarks/speed.py --task seg (section 5: train_seg.py's tinyseg step, batch 32 at 128x168,
#              fp32, SalfMix / HybridMix v3 with the exact, cached and lowres saliency over the plain step)
#   c. train:  benchmarks/device_train.py train: baseline / Cutout / SalfMix (cached saliency) on
#              --data-dir (an ImageFolder with train/ and test/, held on the GPU), as many epochs as fit
#              --train-minutes and the time left; skipped when the folder is absent
# Every step is also cut by the overall deadline (--budget-s, default 460 s; a step stopped at its budget
# gets 10 s more to exit); a step that finds no time left, or whose budget is under 15 s, is recorded as
# skipped. Timeouts are per step. Budgets and --train-minutes are whole numbers.
# The budgets: --tests-budget 120, --eager-budget 45 and --compile-budget 100 per speed run, --seg-budget 40,
# the rest for part c (--train-minutes 2 at most).
#
# Output, all under ONE folder (--out DIR, relative to where the script is run; default $OUT if set, else
# device-check/):
#   device_check.json, device_check.md   the report (device_train.py report)
#   env.json, meta.json, runs.tsv        the card and versions, the run's settings, one line per command
#   tests.log, speed-<size>px-<eager|compile>.{json,md,log}, seg.{json,md,log}, train.json, train.log
#
# --smoke: tiny sizes on the CPU so that the whole script runs in well under a minute and cannot rot:
#   part a is SKIPPED (pytest's start-up alone takes ~10 s on a 2-core CPU; the CUDA test run is what
#   matters and needs a GPU); part b: width 0.125, batch 8, 16 px, 6 repeats, bf16 + channels_last,
#   compile OFF (even dynamo alone, `--compile --compile-backend eager`, adds ~20 s on 2 CPU cores);
#   part b2: batch 2 at 16x24, 6 repeats;
#   part c: 64 generated 16 px images, 1 epoch, width 0.125, batch 8.
#
# Environment: PYTHON (default python3) with torch, torchvision, timm, numpy; the project is put on
# PYTHONPATH (no install needed).

set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

PY=${PYTHON:-python3}
OUT_DIR=${OUT:-device-check}
SMOKE=0
DATA_DIR=""
TRAIN_MINUTES=2
BUDGET_S=460
TESTS_BUDGET=120
EAGER_BUDGET=45
COMPILE_BUDGET=100
SEG_BUDGET=40
RESERVE_S=10 # kept for the report at the end
PYTEST_MAIN='import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(pytest.main(sys.argv[1:]))'

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case "$1" in
        --out | --data-dir | --train-minutes | --*-budget | --budget-s)
            if (($# < 2)); then echo "device_check.sh: $1 needs a value (see --help)" >&2; exit 2; fi ;;
    esac
    case "$1" in
        --out) OUT_DIR=$2; shift 2 ;;
        --out=*) OUT_DIR=${1#*=}; shift ;;
        --data-dir) DATA_DIR=$2; shift 2 ;;
        --data-dir=*) DATA_DIR=${1#*=}; shift ;;
        --train-minutes) TRAIN_MINUTES=$2; shift 2 ;;
        --budget-s) BUDGET_S=$2; shift 2 ;;
        --tests-budget) TESTS_BUDGET=$2; shift 2 ;;
        --eager-budget) EAGER_BUDGET=$2; shift 2 ;;
        --compile-budget) COMPILE_BUDGET=$2; shift 2 ;;
        --seg-budget) SEG_BUDGET=$2; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "device_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ -z $DATA_DIR ]]; then
    for candidate in "$ROOT/../shared/data/cifar10-5k" "$ROOT/shared/data/cifar10-5k"; do
        if [[ -d $candidate ]]; then DATA_DIR=$candidate; break; fi
    done
fi

# Numbers first: a bad one must stop the script before it removes an earlier run's results.
for option in budget-s:$BUDGET_S tests-budget:$TESTS_BUDGET eager-budget:$EAGER_BUDGET \
    compile-budget:$COMPILE_BUDGET seg-budget:$SEG_BUDGET train-minutes:$TRAIN_MINUTES; do
    if [[ ! ${option#*:} =~ ^[0-9]+$ ]]; then
        echo "device_check.sh: --${option%%:*} must be a whole number >= 0, got '${option#*:}'" >&2
        exit 2
    fi
done

# --out is relative to where the script is run (resolved before moving to the repository root).
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$ROOT" || exit 2
# An earlier run's files go first: a step that fails now must not leave the old result in the report.
rm -f "$OUT_DIR"/runs.tsv "$OUT_DIR"/env.json "$OUT_DIR"/meta.json "$OUT_DIR"/tests.log \
    "$OUT_DIR"/speed-*.{json,md,log} "$OUT_DIR"/seg.{json,md,log} "$OUT_DIR"/train.{json,log} \
    "$OUT_DIR"/device_check.*
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

START=$SECONDS
DEADLINE=$((START + BUDGET_S))
STARTED_AT=$(date -Iseconds)

if ((SMOKE)); then
    DEVICE=cpu
    SIZES=(16)
    WIDTH=0.125
    BATCH=8
    REPEATS=6 # the fewest rounds with a 95 % interval of the median ratio
    SPEED_EXTRA=(--warmup 1 --threads 1)
    COMPILE_MODES=(eager)
    SEG_ARGS=(--seg-batch 2 --seg-size 16x24)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    DEVICE=cuda
    SIZES=(32 64)
    WIDTH=1
    BATCH=128
    REPEATS=30
    SPEED_EXTRA=(--warmup 2)
    COMPILE_MODES=(eager compile)
    SEG_ARGS=(--seg-batch 32 --seg-size 128x168)
fi

# Seconds a step may run: its own budget, cut by the overall deadline (less the report's reserve).
clip() {
    local want=$1 left=$((DEADLINE - SECONDS - RESERVE_S))
    if ((left < want)); then echo "$left"; else echo "$want"; fi
}

# record PART NAME STATUS RC SECONDS BUDGET LOG COMMAND [REASON]: one line of runs.tsv
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "${9:-}" \
        >>"$OUT_DIR/runs.tsv"
}

# run_step PART NAME BUDGET LOG CMD...: run CMD under `timeout` (SIGINT first, SIGKILL 10 s later), tee to LOG
run_step() {
    local part=$1 name=$2 want=$3 log=$4
    shift 4
    local budget rc status t0 reason=""
    budget=$(clip "$want")
    local cmd
    cmd=$(printf '%q ' "$@")
    if ((budget < 15)); then
        reason="no time left in the overall budget"
        if ((want < 15)); then reason="its budget of $want s is below the 15 s a step needs"; fi
        echo "[device-check] $part/$name: skipped, $reason"
        record "$part" "$name" skipped - 0 "$budget" "" "$cmd" "$reason"
        return 0
    fi
    echo "[device-check] $part/$name (budget ${budget} s): $cmd"
    t0=$SECONDS
    timeout -s INT -k 10 "$budget" "$@" > >(tee "$OUT_DIR/$log") 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout; reason="stopped at its budget of ${budget} s" ;;
        *) status=failed; reason="exit status $rc" ;;
    esac
    echo "[device-check] $part/$name: $status ($((SECONDS - t0)) s)"
    record "$part" "$name" "$status" "$rc" "$((SECONDS - t0))" "$budget" "$log" "$cmd" "$reason"
}

# --- the card ----------------------------------------------------------------------------------------------
"$PY" benchmarks/device_train.py env --device "$DEVICE" --out "$OUT_DIR/env.json" ||
    echo "[device-check] could not read the card (torch import failed?)" >&2

speed_config=$(printf '{"model": "preactresnet18", "width": %s, "batch": %s, "sizes": [%s], "amp": "bf16", "channels_last": true, "repeats": %s}' \
    "$WIDTH" "$BATCH" "$(IFS=,; echo "${SIZES[*]}")" "$REPEATS")
write_meta() {
    printf '{"smoke": %s, "started_at": "%s", "wall_s": %s, "budget_s": %s, "data_dir": "%s", "speed": %s}\n' \
        "$([[ $SMOKE == 1 ]] && echo true || echo false)" "$STARTED_AT" "$((SECONDS - START))" "$BUDGET_S" \
        "$DATA_DIR" "$speed_config" >"$OUT_DIR/meta.json"
}
write_meta

# --- a. tests ----------------------------------------------------------------------------------------------
if ((SMOKE)); then
    record tests pytest skipped - 0 - "" "$PY -m pytest -q --device cuda --dtype all tests/test_devices.py tests/test_host_sync.py" \
        "smoke mode: the CUDA test run needs a GPU"
else
    # pytest in-process with SIGINT's default handler restored: a script started in the background
    # inherits SIGINT ignored, and then timeout's SIGINT would not make pytest print its summary.
    run_step tests pytest "$TESTS_BUDGET" tests.log "$PY" -c "$PYTEST_MAIN" \
        -q --device cuda --dtype all -p no:cacheprovider tests/test_devices.py tests/test_host_sync.py
fi

# --- b. step time ratios -----------------------------------------------------------------------------------
for mode in "${COMPILE_MODES[@]}"; do
    for size in "${SIZES[@]}"; do
        name="${size}px-$mode"
        want=$EAGER_BUDGET
        extra=()
        if [[ $mode == compile ]]; then want=$COMPILE_BUDGET; extra=(--compile); fi
        run_step speed "$name" "$want" "speed-$name.log" \
            "$PY" benchmarks/speed.py --sections 4 --device "$DEVICE" --width "$WIDTH" --step-batch "$BATCH" \
            --step-size "$size" --step-repeats "$REPEATS" --amp bf16 --channels-last \
            "${SPEED_EXTRA[@]}" "${extra[@]}" --json "$OUT_DIR/speed-$name.json" --out "$OUT_DIR/speed-$name.md"
    done
done

# --- b2. segmentation step time ratios (speed.py section 5) ------------------------------------------------
run_step seg seg "$SEG_BUDGET" seg.log \
    "$PY" benchmarks/speed.py --task seg --device "$DEVICE" "${SEG_ARGS[@]}" --step-repeats "$REPEATS" \
    "${SPEED_EXTRA[@]}" --json "$OUT_DIR/seg.json" --out "$OUT_DIR/seg.md"

# --- c. training -------------------------------------------------------------------------------------------
if ((SMOKE)); then
    run_step train train 120 train.log \
        "$PY" benchmarks/device_train.py train --smoke --device cpu --width "$WIDTH" --batch "$BATCH" \
        --amp bf16 --channels-last --epochs 1 --threads 1 --out "$OUT_DIR/train.json"
elif [[ -z $DATA_DIR || ! -d $DATA_DIR/train ]]; then
    record train train skipped - 0 - "" "-" \
        "no data set at ${DATA_DIR:-../shared/data/cifar10-5k} (give --data-dir DIR with train/ and test/)"
else
    left=$((DEADLINE - SECONDS - RESERVE_S))
    # The data decode, the step timing and the evaluation take ~30 s beyond the training itself.
    minutes=$(awk -v m="$TRAIN_MINUTES" -v l="$left" \
        'BEGIN { s = m * 60; if (l - 40 < s) s = l - 40; if (s < 0) s = 0; printf "%.2f", s / 60 }')
    if ((left < 60)); then
        record train train skipped - 0 "$left" "" "-" "no time left in the overall budget"
    else
        run_step train train "$left" train.log \
            "$PY" benchmarks/device_train.py train --data-dir "$DATA_DIR" --device cuda --width 1 --batch 128 \
            --amp bf16 --channels-last --minutes "$minutes" --deadline-s $((left - 5)) \
            --out "$OUT_DIR/train.json"
    fi
fi

# --- report ------------------------------------------------------------------------------------------------
write_meta
"$PY" benchmarks/device_train.py report "$OUT_DIR" || {
    echo "[device-check] the report failed; the raw results are in $OUT_DIR" >&2
    exit 1
}
echo "[device-check] done in $((SECONDS - START)) s: $OUT_DIR/device_check.json, $OUT_DIR/device_check.md"
