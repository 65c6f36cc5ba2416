#!/usr/bin/env bash
# task_check.sh: trains the synthetic-task configs and reports their accuracy (docs/evaluation.md).
# Makes one MQAR task directory (moessm task make, defaults: 8 pairs over 64 symbols, 64-token
# examples), trains every configs/task_mqar_*.json on it with `moessm train` (DEVICE, default
# cuda; STEPS overrides the configs' max_steps), scores 1,000 fresh examples with `moessm task
# eval`, and prints one line per model: answer and example accuracy next to chance (1/64 per
# answer). Logs and JSON results go to $OUT (default ./out/task_check); the runs to $RUNS
# (default /tmp/moessm-task-check, replaced each time).
# Usage: MOESSM=build/gpu/moessm DEVICE=cuda STEPS=4000 bash tools/task_check.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MOESSM=${MOESSM:-$ROOT/build/cpu/moessm}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$ROOT/out/task_check}
RUNS=${RUNS:-/tmp/moessm-task-check}
mkdir -p "$OUT"
rm -rf "$RUNS"
mkdir -p "$RUNS"
"$MOESSM" task make --task mqar --out "$RUNS/mqar" > "$OUT/task_make.log"
STEP_ARGS=()
[ -n "${STEPS:-}" ] && STEP_ARGS=(--max-steps "$STEPS" --checkpoint-every "$STEPS")
for cfg in "$ROOT"/configs/task_mqar_*.json; do
  name=$(basename "$cfg" .json)
  start=$(date +%s)
  "$MOESSM" train --config "$cfg" --data "$RUNS/mqar" --out "$RUNS/$name" --device "$DEVICE" "${STEP_ARGS[@]}" \
    > "$OUT/$name.train.log" 2>&1
  "$MOESSM" task eval --model "$RUNS/$name" --data "$RUNS/mqar" --device "$DEVICE" --json "$OUT/$name.json" \
    > "$OUT/$name.eval.log" 2>&1
  echo "== $name ($(( $(date +%s) - start )) s): $(tail -1 "$OUT/$name.eval.log")"
  grep -E "^step|val" "$OUT/$name.train.log" | tail -2
done
