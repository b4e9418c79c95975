#!/usr/bin/env bash
# The paper setting on ONE GPU: TCL and CE on CIFAR-10 with 50% symmetric noise, PreAct ResNet-18.
#
#   bench/gpu_reproduce.sh EPOCHS          # 200 = the paper's length; fewer keep the warm-ups' 1/10 share
#
# TCL: configs/cifar10_tcl_1gpu_exact.yaml (the reference's global batch of 1024 as 8 exact micro-batches,
# fp16, activation checkpointing); CE: configs/cifar10_ce.yaml (batch 256). Each run lives in
# $RUNS/<method>_sym50_e<EPOCHS> and is always started with --resume, so running this again (a new
# session, a new machine with the run directory copied back) continues where it stopped. With
# TIME_BUDGET (e.g. 9m) each train.py stops cleanly with a checkpoint before it; the script then exits 3:
# run it again. After every session the runs' figures are upserted into BENCHMARKS.md (one row per run,
# replaced in place, never duplicated).
#
# Environment: DATA (torchvision's CIFAR-10 folder, the JPEG image folder or its tarball; default
# bench/gpu_payload/cifar10-jpeg.tar.gz, else ../shared/data/cifar10-jpeg.tar.gz), TIME_BUDGET, RUNS
# (default bench/out/reproduce), EXTRA (more key=value overrides for both runs), BENCHMARKS (the file
# the table goes to, default BENCHMARKS.md), PYTHON.
set -euo pipefail
EPOCHS=${1:?usage: bench/gpu_reproduce.sh EPOCHS   (200 = the paper length)}
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
RUNS=${RUNS:-bench/out/reproduce}
TIME_BUDGET=${TIME_BUDGET:-}
EXTRA=${EXTRA:-}
mapfile -t DATA_ARGS < <($PYTHON bench/gpu_reproduce.py data-args ${DATA:+--data "$DATA"})
WARMUP=$(( EPOCHS >= 20 ? EPOCHS / 10 : 1 ))
COMMON=(data.noise_type=symmetric data.noise_rate=0.5 "train.epochs=$EPOCHS" "optim.warmup_epochs=$WARMUP"
        data.num_workers=2 "${DATA_ARGS[@]}")
[ -n "$TIME_BUDGET" ] && COMMON+=("train.time_budget=$TIME_BUDGET")
# shellcheck disable=SC2206  # EXTRA is a list of key=value words
COMMON+=($EXTRA)

stopped=0
run() {  # run METHOD PRESET [overrides...]
  local method=$1 preset=$2 dir="$RUNS/${1}_sym50_e$EPOCHS"; shift 2
  if $PYTHON bench/gpu_reproduce.py done "$dir" "$EPOCHS"; then echo "$dir: all $EPOCHS epochs done"; return; fi
  mkdir -p "$dir" && echo "$preset${EXTRA:+ + $EXTRA}" > "$dir/preset.txt"
  local log; log="$dir/session_$(date -u +%Y%m%d_%H%M%S).log"
  $PYTHON train.py --config "$preset" "${COMMON[@]}" "$@" --output-dir "$dir" --resume 2>&1 | tee "$log"
  if grep -q "time budget or SIGTERM" "$log"; then stopped=1; fi
}

run tcl configs/cifar10_tcl_1gpu_exact.yaml "tcl.warmup_epochs=$WARMUP"
[ "$stopped" = 0 ] && run ce configs/cifar10_ce.yaml
$PYTHON bench/gpu_reproduce.py table --benchmarks "${BENCHMARKS:-BENCHMARKS.md}" --epochs "$EPOCHS" "$RUNS/tcl_sym50_e$EPOCHS" "$RUNS/ce_sym50_e$EPOCHS"
if [ "$stopped" = 1 ]; then echo "stopped by TIME_BUDGET: run bench/gpu_reproduce.sh $EPOCHS again to continue"; exit 3; fi
